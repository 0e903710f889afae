"""Audit log: who added, replaced or removed which team document, and who rebuilt the knowledge base, when.

Kept in SQLite in the data directory (``audit.sqlite3``), written by the library calls that change the knowledge
base on a person's behalf (``rag.app.uploads``, ``rag.app.rebuild``), read by admins only.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rag.app.records import transaction
from rag.search.access import Reader

if TYPE_CHECKING:
    from rag.config import Settings

FILE_NAME = "audit.sqlite3"
SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    user TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
)
"""


@dataclass
class AuditEntry:
    at: str  # ISO 8601, UTC
    user: str
    action: str  # upload, remove, reindex
    target: str  # the file name, or the folders of a reindex
    detail: str = ""
    id: int | None = None


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def for_settings(cls, settings: Settings) -> AuditLog:
        return cls(Path(settings.data_dir) / FILE_NAME)

    def _connect(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return transaction(self.path, lambda db: db.execute(SCHEMA))

    def record(self, user: str, action: str, target: str, detail: str = "") -> None:
        at = datetime.now(UTC).isoformat(timespec="seconds")
        with self._connect() as db:
            db.execute(
                "INSERT INTO audit (at, user, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                (at, user, action, target, detail),
            )

    def entries(self, reader: Reader, limit: int = 500) -> list[AuditEntry]:
        """The newest ``limit`` entries, newest first; admins only (``PermissionDenied`` otherwise)."""
        reader.require("read_audit_log")
        if not self.path.exists():
            return []
        with self._connect() as db:
            rows = db.execute("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [AuditEntry(r["at"], r["user"], r["action"], r["target"], r["detail"], r["id"]) for r in rows]
