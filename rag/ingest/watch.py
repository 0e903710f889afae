"""Watch: keeps the store in sync with folders while their files change (``ingest --watch``).

A thin loop over ``rag.ingest.pipeline.ingest``: watchdog reports file events, which only mark the folders
dirty; once no event has arrived for ``debounce`` seconds (or ``max_delay`` after the first one, so a
folder that never settles is still synced) one incremental ingest runs over all the watched paths.
The ingest compares hashes against the manifest, so what changed is found by the ingest itself and all
its safety rails apply (crash safety, the mass-prune guard, failures that never cost other files); events
only say when to look. Events that arrive during an ingest start another batch after it.

The first Ctrl-C lets the batch in progress finish and then stops; a second one interrupts it, which
the ingest survives (the next run redoes what was half-written).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from rag.config import Settings
from rag.documents.discovery import SUPPORTED_SUFFIXES
from rag.index.embedding import Embedder
from rag.index.store import Store
from rag.index.write_lock import StoreBusyError
from rag.ingest.pipeline import IngestReport, ingest

ReportCallback = Callable[[IngestReport], None]
BUSY_RETRY_SECONDS = 5.0
POLL_SECONDS = 1.0


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


class _Changes(FileSystemEventHandler):
    """Records when the last relevant event arrived; the watcher thread reads it."""

    def __init__(self, folders: set[str], files: set[str], ignored: set[str]) -> None:
        self.condition = threading.Condition()
        self.first_at: float | None = None
        self.last_at = 0.0
        self.folders = folders
        self.files = files  # files named on their own: their folder is watched, but only they count
        self.ignored = ignored  # the data directory: the store's own writes must not start batches

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write") or (event.is_directory and event.event_type == "modified"):
            return  # reading changes nothing; a folder's own "modified" only echoes events of its entries
        paths = [os.fsdecode(p) for p in (event.src_path, getattr(event, "dest_path", "")) if p]
        if any(self._relevant(path, event.is_directory) for path in paths):
            self.mark_dirty()

    def mark_dirty(self) -> None:
        with self.condition:
            now = time.monotonic()
            self.first_at = self.first_at or now
            self.last_at = now
            self.condition.notify_all()

    def _relevant(self, path: str, is_directory: bool) -> bool:
        if path in self.files:
            return True
        for folder in self.folders:
            if _under(path, folder):
                if any(_under(path, data) and not _under(folder, data) for data in self.ignored):
                    return False  # the store inside a watched folder (a watched folder inside it still counts)
                if any(part.startswith(".") for part in Path(path).relative_to(folder).parts):
                    return False  # hidden files and folders (.git) are never ingested
                return is_directory or Path(path).suffix.lower() in SUPPORTED_SUFFIXES
        return False

    def take_batch(self, debounce: float, max_delay: float, stop: threading.Event) -> bool:
        """Waits until a batch is due (quiet for ``debounce`` seconds, or ``max_delay`` since its first
        event) and claims it; False when ``stop`` is set first."""
        with self.condition:
            while not stop.is_set():
                now = time.monotonic()
                if self.first_at is not None:
                    due = min(self.last_at + debounce, self.first_at + max_delay)
                    if now >= due:
                        self.first_at = None
                        return True
                    self.condition.wait(due - now)
                else:
                    self.condition.wait(0.2)  # wakes now and then to notice ``stop``
        return False


def watch(
    paths: list[Path],
    settings: Settings,
    *,
    debounce: float = 1.0,
    max_delay: float = 30.0,
    stop: threading.Event | None = None,
    on_report: ReportCallback | None = None,
    on_warning: Callable[[str], None] | None = None,
    store: Store | None = None,
    embedder: Embedder | None = None,
    poll: bool = False,
    **ingest_options,
) -> None:
    """Ingests ``paths`` once, then again after each batch of changes, until ``stop`` is set (or Ctrl-C).

    ``ingest_options`` go to ``rag.ingest.pipeline.ingest`` unchanged. A busy store (another writer) is retried;
    any other error stops the watcher (raised to the caller)."""
    stop = stop or threading.Event()
    store = store or Store(settings)
    embedder = embedder or Embedder.for_settings(settings)
    folders = {str(p.resolve()) for p in paths if p.is_dir()}
    files = {str(p.parent.resolve() / p.name) for p in paths if not p.is_dir()}  # events name the link, not its target
    changes = _Changes(folders, files, {str(Path(settings.data_dir).resolve())})
    follow = bool(ingest_options.get("follow_symlinks"))

    def run_batch() -> None:
        try:
            report = ingest(paths, settings, store=store, embedder=embedder, **ingest_options)
        except StoreBusyError as error:
            if on_warning:
                on_warning(f"{error} (trying again in {BUSY_RETRY_SECONDS:g} s)")
            if not stop.wait(BUSY_RETRY_SECONDS):  # the other writer may be done by then
                changes.mark_dirty()
            return
        if on_report:
            on_report(report)

    # started before the first ingest, so nothing changed during it goes unseen
    observer = _start_observer(changes, folders, files, follow, poll, on_warning)
    with _graceful_interrupt(stop):
        try:
            run_batch()
            while changes.take_batch(debounce, max_delay, stop):
                run_batch()
        finally:
            observer.stop()
            observer.join()


def _start_observer(
    changes: _Changes,
    folders: set[str],
    files: set[str],
    follow: bool,
    poll: bool,
    on_warning: Callable[[str], None] | None,
) -> BaseObserver:
    """The system's change notifications (inotify) unless ``poll``; polling also when they are
    exhausted (a tree with more folders than ``fs.inotify.max_user_watches``)."""
    observer = PollingObserver(timeout=POLL_SECONDS) if poll else Observer()
    for folder in folders:
        observer.schedule(changes, folder, recursive=True, follow_symlink=follow)
    for parent in {str(Path(f).parent) for f in files} - folders:
        observer.schedule(changes, parent, recursive=False, follow_symlink=follow)
    try:
        observer.start()
    except OSError as error:
        if poll:
            raise
        if on_warning:
            on_warning(f"change notifications unavailable ({error}); scanning for changes every {POLL_SECONDS:g} s")
        return _start_observer(changes, folders, files, follow, True, None)
    return observer


class _graceful_interrupt:
    """In the main thread, the first SIGINT sets ``stop`` (the batch in progress finishes); the second
    raises ``KeyboardInterrupt`` as usual. Elsewhere (tests, a UI thread) it does nothing."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.previous = None

    def __enter__(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._on_interrupt)

    def _on_interrupt(self, signum, frame) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.stop.set()
        print("stopping once the batch in progress is done (Ctrl-C again to interrupt it)", file=sys.stderr)

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
