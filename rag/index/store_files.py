"""Store files: where the embedded Chroma store lives on disk, opening a client on it, and what to do
when those files are damaged (a zero-byte or garbage ``chroma.sqlite3``): a clear error, and for
``ingest --reindex`` moving the damaged copy aside so a new store can be built in its place.

Chroma's embedded store writes to its database even to read (it records a write handle on open), so a
read-only replica (a read-only mount, a folder the serving user cannot write) is read from a private
copy in a temporary folder, copied again when the original changes.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from rag.config import Settings

SQLITE = "chroma.sqlite3"
_OPENING = threading.Lock()
_REPLICAS: dict[str, tuple[tuple[int, int], Path]] = {}  # original folder -> (its stamp, the private copy)


class StoreError(Exception):
    """A store problem the user must act on (the message says how)."""


class StoreDamagedError(StoreError):
    pass


def chroma_dir(settings: Settings) -> Path:
    return Path(settings.data_dir) / "chroma"


def damaged_message(settings: Settings, reason: str) -> str:
    return (
        f"the store at {chroma_dir(settings).resolve()} is damaged: {reason}. Rebuild it with "
        "`python -m rag ingest --reindex PATH ...` (the damaged copy is kept aside) or restore a backup "
        "(README: Operating it)."
    )


def check_files(settings: Settings) -> None:
    """Refuses store files Chroma would silently take for a new, empty store."""
    if settings.server_mode:
        return
    sqlite = chroma_dir(settings) / SQLITE
    if sqlite.is_file() and sqlite.stat().st_size == 0:
        raise StoreDamagedError(damaged_message(settings, f"{SQLITE} is empty (0 bytes)"))


def open_client(settings: Settings):
    """A Chroma client: over HTTP in server mode, otherwise on the data directory, with a view of its
    files as they are now (Chroma otherwise shares one cached, never refreshed, system per path)."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.server_mode:
        try:
            return chromadb.HttpClient(host=settings.chroma_host, port=settings.chroma_port, settings=chroma_settings)
        except Exception as error:  # connection refused, DNS, version mismatch
            raise StoreError(
                f"cannot reach the Chroma server at {settings.chroma_host}:{settings.chroma_port}: {error}"
            ) from None
    from chromadb.api.shared_system_client import SharedSystemClient

    path = chroma_dir(settings)
    if (path / SQLITE).is_file() and not _writable(path):
        path = _replica(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StoreError(f"cannot create the store at {path.resolve()}: {error.strerror or error}") from None
    try:
        with _OPENING:  # Chroma looks its system up again after creating it: no other thread may pop it meanwhile
            SharedSystemClient._identifier_to_system.pop(str(path), None)
            client = chromadb.PersistentClient(path=str(path), settings=chroma_settings)
            client._rag_system = SharedSystemClient._identifier_to_system.get(str(path))
        client.list_collections()
    except Exception as error:  # chromadb raises InternalError for a truncated or garbage database
        raise StoreDamagedError(damaged_message(settings, f"{SQLITE} cannot be read ({error})")) from None
    return client


RETIRE_AFTER = 60.0  # seconds: longer than any search still running on a client being replaced
_RETIRED: list[tuple[float, object]] = []


def retire(client) -> None:
    """Stops the system of a client this process replaced (its vector index can be large), once no search
    can still be using it; the garbage collector may never get to it (the UI freezes long-lived objects)."""
    system = getattr(client, "_rag_system", None)
    now = time.monotonic()
    with _OPENING:
        if system is not None:
            _RETIRED.append((now, system))
        due = [entry for entry in _RETIRED if now - entry[0] > RETIRE_AFTER]
        _RETIRED[:] = [entry for entry in _RETIRED if now - entry[0] <= RETIRE_AFTER]
    for _, old in due:
        with contextlib.suppress(Exception):
            old.stop()


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK) and os.access(path / SQLITE, os.W_OK)


def _stamp(path: Path) -> tuple[int, int]:
    info = (path / SQLITE).stat()
    return info.st_mtime_ns, info.st_size


def _replica(path: Path) -> Path:
    """A private copy of a store this process may not write, made again when the original changed."""
    key = str(path.resolve())
    stamp = _stamp(path)
    known = _REPLICAS.get(key)
    if known and known[0] == stamp:
        return known[1]
    folder = Path(tempfile.mkdtemp(prefix="rag-replica-"))
    atexit.register(shutil.rmtree, folder, True)
    shutil.copytree(path, folder / "chroma")
    _REPLICAS[key] = (stamp, folder / "chroma")
    return folder / "chroma"


def replica_stale(settings: Settings) -> bool:
    """True when this process reads a private copy of the store and the original has changed since."""
    if settings.server_mode:
        return False
    path = chroma_dir(settings)
    known = _REPLICAS.get(str(path.resolve()))
    try:
        return known is not None and known[0] != _stamp(path)
    except OSError:
        return False


def move_damaged_aside(settings: Settings) -> Path:
    """Renames the damaged store folder (kept for inspection) so a new one can be built."""
    path = chroma_dir(settings)
    target = path.with_name(f"chroma.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    path.rename(target)
    return target
