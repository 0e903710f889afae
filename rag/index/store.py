"""Store: the Chroma collections (chunks, and the manifest of ingested files) behind one class.

The embedded ``PersistentClient`` lives under the data directory; when a server host is configured
the same code talks to ``chroma run`` through ``HttpClient`` (``rag.index.store_files``). Writes to an embedded
store happen under a file lock (``rag.index.write_lock``).

Readers never create anything: a missing store reads as empty (and the command line says so). The
collection's ``revision`` changes after every ingest that changed it; a long-lived reader (the UI)
reloads its client when it sees a new revision, because Chroma keeps the vector index it loaded in
memory and would not see chunks another process added. ``ingest_pending`` is set before the first
chunk write of an ingest and cleared by the revision bump at its end, so a run killed in between is
detected by the next one. The collection records the embedding model and backend (``torch`` or
``onnx-int8``) of its vectors; writing or searching with another one is refused (``rag.index.collection_metadata``).
``--reindex`` builds a second collection aside and swaps it in by renames (see ``rag.ingest.reindex``), so searches
keep working during the rebuild.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rag.config import Settings
from rag.index.collection_metadata import (
    check_compatible,
    new_collection_metadata,
    revision_of,
    updated_metadata,
)
from rag.index.store_files import (
    StoreDamagedError,
    StoreError,
    check_files,
    chroma_dir,
    damaged_message,
    open_client,
    replica_stale,
    retire,
)
from rag.index.write_lock import exclusive_writer

__all__ = ["FileRecord", "Store", "StoreDamagedError", "StoreError"]

PAGE = 2000
ASIDE = "-reindex"  # the collection a reindex builds (see rag.ingest.reindex)
REPLACED = "-replaced"  # the old collection for the moment of the swap
SWAP_WAIT = 2.0  # seconds a reader waits for a swap in progress


@dataclass
class FileRecord:
    """One ingested file in the manifest. ``complete`` is False while its chunks are being replaced.

    ``access`` is the groups its chunks are restricted to ("a,b"; "" = everyone); ``doc_type_option`` and
    ``access_option`` are what the ingest that wrote it was told (``--doc-type``, ``--access``, an upload's group),
    kept so a later run that does not say them again (a cron job, a reindex) treats the file the same way."""

    key: str
    root: str
    relpath: str
    file_hash: str
    doc_type: str
    title: str
    chunk_count: int
    ingested_at: float
    complete: bool
    access: str = ""
    doc_type_option: str = ""
    access_option: str = ""
    root_path: str = ""  # the root folder, resolved (empty in a store made before it was recorded)

    @property
    def root_folder(self) -> str:
        """The root's folder: as recorded, or for an entry made before that, its name read the way it was
        written, relative to the working directory (the best guess there is)."""
        if self.root_path:
            return self.root_path
        return os.path.normpath(os.path.join(os.path.realpath(os.getcwd()), self.root))

    @property
    def identity(self) -> str:
        """The file whatever path named it (see ``SourceFile.identity``)."""
        return f"{self.root_folder}/{self.relpath}"

    def metadata(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "root_path": self.root_path,
            "relpath": self.relpath,
            "file_hash": self.file_hash,
            "doc_type": self.doc_type,
            "title": self.title,
            "chunk_count": self.chunk_count,
            "ingested_at": self.ingested_at,
            "complete": self.complete,
            "access": self.access,
            "doc_type_option": self.doc_type_option,
            "access_option": self.access_option,
        }

    @classmethod
    def from_metadata(cls, key: str, meta: dict[str, Any]) -> FileRecord:
        return cls(
            key=key,
            root=str(meta.get("root", "")),
            relpath=str(meta.get("relpath", "")),
            file_hash=str(meta.get("file_hash", "")),
            doc_type=str(meta.get("doc_type", "")),
            title=str(meta.get("title", "")),
            chunk_count=int(meta.get("chunk_count", 0)),
            ingested_at=float(meta.get("ingested_at", 0.0)),
            complete=bool(meta.get("complete", False)),
            access=str(meta.get("access") or ""),
            doc_type_option=str(meta.get("doc_type_option") or ""),
            access_option=str(meta.get("access_option") or ""),
            root_path=str(meta.get("root_path", "")),
        )


def new_revision() -> str:
    return uuid.uuid4().hex


def _not_found(error: Exception) -> bool:
    from chromadb.errors import NotFoundError

    return isinstance(error, NotFoundError) or "does not exist" in str(error)


# How many candidates the HNSW search explores. At Chroma's default of 100 the tail of a 50-hit query changed
# between processes (one shipped question's sixth passage, in 4 runs of 10), so the same question could get
# another answer; at 400 every run returned the same hits, for 1.4 ms more per query on 20,000 chunks.
SEARCH_EF = 400


def _explore_search_ef(collection) -> None:
    hnsw = (getattr(collection, "configuration", None) or {}).get("hnsw") or {}
    if hnsw.get("ef_search") != SEARCH_EF:
        collection.modify(configuration={"hnsw": {"ef_search": SEARCH_EF}})


class Store:
    def __init__(self, settings: Settings, client=None, name: str | None = None) -> None:
        self.settings = settings
        self.name = name or settings.collection
        self._client = client
        self._chunks = None
        self._files = None
        self._seen: tuple[str, str] | None = None  # (collection id, revision) the client has loaded
        self._pending_marked = False
        # source keys of the files whose manifest entries this object wrote or removed (derived indexes follow them)
        self.touched_files: set[str] = set()
        if settings.server_mode and client is None:
            self._client = open_client(settings)  # an unreachable server is reported at once

    # -- location and identity -------------------------------------------------------------
    @property
    def location(self) -> str:
        if self.settings.server_mode:
            return f"chroma server http://{self.settings.chroma_host}:{self.settings.chroma_port}"
        return str(chroma_dir(self.settings).resolve())

    @property
    def files_collection_name(self) -> str:
        return f"{self.name}-files"

    def present(self) -> bool:
        """Whether there is a store to read at all (a server always counts as present)."""
        return self.settings.server_mode or (chroma_dir(self.settings) / "chroma.sqlite3").is_file()

    @property
    def client(self):
        if self._client is None:
            check_files(self.settings)
            self._client = open_client(self.settings)
        return self._client

    def forget_client(self) -> None:
        """A fresh client (see ``open_client``): the vector index Chroma loaded never sees another process's writes."""
        if self._client is not None and not self.settings.server_mode:
            retire(self._client)
        self._client = None
        self._chunks = self._files = None

    def collection_names(self) -> set[str]:
        return {getattr(c, "name", c) for c in self.client.list_collections()}

    def exists(self) -> bool:
        if not self.present():
            return False
        return self.name in self.collection_names()

    def _get(self, name: str):
        """A collection by name; waits out a reindex swap in progress (between its two renames)."""
        deadline = time.monotonic() + SWAP_WAIT
        while True:
            try:
                return self.client.get_collection(name, embedding_function=None)
            except Exception as error:
                names = self.collection_names()
                swapping = f"{self.name}{ASIDE}" in names or f"{self.name}{REPLACED}" in names
                if not _not_found(error) or not swapping or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def chunks(self, dimension: int | None = None, backend: str | None = None):
        """The chunk collection; created (with model, backend and dimension recorded) when ``dimension`` is given."""
        if self._chunks is not None:
            return self._chunks
        if self.exists():
            collection = self._get(self.name)
            self._check_model(collection.metadata or {}, dimension, backend)
            self._check_vectors(collection)
            if dimension is not None:  # a writer brings a store made before SEARCH_EF up to it
                _explore_search_ef(collection)
        elif dimension is None:
            raise StoreError(
                f"the collection '{self.name}' does not exist at {self.location}: run `python -m rag ingest` first"
            )
        else:
            collection = self.client.create_collection(
                self.name,
                metadata=new_collection_metadata(
                    self.settings.embedding_model, backend or self.settings.embedding_backend, dimension
                ),
                configuration={"hnsw": {"space": "cosine", "ef_search": SEARCH_EF}},
                embedding_function=None,
            )
            self._pending_marked = True
        self._chunks = collection
        self._seen = (str(collection.id), revision_of(collection.metadata))
        return collection

    def _check_model(self, metadata: dict[str, Any], dimension: int | None = None, backend: str | None = None) -> None:
        """``backend``: the one that made the vectors about to be written or searched with (unchecked when None)."""
        where = f"the collection '{self.name}' at {self.location}"
        check_compatible(metadata, self.settings.embedding_model, where, dimension, backend)

    def check_backend(self, backend: str) -> None:
        """Raises ``ModelMismatchError`` when the existing collection was built with another embedding backend."""
        if self.exists():
            self._check_model(self.chunks().metadata or {}, backend=backend)

    def check_health(self) -> None:
        """Raises ``StoreDamagedError`` when the store's files are damaged (see ``_check_vectors``)."""
        if self.exists():
            self.chunks()

    def _check_vectors(self, collection) -> None:
        """Run once per opening: a deleted or truncated vector segment would otherwise make searches quietly
        return fewer chunks. A query with a stored vector must come back with full results."""
        try:
            total = collection.count()
            if not total:
                return
            probe = collection.get(limit=1, include=["embeddings"])
            want = min(total, 10)
            found = collection.query(query_embeddings=[probe["embeddings"][0]], n_results=want, include=["distances"])
        except Exception as error:
            raise StoreDamagedError(self._damaged(f"its vector index cannot be read ({error})")) from None
        if len(found["distances"][0]) < want:
            raise StoreDamagedError(
                self._damaged(f"its vector index answers with {len(found['distances'][0])} of {want} nearest chunks")
            )

    def _damaged(self, reason: str) -> str:
        return damaged_message(self.settings, reason) if not self.settings.server_mode else f"{self.location}: {reason}"

    def files_collection(self, create: bool):
        if self._files is None:
            if create:
                self._files = self.client.get_or_create_collection(self.files_collection_name, embedding_function=None)
            elif self.present() and self.files_collection_name in self.collection_names():
                self._files = self._get(self.files_collection_name)
        return self._files

    # -- writing ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Exclusive writer for an embedded store (``rag.index.write_lock``); the server handles many writers itself."""
        with exclusive_writer(self.settings):
            if not self.settings.server_mode:
                self.forget_client()  # another writer may have changed the store while this process held an old view
            yield

    def drop(self) -> None:
        for name in (self.name, self.files_collection_name):
            with contextlib.suppress(Exception):
                self.client.delete_collection(name)
        self._chunks = self._files = None

    def _mark_pending(self) -> None:
        """Before the first chunk write: a run killed from here on is redone by the next one."""
        if self._pending_marked or not self.exists():
            return
        collection = self.chunks()
        collection.modify(metadata=updated_metadata(collection.metadata, ingest_pending=True))
        self._pending_marked = True

    def pending(self) -> bool:
        """True when an ingest started writing chunks and never finished (killed)."""
        if not self.exists():
            return False
        return bool((self._get(self.name).metadata or {}).get("ingest_pending"))

    def upsert_chunks(
        self, ids: list[str], embeddings, documents: list[str], metadatas: list[dict], backend: str | None = None
    ) -> None:
        """``backend``: the one that made ``embeddings`` (default: the setting)."""
        if not len(ids):
            return
        dimension = len(embeddings[0])
        backend = backend or self.settings.embedding_backend
        self._mark_pending()
        collection = self.chunks(dimension=dimension, backend=backend)
        self._check_model(collection.metadata or {}, dimension, backend)
        for part in self._batches(len(ids)):
            collection.upsert(
                ids=ids[part], embeddings=embeddings[part], documents=documents[part], metadatas=metadatas[part]
            )

    def _batches(self, count: int) -> Iterator[slice]:
        """Slices of ``count`` items no longer than Chroma takes in one call."""
        step = self.client.get_max_batch_size()
        return (slice(start, start + step) for start in range(0, count, step))

    def chunk_ids_of(self, source_key: str) -> list[str]:
        if not self.exists():
            return []
        return self.chunks().get(where={"source_key": source_key}, include=[])["ids"]

    def delete_chunks(self, ids: list[str]) -> None:
        if not ids:
            return
        self._mark_pending()
        for part in self._batches(len(ids)):
            self.chunks().delete(ids=ids[part])

    def save_file_records(self, records: list[FileRecord]) -> None:
        self.touched_files.update(r.key for r in records)
        if records:
            files = self.files_collection(create=True)
            for part in self._batches(len(records)):
                files.upsert(
                    ids=[r.key for r in records[part]],
                    embeddings=[[1.0]] * len(records[part]),  # the manifest is never searched; Chroma wants a vector
                    metadatas=[r.metadata() for r in records[part]],
                )

    def delete_file_records(self, keys: list[str]) -> None:
        self.touched_files.update(keys)
        if keys:
            files = self.files_collection(create=True)
            for part in self._batches(len(keys)):
                files.delete(ids=keys[part])

    def bump_revision(self, revision: str | None = None) -> str:
        """Marks the chunk set as changed, so derived indexes (BM25) and other processes reload. ``revision``: the
        new revision, when derived indexes were brought to it beforehand (default: a new one)."""
        if not self.exists():
            return ""  # no chunk was ever written (only removals, or an ingest killed before its first upsert)
        revision = revision or new_revision()
        collection = self.chunks()
        collection.modify(metadata=updated_metadata(collection.metadata, revision=revision, ingest_pending=False))
        self._pending_marked = False
        self._seen = (str(collection.id), revision)
        return revision

    # -- reading ---------------------------------------------------------------------------
    def sync(self) -> None:
        """Reloads when the collection changed since this process loaded it (another process ingested,
        or a reindex swapped a new collection in)."""
        if self._seen is None or not self.present():
            return
        if replica_stale(self.settings):
            self.forget_client()
            self._seen = None
            return
        try:
            current = self._get(self.name)
        except Exception as error:
            if _not_found(error):
                self.forget_client()
                self._seen = None
                return
            raise
        seen = (str(current.id), revision_of(current.metadata))
        if seen != self._seen:
            self.forget_client()
            self._seen = None

    def file_records(self, keys: list[str] | None = None) -> dict[str, FileRecord]:
        """The manifest, or the entries of ``keys`` that it holds."""
        files = self.files_collection(create=False)
        if files is None:
            return {}
        records: dict[str, FileRecord] = {}
        # a page at a time: one read of tens of thousands of entries exceeds SQLite's limit on a query's variables
        if keys is None:
            pages = (files.get(offset=start, limit=PAGE, include=["metadatas"]) for start in itertools.count(0, PAGE))
        else:
            pages = (files.get(ids=keys[start : start + PAGE], include=["metadatas"])
                     for start in range(0, len(keys), PAGE))
        for result in pages:
            if keys is None and not result["ids"]:
                break
            pairs = zip(result["ids"], result["metadatas"])
            records.update((key, FileRecord.from_metadata(key, meta or {})) for key, meta in pairs)
        return records

    def collection_id(self) -> str:
        """The chunk collection's id ('' when there is none): a reindex or another store has another one."""
        return str(self._get(self.name).id) if self.exists() else ""

    def file_record(self, key: str) -> FileRecord | None:
        """One file's manifest entry (``file_records`` reads them all)."""
        files = self.files_collection(create=False)
        if files is None:
            return None
        got = files.get(ids=[key], include=["metadatas"])
        return FileRecord.from_metadata(key, got["metadatas"][0] or {}) if got["ids"] else None

    def revision(self) -> str:
        if not self.exists():
            return ""
        self.sync()
        return revision_of(self._get(self.name).metadata)

    def count(self) -> int:
        return self.chunks().count() if self.exists() else 0

    def iter_all(self) -> Iterator[tuple[list[str], list[str], list[dict]]]:
        """Every chunk, in pages: ids, texts, metadatas."""
        collection = self.chunks()
        total = collection.count()
        for offset in range(0, total, PAGE):
            page = collection.get(offset=offset, limit=PAGE, include=["documents", "metadatas"])
            yield page["ids"], page["documents"], page["metadatas"]

    def chunks_of_files(self, source_keys: list[str]) -> tuple[list[str], list[str], list[dict]]:
        """The chunks of these files: ids, texts, metadatas."""
        if not source_keys or not self.exists():
            return [], [], []
        where = {"source_key": source_keys[0]} if len(source_keys) == 1 else {"source_key": {"$in": source_keys}}
        got = self.chunks().get(where=where, include=["documents", "metadatas"])
        return got["ids"], got["documents"], got["metadatas"]

    def query(self, embedding: list[float], k: int, where: dict | None = None, backend: str | None = None) -> dict:
        """``backend``: the one that made ``embedding`` (default: the setting)."""
        self.sync()
        collection = self.chunks()
        self._check_model(collection.metadata or {}, len(embedding), backend or self.settings.embedding_backend)
        with self._reading("a search"):
            return collection.query(
                query_embeddings=[embedding],
                n_results=k,
                where=where or None,
                include=["documents", "metadatas", "distances"],
            )

    def get(self, ids: list[str] | None = None, where: dict | None = None, texts: bool = True) -> dict:
        """Chunks by id or filter; ``texts=False`` reads only their metadata (``documents`` is then None)."""
        include = ["documents", "metadatas"] if texts else ["metadatas"]
        with self._reading("reading chunks"):
            return self.chunks().get(ids=ids, where=where or None, include=include)

    @contextlib.contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        """Chroma's internal errors while reading mean damaged files: say so, and how to repair."""
        from chromadb.errors import InternalError

        try:
            yield
        except InternalError as error:
            raise StoreDamagedError(self._damaged(f"{what} failed ({error})")) from None
