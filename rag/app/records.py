"""The SQLite files of the app's own records (saved conversations, feedback, the audit log): how one is opened.

May import: the standard library only.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

# a click that saves a message does not wait for a full fsync, and the file never corrupts
FAST_DURABLE = ("PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL")


@contextlib.contextmanager
def transaction(
    path: Path, prepare: Callable[[sqlite3.Connection], None], pragmas: tuple[str, ...] = ()
) -> Iterator[sqlite3.Connection]:
    """A connection to ``path`` (created with its folder if need be) whose rows read by column name, inside one
    transaction: committed when the block ends, rolled back on an error. ``prepare`` makes sure of the schema
    first; ``pragmas`` run before the transaction begins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=10)
    connection.row_factory = sqlite3.Row
    for pragma in pragmas:
        connection.execute(pragma)
    try:
        with connection:
            prepare(connection)
            yield connection
    finally:
        connection.close()
