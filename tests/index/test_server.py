"""The same ingest against a real `chroma run` server (HttpClient), started on a free port by a fixture."""

from __future__ import annotations

import uuid

import pytest
from conftest import MINI_CORPUS, assert_store_consistent, make_settings, parse_json_output, run_rag

from rag.app.stats import collect_stats
from rag.documents.discovery import root_label
from rag.index.collection_metadata import ModelMismatchError
from rag.index.keyword import KeywordIndex
from rag.index.store import Store, StoreError
from rag.ingest.pipeline import ingest

pytestmark = pytest.mark.server


@pytest.fixture
def server_settings(chroma_server, tmp_path):
    """Settings for the server, with a collection of its own so tests never see each other's chunks."""
    host, port = chroma_server
    return make_settings(
        tmp_path / "data", chroma_host=host, chroma_port=port, collection=f"test-{uuid.uuid4().hex[:12]}"
    )


def on_server(settings, data_dir) -> list:
    """The command-line options that point a command at the test's ``chroma run`` server, with its own data dir."""
    return [
        "--chroma-host", settings.chroma_host, "--chroma-port", settings.chroma_port,
        "--collection", settings.collection, "--data-dir", data_dir,
    ]


def test_ingest_goes_to_the_server_not_to_disk(server_settings, sample_corpus, embedder):
    report = ingest([sample_corpus], server_settings, embedder=embedder)
    assert (report.files_added, report.files_failed) == (8, [])
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    direct = chromadb.HttpClient(
        host=server_settings.chroma_host,
        port=server_settings.chroma_port,
        settings=ChromaSettings(anonymized_telemetry=False),
    )
    assert direct.get_collection(server_settings.collection).count() == report.chunks_total
    store = Store(server_settings)
    assert store.location == f"chroma server http://{server_settings.chroma_host}:{server_settings.chroma_port}"
    assert not (server_settings.data_dir / "chroma").exists()
    assert not (server_settings.data_dir / "write.lock").exists()  # the server takes many writers, no lock
    chunks, manifest = assert_store_consistent(server_settings)
    assert report.chunks_total == len(chunks) > 8
    assert {entry[3] for entry in manifest.values()} == {"reference", "team"}
    hit = store.query(embedder.embed_query("write-through cache"), k=1)
    assert hit["metadatas"][0][0]["source"] == "references/caching.md"
    assert KeywordIndex.load(server_settings.data_dir).revision == store.revision() != ""


def test_incremental_and_prune_on_the_server(server_settings, sample_corpus, tmp_path, embedder, write_docs):
    ingest([sample_corpus], server_settings, embedder=embedder)
    team = write_docs(tmp_path / "team-docs", {"README.md": "# Team\n\nWe own checkout.\n"})
    ingest([team], server_settings, embedder=embedder)
    (sample_corpus / "team" / "payments-service.md").write_text("# Payments\n\n## Retries\n\nRetry twice.\n")
    (sample_corpus / "team" / "oncall-runbook.txt").unlink()
    kept = ingest([sample_corpus], server_settings, embedder=embedder, prune=False)
    assert (kept.files_added, kept.files_updated, kept.files_unchanged, kept.files_removed) == (0, 1, 6, 0)
    pruned = ingest([sample_corpus], server_settings, embedder=embedder)
    assert (pruned.files_updated, pruned.files_unchanged, pruned.files_removed, pruned.chunks_embedded) == (0, 7, 1, 0)
    _, manifest = assert_store_consistent(server_settings)
    assert f"{root_label(team)}::README.md" in manifest  # another root: never pruned by this run
    assert len(manifest) == len(MINI_CORPUS)  # 8 - 1 removed + 1 team README
    stored = Store(server_settings).get(where={"source_key": f"{root_label(sample_corpus)}::team/payments-service.md"})
    assert stored["documents"] == ["Retry twice."]


def test_model_mismatch_on_the_server(server_settings, sample_corpus, embedder):
    ingest([sample_corpus], server_settings, embedder=embedder)
    with pytest.raises(ModelMismatchError, match="--reindex"):
        Store(server_settings.with_overrides(embedding_model="another-model")).chunks()


def test_unreachable_server_is_a_clear_error(tmp_path):
    from conftest import free_port

    settings = make_settings(tmp_path / "data", chroma_host="127.0.0.1", chroma_port=free_port())
    with pytest.raises(StoreError, match="cannot reach the Chroma server at 127.0.0.1"):
        Store(settings)


def test_cli_stats_against_the_server(server_settings, sample_corpus, embedder, tmp_path):
    ingest([sample_corpus], server_settings, embedder=embedder)
    expected = collect_stats(server_settings)
    process = run_rag("stats", "--json", *on_server(server_settings, server_settings.data_dir), cwd=tmp_path)
    assert process.returncode == 0, process.stderr
    stats = parse_json_output(process)
    assert stats["store"].startswith("chroma server http://127.0.0.1:")
    assert (stats["documents"], stats["chunks"]) == (8, expected["chunks"])
    assert {t: row["documents"] for t, row in stats["by_doc_type"].items()} == {"reference": 4, "team": 4}


def test_a_second_host_sees_another_hosts_ingest_by_keyword_pulling_only_the_changed_file(
    server_settings, sample_corpus, tmp_path, embedder, monkeypatch
):
    """Two hosts, each with its own data directory, one server. Host B's keyword index lives on B; when host A (another
    process) ingests, B compares the server's manifest of files with its index and pulls only the changed file's
    chunks, not every chunk."""
    from rag.search.retrieval import Retriever

    monkeypatch.chdir(tmp_path)  # both hosts name the folder "corpus"
    host_b = server_settings.with_overrides(data_dir=tmp_path / "host-b")
    ingest([sample_corpus], server_settings, embedder=embedder)
    reader = Retriever(host_b, embedder=embedder)
    assert reader.search("outbox", mode="keyword").passages  # B's first index: every chunk, once

    pulled: list[int] = []
    real_fetch = Store.chunks_of_files
    monkeypatch.setattr(Store, "iter_all", lambda self: pulled.append(-1) or iter(()))
    monkeypatch.setattr(Store, "chunks_of_files", lambda self, keys: pulled.append(len(keys)) or real_fetch(self, keys))
    (sample_corpus / "team" / "payments-service.md").write_text("# Payments\n\n## Limits\n\nThe zanzibarquux cap.\n")
    host_a = run_rag("ingest", sample_corpus, "--json", *on_server(server_settings, tmp_path / "host-a"), cwd=tmp_path)
    assert host_a.returncode == 0, host_a.stderr
    assert parse_json_output(host_a)["files_updated"] == 1
    found = reader.search("zanzibarquux", mode="keyword").passages
    assert [p.source for p in found] == ["team/payments-service.md"]
    assert pulled == [1], "B read one file's chunks, never the whole store"
    assert KeywordIndex.load(host_b.data_dir).revision == Store(host_b).revision()
