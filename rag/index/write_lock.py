"""Write lock: one writing process at a time for an embedded store (a Chroma server takes many writers)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from rag.config import Settings
from rag.index.store_files import StoreError


class StoreBusyError(StoreError):
    pass


@contextlib.contextmanager
def exclusive_writer(settings: Settings) -> Iterator[None]:
    """Holds ``write.lock`` in the data directory of an embedded store (two writing processes can corrupt its
    index), waiting up to ``lock_timeout``."""
    if settings.server_mode:
        yield
        return
    from filelock import FileLock, Timeout

    lock_path = Path(settings.data_dir) / "write.lock"
    lock = FileLock(str(lock_path))
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=settings.lock_timeout)
    except Timeout:
        raise StoreBusyError(
            f"another process is writing to the store in {settings.data_dir} (lock {lock_path} held for "
            f"{settings.lock_timeout:g} s). Wait for it to finish and try again; for many writers run a "
            "Chroma server (RAG_CHROMA_HOST)."
        ) from None
    except OSError as error:
        raise StoreError(
            f"cannot write to the data directory {Path(settings.data_dir).resolve()} "
            f"({error.strerror or error}): ingest where the store is writable; readers here are fine"
        ) from None
    try:
        yield
    finally:
        lock.release()
