"""The abstention bar calibrated per store (``rag.search.confidence``): measured from the store's own words, once per
revision, kept beside the store; a configured threshold still wins."""

from __future__ import annotations

import json

import pytest
from conftest import make_settings, write_tree

from rag.ingest.pipeline import ingest
from rag.search.confidence import CACHE_FILE, PROBE_WORDS, PROBES, abstain_bar, probe_queries
from rag.search.retrieval import Retriever

DOCS = {
    "pooling.md": "# Connection pooling\n\nPgBouncer in transaction mode lets many client connections share a small "
    "pool of server connections. Size the pool from the database's max_connections and the number of app "
    "instances; a pool larger than the database can serve only moves the queue.\n",
    "retries.md": "# Retries\n\nRetry idempotent calls with exponential backoff and full jitter, cap the attempts, "
    "and give every client a retry budget so that a failing dependency is not flooded by its own callers.\n",
    "caching.md": "# Caching\n\nCache-aside reads the cache first and fills it from the database on a miss; "
    "expire entries with a TTL and delete them when the row changes, so readers never see stale prices long.\n",
}


def test_probes_are_the_stores_own_words_in_no_order_and_the_same_every_time():
    texts = list(DOCS.values())
    probes = probe_queries(texts)
    assert probes == probe_queries(texts) and len(probes) == PROBES
    vocabulary = {w.strip(".,;'").lower() for text in texts for w in text.split()}
    assert all(len(p.split()) == PROBE_WORDS and set(p.split()) <= vocabulary for p in probes)
    assert probe_queries(["too few words"]) == []


def test_a_store_is_calibrated_once_per_revision_and_keeps_it_beside_the_store(tmp_path, embedder):
    corpus = write_tree(tmp_path / "corpus", DOCS)
    settings = make_settings(tmp_path / "data")
    ingest([corpus], settings, embedder=embedder)
    retriever = Retriever(settings, embedder=embedder)
    first = retriever.calibration()
    assert first is not None and first.revision == retriever.store.revision()
    assert 0.0 < first.probe_mean < 1.0 and first.probe_std > 0.0
    kept = json.loads((settings.data_dir / CACHE_FILE).read_text())
    assert kept["probe_mean"] == first.probe_mean
    # another process reads it from the data directory instead of measuring again
    assert Retriever(settings, embedder=embedder).calibration() == first
    # an ingest that changes the store makes a new calibration
    write_tree(corpus, {"queues.md": "# Queues\n\nA dead-letter queue keeps messages that failed every retry, so "
                        "an operator can inspect them and replay the ones a fixed consumer can now process.\n"})
    ingest([corpus], settings, embedder=embedder)
    second = retriever.calibration()
    assert second is not None and second.revision == retriever.store.revision() != first.revision
    assert abstain_bar(None, retriever) == second.bar <= 0.46


def test_a_configured_threshold_wins_over_the_calibration(tmp_path, embedder):
    corpus = write_tree(tmp_path / "corpus", DOCS)
    settings = make_settings(tmp_path / "data", abstain_threshold=0.5)
    ingest([corpus], settings, embedder=embedder)
    assert abstain_bar(settings.abstain_threshold, Retriever(settings, embedder=embedder)) == 0.5


def test_an_empty_store_has_no_calibration(tmp_path, embedder):
    retriever = Retriever(make_settings(tmp_path / "data"), embedder=embedder)
    assert retriever.calibration() is None
    assert abstain_bar(None, retriever) == pytest.approx(0.46)
