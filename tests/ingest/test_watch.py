"""Folders kept in sync: ``ingest --watch`` (a real watchdog observer on a tmp folder, a real store) and the
last Git commit recorded for files of a working copy."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import assert_store_consistent, clean_env, make_settings

from rag.index.store import Store
from rag.ingest.pipeline import ingest
from rag.ingest.watch import watch

DEBOUNCE = 0.3
WAIT_SECONDS = 30.0
DOCS = {
    "alpha.md": "# Alpha\n\nThe alpha service caches tenant settings for five minutes.\n",
    "beta.md": "# Beta\n\nThe beta service retries webhooks with exponential backoff.\n",
    "gamma.md": "# Gamma\n\nThe gamma service partitions orders by customer id.\n",
}


def sources(settings) -> dict[str, str]:
    """``{relpath: all its chunk text}`` as the store holds it."""
    store = Store(settings)
    if not store.exists():
        return {}
    found: dict[str, str] = {}
    for _ids, texts, metadatas in store.iter_all():
        for text, meta in zip(texts, metadatas):
            found[meta["source"]] = found.get(meta["source"], "") + text
    return found


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class Watching:
    """``watch`` running in a thread over ``folder``; its reports arrive in ``reports``."""

    def __init__(self, paths: Path | list[Path], settings, embedder, **options) -> None:
        self.reports: queue.Queue = queue.Queue()
        self.warnings: queue.Queue = queue.Queue()
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        paths = paths if isinstance(paths, list) else [paths]

        def run() -> None:
            try:
                watch(
                    paths,
                    settings,
                    debounce=DEBOUNCE,
                    stop=self.stop,
                    on_report=self.reports.put,
                    on_warning=self.warnings.put,
                    embedder=embedder,
                    **options,
                )
            except BaseException as error:  # surfaced by the test, not lost in the thread
                self.errors.append(error)

        self.thread = threading.Thread(target=run, daemon=True)

    def next_report(self):
        assert not self.errors, self.errors
        return self.reports.get(timeout=WAIT_SECONDS)

    def __enter__(self) -> Watching:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=WAIT_SECONDS)
        assert not self.thread.is_alive(), "the watcher did not stop"
        assert not self.errors, self.errors


@pytest.fixture
def folder(tmp_path: Path, write_docs) -> Path:
    return write_docs(tmp_path / "docs", DOCS)


def test_watch_follows_create_change_delete_and_rename(folder, settings, embedder):
    with Watching(folder, settings, embedder) as watching:
        first = watching.next_report()
        assert first.files_added == 3
        assert set(sources(settings)) == set(DOCS)

        (folder / "team").mkdir()
        (folder / "team" / "delta.md").write_text("# Delta\n\nThe delta service signs requests with HMAC.\n")
        wait_until(lambda: "team/delta.md" in sources(settings), "a created file to be ingested")
        assert "HMAC" in sources(settings)["team/delta.md"]

        (folder / "alpha.md").write_text("# Alpha\n\nThe alpha service now caches tenant settings for an hour.\n")
        wait_until(lambda: "an hour" in sources(settings).get("alpha.md", ""), "a changed file to be re-ingested")
        assert "five minutes" not in sources(settings)["alpha.md"]

        (folder / "beta.md").unlink()
        wait_until(lambda: "beta.md" not in sources(settings), "a deleted file to leave the store")

        (folder / "gamma.md").rename(folder / "team" / "gamma-orders.md")
        wait_until(lambda: "team/gamma-orders.md" in sources(settings), "a renamed file under its new name")
        assert "gamma.md" not in sources(settings)
        assert "partitions orders" in sources(settings)["team/gamma-orders.md"]
    assert set(sources(settings)) == {"alpha.md", "team/delta.md", "team/gamma-orders.md"}
    assert_store_consistent(settings)


def test_changes_in_quick_succession_are_one_batch_and_hidden_files_none(folder, settings, embedder):
    with Watching(folder, settings, embedder) as watching:
        watching.next_report()
        (folder / ".draft.md").write_text("# Draft\n\nNot for the store.\n")
        (folder / "notes.tmp").write_text("editor scratch")
        for number in range(5):
            (folder / f"new-{number}.md").write_text(f"# New {number}\n\nDocument number {number} of the batch.\n")
        batch = watching.next_report()
        assert (batch.files_added, batch.files_updated, batch.files_removed) == (5, 0, 0)
        time.sleep(3 * DEBOUNCE)
        assert watching.reports.empty(), "one burst of changes must make one ingest"
        (folder / ".draft.md").write_text("# Draft\n\nStill not for the store.\n")  # hidden: no batch at all
        (folder / "scratch.swp").write_text("an editor's swap file")  # unsupported type: no batch either
        (folder / ".cache").mkdir()
        time.sleep(3 * DEBOUNCE)
        assert watching.reports.empty()
    assert ".draft.md" not in sources(settings)


def test_a_watched_folder_inside_the_data_directory_is_still_watched(tmp_path, write_docs, embedder):
    settings = make_settings(tmp_path / "data", lock_timeout=2.0)
    uploads = write_docs(tmp_path / "data" / "uploads", {"first.md": "# First\n\nAn uploaded note.\n"})
    with Watching(uploads, settings, embedder) as watching:
        assert watching.next_report().files_added == 1
        (uploads / "second.md").write_text("# Second\n\nAnother uploaded note.\n")
        wait_until(lambda: "second.md" in sources(settings), "a file in a watched folder under the data directory")


def test_polling_and_a_single_watched_file(folder, settings, embedder):
    """``--poll`` (network shares) sees changes too; a file named on its own is watched alone."""
    (folder / "team").mkdir()
    single = folder / "team" / "solo.md"
    single.write_text("# Solo\n\nThe solo runbook restarts the queue.\n")
    (folder / "team" / "neighbour.md").write_text("# Neighbour\n\nNot named, not watched.\n")
    with Watching([folder / "alpha.md", single], settings, embedder, poll=True) as watching:
        assert watching.next_report().files_added == 2
        (folder / "team" / "neighbour.md").write_text("# Neighbour\n\nStill not watched.\n")
        time.sleep(1.0 + 3 * DEBOUNCE)  # a polling pass plus the quiet period
        assert watching.reports.empty(), "a file that was not named started an ingest"
        single.write_text("# Solo\n\nThe solo runbook drains the queue first.\n")
        wait_until(lambda: "drains" in sources(settings).get("solo.md", ""), "the named file to be re-ingested")


def test_a_busy_store_is_retried_not_fatal(folder, tmp_path, embedder, monkeypatch):
    from filelock import FileLock

    monkeypatch.setattr("rag.ingest.watch.BUSY_RETRY_SECONDS", 0.2)
    settings = make_settings(tmp_path / "data", lock_timeout=0.1)
    (tmp_path / "data").mkdir()
    other_writer = FileLock(str(tmp_path / "data" / "write.lock"))
    other_writer.acquire()
    try:
        with Watching(folder, settings, embedder) as watching:
            assert "another process is writing" in watching.warnings.get(timeout=WAIT_SECONDS)
            other_writer.release()
            assert watching.next_report().files_added == 3
    finally:
        other_writer.release(force=True)
    assert set(sources(settings)) == set(DOCS)


def test_first_ctrl_c_lets_the_batch_in_progress_finish(folder, settings, embedder):
    """In the main thread (as on the command line) a Ctrl-C during a batch stops the watcher only after it."""
    assert threading.current_thread() is threading.main_thread()
    interrupted: list[str] = []

    def interrupt_once(progress) -> None:
        if not interrupted:
            interrupted.append(progress.path)
            os.kill(os.getpid(), signal.SIGINT)

    reports: list = []
    started = time.monotonic()
    try:
        watch(
            [folder], settings, debounce=DEBOUNCE, embedder=embedder, progress=interrupt_once, on_report=reports.append
        )
    except KeyboardInterrupt:
        pytest.fail("the first Ctrl-C interrupted the batch in progress")
    assert interrupted, "the batch never reported progress"
    assert len(reports) == 1 and reports[0].files_added == 3  # every file of the interrupted batch went in
    assert time.monotonic() - started < WAIT_SECONDS
    assert set(sources(settings)) == set(DOCS)
    assert_store_consistent(settings)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the usual Ctrl-C is back


def test_command_line_watch_prints_a_summary_per_batch_and_stops_on_ctrl_c(folder, tmp_path):
    data = tmp_path / "data"
    process = subprocess.Popen(
        [sys.executable, "-m", "rag", "ingest", "--watch", "--debounce", str(DEBOUNCE), "--json", str(folder)],
        cwd=tmp_path,
        env=clean_env(RAG_DATA_DIR=str(data)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = json.loads(process.stdout.readline())
        assert first["files_added"] == 3
        (folder / "epsilon.md").write_text("# Epsilon\n\nThe epsilon job compacts logs nightly.\n")
        second = json.loads(process.stdout.readline())
        assert (second["files_added"], second["files_unchanged"]) == (1, 3)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=WAIT_SECONDS) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    refused = subprocess.run(
        [sys.executable, "-m", "rag", "ingest", "--watch", "--reindex", str(folder)],
        cwd=tmp_path,
        env=clean_env(RAG_DATA_DIR=str(data)),
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
    )
    assert refused.returncode == 2 and "--reindex" in refused.stderr


# -- the last Git commit of each file ----------------------------------------------------------------


def git(repo: Path, *args: str, date: str | None = None) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    if date:
        env |= {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    command = ["git", "-C", str(repo), "-c", "user.name=Test", "-c", "user.email=test@example.com", *args]
    return subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout.strip()


def chunk_commits(settings) -> dict[str, tuple[str, str]]:
    store = Store(settings)
    commits: dict[str, tuple[str, str]] = {}
    for _ids, _texts, metadatas in store.iter_all():
        for meta in metadatas:
            commits[meta["source"]] = (meta["commit_id"], meta["commit_date"])
    return commits


def test_files_of_a_git_working_copy_carry_their_last_commit(tmp_path, write_docs, settings, embedder):
    repo = write_docs(tmp_path / "repo", {"docs/adr-1.md": "# ADR 1\n\nWe use Postgres.\n", "README.md": "# Repo\n"})
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first", date="2025-03-01T10:00:00+01:00")
    (repo / "docs" / "adr-2.md").write_text("# ADR 2\n\nWe use Kafka for events.\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "second", date="2025-06-15T08:30:00+00:00")
    (repo / "docs" / "draft.md").write_text("# Draft\n\nNot committed yet.\n")
    elsewhere = write_docs(tmp_path / "plain", {"note.md": "# Note\n\nNot in any repository.\n"})

    report = ingest([repo / "docs", elsewhere], settings, embedder=embedder)
    assert report.files_failed == [] and report.files_added == 4
    commits = chunk_commits(settings)
    expected = {
        name: tuple(git(repo, "log", "-1", "--format=%H %cI", "--", f"docs/{name}").split())
        for name in ("adr-1.md", "adr-2.md")
    }
    assert commits["adr-1.md"] == expected["adr-1.md"]
    assert expected["adr-1.md"][1] == "2025-03-01T10:00:00+01:00"
    assert commits["adr-2.md"] == expected["adr-2.md"] != expected["adr-1.md"]
    assert commits["draft.md"] == ("", "")  # untracked
    assert commits["note.md"] == ("", "")  # no repository


def test_ingest_without_git_on_the_path_still_works(tmp_path, write_docs, settings, embedder, monkeypatch):
    repo = write_docs(tmp_path / "repo", {"adr.md": "# ADR\n\nWe use Redis.\n"})
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    with monkeypatch.context() as patch:
        patch.setenv("PATH", str(tmp_path / "no-binaries-here"))
        report = ingest([repo], settings, embedder=embedder)
    assert report.files_failed == [] and report.files_added == 1
    assert chunk_commits(settings)["adr.md"] == ("", "")
    (repo / "adr.md").write_text("# ADR\n\nWe use Redis with AOF persistence.\n")  # git is back on the path
    assert ingest([repo], settings, embedder=embedder).files_updated == 1
    assert chunk_commits(settings)["adr.md"][0] == git(repo, "rev-parse", "HEAD")


def test_a_store_inside_the_watched_folder_does_not_wake_the_watcher(folder, embedder):
    settings = make_settings(folder / "store", lock_timeout=2.0)
    with Watching(folder, settings, embedder) as watching:
        assert watching.next_report().files_added == 3
        time.sleep(4 * DEBOUNCE)
        assert watching.reports.empty(), "the store's own writes started another ingest"
