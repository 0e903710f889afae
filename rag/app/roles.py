"""Roles: who is a reader, an editor or an admin, and which team groups they are in (``RAG_ROLES_FILE``).

The file is TOML. Each role lists emails, ``group:NAME`` (everyone in that group) or ``*`` (everyone signed in);
the highest role that matches a person wins, and anyone it does not match is a reader. ``[groups]`` adds people
to team groups, beside the groups their sign-in provider or proxy already sends::

    admin = ["ada@example.com"]
    editor = ["group:platform", "ben@example.com"]

    [groups]
    payments = ["ada@example.com", "alice@example.com"]

Without a roles file every signed-in person is a reader with the groups their sign-in sends. The file is read
again when it changes. A file that cannot be used raises ``RolesFileError`` naming it and the reason; callers then
treat everyone as a reader (``reader_for`` never gives more rights because of a broken file).
"""

from __future__ import annotations

import threading
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rag.documents.access import AccessError, normalize_group
from rag.search.access import ROLES, Reader

EVERYONE = "*"
GROUP_PREFIX = "group:"
MAX_BYTES = 1024 * 1024


class RolesFileError(ValueError):
    """A roles file that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class Roles:
    """A parsed roles file: the entries of each role (emails, ``group:NAME``, ``*``) and the team groups."""

    entries: dict[str, frozenset[str]] = field(default_factory=dict)
    groups: dict[str, frozenset[str]] = field(default_factory=dict)  # group -> member emails

    def reader_for(self, email: str, claimed_groups: Iterable[str] = ()) -> Reader:
        """The reader a signed-in person is: their groups (claimed and from the file) and their highest role."""
        email = normalize_email(email)
        groups = set(_valid_groups(claimed_groups))
        groups.update(group for group, members in self.groups.items() if email in members)
        keys = {email, EVERYONE, *(GROUP_PREFIX + group for group in groups)}
        role = next((r for r in reversed(ROLES) if self.entries.get(r, frozenset()) & keys), "reader")
        return Reader(email, role, tuple(sorted(groups)))


def normalize_email(email: str) -> str:
    return str(email).strip().lower()


def _valid_groups(names: Iterable[str]) -> list[str]:
    """The names that are group names (a sign-in provider may send others, e.g. with spaces): the rest are left out."""
    valid = []
    for name in names:
        try:
            valid.append(normalize_group(name))
        except AccessError:
            continue
    return valid


def parse_roles(text: str, path: Path) -> Roles:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RolesFileError(f"roles file {path} is not valid TOML: {error}") from None
    entries: dict[str, frozenset[str]] = {}
    groups: dict[str, frozenset[str]] = {}
    for key, value in data.items():
        if key == "groups":
            if not isinstance(value, dict):
                raise RolesFileError(f"roles file {path}: [groups] must be a table of group = [emails]")
            for group, members in value.items():
                try:
                    name = normalize_group(group)
                except AccessError as error:
                    raise RolesFileError(f"roles file {path}, [groups]: {error}") from None
                groups[name] = frozenset(normalize_email(m) for m in _strings(members, f"[groups] {group}", path))
        elif key in ROLES:
            entries[key] = frozenset(_entry(name, f"{key}", path) for name in _strings(value, key, path))
        else:
            raise RolesFileError(f"roles file {path}: unknown key '{key}' (use {', '.join(ROLES)} and [groups])")
    return Roles(entries, groups)


def _entry(name: str, where: str, path: Path) -> str:
    """An entry of a role, normalised: ``*``, ``group:NAME`` or an email."""
    if name == EVERYONE:
        return name
    if name.startswith(GROUP_PREFIX):
        try:
            return GROUP_PREFIX + normalize_group(name[len(GROUP_PREFIX) :])
        except AccessError as error:
            raise RolesFileError(f"roles file {path}, {where}: {error}") from None
    return normalize_email(name)


def _strings(value: object, where: str, path: Path) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise RolesFileError(f"roles file {path}, {where}: expected a list of texts, not {value!r}")
    return [item.strip() for item in value]


class RolesFile:
    """``RAG_ROLES_FILE``, read again whenever it changes (its modification time and size)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._roles = Roles()

    def roles(self) -> Roles:
        """The current roles; raises ``RolesFileError`` while the file cannot be used."""
        with self._lock:
            try:
                info = self.path.stat()
            except OSError as error:
                raise RolesFileError(f"roles file {self.path}: {error.strerror or error}") from None
            if info.st_size > MAX_BYTES:
                raise RolesFileError(f"roles file {self.path} is over 1 MB: is it the right file?")
            stamp = (info.st_mtime_ns, info.st_size)
            if stamp != self._stamp:
                try:
                    text = self.path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as error:
                    raise RolesFileError(f"roles file {self.path} cannot be read: {error}") from None
                self._roles = parse_roles(text, self.path)
                self._stamp = stamp
            return self._roles


def reader_for(email: str, claimed_groups: Iterable[str], roles_file: RolesFile | None) -> tuple[Reader, str | None]:
    """The reader a signed-in person is, and a problem to show (a broken roles file: then they are a reader with
    the groups their sign-in sends, whatever the file said)."""
    if roles_file is None:
        return Roles().reader_for(email, claimed_groups), None
    try:
        return roles_file.roles().reader_for(email, claimed_groups), None
    except RolesFileError as error:
        return Roles().reader_for(email, claimed_groups), f"{error}; everyone is a reader until it is fixed"
