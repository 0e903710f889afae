"""Feedback: thumbs up or down (and an optional comment) on answers, kept in SQLite in the data directory.

Each row holds what is needed to judge the answer later: the question (and the earlier questions of
the conversation, so a follow-up can be replayed), the answer, its citations, the persona, the
provider and model, who gave it (``user``; ``local`` in single-user mode and for rows from before users existed),
and when. ``for_reader`` is what one person may see: their own, or everyone's for an admin.
``export_questions`` turns the thumbs-down answers into
lines of a question file that ``python -m rag eval --questions FILE`` reads (see
``rag.app.evaluation.load_questions``), so a team's bad answers become regression cases.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

from rag.app.records import transaction
from rag.search.access import Reader

if TYPE_CHECKING:
    from rag.answer.events import Final
    from rag.config import Settings

FILE_NAME = "feedback.sqlite3"
RATINGS = (-1, 1)

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    question TEXT NOT NULL,
    standalone_query TEXT NOT NULL DEFAULT '',
    history TEXT NOT NULL DEFAULT '[]',
    answer TEXT NOT NULL,
    citations TEXT NOT NULL DEFAULT '[]',
    persona TEXT NOT NULL DEFAULT '',
    provider TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    abstained INTEGER NOT NULL DEFAULT 0,
    rating INTEGER NOT NULL CHECK (rating IN (-1, 1)),
    comment TEXT NOT NULL DEFAULT '',
    user TEXT NOT NULL DEFAULT 'local'
)
"""
ADD_USER = "ALTER TABLE feedback ADD COLUMN user TEXT NOT NULL DEFAULT 'local'"  # a file from before users existed
COLUMNS = (
    "created_at updated_at question standalone_query history answer citations persona provider model abstained "
    "rating comment user"
).split()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class FeedbackEntry:
    question: str
    answer: str
    rating: int  # +1 thumbs up, -1 thumbs down
    citations: list[dict] = field(default_factory=list)  # Citation.to_dict(): n, source, title, section, quote
    persona: str = ""
    provider: str = ""
    model: str = ""
    comment: str = ""
    standalone_query: str = ""
    history: list[str] = field(default_factory=list)  # the earlier questions of the conversation
    abstained: bool = False
    id: int | None = None
    created_at: str = ""
    updated_at: str = ""
    user: str = "local"

    @classmethod
    def from_final(
        cls, final: Final, rating: int, comment: str = "", history: list[str] | None = None, user: str = "local"
    ):
        return cls(
            user=user,
            question=final.question,
            answer=final.answer,
            rating=rating,
            citations=[citation.to_dict() for citation in final.citations],
            persona=final.persona,
            provider=final.provider,
            model=final.model,
            comment=comment,
            standalone_query=final.standalone_query,
            history=list(history or []),
            abstained=final.abstained,
        )

    @property
    def sources(self) -> list[str]:
        """The files the answer cited, each once, in citation order."""
        return list(dict.fromkeys(str(c["source"]) for c in self.citations if c.get("source")))

    def to_dict(self) -> dict:
        return asdict(self)

    def to_question(self) -> dict:
        """A line of a question file (``rag.app.evaluation.load_questions``): the bad answer becomes a test case.

        ``sources`` are the files the bad answer cited, a starting point to review: an entry with no
        sources (the answer abstained or cited nothing) counts as an unanswerable question in ``eval``.
        """
        return {
            "id": f"feedback-{self.id}",
            "question": self.question,
            "sources": self.sources,
            "evidence": [],
            "history": self.history,
            "kind": "feedback",
            "bad_answer": self.answer,
            "comment": self.comment,
            "abstained": self.abstained,
            "persona": self.persona,
            "provider": self.provider,
            "model": self.model,
            "created_at": self.created_at,
        }


def _check_rating(rating: int) -> int:
    if rating not in RATINGS:
        raise ValueError(f"a rating is +1 (thumbs up) or -1 (thumbs down), not {rating!r}")
    return int(rating)


class FeedbackError(Exception):
    """The feedback file cannot be read at all (the message says what to do)."""


class FeedbackStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.skipped: list[str] = []  # rows the last read could not use, with the reason

    @classmethod
    def for_settings(cls, settings: Settings) -> FeedbackStore:
        return cls(Path(settings.data_dir) / FILE_NAME)

    def _connect(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return transaction(self.path, _prepare)

    def add(self, entry: FeedbackEntry) -> int:
        """Stores the entry and returns its id (also set on the entry)."""
        _check_rating(entry.rating)
        entry.created_at = entry.created_at or _now()
        entry.updated_at = entry.created_at
        values = {
            **{name: getattr(entry, name) for name in COLUMNS},
            "history": json.dumps(entry.history),
            "citations": json.dumps(entry.citations),
            "abstained": int(entry.abstained),
        }
        with self._connect() as db:
            cursor = db.execute(
                f"INSERT INTO feedback ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})",
                [values[name] for name in COLUMNS],
            )
            entry.id = int(cursor.lastrowid)
        return entry.id

    def update(self, entry_id: int, *, rating: int | None = None, comment: str | None = None) -> bool:
        """Changes the rating and/or comment of a stored entry; False when there is no such entry."""
        changes: dict[str, object] = {}
        if rating is not None:
            changes["rating"] = _check_rating(rating)
        if comment is not None:
            changes["comment"] = comment
        if not changes:
            return self.get(entry_id) is not None
        changes["updated_at"] = _now()
        with self._connect() as db:
            cursor = db.execute(
                f"UPDATE feedback SET {', '.join(f'{name} = ?' for name in changes)} WHERE id = ?",
                [*changes.values(), entry_id],
            )
            return cursor.rowcount > 0

    def delete(self, entry_id: int) -> bool:
        with self._connect() as db:
            return db.execute("DELETE FROM feedback WHERE id = ?", (entry_id,)).rowcount > 0

    def get(self, entry_id: int) -> FeedbackEntry | None:
        if not self.path.exists():
            return None
        with self._connect() as db:
            row = db.execute("SELECT * FROM feedback WHERE id = ?", (entry_id,)).fetchone()
        return _entry(row) if row else None

    def all(self, rating: int | None = None) -> list[FeedbackEntry]:
        """Every entry, oldest first; only those with ``rating`` when given. A row that cannot be read (bad
        JSON, a damaged page) is skipped and noted in ``skipped``; the others still come back."""
        self.skipped = []
        if not self.path.exists():
            return []
        query = "SELECT * FROM feedback" + (" WHERE rating = ?" if rating is not None else "") + " ORDER BY id"
        entries = []
        try:
            with self._connect() as db:
                cursor = db.execute(query, () if rating is None else (rating,))
                while True:
                    try:
                        row = cursor.fetchone()
                    except sqlite3.DatabaseError as error:  # a damaged page: keep what was read before it
                        self.skipped.append(f"the rows after id {entries[-1].id if entries else 0}: {error}")
                        break
                    if row is None:
                        break
                    try:
                        entries.append(_entry(row))
                    except (ValueError, TypeError, KeyError, IndexError) as error:
                        self.skipped.append(f"row {row['id']}: {error}")
        except sqlite3.DatabaseError as error:
            raise FeedbackError(
                f"the feedback file {self.path} cannot be read ({error}); move it aside (the chat starts a new one) "
                "or restore it from a backup"
            ) from None
        return entries

    def for_reader(self, reader: Reader, rating: int | None = None) -> list[FeedbackEntry]:
        """What ``reader`` may see: everyone's entries for an admin, their own for anyone else."""
        entries = self.all(rating)
        if reader.may("see_all_feedback"):
            return entries
        return [entry for entry in entries if entry.user == reader.user]

    def jsonl_lines(self) -> list[str]:
        """Every entry as one JSON line (read whole before anything is written)."""
        return [json.dumps(entry.to_dict(), ensure_ascii=False) + "\n" for entry in self.all()]

    def question_lines(self) -> list[str]:
        """The thumbs-down answers as question-file lines (read whole before anything is written)."""
        return [json.dumps(entry.to_question(), ensure_ascii=False) + "\n" for entry in self.all(rating=-1)]

    def export_jsonl(self, out: IO[str]) -> int:
        """Writes every entry as one JSON line; returns how many."""
        lines = self.jsonl_lines()
        out.writelines(lines)
        return len(lines)

    def export_questions(self, out: IO[str]) -> int:
        """Writes the thumbs-down answers as question-file lines; returns how many."""
        lines = self.question_lines()
        out.writelines(lines)
        return len(lines)

    def refuses_as_output(self, out: Path) -> str | None:
        """Why ``out`` cannot take an export: it is this feedback file (by any path) or a folder; else None."""
        if out.is_dir():
            return f"--out {out} is a folder; name a file"
        same = out.resolve() == self.path.resolve() or (
            out.exists() and self.path.exists() and os.path.samefile(out, self.path)
        )
        if same:
            return f"--out {out} is the feedback file itself; name another file"
        return None


def _prepare(db: sqlite3.Connection) -> None:
    db.execute(SCHEMA)
    if "user" not in {row["name"] for row in db.execute("PRAGMA table_info(feedback)")}:
        db.execute(ADD_USER)


def _entry(row: sqlite3.Row) -> FeedbackEntry:
    """A stored row as an entry; ``ValueError`` naming the column when its JSON has the wrong shape."""
    history = json.loads(row["history"] or "[]")
    if not isinstance(history, list) or not all(isinstance(question, str) for question in history):
        raise ValueError("history is not a list of questions")
    citations = json.loads(row["citations"] or "[]")
    if not isinstance(citations, list) or not all(_is_citation(citation) for citation in citations):
        raise ValueError("citations are not a list of citation objects")
    return FeedbackEntry(
        id=int(row["id"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        question=row["question"],
        standalone_query=row["standalone_query"],
        history=history,
        answer=row["answer"],
        citations=citations,
        persona=row["persona"],
        provider=row["provider"],
        model=row["model"],
        abstained=bool(row["abstained"]),
        rating=int(row["rating"]),
        comment=row["comment"],
        user=row["user"],
    )


def _is_citation(value: object) -> bool:
    return isinstance(value, dict) and isinstance(value.get("source", ""), str)
