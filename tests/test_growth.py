"""Growth: every text transform does work and makes output in proportion to its input (issue 24).

Each transform (loading with each converter, shortcodes and includes, chunking, the text the encoder reads)
runs on generated inputs of 10 KB and 100 KB, ordinary and hostile (long runs of spaces, openers that never
close, deep nesting, many headings). What is asserted: the output of the 100 KB input is at most ``GROWTH``
times that of the 10 KB one (linear, not quadratic), a refusal is fine (a limit named), and the work counted
where it can be (tokenizer characters for chunking, file reads for includes) grows the same way. Time is not
asserted: each call runs under a generous hang guard that only quadratic or worse behaviour trips (a quadratic
pattern on 100 KB takes minutes).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import docx_bytes, hang_guard, pdf_bytes, write_tree

from rag.documents.discovery import SourceFile
from rag.documents.errors import LoadError
from rag.documents.loading import Document, load
from rag.documents.shortcodes import IncludeBudget, include_reader, render
from rag.ingest.chunking import chunk_document
from rag.text.embedded_text import embedded_text

SIZES = (10_000, 100_000)
GROWTH = 15  # ten times the input; a little over for fixed parts (a title, a last partial chunk)
GUARD = 20  # seconds; linear work on 100 KB takes well under one
MAX = 20 * 1024 * 1024


def repeat(unit: str, size: int, head: str = "", tail: str = "") -> str:
    return head + unit * max(1, (size - len(head) - len(tail)) // len(unit)) + tail


PROSE = "Each shard keeps its own replica set; the leader applies writes in order and followers catch up. "

MARKDOWN: dict[str, Callable[[int], str]] = {
    "prose": lambda n: repeat(f"## Section\n\n{PROSE}\n\n", n, head="# Notes\n\n"),
    "spaces in the first heading": lambda n: repeat(" ", n, head="# a", tail="b\n\nText.\n"),
    "tabs in a heading before a closing hash": lambda n: repeat("\t", n, head="## x", tail="y #\n\nText.\n"),
    "blank lines": lambda n: repeat("\n \n", n, head="# Notes\n\nText."),
    "blank lines before a status": lambda n: repeat("\n \n", n, head="# Notes\n\nText.", tail="status: draft\n"),
    "spaces after a status": lambda n: repeat(" ", n, head="# Notes\n\nStatus:", tail="x\n"),
    "nested paired calls": lambda n: repeat("{{< tab >}}", n // 2, head="# T\n\n") + "x" + "{{< /tab >}}" * (n // 24),
    "status lines": lambda n: repeat("status: superseded by ", n, head="# Notes\n\n"),
    "superseded without a full stop": lambda n: repeat("superseded and then ", n, head="# Status\n\n"),
    "nested quotes": lambda n: repeat("> " * 50 + "quoted line\n", n, head="# Quotes\n\n"),
    "shortcode openers": lambda n: repeat("{{< note ", n, head="# Calls\n\nText "),
    "shortcode spaces": lambda n: repeat(" ", n, head="# Calls\n\n{{< note", tail=">}}Text{{< /note >}}"),
    "liquid openers": lambda n: repeat("{% if x ", n, head="# Calls\n\nText "),
    "heading anchors": lambda n: repeat(" {#", n, head="# Anchors\n\n## x", tail="\n\nText.\n"),
    "many headings": lambda n: repeat("# h\n", n),
    "a long line": lambda n: repeat("x", n, head="# Blob\n\n"),
    "a table": lambda n: repeat("| 1 | two | three |\n", n, head="# T\n\n| a | b | c |\n|---|---|---|\n"),
    "unclosed fences": lambda n: repeat("```\nx\n", n, head="# Code\n\n"),
    "links": lambda n: repeat("[a](b ", n, head="# Links\n\n"),
    "front matter list": lambda n: repeat("  - tag\n", n, head="---\ntags:\n", tail="---\n# Tags\n\nText.\n"),
}
HTML: dict[str, Callable[[int], str]] = {
    "paragraphs": lambda n: repeat(f"<h2>Part</h2><p>{PROSE}</p>", n, head="<title>Doc</title><h1>Doc</h1>"),
    "nested blockquotes": lambda n: repeat("<blockquote>x ", n),
    "nested lists": lambda n: repeat("<ul><li>x ", n),
    "nested definition lists": lambda n: repeat("<dl><dt>t<dd>x ", n),
    "nested tables": lambda n: repeat("<table><tr><td>x ", n),
    "unclosed titles": lambda n: repeat("<title>x ", n, tail="<p>Body.</p>"),
    "unclosed comments": lambda n: repeat("<!-- x ", n, tail="<p>Body.</p>"),
    "preformatted in lists": lambda n: repeat("<ul><li><pre>x\ny\n</pre>", n),
}
RST: dict[str, Callable[[int], str]] = {
    "sections": lambda n: repeat(f"Part\n----\n\n{PROSE}\n\n", n, head="Doc\n===\n\n"),
    "nested block quotes": lambda n: "Doc\n===\n\n" + "".join("  " * min(d, 200) + "x\n\n" for d in range(n // 300)),
    "nested lists": lambda n: "Doc\n===\n\n" + "".join("  " * min(d, 100) + "- x\n\n" for d in range(n // 150)),
    "undefined substitutions": lambda n: repeat("|a| ", n, head="Doc\n===\n\n"),
    "a long line": lambda n: repeat("word ", n, head="Doc\n===\n\n"),
}


def loaded_size(path: Path) -> int:
    """The text a file loads to, or 0 when it is refused (a named limit: no work past it)."""
    try:
        with hang_guard(GUARD, f"loading {path.name}"):
            return len(load(SourceFile(path, "docs", path.name, str(path.parent)), MAX).text)
    except LoadError:
        return 0


def assert_linear(small: int, large: int, what: str) -> None:
    assert large <= GROWTH * max(small, 2_000), f"{what}: {small:,} from 10 KB, {large:,} from 100 KB"


@pytest.mark.parametrize(
    ("suffix", "name"),
    [("md", name) for name in MARKDOWN] + [("html", name) for name in HTML] + [("rst", name) for name in RST],
)
def test_loading_grows_linearly(tmp_path, suffix, name):
    make = {"md": MARKDOWN, "html": HTML, "rst": RST}[suffix][name]
    small, large = (write_tree(tmp_path / str(size), {f"doc.{suffix}": make(size)}) / f"doc.{suffix}" for size in SIZES)
    assert_linear(loaded_size(small), loaded_size(large), f"{suffix} {name}")


def test_pdf_and_docx_text_grows_linearly(tmp_path):
    for size in SIZES:
        lines = [PROSE] * (size // len(PROSE))
        write_tree(tmp_path / str(size), {
            "doc.pdf": pdf_bytes(["\n".join(lines[i : i + 40]) for i in range(0, len(lines), 40)]),
            "doc.docx": docx_bytes("Doc", [("p", line) for line in lines] + [("table", [["a", "b"]] * 50)]),
        })  # fmt: skip
    for name in ("doc.pdf", "doc.docx"):
        small, large = (loaded_size(tmp_path / str(size) / name) for size in SIZES)
        assert small > 5_000
        assert_linear(small, large, name)


def test_includes_grow_linearly_and_each_file_is_read_once(tmp_path):
    """A page that includes each of many snippets, some of them many times: output and file reads follow the
    input; ten snippets included 100 times each stay under the expansion limit only while they are small."""
    for size in SIZES:
        snippets = {f"includes/s{n}.md": f"Snippet {n}. {PROSE}\n" for n in range(size // 2000)}
        calls = "".join(f'{{{{< include "s{n}.md" >}}}}\n' * 3 for n in range(size // 2000))
        root = write_tree(tmp_path / str(size), {**snippets, "guide/page.md": "# Page\n\n" + calls})
        reads: list[str] = []
        reader = include_reader(root, root / "guide/page.md", MAX)

        def counting(kind: str, argument: str, reader=reader, reads=reads):
            found = reader(kind, argument)
            reads.append(argument)
            return found

        page = (root / "guide/page.md").read_text()
        with hang_guard(GUARD, "rendering includes"):
            text = render(page, counting, IncludeBudget(len(page), MAX, 10))
        source = len(page) + sum(len(t) for t in snippets.values())
        assert len(text) <= 10 * source
        assert len(reads) == 3 * len(snippets)  # one lookup per call, one disk read per snippet (cached)


@pytest.fixture(scope="module")
def measured(embedder):
    """The tokenizer, counting the characters it is given (the work chunking does)."""
    given: list[int] = []

    def count_tokens(text: str) -> int:
        given.append(len(text))
        return embedder.count_tokens(text)

    return count_tokens, given


@pytest.mark.parametrize("name", [name for name in MARKDOWN if name != "front matter list"])
def test_chunking_grows_linearly(measured, embedder, name):
    count_tokens, given = measured
    chunks, work = [], []
    for size in SIZES:
        document = Document(SourceFile(Path("/tmp/doc.md"), "docs", "doc.md"), MARKDOWN[name](size), "Doc", "team", "h")
        given.clear()
        with hang_guard(GUARD, f"chunking {name}"):
            made = chunk_document(document, count_tokens, 200, 32, embedder.max_seq_length)
        chunks.append(sum(len(chunk.text) for chunk in made) + 100 * len(made))
        work.append(sum(given))
    assert_linear(chunks[0], chunks[1], f"chunk text of {name}")
    assert_linear(work[0], work[1], f"tokenizer characters for {name}")


@pytest.mark.parametrize("name", MARKDOWN)
def test_the_text_the_encoder_reads_grows_linearly(name):
    sizes = []
    for size in SIZES:
        with hang_guard(GUARD, f"embedded text of {name}"):
            sizes.append(len(embedded_text("Doc\n", MARKDOWN[name](size))))
    assert_linear(sizes[0], sizes[1], f"embedded text of {name}")
