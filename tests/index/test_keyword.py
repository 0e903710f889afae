"""The keyword index is updated file by file (segments plus deletions in SQLite), ranks exactly as a fresh build over
the same chunks, survives a kill in the middle of an update, and gives each reader a consistent snapshot."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections import Counter

import pytest
from conftest import clean_env, make_settings, write_tree

from rag.index.keyword import KeywordIndex
from rag.index.keyword_segments import FORMAT
from rag.index.keyword_writer import MAX_BLOCKS, MAX_SEGMENTS, PURGE_SHARE
from rag.index.store import Store
from rag.ingest.pipeline import ingest

DOCS = {
    "caching.md": "# Caching\n\n## Write-through\n\nThe cache is written together with the database.\n\n"
    "## Invalidation\n\nDelete the key after the write; readers fill the cache again.\n",
    "kafka.md": "# Kafka\n\n## Partitions\n\nA topic is split into partitions; each partition has one leader.\n",
    "retries.md": "# Retries\n\n## Backoff\n\nRetry with exponential backoff and jitter, at most three times.\n",
    "outbox.md": "# Outbox\n\nThe order and its event are written in one transaction; a relay publishes the "
    "event to Kafka. The quetzalcoatl relay marks rows sent.\n",
    "leases.md": "# Leases\n\nA lease expires unless renewed by a heartbeat; the leader holds the lease.\n",
    "tenancy.md": "# Tenancy\n\nEvery row carries a tenant id; the cache key starts with the tenant.\n",
}
QUERIES = [
    "cache invalidation after a write",
    "kafka partition leader",
    "retry backoff jitter",
    "outbox relay transaction",
    "lease heartbeat leader",
    "tenant cache key",
    "zanzibarquux",
    "quetzalcoatl",
    "marzipanology partitions",
]


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    """Folders are named relative to the working directory: "docs" here."""
    monkeypatch.chdir(tmp_path)


def database(settings) -> sqlite3.Connection:
    return sqlite3.connect(KeywordIndex.directory(settings.data_dir) / "index.sqlite3")


def meta(settings) -> dict[str, str]:
    with database(settings) as connection:
        return dict(connection.execute("SELECT key, value FROM meta").fetchall())


def assert_ranks_like_a_fresh_build(settings) -> None:
    """The persisted index, however it was updated, gives the hits and scores of an index built from scratch."""
    updated = KeywordIndex.load(settings.data_dir)
    fresh = KeywordIndex.rebuild(Store(settings), settings.data_dir, persist=False)
    assert updated is not None and updated.chunk_count == fresh.chunk_count == Store(settings).count()
    assert set(updated.ids) == set(Store(settings).get()["ids"])
    for query in QUERIES:
        got, expected = updated.search(query, 20), fresh.search(query, 20)
        assert [chunk for chunk, _ in got] == [chunk for chunk, _ in expected], query
        assert [score for _, score in got] == pytest.approx([score for _, score in expected], rel=1e-5), query
    paths = Counter(meta["path"] for meta in Store(settings).get()["metadatas"])
    assert updated.document_sizes() == fresh.document_sizes() == paths
    assert sorted(updated.sources) == sorted(fresh.sources) and len(updated.sources) == len(paths)
    assert updated.ids[::2] == list(updated.ids)[::2] and updated.ids[-1] == list(updated.ids)[-1]


def sources_found(settings, query: str) -> set[str]:
    index = KeywordIndex.load(settings.data_dir)
    return set(index.documents_of([chunk for chunk, _ in index.search(query, 10)]).values())


def test_an_ingest_updates_only_the_files_it_changed(tmp_path, embedder, monkeypatch):
    docs = write_tree(tmp_path / "docs", DOCS)
    settings = make_settings(tmp_path / "data")
    ingest([docs], settings, embedder=embedder)
    first = meta(settings)
    assert sources_found(settings, "quetzalcoatl") == {"docs/outbox.md"}

    (docs / "kafka.md").write_text(DOCS["kafka.md"] + "\n## Naming\n\nTopics of the zanzibarquux team start with it.\n")
    (docs / "outbox.md").unlink()
    (docs / "pastry.md").write_text("# Pastry\n\nMarzipanology is the study of almond paste.\n")
    read_whole: list[str] = []
    fetched: list[list[str]] = []
    real_fetch = Store.chunks_of_files
    monkeypatch.setattr(Store, "iter_all", lambda self: read_whole.append("all") or iter(()))
    monkeypatch.setattr(Store, "chunks_of_files", lambda self, keys: fetched.append(keys) or real_fetch(self, keys))
    report = ingest([docs], settings, embedder=embedder)
    assert (report.files_added, report.files_updated, report.files_removed) == (1, 1, 1)

    second = meta(settings)
    assert second["build"] == first["build"], "updated, not built again"
    assert int(second["generation"]) == int(first["generation"]) + 1
    assert second["revision"] == Store(settings).revision()
    assert read_whole == [] and sorted(key for keys in fetched for key in keys) == ["docs::kafka.md", "docs::pastry.md"]
    assert sources_found(settings, "zanzibarquux") == {"docs/kafka.md"}
    assert sources_found(settings, "marzipanology") == {"docs/pastry.md"}
    assert sources_found(settings, "quetzalcoatl") == set()
    monkeypatch.undo()
    assert_ranks_like_a_fresh_build(settings)


def test_many_small_updates_are_merged_and_still_rank_like_a_fresh_build(tmp_path, embedder):
    docs = write_tree(tmp_path / "docs", DOCS)
    settings = make_settings(tmp_path / "data")
    ingest([docs], settings, embedder=embedder)
    build = meta(settings)["build"]
    for version in range(2 * MAX_SEGMENTS + 2):
        (docs / "leases.md").write_text(DOCS["leases.md"] + f"\nRevision {version}: the lease lasts {version} s.\n")
        ingest([docs], settings, embedder=embedder)
    with database(settings) as connection:
        segments = connection.execute("SELECT segment, docs, dead FROM segments").fetchall()
        blocks = connection.execute("SELECT count(*) FROM blocks").fetchone()[0]
    assert len(segments) <= MAX_SEGMENTS and blocks <= MAX_BLOCKS
    assert all(dead < PURGE_SHARE * docs for _, docs, dead in segments), segments
    assert meta(settings)["build"] == build, "merged as it went, never built again"
    assert_ranks_like_a_fresh_build(settings)


def test_a_reader_keeps_its_snapshot_and_the_next_one_reads_only_the_change(tmp_path, embedder):
    docs = write_tree(tmp_path / "docs", DOCS)
    settings = make_settings(tmp_path / "data")
    ingest([docs], settings, embedder=embedder)
    before = KeywordIndex.open(Store(settings), settings.data_dir)
    (docs / "pastry.md").write_text("# Pastry\n\nMarzipanology is the study of almond paste.\n")
    (docs / "retries.md").unlink()
    ingest([docs], settings, embedder=embedder)

    assert before.search("marzipanology", 5) == [], "a reader searches the chunks it loaded, not later ones"
    after = KeywordIndex.open(Store(settings), settings.data_dir, previous=before)
    assert after.generation == before.generation + 1 and after.build == before.build
    assert [after.documents_of([c])[c] for c, _ in after.search("marzipanology", 5)] == ["docs/pastry.md"]
    assert after.search("jitter backoff", 5) == []
    assert after.chunk_count == Store(settings).count()
    assert "docs/retries.md" not in after.document_sizes(), "a removed file leaves a reader loaded from an older one"
    assert not [source for source in after.sources if source.endswith("retries.md")]


KILLED_UPDATE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from rag.config import Settings
    from rag.index import keyword_writer
    from rag.ingest.pipeline import ingest

    real = keyword_writer._Writer._add_segment

    def add_then_hang(self, chunks):
        real(self, chunks)
        print("written", flush=True)
        time.sleep(120)

    keyword_writer._Writer._add_segment = add_then_hang
    ingest([Path(sys.argv[2])], Settings(_env_file=None, data_dir=Path(sys.argv[1])))
    """
)


def test_an_update_killed_midway_leaves_the_last_index_and_the_rerun_brings_it_up_to_date(tmp_path, embedder):
    """The ingest updates the index just before it sets the store's new revision; killed in the middle of that
    update, the index is the last committed one (readable, the store's revision unchanged, so readers keep their
    view), and running the ingest again finishes both."""
    docs = write_tree(tmp_path / "docs", DOCS)
    settings = make_settings(tmp_path / "data")
    ingest([docs], settings, embedder=embedder)
    last = meta(settings)
    (docs / "pastry.md").write_text("# Pastry\n\nMarzipanology is the study of almond paste.\n")
    (docs / "caching.md").unlink()
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_UPDATE, str(settings.data_dir), str(docs)],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline()
        assert line.strip() == "written", child.stderr.read()
        os.kill(child.pid, signal.SIGKILL)  # the store has the new chunks; the index's transaction is half written
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert meta(settings) == last, "the killed update left nothing behind"
    stale = KeywordIndex.open(Store(settings), settings.data_dir)
    assert stale.revision == Store(settings).revision() == last["revision"] and Store(settings).pending()
    assert stale.search("marzipanology", 5) == [] and stale.search("invalidation", 5)

    report = ingest([docs], settings, embedder=embedder)
    assert report.chunks_embedded == 0, "the killed run's chunks are in the store already"
    assert meta(settings)["build"] == last["build"] and meta(settings)["revision"] == Store(settings).revision()
    assert sources_found(settings, "marzipanology") == {"docs/pastry.md"}
    assert sources_found(settings, "invalidation") == set()
    assert_ranks_like_a_fresh_build(settings)


def test_an_index_of_another_collection_or_format_is_built_again(tmp_path, embedder):
    docs = write_tree(tmp_path / "docs", DOCS)
    settings = make_settings(tmp_path / "data")
    ingest([docs], settings, embedder=embedder)
    first = meta(settings)
    ingest([docs], settings, embedder=embedder, reindex=True)  # a new collection swapped in
    assert meta(settings)["build"] != first["build"] and meta(settings)["collection"] == Store(settings).collection_id()
    assert_ranks_like_a_fresh_build(settings)
    with database(settings) as connection:
        connection.execute("UPDATE meta SET value = 'segments/0' WHERE key = 'format'")
    assert KeywordIndex.load(settings.data_dir) is None
    assert KeywordIndex.open(Store(settings), settings.data_dir).search("quetzalcoatl", 3)
    assert meta(settings)["format"] == FORMAT


def test_a_files_readers_follow_its_access_through_updates(tmp_path, embedder):
    """A folder ingested for one group, then for another: the keyword index, updated file by file, shows its
    chunks to the new group only, and to a reader who sees everything (groups None)."""
    docs = write_tree(tmp_path / "docs", {"ledger.md": "# Ledger\n\nThe quokka ledger closes at midnight.\n"})
    public = write_tree(tmp_path / "public", {"caching.md": DOCS["caching.md"]})
    settings = make_settings(tmp_path / "data")
    ingest([public], settings, embedder=embedder)
    ingest([docs], settings, embedder=embedder, access=("payments",))

    def found(groups):
        return bool(KeywordIndex.open(Store(settings), settings.data_dir).search("quokka ledger", 5, groups=groups))

    assert found(frozenset({"payments"})) and found(None)
    assert not found(frozenset()) and not found(frozenset({"risk"}))
    build = meta(settings)["build"]
    ingest([docs], settings, embedder=embedder, access=("risk",))
    assert meta(settings)["build"] == build, "updated, not built again"
    assert found(frozenset({"risk"})) and not found(frozenset({"payments"}))
    assert KeywordIndex.load(settings.data_dir).search("cache invalidation", 5, groups=frozenset()), "public stays"
    assert_ranks_like_a_fresh_build(settings)
