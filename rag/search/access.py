"""Access: who is reading the knowledge base, and the one place that decides which chunks they may read.

A ``Reader`` is the person or tool behind a request: the API's bearer token names one (user, role, groups),
the command line and the stdio MCP server read as ``LOCAL`` (whoever can open the data directory can read it
all anyway). ``Retriever.for_reader`` carries the reader into every read of the store; each of those reads
asks ``readable_where`` for the filter to add. Today every reader may read every document, so it adds none.
Per-user document access (issue 27) is written there: a Chroma ``where`` clause over chunk metadata.

The HTTP API's bearer tokens come from a JSON file (``TokenTable``); only their digests are kept in memory.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Reader:
    user: str
    role: str = "reader"
    groups: tuple[str, ...] = field(default=())


LOCAL = Reader(user="local", role="admin")


def readable_where(reader: Reader | None) -> dict | None:
    """The Chroma ``where`` clause that restricts chunks to what ``reader`` may read; None: no restriction."""
    return None


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
        if not isinstance(role, str) or not role.strip():
            raise TokenFileError(f"{where}: role must be a non-empty string")
        if not isinstance(groups, list) or not all(isinstance(group, str) for group in groups):
            raise TokenFileError(f"{where}: groups must be a list of strings")
        readers[token_digest(token)] = Reader(entry["user"].strip(), role.strip(), tuple(groups))
    return readers


def token_digest(token: str) -> str:
    """What is kept of a token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
