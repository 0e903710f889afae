"""How the store records who may read a chunk (the groups themselves come from ``rag.documents.access``).

Each chunk records ``restricted`` (True or False) and, when True, ``access``: the list of groups that may read it.
Chroma filters on both (``rag.search.access``), and the keyword index keeps the same groups per chunk.
``restricted`` is written on every chunk because Chroma merges an upsert's metadata into what a chunk had: a
document made readable by everyone again must overwrite its old True. Chunks written before access existed have
neither key and read as unrestricted.
"""

from __future__ import annotations

ACCESS_KEY = "access"
RESTRICTED_KEY = "restricted"
NO_GROUP = "-"  # no group is called this: a restricted chunk whose groups are missing is read by admins only


def access_metadata(groups: tuple[str, ...]) -> dict[str, object]:
    """The chunk metadata that restricts a chunk to ``groups`` (``restricted: False`` when everyone may read it)."""
    if not groups:
        return {RESTRICTED_KEY: False}
    return {RESTRICTED_KEY: True, ACCESS_KEY: list(groups)}


def groups_of(metadata: dict) -> tuple[str, ...]:
    """The groups a chunk is restricted to; () when everyone may read it."""
    if not metadata.get(RESTRICTED_KEY):
        return ()
    value = metadata.get(ACCESS_KEY) or ()
    if isinstance(value, str):
        value = [part for part in value.split(",") if part]
    return tuple(str(group) for group in value) or (NO_GROUP,)
