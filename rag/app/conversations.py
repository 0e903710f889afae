"""Conversations: the chat's questions and answers, kept in SQLite in the data directory.

A conversation is a titled list of messages; an assistant message keeps its whole ``Final`` record
(citations with their passages, checks, timings, usage), so a reopened conversation shows its sources
and provenance exactly as they were. The file is ``<data dir>/conversations.sqlite3``, next to the
feedback. Also here: the history a follow-up is answered with (refused turns left out) and the
Markdown export of a conversation with its citations and sources.

Each conversation belongs to one person (``owner``, the ``Reader``'s user; ``local`` in single-user mode, and for
every conversation saved before owners existed). Only the owner lists it, changes it or adds to it; anyone else
who opens its link is told it is not theirs (``NotYourConversation``), unless the owner shared it, which lets
signed-in teammates read it. Whoever reads a conversation, an answer that drew on a document they may not read
(``rag.search.access``) is shown as withheld, in the app and in its export.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.answer.events import Citation, Final, SentenceCheck
from rag.app.records import FAST_DURABLE, transaction
from rag.search.access import LOCAL, Reader, may_read
from rag.search.passages import Passage

if TYPE_CHECKING:
    from rag.config import Settings

FILE_NAME = "conversations.sqlite3"
TITLE_LENGTH = 60
WITHHELD = "This answer drew on documents you may not read, so it is not shown."

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    owner TEXT NOT NULL DEFAULT 'local',
    shared INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, position);
"""
# a file written before conversations had owners: its conversations become the local user's
UPGRADES = {
    "owner": "ALTER TABLE conversations ADD COLUMN owner TEXT NOT NULL DEFAULT 'local'",
    "shared": "ALTER TABLE conversations ADD COLUMN shared INTEGER NOT NULL DEFAULT 0",
}
OWNER_INDEX = "CREATE INDEX IF NOT EXISTS conversations_by_owner ON conversations(owner, updated_at)"


class NotYourConversation(PermissionError):
    """The conversation belongs to someone else (and was not shared with the reader)."""


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Message:
    role: str  # "user" or "assistant"
    content: str = ""
    id: str = field(default_factory=new_id)
    final: Final | None = None  # the answer's record (assistant messages that finished)
    error: str | None = None
    complete: bool = True  # False while streaming, and for an answer that was stopped
    persona: str = ""
    doc_type: str | None = None  # the filter the question was asked with
    quotes: dict[int, list[str]] = field(default_factory=dict)  # every quote each [n] was cited for
    feedback_id: int | None = None
    created_at: float = field(default_factory=time.time)

    @property
    def refused(self) -> bool:
        return self.final is not None and self.final.stop_reason == "refusal"

    def quotes_for(self, citation: Citation) -> list[str]:
        return list(dict.fromkeys([*citation.all_quotes, *self.quotes.get(citation.n, [])]))


@dataclass
class Conversation:
    id: str
    title: str
    created_at: float
    updated_at: float
    messages: list[Message] = field(default_factory=list)
    owner: str = LOCAL.user
    shared: bool = False  # signed-in teammates may read it

    def owned_by(self, reader: Reader) -> bool:
        return self.owner == reader.user


def withheld(message: Message, reader: Reader) -> bool:
    """Whether the answer drew on a passage ``reader`` may not read (cited or only retrieved: the answer's text,
    its table of passages and its "See also" come from all of them)."""
    final = message.final
    if final is None:
        return False
    passages = [*final.passages, *(citation.passage for citation in final.citations)]
    return not all(may_read(reader, passage.access) for passage in passages)


def visible_to(messages: list[Message], reader: Reader) -> list[Message]:
    """The messages as ``reader`` may see them: a withheld answer keeps its place but not its text or sources."""
    return [
        dataclasses.replace(message, content=WITHHELD, final=None, quotes={}, error=None, complete=True)
        if withheld(message, reader)
        else message
        for message in messages
    ]


def title_from(question: str) -> str:
    """The first question, on one line, cut at a word boundary."""
    text = " ".join(question.split())
    if len(text) <= TITLE_LENGTH:
        return text or "New conversation"
    cut = text[:TITLE_LENGTH].rsplit(" ", 1)[0] or text[:TITLE_LENGTH]
    return cut.rstrip(" ,;:") + "…"


def history_for(messages: list[Message]) -> list[dict]:
    """The turns a next question is answered with: a refused turn (question and reply) is left out, and so
    is a reply with no text."""
    history: list[dict] = []
    for index, message in enumerate(messages):
        if message.role == "user":
            reply = messages[index + 1] if index + 1 < len(messages) else None
            if reply is not None and reply.role == "assistant" and reply.refused:
                continue
            history.append({"role": "user", "content": message.content})
        elif message.content and not message.refused:
            turn: dict = {"role": "assistant", "content": message.content}
            if message.final is not None:  # a follow-up is rewritten with the sections this answer cited
                turn["sources"] = [citation.passage.heading for citation in message.final.citations]
                # and a document this answer cited is not noted as out of date again
                turn["documents"] = list(dict.fromkeys(c.passage.document_key for c in message.final.citations))
            history.append(turn)
    return history


def earlier_questions(messages: list[Message]) -> list[str]:
    return [turn["content"] for turn in history_for(messages) if turn["role"] == "user"]


# -- records ------------------------------------------------------------------------------------------


def _fields(cls, values: dict[str, Any]) -> dict[str, Any]:
    """Only the keys ``cls`` has: a record written by an older or newer version still loads."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {key: value for key, value in values.items() if key in names}


def final_to_record(final: Final) -> dict:
    return dataclasses.asdict(final)


def _passage(record: dict) -> Passage:
    values = _fields(Passage, record)
    values["access"] = tuple(values.get("access") or ())  # JSON gives a list
    return Passage(**values)


def final_from_record(record: dict) -> Final:
    values = _fields(Final, record)
    values["passages"] = [_passage(p) for p in record.get("passages", [])]
    values["citations"] = [
        Citation(**{**_fields(Citation, c), "passage": _passage(c.get("passage", {}))})
        for c in record.get("citations", [])
    ]
    values["checks"] = [SentenceCheck(**_fields(SentenceCheck, c)) for c in record.get("checks", [])]
    return Final(**values)


def _message_data(message: Message) -> dict:
    return {
        "final": final_to_record(message.final) if message.final is not None else None,
        "error": message.error,
        "complete": message.complete,
        "persona": message.persona,
        "doc_type": message.doc_type,
        "quotes": {str(n): quotes for n, quotes in message.quotes.items()},
        "feedback_id": message.feedback_id,
    }


def _message(row: sqlite3.Row) -> Message:
    data = json.loads(row["data"] or "{}")
    final = data.get("final")
    return Message(
        id=row["id"],
        role=row["role"],
        content=row["content"],
        final=final_from_record(final) if final else None,
        error=data.get("error"),
        complete=bool(data.get("complete", True)),
        persona=data.get("persona", ""),
        doc_type=data.get("doc_type"),
        quotes={int(n): list(quotes) for n, quotes in (data.get("quotes") or {}).items()},
        feedback_id=data.get("feedback_id"),
        created_at=row["created_at"],
    )


# -- the store ----------------------------------------------------------------------------------------


class ConversationStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def for_settings(cls, settings: Settings) -> ConversationStore:
        return cls(Path(settings.data_dir) / FILE_NAME)

    def _connect(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return transaction(self.path, self._prepare, ("PRAGMA foreign_keys = ON", *FAST_DURABLE))

    @staticmethod
    def _prepare(db: sqlite3.Connection) -> None:
        db.executescript(SCHEMA)
        columns = {row["name"] for row in db.execute("PRAGMA table_info(conversations)")}
        for column, statement in UPGRADES.items():
            if column not in columns:
                db.execute(statement)
        db.execute(OWNER_INDEX)

    def create(self, title: str = "", owner: str = LOCAL.user) -> Conversation:
        now = time.time()
        conversation = Conversation(new_id(), title or "New conversation", now, now, owner=owner)
        with self._connect() as db:
            db.execute(
                "INSERT INTO conversations (id, title, created_at, updated_at, owner) VALUES (?, ?, ?, ?, ?)",
                (conversation.id, conversation.title, now, now, owner),
            )
        return conversation

    def list(self, owner: str = LOCAL.user) -> list[Conversation]:
        """The owner's conversations without their messages, the most recently active first."""
        if not self.path.exists():
            return []
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM conversations WHERE owner = ? ORDER BY updated_at DESC, created_at DESC", (owner,)
            ).fetchall()
        return [_conversation(r) for r in rows]

    def get(self, conversation_id: str) -> Conversation | None:
        """The conversation as stored, whoever asks (``read`` is what a person may see of it)."""
        if not self.path.exists():
            return None
        with self._connect() as db:
            row = db.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
            if row is None:
                return None
            rows = db.execute(
                "SELECT * FROM messages WHERE conversation_id = ? ORDER BY position", (conversation_id,)
            ).fetchall()
        return _conversation(row, [_message(r) for r in rows])

    def read(self, conversation_id: str, reader: Reader) -> Conversation | None:
        """The conversation as ``reader`` may see it; None when there is none. Raises ``NotYourConversation`` when
        it is someone else's and not shared with signed-in teammates."""
        conversation = self.get(conversation_id)
        if conversation is None:
            return None
        if not conversation.owned_by(reader) and not (conversation.shared and reader.signed_in):
            raise NotYourConversation(f"the conversation {conversation_id} is not yours")
        conversation.messages = visible_to(conversation.messages, reader)
        return conversation

    def _check_owner(self, db: sqlite3.Connection, conversation_id: str, user: str) -> bool:
        """False when there is no such conversation; raises ``NotYourConversation`` when it is someone else's."""
        row = db.execute("SELECT owner FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        if row is None:
            return False
        if row["owner"] != user:
            raise NotYourConversation(f"the conversation {conversation_id} is not yours")
        return True

    def save_message(self, conversation_id: str, message: Message, user: str = LOCAL.user) -> None:
        """Adds the message at the end of the conversation, or updates it when it is already there. Only the
        conversation's owner (``user``) may."""
        data = json.dumps(_message_data(message), ensure_ascii=False)
        with self._connect() as db:
            self._check_owner(db, conversation_id, user)
            updated = db.execute(
                "UPDATE messages SET content = ?, data = ? WHERE id = ? AND conversation_id = ?",
                (message.content, data, message.id, conversation_id),
            ).rowcount
            if not updated:
                position = db.execute(
                    "SELECT COALESCE(MAX(position), -1) + 1 FROM messages WHERE conversation_id = ?",
                    (conversation_id,),
                ).fetchone()[0]
                db.execute(
                    "INSERT INTO messages (id, conversation_id, position, role, content, data, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (message.id, conversation_id, position, message.role, message.content, data, message.created_at),
                )
            db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (time.time(), conversation_id))

    def delete_messages_from(self, conversation_id: str, message_id: str, user: str = LOCAL.user) -> int:
        """Removes the message and every later one (regenerate, edit and resend); returns how many."""
        with self._connect() as db:
            self._check_owner(db, conversation_id, user)
            row = db.execute(
                "SELECT position FROM messages WHERE id = ? AND conversation_id = ?", (message_id, conversation_id)
            ).fetchone()
            if row is None:
                return 0
            return db.execute(
                "DELETE FROM messages WHERE conversation_id = ? AND position >= ?", (conversation_id, row[0])
            ).rowcount

    def rename(self, conversation_id: str, title: str, user: str = LOCAL.user) -> bool:
        title = " ".join(title.split())
        if not title:
            raise ValueError("a conversation needs a title")
        with self._connect() as db:
            if not self._check_owner(db, conversation_id, user):
                return False
            return db.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, conversation_id)).rowcount > 0

    def share(self, conversation_id: str, shared: bool, user: str = LOCAL.user) -> bool:
        """Lets signed-in teammates read the conversation (``shared``), or stops it; only its owner may."""
        with self._connect() as db:
            if not self._check_owner(db, conversation_id, user):
                return False
            return db.execute(
                "UPDATE conversations SET shared = ? WHERE id = ?", (int(shared), conversation_id)
            ).rowcount > 0

    def delete(self, conversation_id: str, user: str = LOCAL.user) -> bool:
        with self._connect() as db:
            if not self._check_owner(db, conversation_id, user):
                return False
            return db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,)).rowcount > 0


def _conversation(row: sqlite3.Row, messages: list[Message] | None = None) -> Conversation:
    return Conversation(
        row["id"], row["title"], row["created_at"], row["updated_at"], messages or [],
        owner=row["owner"], shared=bool(row["shared"]),
    )


# -- export -------------------------------------------------------------------------------------------

def source_url(path: str, template: str | None) -> str | None:
    """The file's address in the team's Git web UI, if ``RAG_SOURCE_URL_TEMPLATE`` is set: its ``{path}`` becomes
    the file's path inside the folder it was ingested from (``Passage.source``)."""
    if not template or not path:
        return None
    return template.replace("{path}", path.lstrip("/"))


def answer_markdown(message: Message, source_template: str | None = None) -> str:
    """One answer as Markdown: its text, then a numbered source list with the quotes each [n] stands for."""
    lines = [message.content.strip()]
    final = message.final
    if final is not None and final.citations:
        lines += ["", "**Sources**", ""]
        for citation in final.citations:
            passage = citation.passage
            where = passage.path or passage.source
            url = source_url(passage.source or where, source_template)
            location = f"[{where}]({url})" if url else f"`{where}`"
            heading = passage.heading or where
            lines.append(f"- [{citation.n}] {heading}, {location}")
            quotes = [" ".join(quote.split()) for quote in message.quotes_for(citation)]
            lines.append("\n  >\n".join(f"  > {quote}" for quote in quotes if quote))
    return "\n".join(lines).strip() + "\n"


def _filter_name(doc_type: str | None) -> str:
    return "all documents" if not doc_type else f"{doc_type} documents only"


def conversation_markdown(conversation: Conversation, source_template: str | None = None) -> str:
    """The whole conversation as a Markdown document (questions, answers, citations and sources)."""
    when = datetime.fromtimestamp(conversation.created_at).strftime("%Y-%m-%d %H:%M")
    out = [f"# {conversation.title}", "", f"_Started {when}._", ""]
    for message in conversation.messages:
        if message.role == "user":
            out += [f"## {_one_line(message.content)}", ""]
            if "\n" in message.content.strip():
                out += [message.content.strip(), ""]
            continue
        final = message.final
        if final is not None:
            out += [f"_Answered by {final.provider} ({final.model}) as {final.persona}, searching "
                    f"{_filter_name(final.doc_type)}._", ""]
            out += [f"> {note}" for note in final.notes]
            if final.notes:
                out.append("")
        out.append(answer_markdown(message, source_template))
        if message.error:
            out += [f"**Error:** {message.error}", ""]
        if not message.complete or (final is not None and final.incomplete):
            out += ["_This answer is incomplete._", ""]
    return "\n".join(out).strip() + "\n"


def _one_line(text: str) -> str:
    return " ".join(text.split())
