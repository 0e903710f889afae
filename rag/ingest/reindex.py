"""Reindex: a whole new collection built beside the current one and swapped in, so searches keep
answering from the old one until the new one is complete.

The build writes to ``<collection>-reindex`` (and its manifest ``<collection>-reindex-files``). When
it is whole its manifest is marked ``reindex_complete``; the swap then renames the current pair to
``<collection>-replaced...``, renames the built pair in, and drops the replaced one. ``recover`` runs
under the write lock at the start of every ingest: it finishes the swap of a complete build and drops
an incomplete one, so a process killed at any step leaves the old store or the new one, never a mix.

Every step of the swap looks at what exists before it acts, so running it again from any state a kill
left finishes it. The build's collections carry its token (``reindex_complete``): a collection under the
current name that lacks the token is the old one (moved away), one that has it was already renamed in
(kept); a built one is renamed in once its name is free. The manifest is renamed last, so while it
waits aside the swap is unfinished and its token says which collections are new.
"""

from __future__ import annotations

import contextlib
import uuid

from rag.index.collection_metadata import updated_metadata
from rag.index.store import ASIDE, REPLACED, Store

COMPLETE = "reindex_complete"


def build_aside(store: Store) -> Store:
    """An empty collection and manifest beside ``store``, for a reindex to fill."""
    built = Store(store.settings, name=f"{store.name}{ASIDE}")
    built.drop()
    return built


def mark_complete(built: Store) -> None:
    """The last step of a build before the swap: from here on ``recover`` swaps it in."""
    token = uuid.uuid4().hex
    if built.exists():
        chunks = built.chunks()
        chunks.modify(metadata=updated_metadata(chunks.metadata, **{COMPLETE: token}))
    built.files_collection(create=True).modify(metadata={COMPLETE: token})


def swap_in(store: Store, built: Store) -> None:
    """Renames the current collections away, the built ones in, and drops the old ones. Safe to run
    again on whatever a killed swap left (see the module's docstring)."""
    built.bump_revision()
    client = store.client
    token = _token(built.files_collection(create=False))
    for own, _, replaced in _triples(store):
        names = store.collection_names()
        if own in names and _token(client.get_collection(own, embedding_function=None)) != token:
            if replaced in names:  # left by an earlier swap whose drop failed
                client.delete_collection(replaced)
            client.get_collection(own, embedding_function=None).modify(name=replaced)
    for own, aside, _ in _triples(store):
        if aside in store.collection_names():
            client.get_collection(aside, embedding_function=None).modify(name=own)
    for _, _, replaced in _triples(store):
        with contextlib.suppress(Exception):
            client.delete_collection(replaced)
    store.forget_client()


def _token(collection) -> object:
    return (collection.metadata or {}).get(COMPLETE) if collection is not None else None


def recover(store: Store) -> None:
    """Finishes or undoes what a killed reindex left behind."""
    if not store.present():
        return
    names = store.collection_names()
    built = Store(store.settings, name=f"{store.name}{ASIDE}")
    if built.files_collection_name in names or built.name in names:
        manifest = built.files_collection(create=False)
        if _token(manifest):
            swap_in(store, built)
        else:
            built.drop()
    else:
        for _, _, replaced in _triples(store):
            if replaced in names:
                store.client.delete_collection(replaced)


def _triples(store: Store) -> list[tuple[str, str, str]]:
    """(current name, name aside, name replaced) of the chunk collection and of its manifest."""
    return [
        (store.name, f"{store.name}{ASIDE}", f"{store.name}{REPLACED}"),
        (store.files_collection_name, f"{store.name}{ASIDE}-files", f"{store.name}{REPLACED}-files"),
    ]
