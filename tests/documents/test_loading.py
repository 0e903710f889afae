"""Loading: every format, metadata, doc types, discovery, and every kind of bad input."""

from __future__ import annotations

import codecs
import ctypes
import os
from pathlib import Path

import pytest
from conftest import assert_store_consistent, load_in_a_box, make_settings, parse_json_output, run_rag, write_tree

from rag.documents.discovery import SourceFile, discover
from rag.documents.errors import LoadError
from rag.documents.loading import Document, TextLimits, infer_doc_type, load
from rag.ingest.chunking import chunk_document
from rag.ingest.pipeline import ingest

MAX = 10 * 1024 * 1024


def load_file(path: Path, root: Path | None = None, doc_type: str | None = None) -> Document:
    root = root or path.parent
    return load(SourceFile(path, root.as_posix(), path.relative_to(root).as_posix()), MAX, doc_type)


def write(path: Path, content: str | bytes) -> Path:
    return write_tree(path.parent, {path.name: content}) / path.name


# -- formats ----------------------------------------------------------------------------------------


def test_markdown_front_matter_becomes_metadata(tmp_path):
    doc = load_file(
        write(
            tmp_path / "caching.md",
            """
            ---
            title: Caching strategies
            tags: [caching, redis]
            doc_type: reference
            updated: 2024-03-01
            ---
            # Caching

            Body text.
            """,
        )
    )
    assert doc.title == "Caching strategies"
    assert doc.tags == ["caching", "redis"]
    assert doc.doc_type == "reference"
    assert doc.updated == "2024-03-01"
    assert "title:" not in doc.text and doc.text.lstrip().startswith("# Caching")
    assert len(doc.content_hash) == 64


def test_markdown_without_front_matter_takes_first_heading_and_comma_tags(tmp_path):
    doc = load_file(write(tmp_path / "notes.md", "Intro line.\n\n## Queue sizing\n\nText.\n"))
    assert doc.title == "Queue sizing"
    tagged = load_file(write(tmp_path / "t.md", "---\ntags: kafka, queues\n---\nText only.\n"))
    assert tagged.tags == ["kafka", "queues"]
    assert tagged.title == "T"  # no title, no heading: the file name


def test_plain_text_title_from_file_name(tmp_path):
    doc = load_file(write(tmp_path / "oncall_runbook-v2.txt", "Page the on-call engineer.\n"))
    assert doc.title == "Oncall runbook v2"
    assert doc.text == "Page the on-call engineer.\n"


def test_rst_headings_become_markdown_headings(tmp_path):
    doc = load_file(
        write(
            tmp_path / "guide.rst",
            """
            Caching
            =======

            Intro.

            Invalidation
            ------------

            Stale data.

            Write-through
            ~~~~~~~~~~~~~

            Write both.

            ::

                cache.set(key, value)
            """,
        )
    )
    assert doc.title == "Caching"
    lines = doc.text.splitlines()
    heading_of = {line.lstrip("#").strip(): len(line) - len(line.lstrip("#")) for line in lines if line.startswith("#")}
    assert set(heading_of) == {"Caching", "Invalidation", "Write-through"}
    assert heading_of["Write-through"] > heading_of["Invalidation"]
    assert "```\ncache.set(key, value)\n```" in doc.text
    assert "=====" not in doc.text and "~~~~" not in doc.text


def test_html_title_and_headings(tmp_path):
    doc = load_file(
        write(
            tmp_path / "queues.html",
            """
            <html><head><title>Queue guide</title><style>body { color: red }</style></head>
            <body><h1>Queues</h1><p>Intro about <b>brokers</b>.</p>
            <h2>Backpressure</h2><p>Slow producers down.</p>
            <h3>Credit based</h3><p>Consumers grant credits.</p></body></html>
            """,
        )
    )
    assert doc.title == "Queue guide"
    assert "# Queues" in doc.text and "## Backpressure" in doc.text and "### Credit based" in doc.text
    assert "Consumers grant credits." in doc.text
    assert "<p>" not in doc.text and "color: red" not in doc.text
    untitled = load_file(write(tmp_path / "x.html", "<h1>Sharding</h1><p>Split by key.</p>"))
    assert untitled.title == "Sharding"


TEMPLATED_PAGE = """
<!-- a documentation site that renders its chapters from Handlebars templates, like Kafka's -->
<script><!--#include virtual="js/templateData.js" --></script>
<script src="app.js"></script>
<script>document.title = "window.secretToken = 42";</script>
<script type="module">import { boot } from "./boot.js"; boot("moduleSecret");</script>
<script type="application/ld+json">{"@type": "TechArticle", "name": "jsonSecret"}</script>
<script id="replication-template" type="text/x-handlebars-template">
  <h3 class="anchor-heading">4.7 Replication</h3>
  <p>Each partition has one leader and zero or more followers; writes go to the leader.</p>
  <h4>In-sync replicas</h4>
  <p>A follower that falls behind for longer than <code>replica.lag.time.max.ms</code> leaves the ISR.</p>
  <pre><code>$ bin/kafka-topics.sh --describe --topic orders --version {{version}}</code></pre>
</script>
<script type="text/x-template" id="quota-card">
  <section><h4>Quotas</h4><p>Quotas cap the byte rate of each client id.</p></section>
</script>
<div class="p-replication"></div>
"""


def test_html_templates_in_script_elements_are_content_and_programs_are_not(tmp_path):
    doc = load_file(write(tmp_path / "design.html", TEMPLATED_PAGE))
    assert doc.title == "4.7 Replication"
    assert "### 4.7 Replication" in doc.text and "#### In-sync replicas" in doc.text and "#### Quotas" in doc.text
    assert "Each partition has one leader and zero or more followers; writes go to the leader." in doc.text
    assert "leaves the ISR" in doc.text and "kafka-topics.sh --describe --topic orders" in doc.text
    assert "Quotas cap the byte rate of each client id." in doc.text
    for program_or_data in ["secretToken", "moduleSecret", "jsonSecret", "templateData", "<script", "<p>"]:
        assert program_or_data not in doc.text


def test_a_site_whose_pages_are_all_templates_ingests_every_page(tmp_path, settings, embedder):
    from rag.ingest.pipeline import ingest
    from rag.search.retrieval import Retriever

    other = TEMPLATED_PAGE.replace("replication-template", "consumer-template").replace(
        "4.7 Replication", "4.8 Consumer groups"
    )
    root = write_tree(tmp_path / "site", {"design.html": TEMPLATED_PAGE, "consumers.html": other})
    report = ingest([root], settings, embedder=embedder)
    assert report.files_failed == [] and report.files_added == 2
    retriever = Retriever(settings, embedder=embedder)
    passages = retriever.search("what happens to a follower that lags behind?", k=3).passages
    assert passages and "leaves the ISR" in passages[0].text
    assert {p.title for p in passages} <= {"4.7 Replication", "4.8 Consumer groups"}


def test_pdf_text_and_title(tmp_path, make_pdf):
    pdf = make_pdf(["Sharding splits data by key.", "Replication copies it."], title="Scaling databases")
    doc = load_file(write(tmp_path / "scaling.pdf", pdf))
    assert doc.title == "Scaling databases"
    assert "Sharding splits data by key." in doc.text and "Replication copies it." in doc.text
    untitled = load_file(write(tmp_path / "db-notes.pdf", make_pdf(["Some text."])))
    assert untitled.title == "Db notes"


def test_docx_heading_styles_and_tables(tmp_path, make_docx):
    docx = make_docx(
        None,
        [
            ("h1", "Payments design"),
            ("p", "Intro paragraph."),
            ("h2", "Retries"),
            ("p", "Retry three times."),
            ("table", [["call", "timeout"], ["authorize", "5 s"], ["capture", "10 s"]]),
        ],
    )
    doc = load_file(write(tmp_path / "payments.docx", docx))
    assert doc.title == "Payments design"
    assert "# Payments design" in doc.text.splitlines()
    assert "## Retries" in doc.text.splitlines()
    assert "| call | timeout |\n|---|---|\n| authorize | 5 s |\n| capture | 10 s |" in doc.text
    # a Title paragraph is the top heading; Heading 1 then sits one level below it
    titled = load_file(write(tmp_path / "t.docx", make_docx("Design doc", [("h1", "Context"), ("p", "Text.")])))
    assert titled.title == "Design doc"
    assert "# Design doc" in titled.text.splitlines() and "## Context" in titled.text.splitlines()


# -- doc types ----------------------------------------------------------------------------------------


def test_doc_type_inferred_from_references_folder_and_overridden_by_flag(tmp_path):
    root = tmp_path / "corpus"
    ref = write(root / "references" / "caching.md", "# Caching\n\nText.\n")
    team = write(root / "team" / "adr.md", "# ADR\n\nText.\n")
    assert load_file(ref, root).doc_type == "reference"
    assert load_file(team, root).doc_type == "team"
    assert load_file(ref, root, doc_type="team").doc_type == "team"
    assert load_file(team, root, doc_type="reference").doc_type == "reference"
    # the root itself may be the references folder
    assert infer_doc_type(SourceFile(ref, "corpus/references", "caching.md")) == "reference"
    front = write(root / "team" / "ref.md", "---\ndoc_type: reference\n---\nText.\n")
    assert load_file(front, root).doc_type == "reference"
    assert load_file(front, root, doc_type="team").doc_type == "team"  # the flag wins over front matter


def test_discover_walks_supported_files_and_skips_hidden(tmp_path):
    root = tmp_path / "docs"
    for name in [
        "a.md",
        "sub/b.txt",
        "sub/deep/c.rst",
        "d.html",
        "e.pdf",
        "f.docx",
        "g.png",
        ".hidden.md",
        ".git/config.md",
        "h.MD",
    ]:
        write(root / name, "text")
    found = discover([root])
    assert sorted(ref.relpath for ref in found.files) == [
        "a.md",
        "d.html",
        "e.pdf",
        "f.docx",
        "h.MD",
        "sub/b.txt",
        "sub/deep/c.rst",
    ]
    assert found.failures == []
    assert len(found.roots) == 1


def test_discover_same_file_twice_is_taken_once(tmp_path):
    root = write(tmp_path / "docs" / "a.md", "text").parent
    found = discover([root, root, root / "a.md"])
    assert len(found.files) == 1


# -- bad input, one by one --------------------------------------------------------------------------


def _encrypted_pdf(make_pdf):
    return make_pdf(["Secret text."], password="hunter2")


BAD_INPUTS = [
    ("empty.md", b"", "empty file"),
    ("blank.txt", b"  \n\n\t\n", "empty file"),
    ("binary.md", bytes(range(256)) * 8, "binary"),
    ("corrupt.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage", "corrupt PDF"),
    ("truncated.pdf", "TRUNCATED_PDF", "PDF"),
    ("encrypted.pdf", "ENCRYPTED_PDF", "password"),
    ("corrupt.docx", b"PK\x03\x04 not really a zip", "corrupt DOCX"),
    ("bad-front-matter.md", b"---\ntitle: [unclosed\n---\nText.\n", "invalid YAML front matter"),
    ("headings-only-front-matter.md", b"---\ntitle: x\n---\n", "no text"),
]


@pytest.mark.parametrize(("name", "content", "reason"), BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_raises_load_error_with_reason(tmp_path, make_pdf, name, content, reason):
    if content == "TRUNCATED_PDF":
        whole = make_pdf(["Page one text."] * 3)
        content = whole[: len(whole) // 2]
    elif content == "ENCRYPTED_PDF":
        content = _encrypted_pdf(make_pdf)
    with pytest.raises(LoadError, match=f"(?i){reason}"):
        load_file(write(tmp_path / name, content))


def test_file_over_the_size_limit_is_refused(tmp_path):
    path = write(tmp_path / "big.txt", "word " * 5000)
    with pytest.raises(LoadError, match="over the .* limit"):
        load(SourceFile(path, tmp_path.as_posix(), "big.txt"), max_bytes=10_000)
    assert load(SourceFile(path, tmp_path.as_posix(), "big.txt"), max_bytes=30_000).text.startswith("word")


@pytest.mark.parametrize(
    "text",
    [
        "Café au lait, naïve résumé: the façade of the déjà vu hôtel.\n",
        "Le cache est invalidé à chaque écriture; la cohérence éventuelle est acceptée.\n",
        "Größe und Gültigkeit der Schlüssel prüfen.\n",
        "Résumé\n",
    ],
)
@pytest.mark.parametrize("encoding", ["cp1252", "latin-1", "utf-16", "utf-16-be"])
def test_non_utf8_text_is_decoded(tmp_path, text, encoding):
    raw = text.encode(encoding)
    if encoding == "utf-16-be":
        raw = codecs.BOM_UTF16_BE + raw  # as Windows and macOS editors write it
    doc = load_file(write(tmp_path / "legacy.txt", raw))
    assert doc.text == text


def test_other_legacy_encodings_keep_their_letters(tmp_path):
    russian = "Кэширование данных: инвалидация при записи, репликация на три узла.\n"
    assert load_file(write(tmp_path / "ru.txt", russian.encode("cp1251"))).text == russian
    polish = "Zażółć gęślą jaźń: pamięć podręczna jest unieważniana przy zapisie.\n"
    assert load_file(write(tmp_path / "pl.md", polish.encode("cp1250"))).text == polish
    bom = load_file(write(tmp_path / "bom.md", "\ufeff# Título\n\nTexto.\n".encode()))
    assert bom.title == "Título"


def test_discover_reports_missing_path_and_symlink_loop(tmp_path):
    root = write(tmp_path / "docs" / "loop" / "a.md", "text").parent.parent
    (root / "loop" / "back").symlink_to(root / "loop", target_is_directory=True)
    (root / "dangling").symlink_to(tmp_path / "nowhere")
    found = discover([root, tmp_path / "missing"])
    assert [ref.relpath for ref in found.files] == ["loop/a.md"]
    reasons = {Path(f.path).name: f.error for f in found.failures}
    assert "does not exist" in reasons["missing"]
    assert "symlink loop" in reasons["back"]
    broken = discover([root / "dangling"])
    assert broken.files == [] and "broken link" in broken.failures[0].error


# -- bad input, all in one ingest -------------------------------------------------------------------


def _without_file_read_override() -> None:
    """Runs in the child before exec: root keeps its uid but loses the capabilities that let it read
    any file (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so a chmod 000 file is unreadable as for a user."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_dac_override, cap_dac_read_search = 24, 1, 2
    for capability in (cap_dac_override, cap_dac_read_search):
        if libc.prctl(pr_capbset_drop, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_bad_inputs_are_reported_and_the_rest_is_ingested(tmp_path, make_pdf):
    corpus = tmp_path / "corpus"
    good = {
        "references/caching.md": "---\ntitle: Caching\n---\n# Caching\n\n## Write-through\n\nWrite both stores.\n",
        "team/adr.md": "# ADR 1\n\nWe pick PostgreSQL.\n",
        "team/runbook.txt": "Page the on-call engineer when errors exceed two percent.\n",
        "team/scaling.pdf": make_pdf(["Sharding splits data by tenant id."]),
    }
    for name, content in good.items():
        write(corpus / name, content)
    legacy = "Café au lait: le cache est invalidé à chaque écriture.\n"
    write(corpus / "team" / "legacy.txt", legacy.encode("cp1252"))
    bad = {
        "empty.md": (b"", "empty"),
        "binary.txt": (os.urandom(2048) + b"\x00" * 16, "binary"),
        "corrupt.pdf": (b"%PDF-1.7\n%%garbage, no objects", "corrupt pdf"),
        "encrypted.pdf": (make_pdf(["Secret roadmap."], password="s3cret"), "password"),
        "big.md": (("Long line of text. " * 1200).encode(), "limit"),
        "unreadable.md": (b"# Secret\n\nNobody may read this.\n", "permission denied"),
    }
    for name, (content, _) in bad.items():
        write(corpus / "team" / name, content)
    (corpus / "team" / "unreadable.md").chmod(0o000)
    (corpus / "team" / "loop").mkdir()
    (corpus / "team" / "loop" / "again").symlink_to(corpus / "team", target_is_directory=True)

    process = run_rag(
        "ingest",
        "corpus",
        "--json",
        "--data-dir",
        "data",
        "--max-file-mb",
        "0.02",
        cwd=tmp_path,
        preexec_fn=_without_file_read_override if os.geteuid() == 0 else None,
    )
    assert process.returncode == 3, process.stderr
    report = parse_json_output(process)
    failures = {failure["path"]: failure["error"] for failure in report["files_failed"]}
    for name, (_, reason) in bad.items():
        assert reason in failures.get(f"corpus/team/{name}", "").lower(), (name, failures)
    loops = [path for path in failures if path.startswith("corpus/team/loop")]
    assert loops and "symlink loop" in failures[loops[0]]
    assert len(failures) == len(bad) + 1  # and the symlink loop, failures

    settings = make_settings(tmp_path / "data")
    assert report["files_added"] == len(good) + 1  # and the cp1252 file went in, decoded
    chunks, manifest = assert_store_consistent(settings)
    assert {key.split("::")[1] for key in manifest} == set(good) | {"team/legacy.txt"}
    from rag.index.store import Store

    legacy_chunks = Store(settings).get(where={"source_key": "corpus::team/legacy.txt"})
    assert legacy_chunks["documents"] == [legacy.strip()]
    assert report["chunks_total"] == len(chunks)


# -- static-site pages (Hugo, Jekyll) ---------------------------------------------------------------


SITE = {
    "_index.md": "---\ntitle: Operations\nweight: 10\n---\n",
    "generated.md": "---\ntitle: Metrics catalog\n---\n\n{{< metrics-catalog >}}\n",
    "includes/restart.md": "---\nreused-by: [runbook.md]\n---\nDrain the node before restarting the proxy.\n",
    "ops/runbook.md": (
        "---\ntitle: Proxy runbook\n---\n\n# Proxy runbook\n\n"
        '{{< call-out class="warning" >}}Reloads drop idle keepalive connections.{{< /call-out >}}\n\n'
        '{{< include "restart.md" >}}\n\nSee {{<nb>}}the dashboard{{</nb>}} {{% icon download %}}.\n'
    ),
}


def test_a_hugo_page_is_loaded_with_its_shortcodes_rendered_and_includes_resolved(tmp_path):
    root = write_tree(tmp_path / "site", SITE)
    doc = load_file(root / "ops/runbook.md", root)
    assert doc.title == "Proxy runbook"
    assert "**Warning:** Reloads drop idle keepalive connections." in doc.text
    assert "Drain the node before restarting the proxy." in doc.text
    assert "reused-by" not in doc.text and "{{" not in doc.text and "%}}" not in doc.text
    assert "See the dashboard ." in doc.text


def test_a_page_with_front_matter_only_or_only_empty_shortcodes_is_skipped_not_failed(tmp_path):
    from rag.documents.errors import SkippedFile

    root = write_tree(tmp_path / "site", SITE)
    with pytest.raises(SkippedFile, match="only front matter"):
        load_file(root / "_index.md", root)
    with pytest.raises(SkippedFile, match="only shortcodes"):
        load_file(root / "generated.md", root)
    write(root / "blank.md", "  \n")  # an empty file is still a failure: someone meant to write it
    with pytest.raises(LoadError, match="empty file") as raised:
        load_file(root / "blank.md", root)
    assert not isinstance(raised.value, SkippedFile)


def test_ingest_counts_section_pages_as_skipped_and_forgets_a_page_emptied_to_front_matter(
    tmp_path, settings, embedder, monkeypatch
):
    from rag.ingest.pipeline import ingest

    monkeypatch.chdir(tmp_path)
    root = write_tree(tmp_path / "site", SITE)
    report = ingest([root], settings, embedder=embedder)
    assert report.files_failed == []
    assert sorted(skip.path for skip in report.files_skipped) == ["site/_index.md", "site/generated.md"]
    assert report.files_added == 2  # the runbook and the include file itself
    assert "skipped" in report.to_dict()["files_skipped"][0]["error"]

    write(root / "ops/runbook.md", "---\ntitle: Proxy runbook\n---\n")
    report = ingest([root], settings, embedder=embedder)
    assert report.files_failed == [] and len(report.files_skipped) == 3
    _, manifest = assert_store_consistent(settings)
    assert {key.split("::")[1] for key in manifest} == {"includes/restart.md"}


def test_an_upload_with_front_matter_only_is_skipped_and_not_kept(settings, embedder):
    from rag.app.uploads import add_uploads, uploads_dir
    from rag.search.access import LOCAL

    good = ("notes.md", b"# Notes\n\nThe proxy keeps idle connections for sixty seconds.\n")
    section = ("_index.md", b"---\ntitle: Team docs\n---\n")
    results = add_uploads([good, section], settings, reader=LOCAL, embedder=embedder)
    statuses = [(r.original, r.status, r.ok) for r in results]
    assert statuses == [("notes.md", "added", True), ("_index.md", "skipped", True)]
    assert "only front matter" in results[1].message
    assert sorted(p.name for p in uploads_dir(settings).iterdir()) == ["notes.md"]


# -- place in the site ------------------------------------------------------------------------------


def test_a_page_knows_its_place_in_the_site_from_its_folders_titles(tmp_path, embedder):
    write_tree(
        tmp_path,
        {
            "_index.md": "---\ntitle: Product Documentation\n---\n",  # the ingested root itself: not a place
            "nginx/_index.md": "---\ntitle: NGINX Plus\n---\n",
            "nginx/admin-guide/_index.md": "---\ntitle: Admin Guide\nweight: 100\n---\n\nWhat the guide covers.\n",
            "nginx/admin-guide/load-balancer/http-health-check.md": """
                ---
                title: HTTP Health Checks
                ---
                ## Passive checks

                A server is marked unavailable after max_fails failed attempts.
                """,
            "nginx/broken_section/_index.md": "---\ntitle: [unclosed\n---\n",
            "nginx/broken_section/page.md": "# Page\n\nText.\n",
        },
    )
    health = load_file(tmp_path / "nginx/admin-guide/load-balancer/http-health-check.md", tmp_path)
    assert health.site == ["NGINX Plus", "Admin Guide", "Load balancer"]  # no _index.md: the folder's name
    # a section page with text is its folder's own page: its path stops at the folder above
    assert load_file(tmp_path / "nginx/admin-guide/_index.md", tmp_path).site == ["NGINX Plus"]
    # a malformed section page costs only its title
    assert load_file(tmp_path / "nginx/broken_section/page.md", tmp_path).site == ["NGINX Plus", "Broken section"]

    from rag.ingest.chunking import chunk_document

    [chunk] = chunk_document(health, embedder.count_tokens, 200, 32, embedder.max_seq_length)
    assert chunk.metadata()["site"] == "NGINX Plus > Admin Guide > Load balancer"
    # metadata only: in the embedded prefix it lowered retrieval on our question set (rag/ingest/chunking.py)
    assert chunk.embed_text.startswith("HTTP Health Checks > Passive checks\nA server is marked")


# -- hostile front matter (issue 24, fault 4) --------------------------------------------------------

ALIAS_BOMB = "---\na: &a [" + ",".join(["lol"] * 9) + "]\n" + "".join(
    f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]\n" for previous, name in zip("abcdefgh", "bcdefghi")
)  # 9 ** 9 (387 million) values when expanded


@pytest.mark.parametrize("use", ["title: *i", "tags: *i", "status: *i", "owner: *i"])
def test_a_yaml_alias_bomb_in_front_matter_is_refused_in_a_short_message(tmp_path, use):
    page = write(tmp_path / "bomb.md", ALIAS_BOMB + use + "\n---\n# Bomb\n\nSome text.\n")
    assert page.stat().st_size < 400
    result = load_in_a_box(page, memory_mb=400)
    assert "error" in result, result
    assert "front matter" in result["error"] and "10,000 values" in result["error"]
    assert len(result["error"]) < 200


def test_front_matter_anchors_that_stay_small_still_load(tmp_path):
    page = write(tmp_path / "anchors.md", "---\nbase: &base [a, b]\ntags: *base\ntitle: Anchored\n---\n# A\n\nText.\n")
    document = load_file(page)
    assert document.tags == ["a", "b"] and document.title == "Anchored"


def test_a_long_bad_front_matter_value_is_quoted_short(tmp_path):
    page = write(tmp_path / "long.md", "---\ntitle: [" + ", ".join(["word"] * 5000) + "]\n---\n# Long\n\nText.\n")
    with pytest.raises(LoadError, match="'title' must be a single value") as refused:
        load_file(page)
    assert len(str(refused.value)) < 200


# -- what a file turns into is bounded, for every converter (issue 24, fault 7) -----------------------

NESTED_HTML = {
    "blockquotes": "<blockquote>x " * 4000,  # 56 KB that became 16 MB of text and 85,643 chunks
    "bullet lists": "<ul><li>x " * 4000,
    "numbered lists": "<ol><li>x " * 4000,
    "quotes in lists": "<ul><li><blockquote>x " * 2000,
}


@pytest.mark.parametrize("shape", NESTED_HTML)
def test_deeply_nested_html_converts_to_text_of_about_its_own_size(tmp_path, shape):
    page = write(tmp_path / "nested.html", NESTED_HTML[shape])
    result = load_in_a_box(page, memory_mb=800)
    assert "chars" in result, result
    assert result["chars"] <= 5 * page.stat().st_size  # was up to 600 times


WORDS_LINE = "Replicas follow the leader and apply its log in order after each commit."  # 73 characters


def text_of_every_format(tmp_path: Path, fmt: str, lines: int, make_pdf, make_docx) -> Path:
    body = [f"{WORDS_LINE} {n}" for n in range(lines)]
    if fmt == "pdf":
        return write(tmp_path / "big.pdf", make_pdf(["\n".join(body[i : i + 40]) for i in range(0, lines, 40)]))
    if fmt == "docx":
        return write(tmp_path / "big.docx", make_docx("Big", [("p", line) for line in body]))
    if fmt == "html":
        return write(tmp_path / "big.html", "<h1>Big</h1>" + "".join(f"<p>{line}</p>" for line in body))
    if fmt == "rst":
        return write(tmp_path / "big.rst", "Big\n===\n\n" + "\n\n".join(body) + "\n")
    return write(tmp_path / f"big.{fmt}", "# Big\n\n" + "\n\n".join(body) + "\n")


@pytest.mark.parametrize("fmt", ["md", "txt", "rst", "html", "pdf", "docx"])
def test_every_converter_refuses_text_over_the_limit_naming_it(tmp_path, fmt, make_pdf, make_docx):
    path = text_of_every_format(tmp_path, fmt, 2000, make_pdf, make_docx)  # about 150 KB of text
    ref = SourceFile(path, "notes", path.name)
    limits = TextLimits(max_chars=int(0.1 * 1024 * 1024), max_expansion=10)
    # a PDF is read only until its text passes the limit, so it passes it by a page: told apart in bytes
    with pytest.raises(LoadError, match=r"over the (0\.10 MB|104,857-byte) limit \(RAG_MAX_TEXT_MB\)") as refused:
        load(ref, MAX, limits=limits)
    assert len(str(refused.value)) < 120
    assert WORDS_LINE in load(ref, MAX).text  # under the default limit it loads


def test_rst_that_multiplies_on_conversion_is_refused(tmp_path):
    levels = [".. |l0| replace:: lol"] + [
        f".. |l{n}| replace:: " + " ".join([f"|l{n - 1}|"] * 10) for n in range(1, 5)
    ]
    path = write(tmp_path / "subst.rst", "Title\n=====\n\n" + "\n".join(levels) + "\n\nuse |l4| |l4| |l4|\n")
    with pytest.raises(LoadError, match=r"times its own size, over the 10 times limit \(RAG_MAX_EXPANSION\)"):
        load_file(path)


def test_a_file_that_makes_too_many_chunks_is_refused_naming_the_limit(tmp_path, monkeypatch, embedder):
    monkeypatch.chdir(tmp_path)
    notes = write_tree(
        tmp_path / "notes",
        {
            "small.md": "# Small\n\nOne paragraph about leader election.\n",
            "long.md": "# Long\n\n" + "\n\n".join(f"## Part {n}\n\nPart {n}: " + WORDS_LINE * 3 for n in range(40)),
        },
    )
    settings = make_settings(tmp_path / "data", max_chunks_per_file=12)
    report = ingest([notes], settings, embedder=embedder)
    assert report.files_added == 1
    assert [(f.path, f.error) for f in report.files_failed] == [
        ("notes/long.md", "makes over 12 chunks, the limit per file (RAG_MAX_CHUNKS_PER_FILE)")
    ]
    assert_store_consistent(settings)


def test_chunking_stops_at_the_chunk_limit(embedder):
    calls: list[int] = []

    def count_tokens(text: str) -> int:
        calls.append(len(text))
        return embedder.count_tokens(text)

    text = "# Long\n\n" + "\n\n".join(f"## Part {n}\n\nPart {n}: " + WORDS_LINE * 3 for n in range(3000))  # 700 KB
    document = Document(SourceFile(Path("/tmp/long.md"), "notes", "long.md"), text, "Long", "team", "hash")
    with pytest.raises(LoadError, match="makes over 20 chunks"):
        chunk_document(document, count_tokens, 200, 32, embedder.max_seq_length, max_chunks=20)
    assert sum(calls) < 50 * 1024  # read about as far as 20 chunks, not the whole 700 KB


def test_rst_directives_never_read_other_files_into_the_knowledge_base(tmp_path):
    """An uploaded .rst could name any file the server can read: ``include``, ``raw :file:``, ``csv-table :file:``."""
    secret = write(tmp_path / "elsewhere" / "secret.txt", "root-password-hash-7731\n")
    page = write(
        tmp_path / "docs" / "page.rst",
        f"Title\n=====\n\nBefore.\n\n.. include:: {secret}\n\n.. raw:: html\n   :file: {secret}\n\n"
        f".. csv-table:: Data\n   :file: {secret}\n\n.. include:: {secret}\n   :literal:\n\nAfter.\n",
    )
    document = load_file(page)
    assert "Before." in document.text and "After." in document.text
    assert "7731" not in document.text


def test_a_file_just_over_the_size_limit_does_not_read_as_equal_to_it(tmp_path, settings):
    """21,000,000 bytes used to be "20.0 MB, over the 20.0 MB limit" (issue 24, fault 9)."""
    from rag.app.uploads import save_upload

    path = tmp_path / "big.md"
    with path.open("wb") as handle:
        handle.truncate(21_000_000)
    with pytest.raises(LoadError, match=r"file is 20\.03 MB, over the 20\.00 MB limit \(RAG_MAX_FILE_MB\)"):
        load(SourceFile(path, "notes", "big.md"), settings.max_file_bytes)
    result = save_upload("big.md", b"x" * 21_000_000, tmp_path / "uploads", settings.max_file_bytes)
    assert "is 20.03 MB, over the 20.00 MB limit" in result.message
    with pytest.raises(LoadError, match=r"file is 25\.0 MB, over the 20\.0 MB limit"):
        path.write_bytes(b"x" * 25 * 1024 * 1024)
        load(SourceFile(path, "notes", "big.md"), settings.max_file_bytes)


def test_a_docx_cell_merged_over_a_table_is_read_once(tmp_path):
    import io

    import docx

    document = docx.Document()
    table = document.add_table(rows=30, cols=40)
    table.cell(0, 0).merge(table.cell(29, 39)).text = "The merged cell says this once. " * 20
    document.add_paragraph("After the table.")
    buffer = io.BytesIO()
    document.save(buffer)
    text = load_file(write(tmp_path / "merged.docx", buffer.getvalue())).text
    assert text.count("The merged cell says this once.") == 20  # not 20 times 1,200 grid positions
    assert "After the table." in text
