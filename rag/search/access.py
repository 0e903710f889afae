"""Access: who is reading, what their role lets them do, and which chunks they may read.

A ``Reader`` is the person or tool behind a request: the signed-in person of the UI, the user an HTTP API token
names, or ``LOCAL`` (single-user mode, the command line: whoever can open the data directory can read it all).
Roles rank ``reader`` < ``editor`` < ``admin``: readers ask and search, editors also upload and remove team
documents, admins also see all feedback, reindex and read the audit log. Admins read every document; anyone else
reads the documents without groups and those restricted to one of their groups (``rag.documents.access``).

``readable_where`` is the Chroma filter for a reader and ``may_read`` the same rule for one passage or record;
``Retriever.for_reader`` puts the filter on every read of the store, the keyword search included.

The HTTP API's bearer tokens come from a JSON file (``TokenTable``); only their digests are kept in memory.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rag.documents.access import AccessError, normalize_groups
from rag.index.chunk_access import ACCESS_KEY, RESTRICTED_KEY

ROLES = ("reader", "editor", "admin")
# what each role may do beyond the one below it
PERMISSIONS = {
    "ask": "reader",  # ask questions, search, read documents (their groups')
    "edit_documents": "editor",  # upload and remove team documents
    "see_all_feedback": "admin",
    "reindex": "admin",
    "read_audit_log": "admin",
}
WHAT = {
    "ask": "ask questions",
    "edit_documents": "add or remove team documents",
    "see_all_feedback": "see everyone's feedback",
    "reindex": "rebuild the knowledge base",
    "read_audit_log": "read the audit log",
}


class PermissionDenied(PermissionError):
    """The reader's role does not allow the action; the message says which role would."""


@dataclass(frozen=True)
class Reader:
    user: str  # an email for a signed-in person, "local" in single-user mode
    role: str = "reader"
    groups: tuple[str, ...] = field(default=())
    signed_in: bool = True  # False only for LOCAL (nobody signed in: the app is used by one person)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}: use one of {', '.join(ROLES)}")

    @property
    def reads_everything(self) -> bool:
        return self.role == "admin"

    def may(self, permission: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(PERMISSIONS[permission])

    def require(self, permission: str) -> None:
        """Raises ``PermissionDenied`` unless the reader's role allows ``permission``."""
        if not self.may(permission):
            needed = PERMISSIONS[permission]
            raise PermissionDenied(
                f"{self.user} is a {self.role}: only {'admins' if needed == 'admin' else 'editors and admins'} "
                f"may {WHAT[permission]}"
            )


LOCAL = Reader(user="local", role="admin", signed_in=False)


def may_read(reader: Reader | None, groups: Sequence[str]) -> bool:
    """Whether ``reader`` may read a document restricted to ``groups`` (empty: everyone may). None reads as LOCAL."""
    if reader is None or reader.reads_everything or not groups:
        return True
    return bool(set(groups) & set(reader.groups))


def readable_where(reader: Reader | None) -> dict | None:
    """The Chroma ``where`` clause that keeps the chunks ``reader`` may read; None: no restriction."""
    if reader is None or reader.reads_everything:
        return None
    public = {RESTRICTED_KEY: {"$ne": True}}  # also matches chunks written before access existed (no key)
    if not reader.groups:
        return public
    return {"$or": [public, *({ACCESS_KEY: {"$contains": group}} for group in reader.groups)]}


def narrowed(where: dict | None, reader: Reader | None) -> dict | None:
    """``where`` and the reader's filter together."""
    allowed = readable_where(reader)
    if allowed is None or not where:
        return where or allowed
    return {"$and": [where, allowed]}


def group_filter(reader: Reader | None) -> frozenset[str] | None:
    """The groups the keyword index may show restricted chunks of; None: every chunk."""
    if reader is None or reader.reads_everything:
        return None
    return frozenset(reader.groups)


MIN_TOKEN_CHARS = 16  # a shorter token can be guessed; `python -c "import secrets; print(secrets.token_urlsafe(32))"`


class TokenFileError(ValueError):
    """A tokens file that cannot be used; the message names the file and the reason, never a token."""


class TokenTable:
    """The bearer tokens of ``RAG_API_TOKENS_FILE``: a JSON object of token -> {"user", "role"?, "groups"?}.

    Only the tokens' SHA-256 digests are kept. The file is read again when it changes (a token revoked or added
    takes effect at the next request); a file changed into something unusable raises ``TokenFileError`` for
    every request until it is fixed, rather than keep accepting the old tokens."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._readers: dict[str, Reader] = {}
        self._reload()

    def __len__(self) -> int:
        return len(self._readers)

    def reader_for(self, token: str) -> Reader | None:
        """The reader a token names; None for an unknown token."""
        self._reload()
        return self._readers.get(token_digest(token))

    def _reload(self) -> None:
        with self._lock:
            try:
                info = self.path.stat()
            except OSError as error:
                raise TokenFileError(f"tokens file {self.path}: {error.strerror or error}") from None
            stamp = (info.st_mtime_ns, info.st_size)
            if stamp != self._stamp:
                self._readers = parse_tokens(self.path)
                self._stamp = stamp


def parse_tokens(path: Path) -> dict[str, Reader]:
    """SHA-256 digest of each token -> its reader. Entries are named by their place in the file, never by token."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise TokenFileError(f"tokens file {path}: {error.strerror or error}") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise TokenFileError(f"tokens file {path} is not valid JSON: {error}") from None
    if not isinstance(data, dict) or not data:
        raise TokenFileError(
            f'tokens file {path}: expected a JSON object of token -> {{"user", "role", "groups"}}, '
            "with at least one token"
        )
    readers = {}
    for number, (token, entry) in enumerate(data.items(), start=1):
        where = f"tokens file {path}, entry {number}"
        if len(token.strip()) < MIN_TOKEN_CHARS or token != token.strip():
            raise TokenFileError(f"{where}: the token is shorter than {MIN_TOKEN_CHARS} characters or has spaces")
        if not isinstance(entry, dict) or not isinstance(entry.get("user"), str) or not entry["user"].strip():
            raise TokenFileError(f'{where}: expected {{"user": "...", "role": "...", "groups": [...]}}')
        role = entry.get("role", "reader")
        groups = entry.get("groups", [])
        if not isinstance(role, str) or role.strip() not in ROLES:
            raise TokenFileError(f"{where}: role must be one of {', '.join(ROLES)}, not {role!r}")
        if not isinstance(groups, list) or not all(isinstance(group, str) for group in groups):
            raise TokenFileError(f"{where}: groups must be a list of strings")
        try:
            groups = normalize_groups(groups)
        except AccessError as error:
            raise TokenFileError(f"{where}: {error}") from None
        readers[token_digest(token)] = Reader(entry["user"].strip(), role.strip(), groups)
    return readers


def token_digest(token: str) -> str:
    """What is kept of a token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
