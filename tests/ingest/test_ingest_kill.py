"""SIGKILL mid-ingest, then edits, then a second run: the store converges to exactly what a clean
ingest of the final files gives (no duplicates, no orphans, a manifest that matches)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import (
    REPO,
    assert_store_consistent,
    clean_env,
    make_settings,
    parse_json_output,
    run_rag,
    store_state,
    write_tree,
)

from rag.app.stats import collect_stats
from rag.documents.discovery import SourceFile
from rag.documents.loading import load
from rag.index.keyword import KeywordIndex
from rag.index.store import FileRecord, Store
from rag.ingest.chunking import chunk_document
from rag.ingest.pipeline import ingest

FILES = 30
SECTIONS = 40  # one chunk each: about 1,200 chunks in all
CHUNK_TOKENS = 48  # small chunks keep the three ingests of this test quick on a 2-core machine

WORDS = (
    "cache shard replica leader follower quorum partition offset consumer producer broker queue latency "
    "throughput backpressure idempotency retry timeout circuit breaker bulkhead outbox saga snapshot "
    "compaction index tenant region failover lease heartbeat gossip vector clock checkpoint"
).split()

PROGRESS_INGEST = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from rag.config import Settings
    from rag.ingest.pipeline import ingest

    def progress(event):
        print(f"{event.done}/{event.total} {event.status} {event.path}", flush=True)

    settings = Settings(_env_file=None, data_dir=Path(sys.argv[1]), chunk_tokens=int(sys.argv[3]))
    ingest([Path(sys.argv[2])], settings, progress=progress)
    print("finished", flush=True)
    """
)


def paragraph(rng: random.Random, words: int = 20) -> str:
    return " ".join(rng.choice(WORDS) + ("." if i % 10 == 9 else "") for i in range(words))


def write_doc(path: Path, number: int, rng: random.Random, version: str = "", sections: int = SECTIONS) -> None:
    parts = [f"## Section {j} {version}\n\n{paragraph(rng)}" for j in range(sections)]
    path.write_text(f"# Design note {number} {version}\n\n" + "\n\n".join(parts) + "\n")


def test_sigkill_mid_ingest_then_rerun_converges(tmp_path, monkeypatch, embedder):
    monkeypatch.chdir(tmp_path)  # root labels ("corpus") are the same for the child and for this process
    rng = random.Random(2024)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for number in range(FILES):
        write_doc(corpus / f"note-{number:02}.md", number, rng)
    data = tmp_path / "killed"

    child = subprocess.Popen(
        [sys.executable, "-c", PROGRESS_INGEST, str(data), "corpus", str(CHUNK_TOKENS)],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = child.stdout.readline()
        assert first.strip(), f"the ingest printed no progress: {child.stderr.read()}"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    assert "finished" not in child.stdout.read()

    settings = make_settings(data, chunk_tokens=CHUNK_TOKENS)
    _, killed_manifest = store_state(settings)
    done = [key for key, entry in killed_manifest.items() if entry[2]]
    assert 0 < len(done) < FILES, f"the kill did not land mid-ingest ({len(done)} of {FILES} files complete)"

    # the world moves on before the rerun: edits and deletions on both sides of the kill, one new file
    for number in (0, len(done) - 1, len(done), FILES - 1):
        write_doc(corpus / f"note-{number:02}.md", number, rng, version="v2")
    for number in (1, len(done) + 1, FILES - 2):
        (corpus / f"note-{number:02}.md").unlink()
    write_doc(corpus / "note-new.md", 99, rng)

    report = ingest([corpus], settings, embedder=embedder)
    assert not report.files_failed
    assert report.files_seen == FILES - 3 + 1
    assert report.files_removed >= 1  # at least the deleted file that was complete before the kill

    fresh = make_settings(tmp_path / "fresh", chunk_tokens=CHUNK_TOKENS)
    clean = ingest([corpus], fresh, embedder=embedder)
    assert clean.files_added == FILES - 3 + 1 and not clean.files_failed

    converged_chunks, converged_manifest = assert_store_consistent(settings)
    clean_chunks, clean_manifest = assert_store_consistent(fresh)
    assert len(clean_chunks) > 1000
    assert converged_manifest == clean_manifest
    missing, extra = set(clean_chunks) - set(converged_chunks), set(converged_chunks) - set(clean_chunks)
    assert not missing and not extra, f"{len(missing)} chunks missing, {len(extra)} orphans or stale"
    assert converged_chunks == clean_chunks
    assert report.chunks_total == clean.chunks_total == len(clean_chunks)

    # the vector index answers like the clean one (nothing half-written left in it)
    store, reference = Store(settings), Store(fresh)
    query = embedder.embed_query("circuit breaker retry timeout")
    assert store.query(query, k=5)["ids"] == reference.query(query, k=5)["ids"]


def test_half_written_file_that_now_fails_leaves_nothing_behind(settings, tmp_path, monkeypatch, embedder):
    """The state a kill leaves inside one file's commit (entry marked incomplete, some of the new chunks
    upserted), and then the file turns bad before the rerun: it is reported, and its half is removed."""
    monkeypatch.chdir(tmp_path)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rng = random.Random(5)
    for number in range(3):
        write_doc(corpus / f"note-{number}.md", number, rng, sections=6)
    ingest([corpus], settings, embedder=embedder)
    store = Store(settings)
    records = store.file_records()

    # note-0 was being updated, note-new was being added, when the process died
    write_doc(corpus / "note-0.md", 0, rng, version="v2", sections=6)
    write_doc(corpus / "note-new.md", 7, rng, sections=6)
    for name in ("note-0.md", "note-new.md"):
        ref = SourceFile(corpus / name, "corpus", name)
        document = load(ref, settings.max_file_bytes)
        chunks = chunk_document(document, embedder.count_tokens, settings.chunk_tokens, settings.chunk_overlap, 256)
        previous = records.get(ref.key)
        store.save_file_records(
            [
                FileRecord(
                    ref.key,
                    "corpus",
                    name,
                    previous.file_hash if previous else "",
                    "team",
                    document.title,
                    len(chunks),
                    0.0,
                    complete=False,
                )
            ]
        )
        half = chunks[: len(chunks) // 2]
        store.upsert_chunks(
            [c.id for c in half],
            embedder.embed([c.embed_text for c in half]),
            [c.text for c in half],
            [c.metadata() for c in half],
        )

    (corpus / "note-0.md").write_bytes(b"")
    (corpus / "note-new.md").write_bytes(b"\x00\x01binary")
    report = ingest([corpus], settings, embedder=embedder)
    assert {failure.path for failure in report.files_failed} == {"corpus/note-0.md", "corpus/note-new.md"}
    chunks, manifest = assert_store_consistent(settings)
    assert set(manifest) == {"corpus::note-1.md", "corpus::note-2.md"}
    assert KeywordIndex.load(settings.data_dir).revision == Store(settings).revision()
    assert set(KeywordIndex.load(settings.data_dir).ids) == set(chunks)


def test_fault_drill_converges_to_a_clean_ingest(tmp_path, embedder, monkeypatch):
    """scripts/fault_drill.py with a small N: random kills (plain and --reindex) with edits between them, the
    hostile files of issue 24 in the corpus, then one finished ingest; chunks, manifest, BM25 and dense results
    match a clean ingest. (Every state of a reindex's swap: the tests above, and the drill's --swap-kills.)"""
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import fault_drill as drill

    lines: list[str] = []
    problems = drill.drill(
        runs=2, seed=11, files=8, work=tmp_path, embedder=embedder, say=lines.append, hostile=True
    )
    assert problems == [], "\n".join(lines + problems)
    assert len(lines) == 2


# -- a reindex killed at every step of its swap (issue 24, fault 1) ---------------------------------

SWAP_NOTES = {
    "alpha.md": "# Alpha service\n\nThe alpha service keeps user sessions in Redis with a one hour expiry.\n",
    "beta.md": "# Beta pipeline\n\nThe beta pipeline batches invoices nightly and retries failed exports.\n",
    "gamma.md": "# Gamma gateway\n\nThe gamma gateway rate limits tenants with a token bucket per API key.\n",
}
SWAP_OPERATIONS = 6  # renames of the old pair away, of the built pair in, and drops of the old pair


class Killed(BaseException):
    """Stands for SIGKILL: nothing in the code under test catches it, and no cleanup runs after it."""


def kill_swap_after(monkeypatch, operations: int) -> list[str]:
    """Kills the process (``Killed``) after ``operations`` collection renames or drops of the reindex swap;
    returns the log of those done. Chroma's own calls are counted, whatever the swap code looks like."""
    from chromadb.api.client import Client
    from chromadb.api.models.Collection import Collection

    from rag.ingest import reindex

    done: list[str] = []
    swapping = [False]
    rename, drop, swap_in = Collection.modify, Client.delete_collection, reindex.swap_in

    def step(what: str) -> None:
        if len(done) == operations:
            raise Killed(what)
        done.append(what)

    def counted_rename(self, name=None, metadata=None, configuration=None):
        if name is not None and swapping[0]:
            step(f"rename {self.name} -> {name}")
        return rename(self, name=name, metadata=metadata, configuration=configuration)

    def counted_drop(self, name, *args, **kwargs):
        if swapping[0]:
            step(f"drop {name}")
        return drop(self, name, *args, **kwargs)

    def counted_swap(*args, **kwargs):
        swapping[0] = True
        try:
            swap_in(*args, **kwargs)
        finally:
            swapping[0] = False
        step("after the swap")

    monkeypatch.setattr(Collection, "modify", counted_rename)
    monkeypatch.setattr(Client, "delete_collection", counted_drop)
    monkeypatch.setattr(reindex, "swap_in", counted_swap)
    return done


@pytest.mark.parametrize("operations", range(SWAP_OPERATIONS + 1))
def test_a_reindex_killed_at_any_step_of_its_swap_is_finished_by_the_next_ingest(
    settings, tmp_path, monkeypatch, embedder, operations
):
    monkeypatch.chdir(tmp_path)
    notes = write_tree(tmp_path / "notes", SWAP_NOTES)
    ingest([notes], settings, embedder=embedder)
    (notes / "beta.md").write_text("# Beta pipeline\n\nThe beta pipeline now streams invoices through Kafka.\n")
    (notes / "delta.md").write_text("# Delta database\n\nThe delta database runs PostgreSQL with two replicas.\n")

    with monkeypatch.context() as patch:
        done = kill_swap_after(patch, operations)
        with pytest.raises(Killed):
            ingest([notes], settings, embedder=embedder, reindex=True)
    assert len(done) == operations, done

    report = ingest([notes], settings, embedder=embedder)  # the next run, plain or not, must not fail
    assert not report.files_failed
    assert report.files_unchanged == len(SWAP_NOTES) + 1, report  # the complete build was swapped in
    chunks, manifest = assert_store_consistent(settings)
    clean = make_settings(tmp_path / "clean")
    ingest([notes], clean, embedder=embedder)
    assert (chunks, manifest) == assert_store_consistent(clean)
    store = Store(settings)
    assert store.collection_names() == {"knowledge", "knowledge-files"}
    assert collect_stats(settings)["documents"] == len(SWAP_NOTES) + 1
    hit = store.query(embedder.embed_query("invoices through Kafka"), k=1)
    assert hit["metadatas"][0][0]["path"] == "notes/beta.md"
    assert KeywordIndex.load(settings.data_dir).revision == store.revision()
    assert ingest([notes], settings, embedder=embedder, reindex=True).files_added == len(SWAP_NOTES) + 1


def test_files_a_killed_first_ingest_never_finished_count_as_added(settings, tmp_path, monkeypatch, embedder):
    """Killed while embedding its first group: the manifest holds entries marked incomplete for files that were
    never in the store. The rerun adds them; it does not call them updated (issue 24, fault 9)."""
    from rag.ingest.pipeline import RunVectors

    monkeypatch.chdir(tmp_path)
    notes = write_tree(tmp_path / "notes", SWAP_NOTES)

    def killed_while_embedding(self, texts):
        raise Killed("embedding")

    with monkeypatch.context() as patch:
        patch.setattr(RunVectors, "vectors", killed_while_embedding)
        with pytest.raises(Killed):
            ingest([notes], settings, embedder=embedder)
    _, manifest = store_state(settings)
    assert len(manifest) == len(SWAP_NOTES) and not any(entry[2] for entry in manifest.values())

    report = ingest([notes], settings, embedder=embedder)
    assert (report.files_added, report.files_updated) == (len(SWAP_NOTES), 0)
    assert_store_consistent(settings)


def test_the_hostile_files_are_refused_or_read_in_bounded_time(tmp_path, monkeypatch):
    """The small files of issue 24 that cost minutes and gigabytes (an alias bomb, shortcode runs, an include
    fan-out, nested HTML) with an rST substitution bomb and a merged DOCX cell, through the command line.
    The timeout is a hang guard: before the fixes this ingest did not finish in an hour."""
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import fault_drill as drill

    drill.write_hostile_files(tmp_path / "hostile")
    write_tree(tmp_path / "hostile", {"good.md": "# Good\n\nLeases expire unless the holder renews them.\n"})
    process = run_rag("ingest", "hostile", "--json", "--data-dir", tmp_path / "data", cwd=tmp_path, timeout=300)
    assert process.returncode == 3, process.stderr[-2000:]
    assert len(process.stdout) < 20_000  # the report is a few lines, not the expansion of a bomb
    report = parse_json_output(process)
    failures = {failure["path"]: failure["error"] for failure in report["files_failed"]}
    assert "10,000 values" in failures["hostile/alias-bomb.md"]
    assert "RAG_MAX_EXPANSION" in failures["hostile/fan-out.md"]
    assert "RAG_MAX_EXPANSION" in failures["hostile/substitutions.rst"]
    assert all(len(reason) < 200 for reason in failures.values())
    read = {"good.md", "nested.html", "shortcode-spaces.md", "shortcode-openers.md", "merged.docx"}
    assert not read & {path.removeprefix("hostile/") for path in failures}
    assert report["chunks_total"] < 300
