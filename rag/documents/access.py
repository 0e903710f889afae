"""Document access: the groups a document is restricted to.

A document names its groups in front matter (``access: [payments]`` or ``access: payments, risk``); a folder gets
them from ``ingest --access GROUP`` and an upload from the group chosen with it (front matter that names groups
wins over both). A document without groups is readable by everyone. How chunks record them is
``rag.index.chunk_access``; who may read what is ``rag.search.access``. Group names are compared in lower case and
are made of ``a-z 0-9 . _ -``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from rag.documents.front_matter import clip

GROUP_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class AccessError(ValueError):
    """A group name or an ``access`` value that cannot be used; the message says which and why."""


def normalize_group(name: str) -> str:
    """``name`` in lower case, checked: letters, digits, ``.``, ``_`` and ``-``, at most 64 characters."""
    group = str(name).strip().lower()
    if not GROUP_NAME.match(group):
        raise AccessError(
            f"'{name}' is not a group name (letters, digits, '.', '_' and '-', starting with a letter or digit)"
        )
    return group


def normalize_groups(names: Iterable[str]) -> tuple[str, ...]:
    """Each name normalised, duplicates dropped, sorted (so the same groups always read the same)."""
    return tuple(sorted({normalize_group(name) for name in names}))


def parse_access(value: object) -> tuple[str, ...]:
    """A front matter ``access`` value: a list of group names or one comma-separated text; empty means everyone."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return normalize_groups(part for part in value.split(",") if part.strip())
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return normalize_groups(item for item in value if item.strip())
    raise AccessError(f"expected a list of group names or a comma-separated text, not {clip(repr(value))}")
