"""Reindex: a whole new collection built beside the current one and swapped in, so searches keep
answering from the old one until the new one is complete.

The build writes to ``<collection>-reindex`` (and its manifest ``<collection>-reindex-files``). When
it is whole its manifest is marked ``reindex_complete``; the swap then renames the current pair to
``<collection>-replaced...``, renames the built pair in, and drops the replaced one. ``recover`` runs
under the write lock at the start of every ingest: it finishes the swap of a complete build and drops
an incomplete one, so a process killed at any step leaves the old store or the new one, never a mix.
"""

from __future__ import annotations

import contextlib

from rag.index.store import ASIDE, REPLACED, Store

COMPLETE = "reindex_complete"


def build_aside(store: Store) -> Store:
    """An empty collection and manifest beside ``store``, for a reindex to fill."""
    built = Store(store.settings, name=f"{store.name}{ASIDE}")
    built.drop()
    return built


def mark_complete(built: Store) -> None:
    """The last step of a build before the swap: from here on ``recover`` swaps it in."""
    built.files_collection(create=True).modify(metadata={COMPLETE: True})


def swap_in(store: Store, built: Store) -> None:
    """Renames the current collections away, the built ones in, and drops the old ones."""
    built.bump_revision()
    names = store.collection_names()
    for own, replaced in _pairs(store, REPLACED):
        if own in names:
            store.client.get_collection(own, embedding_function=None).modify(name=replaced)
    names = store.collection_names()
    for own, aside in _pairs(store, ASIDE):
        if aside in names:
            store.client.get_collection(aside, embedding_function=None).modify(name=own)
    for _, replaced in _pairs(store, REPLACED):
        with contextlib.suppress(Exception):
            store.client.delete_collection(replaced)
    store.forget_client()


def recover(store: Store) -> None:
    """Finishes or undoes what a killed reindex left behind."""
    if not store.present():
        return
    names = store.collection_names()
    built = Store(store.settings, name=f"{store.name}{ASIDE}")
    if built.files_collection_name in names or built.name in names:
        manifest = built.files_collection(create=False)
        if manifest is not None and (manifest.metadata or {}).get(COMPLETE):
            swap_in(store, built)
        else:
            built.drop()
    elif store.name in names or store.files_collection_name in names:
        for _, replaced in _pairs(store, REPLACED):
            if replaced in names:
                store.client.delete_collection(replaced)


def _pairs(store: Store, suffix: str) -> list[tuple[str, str]]:
    """(current name, name with ``suffix``) for the chunk collection and its manifest."""
    return [(store.name, f"{store.name}{suffix}"), (store.files_collection_name, f"{store.name}{suffix}-files")]
