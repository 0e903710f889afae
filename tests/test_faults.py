"""Faults found by trying to break ingest, search, uploads and the store (issue 14): one test each.

Tiny corpora, the shared model; a subprocess only where another process is the point."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_store_consistent, clean_env, parse_json_output, run_rag, store_state, write_tree

from rag.app.feedback import FeedbackEntry, FeedbackStore
from rag.app.uploads import add_uploads, safe_filename, save_upload
from rag.cli import main as cli
from rag.documents.discovery import SourceFile
from rag.documents.errors import LoadError
from rag.documents.loading import Document, load
from rag.index.collection_metadata import ModelMismatchError
from rag.index.keyword import KeywordIndex
from rag.index.store import Store, StoreDamagedError
from rag.ingest.chunking import MAX_CHARS_PER_TOKEN, chunk_document
from rag.ingest.pipeline import ingest
from rag.search.access import LOCAL
from rag.search.retrieval import Retriever

NOTES = {
    "alpha.md": "# Alpha service\n\nThe alpha service keeps user sessions in Redis with a one hour expiry.\n",
    "beta.md": "# Beta pipeline\n\nThe beta pipeline batches invoices nightly and retries failed exports.\n",
    "gamma.md": "# Gamma gateway\n\nThe gamma gateway rate limits tenants with a token bucket per API key.\n",
    "delta.md": "# Delta database\n\nThe delta database runs PostgreSQL with two streaming replicas.\n",
}
NEW_DOC = "# Zyzzogeton relay\n\nThe zyzzogeton relay publishes outbox events to Kafka every second.\n"


@pytest.fixture
def notes(tmp_path: Path, monkeypatch) -> Path:
    """Four one-chunk docs under ``tmp_path/"notes"``, the working directory being ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    return write_tree(tmp_path / "notes", NOTES)


@pytest.fixture
def ingested(settings, notes, embedder):
    report = ingest([notes], settings, embedder=embedder)
    assert report.files_added == len(NOTES) and not report.files_failed
    return settings, notes


def sources(result) -> list[str]:
    return [passage.path for passage in result.passages]


def keyword_hits(settings, query: str) -> list[str]:
    store = Store(settings)
    index = KeywordIndex.open(store, settings.data_dir)
    ids = [chunk_id for chunk_id, _ in index.search(query, 5)]
    return [meta["path"] for meta in store.get(ids=ids)["metadatas"]] if ids else []


# -- data loss, stale data, corruption -------------------------------------------------------------


def test_f1_run_killed_before_the_revision_bump_is_repaired_by_the_rerun(ingested, embedder, monkeypatch):
    settings, notes = ingested
    (notes / "zyzzogeton.md").write_text(NEW_DOC)

    def die(self, revision=None):  # the process dies after its last chunk write, right before the bump
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Store, "bump_revision", die)
        with pytest.raises(KeyboardInterrupt):
            ingest([notes], settings, embedder=embedder)
    ingest([notes], settings, embedder=embedder)
    assert keyword_hits(settings, "zyzzogeton") == ["notes/zyzzogeton.md"]


def test_f2_a_long_lived_reader_sees_chunks_another_process_added(ingested, embedder, tmp_path):
    settings, notes = ingested
    retriever = Retriever(settings, embedder=embedder)
    assert "notes/zyzzogeton.md" not in sources(retriever.search("zyzzogeton relay outbox", k=3, mode="dense"))
    (notes / "zyzzogeton.md").write_text(NEW_DOC)
    process = run_rag("ingest", "notes", "--data-dir", settings.data_dir, cwd=tmp_path)
    assert process.returncode == 0, process.stderr
    for mode in ("dense", "hybrid", "keyword"):
        result = retriever.search("zyzzogeton relay outbox", k=3, mode=mode)
        assert sources(result)[0] == "notes/zyzzogeton.md", mode


def test_f2_replaced_clients_are_stopped_once_no_search_can_use_them(ingested, monkeypatch):
    """Reloading must not keep every earlier copy of the vector index alive (the UI reloads after each ingest)."""
    settings, _ = ingested
    monkeypatch.setattr("rag.index.store_files.RETIRE_AFTER", -1.0)  # due at once, instead of a minute later
    store = Store(settings)
    first = store.client
    assert store.count() == len(NOTES)
    store.forget_client()
    assert store.count() == len(NOTES)  # a new client serves
    store.forget_client()  # retiring the second stops the first, now due
    with pytest.raises(Exception):  # noqa: B017 - a stopped Chroma system fails in its own ways
        first.list_collections()
    assert store.count() == len(NOTES)


def test_f3_searches_keep_answering_during_a_reindex(ingested, embedder, monkeypatch):
    settings, notes = ingested
    monkeypatch.setattr("rag.ingest.pipeline.EMBED_GROUP_CHUNKS", 1)  # one file at a time: gamma.md comes last
    reader = Retriever(settings, embedder=embedder)
    seen: list[list[str]] = []

    def search_meanwhile(event) -> None:
        seen.append(sources(reader.search("token bucket rate limits", k=2)))

    report = ingest([notes], settings, embedder=embedder, reindex=True, progress=search_meanwhile)
    assert report.files_added == len(NOTES)
    assert len(seen) == len(NOTES)
    assert all(found and found[0] == "notes/gamma.md" for found in seen), seen
    assert sources(reader.search("token bucket rate limits", k=2))[0] == "notes/gamma.md"
    chunks, manifest = assert_store_consistent(settings)
    assert len(manifest) == len(NOTES)
    assert {c.name for c in Store(settings).client.list_collections()} == {"knowledge", "knowledge-files"}


def test_f3_a_reindex_killed_half_way_leaves_the_old_store_serving(ingested, embedder, monkeypatch):
    settings, notes = ingested
    before = store_state(settings)
    monkeypatch.setattr("rag.ingest.pipeline.EMBED_GROUP_CHUNKS", 1)

    def die(event):  # killed once the rebuild has written its first file
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest([notes], settings, embedder=embedder, reindex=True, progress=die)
    assert store_state(settings) == before
    assert sources(Retriever(settings, embedder=embedder).search("token bucket", k=1)) == ["notes/gamma.md"]
    report = ingest([notes], settings, embedder=embedder)  # the next run cleans the unfinished build away
    assert report.files_unchanged == len(NOTES)
    assert {c.name for c in Store(settings).client.list_collections()} == {"knowledge", "knowledge-files"}


def test_f3_a_reindex_of_nothing_leaves_an_empty_store_that_takes_new_files(ingested, tmp_path, embedder):
    settings, notes = ingested
    (tmp_path / "empty").mkdir()
    ingest([tmp_path / "empty"], settings, embedder=embedder, reindex=True)
    assert store_state(settings) == ({}, {})
    assert ingest([notes], settings, embedder=embedder).files_added == len(NOTES)


def test_f11_paths_with_double_colons_never_collide(settings, tmp_path, monkeypatch, embedder):
    monkeypatch.chdir(tmp_path)
    write_tree(tmp_path / "x", {"y::z.md": "# Inner colon\n\nThe first file talks about sharding keys.\n"})
    write_tree(tmp_path / "x::y", {"z.md": "# Outer colon\n\nThe second file talks about lease renewal.\n"})
    report = ingest([Path("x"), Path("x::y")], settings, embedder=embedder)
    assert report.files_added == 2 and report.files_seen == 2
    _, manifest = assert_store_consistent(settings)
    assert len(manifest) == 2
    paths = {meta["path"] for meta in Store(settings).get()["metadatas"]}
    assert paths == {"x/y::z.md", "x::y/z.md"}


def test_f20_zero_byte_database_is_reported_and_reindex_rebuilds(ingested, embedder, tmp_path):
    settings, notes = ingested
    sqlite = settings.data_dir / "chroma" / "chroma.sqlite3"
    sqlite.write_bytes(b"")
    process = run_rag("search", "token bucket", "--data-dir", settings.data_dir, cwd=tmp_path)
    assert process.returncode == 1
    assert "damaged" in process.stderr and "--reindex" in process.stderr and "Traceback" not in process.stderr
    with pytest.raises(StoreDamagedError):
        ingest([notes], settings, embedder=embedder)
    report = ingest([notes], settings, embedder=embedder, reindex=True)
    assert report.files_added == len(NOTES)
    assert [p.name for p in settings.data_dir.glob("chroma.damaged-*")]  # kept for inspection
    assert sources(Retriever(settings, embedder=embedder).search("token bucket", k=1)) == ["notes/gamma.md"]


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_f20_a_damaged_vector_segment_is_detected_not_searched_silently(settings, notes, embedder, damage):
    import numpy as np

    # past Chroma's flush threshold (1,000) the vectors live only in the segment files
    vectors = np.random.default_rng(3).normal(size=(1500, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = Store(settings)
    ids = [f"c{n}" for n in range(1500)]
    store.upsert_chunks(ids, vectors.tolist(), ids, [{"source_key": "old::x.md"}] * 1500)
    store.bump_revision()
    Store(settings).check_health()
    for segment in (settings.data_dir / "chroma").iterdir():
        if segment.is_dir() and damage == "deleted":
            shutil.rmtree(segment)
        elif segment.is_dir():
            for part in segment.iterdir():
                os.truncate(part, part.stat().st_size // 2)
    with pytest.raises(StoreDamagedError, match="--reindex"):
        ingest([notes], settings, embedder=embedder)
    with pytest.raises(StoreDamagedError, match="--reindex"):
        Retriever(settings, embedder=embedder).search("token bucket", mode="dense")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_f19_unreadable_database_gives_advice_not_a_traceback(ingested, tmp_path, damage):
    settings, _ = ingested
    sqlite = settings.data_dir / "chroma" / "chroma.sqlite3"
    if damage == "garbage":
        sqlite.write_bytes(os.urandom(64 * 1024))
    else:
        os.truncate(sqlite, sqlite.stat().st_size // 2)
    for command in (["search", "token bucket"], ["stats"], ["ingest", "notes"]):
        process = run_rag(*command, "--data-dir", settings.data_dir, cwd=tmp_path)
        assert process.returncode == 1, (command, process.stderr)
        assert "damaged" in process.stderr and "--reindex" in process.stderr, process.stderr
        assert "Traceback" not in process.stderr


def test_f18_model_files_changed_behind_the_same_name(settings, notes, embedder, tmp_path):
    store = Store(settings)
    store.upsert_chunks(["old"], [[1.0, 0.0, 0.0]], ["old text"], [{"source_key": "notes::old.md"}])
    with pytest.raises(ModelMismatchError, match=r"384-dimension.*built with 3.*--reindex"):
        ingest([notes], settings, embedder=embedder)
    with pytest.raises(ModelMismatchError, match="--reindex"):
        Retriever(settings, embedder=embedder).search("token bucket", mode="dense")


def test_empty_root_does_not_silently_prune_everything(ingested, embedder, tmp_path):
    settings, notes = ingested
    moved = tmp_path / "elsewhere"
    notes.rename(moved)
    notes.mkdir()  # an unmounted share: the folder is there, empty
    report = ingest([notes], settings, embedder=embedder)
    assert report.files_removed == 0
    assert [(f.path, "--force-prune" in f.error) for f in report.files_failed] == [("notes", True)]
    assert len(store_state(settings)[1]) == len(NOTES)
    process = run_rag("ingest", "notes", "--force-prune", "--data-dir", settings.data_dir, cwd=tmp_path)
    assert process.returncode == 0, process.stderr
    assert store_state(settings) == ({}, {})


def test_a_reindex_of_an_empty_root_does_not_empty_the_store(ingested, embedder, tmp_path):
    settings, notes = ingested
    before = store_state(settings)
    notes.rename(tmp_path / "elsewhere")
    notes.mkdir()
    report = ingest([notes], settings, embedder=embedder, reindex=True)
    assert [(f.path, "--force-prune" in f.error) for f in report.files_failed] == [("notes", True)]
    assert store_state(settings) == before


def test_deleting_a_few_files_still_prunes_them(ingested, embedder):
    settings, notes = ingested
    (notes / "alpha.md").unlink()
    report = ingest([notes], settings, embedder=embedder)
    assert report.files_removed == 1 and not report.files_failed



# -- security and denial of service ----------------------------------------------------------------


def test_f6_links_out_of_the_root_are_skipped_unless_asked_for(settings, notes, tmp_path, embedder):
    secret = write_tree(tmp_path / "private", {"passwd.txt": "root:x:0:0:root secret hash line\n"})
    (notes / "passwd.md").symlink_to(secret / "passwd.txt")
    (notes / "outside").symlink_to(secret, target_is_directory=True)
    (notes / "alias.md").symlink_to(notes / "alpha.md")  # inside the root: fine
    report = ingest([notes], settings, embedder=embedder)
    reasons = {failure.path: failure.error for failure in report.files_failed}
    assert set(reasons) == {"notes/passwd.md", "notes/outside"}
    assert all("--follow-symlinks" in reason for reason in reasons.values())
    assert not any("passwd" in p for p in store_paths(settings))
    followed = ingest([notes], settings, embedder=embedder, follow_symlinks=True)
    assert not followed.files_failed and "notes/passwd.md" in store_paths(settings)


def store_paths(settings) -> set[str]:
    return {meta["path"] for meta in Store(settings).get()["metadatas"]}


def test_f7_pipes_and_devices_are_refused_without_reading(settings, notes, tmp_path, embedder):
    os.mkfifo(notes / "pipe.md")
    (notes / "zero.md").symlink_to("/dev/zero")
    process = run_rag("ingest", "notes", "--json", "--data-dir", settings.data_dir, cwd=tmp_path, timeout=90)
    assert process.returncode == 3, process.stderr
    report = parse_json_output(process)
    failures = {f["path"]: f["error"] for f in report["files_failed"]}
    assert "not a regular file" in failures["notes/pipe.md"]
    assert report["files_added"] == len(NOTES)
    followed = ingest([notes], settings, embedder=embedder, follow_symlinks=True)  # /dev/zero is then reached
    failures = {f.path: f.error for f in followed.files_failed}
    assert set(failures) == {"notes/pipe.md", "notes/zero.md"}
    assert all("not a regular file" in reason for reason in failures.values())


def test_f8_docx_that_inflates_past_the_limit_is_refused(settings, notes, make_docx):
    import io
    import zipfile

    plain = make_docx("Bomb", [("p", "A small visible paragraph.")])
    padded = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(plain)) as source, zipfile.ZipFile(padded, "w", zipfile.ZIP_DEFLATED) as out:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "word/document.xml":  # 3 MB of whitespace inside the body compresses to a few KB
                data = data.replace(b"</w:body>", b" " * 3_000_000 + b"</w:body>")
            out.writestr(item, data)
    (notes / "bomb.docx").write_bytes(padded.getvalue())
    assert (notes / "bomb.docx").stat().st_size < 100_000
    small = settings.with_overrides(max_file_mb=1)
    with pytest.raises(LoadError, match=r"inflates to 3\.\d MB.*over the 1\.0 MB limit"):
        load(SourceFile(notes / "bomb.docx", "notes", "bomb.docx"), small.max_file_bytes)


def counting(embedder):
    calls = []

    def count_tokens(text: str) -> int:
        calls.append(len(text))
        return embedder.count_tokens(text)

    return count_tokens, calls


def test_f9_deeply_nested_quotes_cost_a_few_tokenizer_calls_per_chunk(embedder):
    text = "# Nested\n\n" + "\n".join("> " * 400 + f"line {n} of the quote" for n in range(100))
    count_tokens, calls = counting(embedder)
    chunks = chunk_document(document(text), count_tokens, 200, 32, embedder.max_seq_length)
    assert all(chunk.tokens <= 200 for chunk in chunks)
    # was a call per "> " (400 a line); counted per line, as the chunks of repeated "> " are kept once each
    assert len(calls) <= 10 * 100, (len(calls), len(chunks))
    assert max(calls) <= 200 * MAX_CHARS_PER_TOKEN * 2


def test_f10_a_run_without_spaces_is_cut_into_chunk_sized_pieces(embedder):
    run = "".join(f"{n:x}" for n in range(30_000))  # about 120 KB without a space: one unknown token
    chunks = chunk_document(document(f"# Blob\n\n{run}\n"), embedder.count_tokens, 200, 32, embedder.max_seq_length)
    assert "".join(chunk.text for chunk in chunks) == run
    assert max(len(chunk.text) for chunk in chunks) <= 200 * MAX_CHARS_PER_TOKEN


def document(text: str) -> Document:
    return Document(SourceFile(Path("/tmp/doc.md"), "notes", "doc.md"), text, "Doc", "team", "hash")


def test_f12_empty_path_and_the_filesystem_root_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(write_tree(tmp_path / "cwd", {"private.md": "# Private\n\nNot meant to be ingested.\n"}))
    for given in ("", "/", "/proc/self"):
        assert cli.main(["ingest", given, "--data-dir", str(tmp_path / "data")]) == cli.EXIT_USAGE, given
        assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_missing_path_is_a_usage_error(tmp_path, notes, capsys):
    assert cli.main(["ingest", "notes", "no-such-folder", "--data-dir", str(tmp_path / "data")]) == cli.EXIT_USAGE
    assert "no-such-folder" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def read_only_mount_works() -> bool:
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return probe.returncode == 0


def run_in_read_only_mount(folder: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m rag ARGS`` in a private mount namespace where ``folder`` is mounted read-only."""
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    command = ["unshare", "-m", "sh", "-c", script, "sh", str(folder), sys.executable, "-m", "rag", *args]
    return subprocess.run(command, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(not read_only_mount_works(), reason="needs unshare -m (root) to mount a folder read-only")
def test_search_and_stats_work_on_a_read_only_data_directory(ingested, tmp_path):
    settings, _ = ingested
    shutil.rmtree(settings.data_dir / "keyword")  # stale or missing: a reader rebuilds it in memory
    data, folder = str(settings.data_dir), settings.data_dir
    search = run_in_read_only_mount(folder, "search", "token bucket", "--json", "--data-dir", data, cwd=tmp_path)
    assert search.returncode == 0, search.stderr
    assert parse_json_output(search)["retrieved"][0]["source"] == "notes/gamma.md"
    stats = run_in_read_only_mount(settings.data_dir, "stats", "--json", "--data-dir", data, cwd=tmp_path)
    assert stats.returncode == 0, stats.stderr
    assert parse_json_output(stats)["documents"] == len(NOTES)
    writer = run_in_read_only_mount(settings.data_dir, "ingest", "notes", "--data-dir", data, cwd=tmp_path)
    assert writer.returncode == 1 and "cannot write to the data directory" in writer.stderr, writer.stderr
    assert "Traceback" not in writer.stderr
    assert not (settings.data_dir / "keyword").exists()


# -- crashes and unclear errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("front_matter", "reason"),
    [
        ("tags: 2026", "'tags' must be a list"),
        ("tags: true", "'tags' must be a list"),
        ("tags: {a: 1}", "'tags' must be a list"),
        ("title: [a, b]", "'title' must be a single value"),
        ("doc_type: anything", "doc_type 'anything' is not one of reference, team"),
    ],
)
def test_f4_bad_front_matter_rejects_only_that_file(settings, notes, embedder, front_matter, reason):
    (notes / "odd.md").write_text(f"---\n{front_matter}\n---\n# Odd\n\nSome text.\n")
    report = ingest([notes], settings, embedder=embedder)
    assert [(f.path, reason in f.error) for f in report.files_failed] == [("notes/odd.md", True)]
    assert report.files_added == len(NOTES)


def test_f4_bad_front_matter_in_an_upload_keeps_the_rest_of_the_batch(settings, embedder):
    good = ("design.md", b"# Design\n\nOrders go through an outbox.\n")
    bad = ("tagged.md", b"---\ntags: 2026\n---\n# Tagged\n\nText.\n")
    results = add_uploads([good, bad], settings, reader=LOCAL, embedder=embedder)
    assert [(r.original, r.status) for r in results] == [("design.md", "added"), ("tagged.md", "failed")]
    assert "'tags' must be a list" in results[1].message


def test_f5_a_file_name_that_is_not_utf8_is_skipped_with_a_reason(settings, tmp_path, embedder, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = write_tree(tmp_path / "names", {"fine.md": "# Fine\n\nA file with a good name.\n"})
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.md"), "wb") as handle:
        handle.write(b"# Latin-1 name\n\nThe name of this file is not UTF-8.\n")
    report = ingest([folder], settings, embedder=embedder)
    assert report.files_added == 1
    assert [(f.path, "not valid UTF-8" in f.error) for f in report.files_failed] == [("names/caf\ufffd.md", True)]
    process = run_rag("ingest", "names", "--data-dir", settings.data_dir, cwd=tmp_path)
    assert process.returncode == 3 and "not valid UTF-8" in process.stderr and "Traceback" not in process.stderr


@pytest.mark.parametrize("k", ["0", "-5", "three"])
def test_f14_search_k_must_be_positive(ingested, k, capsys):
    settings, _ = ingested
    with pytest.raises(SystemExit) as exited:
        cli.main(["search", "token bucket", "--k", k, "--data-dir", str(settings.data_dir)])
    assert exited.value.code == cli.EXIT_USAGE
    assert "--k" in capsys.readouterr().err


def test_f15_missing_batch_file_is_a_usage_error(ingested, tmp_path, capsys):
    settings, _ = ingested
    code = cli.main(["search", "--batch", str(tmp_path / "nope.jsonl"), "--data-dir", str(settings.data_dir)])
    assert code == cli.EXIT_USAGE
    assert "cannot read --batch" in capsys.readouterr().err


def test_f15_output_piped_into_head_ends_quietly(ingested, tmp_path):
    settings, _ = ingested
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(f'{{"id": {n}, "question": "token bucket {n}"}}\n' for n in range(400)))
    command = f'"{sys.executable}" -m rag search --batch questions.jsonl --data-dir "{settings.data_dir}" | head -c 10'
    process = subprocess.run(command, shell=True, cwd=tmp_path, env=clean_env(), capture_output=True, text=True)
    assert len(process.stdout) == 10
    assert "Traceback" not in process.stderr and "BrokenPipe" not in process.stderr, process.stderr


def test_f16_read_commands_on_a_mistyped_data_dir_say_there_is_no_store(ingested, tmp_path, capsys):
    for command in (["search", "token bucket"], ["stats"], ["ask", "what is a token bucket?"]):
        code = cli.main([*command, "--data-dir", str(tmp_path / "dta")])
        assert code == cli.EXIT_ERROR, command
        assert "no store at" in capsys.readouterr().err
    assert not (tmp_path / "dta").exists()


def test_ask_with_an_empty_question_is_a_usage_error(ingested, capsys):
    settings, _ = ingested
    assert cli.main(["ask", "  ", "--data-dir", str(settings.data_dir)]) == cli.EXIT_USAGE
    assert "empty" in capsys.readouterr().err


def test_f17_uploads_named_in_other_scripts_keep_their_type(settings):
    assert safe_filename("文档.md").endswith(".md")
    assert safe_filename("文档.md") == safe_filename("文档.md") != safe_filename("设计.md")
    assert safe_filename("Café notes.MD") == "Cafe_notes.md"


def test_windows_device_names_are_not_used_as_upload_names():
    assert safe_filename("CON.md") == "CON-file.md"
    assert safe_filename("lpt1.txt") == "lpt1-file.txt"


def test_size_limit_messages_use_the_unit_of_the_setting(settings, notes):
    big = notes / "big.md"
    big.write_bytes(b"# Big\n\n" + b"word " * 5_000_000)  # about 25 MB
    with pytest.raises(LoadError, match=r"over the 20\.0 MB limit"):
        load(SourceFile(big, "notes", "big.md"), settings.max_file_bytes)
    result = save_upload("big.md", big.read_bytes(), settings.data_dir / "uploads", settings.max_file_bytes)
    assert "over the 20.0 MB limit" in result.message


def test_f21_feedback_export_skips_a_bad_row_and_names_a_damaged_file(settings, tmp_path):
    feedback = FeedbackStore.for_settings(settings)
    for n in range(3):
        feedback.add(FeedbackEntry(question=f"question {n}", answer="an answer", rating=-1))
    with sqlite3.connect(feedback.path) as db:
        db.execute("UPDATE feedback SET history = 'not json' WHERE id = 2")
    out = tmp_path / "export.jsonl"
    process = run_rag("feedback", "export", "--out", out, "--data-dir", settings.data_dir, cwd=tmp_path)
    assert process.returncode == 0, process.stderr
    assert [json.loads(line)["question"] for line in out.read_text().splitlines()] == ["question 0", "question 2"]
    assert "skipped row 2" in process.stderr
    feedback.path.write_bytes(os.urandom(4096))
    damaged = run_rag("feedback", "export", "--data-dir", settings.data_dir, cwd=tmp_path)
    assert damaged.returncode == 1 and "cannot be read" in damaged.stderr and "Traceback" not in damaged.stderr


def test_abandoned_keyword_staging_folders_are_removed(ingested):
    settings, _ = ingested
    abandoned = settings.data_dir / ".keyword-killed"
    abandoned.mkdir()
    old = time.time() - 2 * 3600
    os.utime(abandoned, (old, old))
    KeywordIndex.rebuild(Store(settings), settings.data_dir)
    assert not abandoned.exists()
