"""Chunking: section paths, the model's token limit, whole code blocks and tables, offsets, ids."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

import pytest
from conftest import CACHING_MD

from rag.documents.discovery import SourceFile, discover
from rag.documents.loading import Document, load
from rag.ingest.chunking import SPECIAL_TOKENS, Chunk, chunk_document

WORDS = (
    "cache invalidation replica shard consistency latency throughput idempotency backpressure queue partition "
    "leader follower quorum eviction write-through snapshot compaction"
).split()


def document(text: str, title: str = "Guide", root: str = "docs", relpath: str = "guide.md") -> Document:
    return Document(SourceFile(Path("/nowhere") / relpath, root, relpath), textwrap.dedent(text), title, "team", "h")


def chunks_of(doc: Document, embedder, chunk_tokens: int = 200, overlap: int = 32) -> list[Chunk]:
    return chunk_document(doc, embedder.count_tokens, chunk_tokens, overlap, embedder.max_seq_length)


def limit(embedder) -> int:
    return embedder.max_seq_length - SPECIAL_TOKENS


def is_table_rule(line: str) -> bool:
    return "|" in line and "---" in line and not set(line) - set("|:- ")


def assert_offsets_point_at_text(chunks: list[Chunk]) -> None:
    for chunk in chunks:
        lines = chunk.text.splitlines()
        first_line = lines[0]
        source = chunk.document.text[chunk.start_offset :]
        if first_line.startswith("```") and not source.startswith(first_line):
            first_line = lines[1]  # a piece of a cut code block is fenced again: its code starts at the offset
        if len(lines) > 2 and is_table_rule(lines[1]) and not source.startswith(first_line):
            first_line = lines[2]  # a later piece of a cut table repeats the header: its rows start at the offset
        assert source.startswith(first_line), (chunk.position, first_line)


def repeated_lines(text: str) -> set[str]:
    """Lines a chunk may carry again: table headers and their rules."""
    lines = text.splitlines()
    return {line for i, line in enumerate(lines[:-1]) if is_table_rule(lines[i + 1])} | set(
        filter(is_table_rule, lines)
    )


def assert_covers_source(doc: Document, chunks: list[Chunk]) -> None:
    """Chunks, in order, are pieces of the source (whitespace aside) that together leave nothing out
    but the heading lines (those live in each chunk's section path, or as heading lines of merged
    sections). Fence lines and table headers are left out of the comparison: each piece of a cut code
    block carries the fence again, each piece of a cut table its header."""
    skipped = repeated_lines(doc.text)

    def kept(text: str) -> str:
        lines = text.splitlines()
        return "".join(line for line in lines if not line.startswith(("#", "```")) and line not in skipped)

    source = "".join(kept(doc.text).split())
    covered = bytearray(len(source))
    previous = -1
    for chunk in chunks:
        piece = "".join(kept(chunk.text).split())
        found = source.find(piece, previous + 1)
        assert found >= 0, f"chunk {chunk.position} is not a piece of the source: {chunk.text[:80]!r}"
        covered[found : found + len(piece)] = b"\x01" * len(piece)
        previous = found
    missing = covered.find(0)
    assert missing < 0, f"source text left out of every chunk: {source[missing : missing + 80]!r}"


def test_model_limit_is_read_from_the_model(embedder):
    assert embedder.max_seq_length == 256


def test_section_paths_follow_the_heading_hierarchy(embedder, tmp_path):
    source = tmp_path / "caching.md"
    source.write_text(
        "---\ntitle: Caching handbook\n---\n"
        + textwrap.dedent(CACHING_MD).split("---\n", 2)[2].replace("# Caching strategies", "# Caching")
    )
    doc = load(SourceFile(source, "docs", "caching.md"), 10**7)
    chunks = chunks_of(doc, embedder, chunk_tokens=40)  # too small for two sections to share a chunk
    by_text = {chunk.text.splitlines()[0]: chunk.section for chunk in chunks}
    write_through = "The service writes to the cache and the database in the same request, so the cache is never stale."
    assert by_text[write_through] == "Caching > Invalidation > Write-through"
    sections = [chunk.section for chunk in chunks]
    assert "Caching > Invalidation > Cache-aside" in sections
    assert "Caching > Eviction" in sections
    assert all(chunk.title == "Caching handbook" for chunk in chunks)
    # the embedded text carries the title and section path, the stored text does not
    write_through = next(c for c in chunks if c.section.endswith("Write-through"))
    assert write_through.embed_text.startswith("Caching handbook > Caching > Invalidation > Write-through\n")
    assert not write_through.text.startswith("Caching handbook")


def test_title_heading_is_not_repeated_in_the_section_path(embedder):
    intro, body = "A cache keeps hot data close to the service. " * 3, "Write both in the same request. " * 3
    doc = document(f"# Guide\n\n{intro}\n\n## Invalidation\n\n### Write-through\n\n{body}\n")
    chunks = chunks_of(doc, embedder, chunk_tokens=40)  # too small for both sections in one chunk
    assert [(c.section, c.text) for c in chunks] == [
        ("", intro.strip()),
        ("Invalidation > Write-through", body.strip()),
    ]
    assert chunks[1].embed_text == "Guide > Invalidation > Write-through\n" + body.strip()
    assert [c.position for c in chunks] == [0, 1]


def _tiny_sections(count: int) -> str:
    return "".join(
        f"### Option {i}\n\nSets the {WORDS[i % len(WORDS)]} limit to {i} for each worker.\n\n" for i in range(count)
    )


def test_small_sections_under_one_parent_share_a_chunk_with_their_headings(embedder):
    text = (
        "# Guide\n\n## Health checks\n\nNGINX marks a server as failed after errors.\n\n"
        "### Passive checks\n\nA passive check counts failed requests.\n\n"
        "### Active checks\n\nAn active check sends its own requests.\n\n"
        f"## Replication\n\n{_giant_paragraph(400)}\n"
    )
    chunks = chunks_of(doc := document(text), embedder)
    first = chunks[0]
    assert first.section == "Health checks"
    assert first.text == (
        "NGINX marks a server as failed after errors.\n\n### Passive checks\n\nA passive check counts failed requests."
        "\n\n### Active checks\n\nAn active check sends its own requests."
    )
    assert first.embed_text.startswith("Guide > Health checks\n")
    # a section too long to share a chunk keeps its own chunks and its own path
    assert {chunk.section for chunk in chunks[1:]} == {"Replication"}
    assert_covers_source(doc, chunks)


def test_merged_sections_fill_chunks_up_to_the_budget_and_keep_every_heading(embedder):
    doc = document("# Guide\n\n## Directives\n\n" + _tiny_sections(60))
    chunks = chunks_of(doc, embedder)
    assert len(chunks) <= 8  # 60 sections of about 15 tokens, about 12 to a 200-token chunk
    assert all(embedder.count_tokens(chunk.text) <= 200 for chunk in chunks)
    assert {chunk.section for chunk in chunks} == {"Directives"}
    headings = [line for chunk in chunks for line in chunk.text.splitlines() if line.startswith("#")]
    assert headings == [f"### Option {i}" for i in range(60)]
    assert_covers_source(doc, chunks)
    # each merged chunk starts, in the source, at the heading line it opens with
    assert_offsets_point_at_text(chunks)


def test_sections_that_share_only_the_document_keep_their_own_chunks(embedder):
    text = (
        "# Guide\n\n## Install\n\n### Linux\n\nUse the package.\n\n### macOS\n\nUse the tap.\n\n"
        "## Upgrade\n\nStop, then replace.\n"
    )
    chunks = chunks_of(doc := document(text), embedder)
    assert [(c.section, c.text) for c in chunks] == [
        ("Install", "### Linux\n\nUse the package.\n\n### macOS\n\nUse the tap."),
        ("Upgrade", "Stop, then replace."),
    ]
    assert chunks[0].embed_text.startswith("Guide > Install\n### Linux")
    assert chunks[0].start_offset == doc.text.index("### Linux")


def _reference_table(rows: int) -> str:
    body = "\n".join(f"| `proxy_option_{i}` | {' '.join(WORDS[: 3 + i % 7])} | `{i}s` |" for i in range(rows))
    return f"| Directive | Description | Default |\n|-----------|-------------|:-------:|\n{body}"


def test_a_long_table_is_cut_between_rows_and_every_piece_repeats_the_header(embedder):
    table = _reference_table(60)
    doc = document(f"# Guide\n\n## Reference\n\nThe directives:\n\n{table}\n")
    chunks = chunks_of(doc, embedder)
    pieces = [chunk for chunk in chunks if "proxy_option_" in chunk.text]
    assert len(pieces) >= 3
    rows = table.splitlines()[2:]
    seen = []
    for chunk in pieces:
        lines = chunk.text.splitlines()
        start = lines.index("| Directive | Description | Default |")
        assert lines[start + 1] == "|-----------|-------------|:-------:|"
        assert all(line in rows for line in lines[start + 2 :]), "a row was cut"
        seen += lines[start + 2 :]
        assert embedder.count_tokens(chunk.text) <= 200 and embedder.count_tokens(chunk.embed_text) <= limit(embedder)
    assert seen == rows  # every row once, in order
    assert_offsets_point_at_text(chunks)
    assert_covers_source(doc, chunks)


def test_a_long_table_with_its_lead_in_and_a_note_in_the_same_block_keeps_them(embedder):
    table = _reference_table(60)
    doc = document(f"## Reference\n\nThe directives:\n{table}\nDefaults apply per server.\n")
    chunks = chunks_of(doc, embedder)
    assert chunks[0].text.startswith("The directives:")
    assert chunks[-1].text.endswith("Defaults apply per server.")
    assert all(c.text.startswith("| Directive |") for c in chunks if "proxy_option_" in c.text.splitlines()[0])
    assert_covers_source(doc, chunks)


def test_a_table_row_longer_than_a_chunk_is_cut_with_the_header_kept(embedder):
    row = "| `proxy_long` | " + _giant_paragraph(300) + " | `off` |"
    doc = document(f"## Reference\n\n| Directive | Description | Default |\n| --- | --- | --- |\n{row}\n")
    chunks = chunks_of(doc, embedder)
    assert len(chunks) > 1
    assert all(
        chunk.text.startswith("| Directive | Description | Default |\n| --- | --- | --- |\n") for chunk in chunks
    )
    assert all(embedder.count_tokens(chunk.text) <= 200 for chunk in chunks)


def _giant_paragraph(words: int = 4000) -> str:
    rng = random.Random(7)
    return " ".join(rng.choice(WORDS) + ("." if i % 17 == 16 else "") for i in range(words))


def _giant_code_block(lines: int = 500) -> str:
    body = "\n".join(f"    result_{i} = client.fetch(shard={i % 8}, key='user:{i}', timeout=0.2)" for i in range(lines))
    return f"```python\ndef load_all(client):\n{body}\n```"


def _random_blob(length: int) -> str:
    rng = random.Random(3)
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789+/=") for _ in range(length))


def _cjk() -> str:
    return "## 缓存\n\n" + "".join(f"缓存在写入时失效{i}，复制是异步的。" for i in range(400))


BIG_CASES = {
    "giant paragraph": lambda: f"# Guide\n\n## Replication\n\n{_giant_paragraph()}\n",
    "giant code block": lambda: f"# Guide\n\n## Client\n\n{_giant_code_block()}\n",
    "code block with one huge line": lambda: "## Blob\n\n```\n" + _random_blob(30000) + "\n```\n",
    "giant table": lambda: (
        "## Limits\n\n| key | value |\n| --- | --- |\n"
        + "\n".join(f"| setting_{i} | {' '.join(WORDS[: 1 + i % 9])} |" for i in range(400))
    ),
    "text without spaces (CJK)": _cjk,
    "heading as long as a paragraph": lambda: (
        "# " + _giant_paragraph(300) + "\n\nShort body.\n\n## " + _giant_paragraph(200) + "\n\n" + _giant_paragraph(600)
    ),
}


@pytest.mark.parametrize("chunk_tokens", [200, 1000])
@pytest.mark.parametrize("case", list(BIG_CASES))
def test_no_chunk_exceeds_the_model_limit(embedder, case, chunk_tokens):
    text = BIG_CASES[case]()
    doc = document(text, title="A rather long document title about distributed caching and replication")
    chunks = chunks_of(doc, embedder, chunk_tokens=chunk_tokens)
    assert len(chunks) > 1
    worst = max(embedder.count_tokens(chunk.embed_text) for chunk in chunks)
    assert worst <= limit(embedder), f"{case}: an embedded chunk has {worst} tokens, over {limit(embedder)}"
    longest = max(embedder.count_tokens(chunk.text) for chunk in chunks)
    assert longest <= chunk_tokens, f"{case}: a chunk's text has {longest} tokens, over {chunk_tokens}"
    assert_offsets_point_at_text(chunks)
    assert_covers_source(doc, chunks)


def test_the_budget_counts_the_text_and_the_heading_prefix_takes_the_rest_of_the_window(embedder):
    title = "Converting a hardware load balancer configuration to the software proxy"
    paragraphs = "\n\n".join(
        f"Step {i}: move the {WORDS[i % len(WORDS)]} setting to the upstream block." for i in range(40)
    )
    doc = document(f"## Virtual servers and their listeners\n\n{paragraphs}\n", title=title)
    chunks = chunks_of(doc, embedder, chunk_tokens=100)
    prefix = embedder.count_tokens(chunks[0].prefix)
    assert prefix > 15
    # text up to the chunk size, not the chunk size less the title and section line
    assert max(chunk.tokens for chunk in chunks) > 100 - prefix
    assert all(chunk.tokens <= 100 for chunk in chunks)
    assert all(embedder.count_tokens(chunk.embed_text) <= limit(embedder) for chunk in chunks)


def test_long_title_leaves_room_for_the_text(embedder):
    doc = document("Body of the document.\n", title=" ".join(WORDS * 30))
    [chunk] = chunks_of(doc, embedder)
    assert embedder.count_tokens(chunk.embed_text) <= limit(embedder)
    assert chunk.embed_text.endswith("\nBody of the document.")


def test_code_blocks_and_tables_that_fit_stay_whole(embedder):
    code = "```python\ndef save(user):\n\n    db.save(user)\n\n    cache.set(user.id, user)\n```"
    table = "| policy | evicts |\n| --- | --- |\n| LRU | least recently used |\n| LFU | least frequently used |"
    prose = " ".join(["Caches trade freshness for load."] * 25)
    text = f"# Guide\n\n## Write path\n\n{prose}\n\n{code}\n\n{prose}\n\n{table}\n\n{prose}\n"
    chunks = chunks_of(doc := document(text), embedder, chunk_tokens=120)
    assert len(chunks) >= 3
    assert sum(code in chunk.text for chunk in chunks) == 1
    assert sum(table in chunk.text for chunk in chunks) == 1
    for chunk in chunks:  # no chunk holds a piece of either without the whole
        assert ("db.save(user)" in chunk.text) == (code in chunk.text)
        assert ("| LFU |" in chunk.text) == (table in chunk.text)
    assert_offsets_point_at_text(chunks)
    assert doc.text[chunks[0].start_offset :].startswith("Caches trade")


def test_heading_lookalikes_inside_code_are_not_headings(embedder):
    text = "# Guide\n\n## Setup\n\n```bash\n# install the client\npip install redis\n```\n\nAfter the block.\n"
    chunks = chunks_of(document(text), embedder)
    assert {chunk.section for chunk in chunks} == {"Setup"}
    assert "# install the client\npip install redis" in chunks[0].text


def test_start_offsets_point_into_the_source(embedder, tmp_path):
    source = tmp_path / "caching.md"
    source.write_text(textwrap.dedent(CACHING_MD).lstrip())
    doc = load(SourceFile(source, "docs", "caching.md"), 10**7)
    chunks = chunks_of(doc, embedder, chunk_tokens=40)
    assert len(chunks) >= 5
    assert_offsets_point_at_text(chunks)
    offsets = [chunk.start_offset for chunk in chunks]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)


def test_ids_are_deterministic_and_unique_per_root(embedder, tmp_path):
    for root in ("team-a", "team-b"):
        (tmp_path / root).mkdir()
        (tmp_path / root / "README.md").write_text(textwrap.dedent(CACHING_MD).lstrip())
    found = discover([tmp_path / "team-a", tmp_path / "team-b"])
    docs = [load(ref, 10**7) for ref in found.files]
    first = [[c.id for c in chunks_of(doc, embedder, chunk_tokens=40)] for doc in docs]
    again = [[c.id for c in chunks_of(load(ref, 10**7), embedder, chunk_tokens=40)] for ref in found.files]
    assert first == again
    assert len(set(first[0])) == len(first[0])
    assert not set(first[0]) & set(first[1])
    # the id follows the content: an edit changes the ids of the chunks it touches
    edited = Document(docs[0].source, docs[0].text.replace("never stale", "rarely stale"), docs[0].title, "team", "x")
    changed = [c.id for c in chunks_of(edited, embedder, chunk_tokens=40)]
    assert changed != first[0] and set(changed) & set(first[0])


def test_metadata_carries_what_citations_need(embedder):
    doc = document("## Retries\n\nRetry three times.\n", title="Payments", root="corpus", relpath="team/payments.md")
    doc.tags, doc.updated = ["adr", "payments"], "2024-06-10"
    [chunk] = chunks_of(doc, embedder)
    meta = chunk.metadata()
    assert meta["source"] == "team/payments.md" and meta["path"] == "corpus/team/payments.md"
    assert meta["source_key"] == "corpus::team/payments.md"
    assert (meta["title"], meta["section"], meta["doc_type"]) == ("Payments", "Retries", "team")
    assert (meta["position"], meta["start_offset"], meta["tags"], meta["updated"]) == (
        0,
        12,
        "adr, payments",
        "2024-06-10",
    )
    assert meta["tokens"] == embedder.count_tokens("Retry three times.")
    assert all(isinstance(value, str | int) for value in meta.values())


# -- repeated text (found by the fault drill's hostile set, issue 24) --------------------------------


def test_a_document_that_repeats_itself_keeps_each_chunk_text_once(embedder):
    doc = document("# Openers\n\n" + "{{< a " * 4000 + "\n\n## Real\n\nLeases expire unless renewed.\n")
    chunks = chunks_of(doc, embedder)
    texts = [chunk.text for chunk in chunks]
    assert len(texts) == len(set(texts)) < 10
    assert [chunk.position for chunk in chunks] == list(range(len(chunks)))  # neighbours stay neighbours
    assert "Leases expire unless renewed." in texts[-1]


def test_the_same_text_under_different_headings_stays(embedder):
    doc = document("# API\n\n## Create\n\nReturns nothing.\n\n## Delete\n\nReturns nothing.\n", title="API")
    chunks = chunks_of(doc, embedder, chunk_tokens=32)
    assert [chunk.section for chunk in chunks if "Returns nothing." in chunk.text] == ["Create", "Delete"]
