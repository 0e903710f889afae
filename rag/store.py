"""Store: the Chroma collections (chunks, and the manifest of ingested files) behind one class.

The embedded ``PersistentClient`` lives under the data directory; when a server host is configured
the same code talks to ``chroma run`` through ``HttpClient``. Writes to an embedded store happen
under a file lock, because two writing processes can corrupt its index.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.config import Settings

PAGE = 2000


class StoreError(Exception):
    """A store problem the user must act on (the message says how)."""


class StoreBusyError(StoreError):
    pass


class ModelMismatchError(StoreError):
    pass


@dataclass
class FileRecord:
    """One ingested file in the manifest. ``complete`` is False while its chunks are being replaced."""

    key: str
    root: str
    relpath: str
    file_hash: str
    doc_type: str
    title: str
    chunk_count: int
    ingested_at: float
    complete: bool

    def metadata(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "relpath": self.relpath,
            "file_hash": self.file_hash,
            "doc_type": self.doc_type,
            "title": self.title,
            "chunk_count": self.chunk_count,
            "ingested_at": self.ingested_at,
            "complete": self.complete,
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
        )


def make_client(settings: Settings):
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.server_mode:
        try:
            return chromadb.HttpClient(host=settings.chroma_host, port=settings.chroma_port, settings=chroma_settings)
        except Exception as error:  # connection refused, DNS, version mismatch
            raise StoreError(
                f"cannot reach the Chroma server at {settings.chroma_host}:{settings.chroma_port}: {error}"
            ) from None
    path = Path(settings.data_dir) / "chroma"
    path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(path), settings=chroma_settings)


class Store:
    def __init__(self, settings: Settings, client=None) -> None:
        self.settings = settings
        self.client = client or make_client(settings)
        self._chunks = None
        self._files = None

    # -- location and identity -------------------------------------------------------------
    @property
    def location(self) -> str:
        if self.settings.server_mode:
            return f"chroma server http://{self.settings.chroma_host}:{self.settings.chroma_port}"
        return str((Path(self.settings.data_dir) / "chroma").resolve())

    @property
    def files_collection_name(self) -> str:
        return f"{self.settings.collection}-files"

    def exists(self) -> bool:
        names = {getattr(c, "name", c) for c in self.client.list_collections()}
        return self.settings.collection in names

    def chunks(self, dimension: int | None = None):
        """The chunk collection; created (with model and dimension recorded) when ``dimension`` is given."""
        if self._chunks is not None:
            return self._chunks
        if self.exists():
            collection = self.client.get_collection(self.settings.collection, embedding_function=None)
            self._check_model(collection.metadata or {})
        elif dimension is None:
            raise StoreError(
                f"the collection '{self.settings.collection}' does not exist at {self.location}: "
                "run `python -m rag ingest` first"
            )
        else:
            collection = self.client.create_collection(
                self.settings.collection,
                metadata={"embedding_model": self.settings.embedding_model, "dimension": dimension},
                configuration={"hnsw": {"space": "cosine"}},
                embedding_function=None,
            )
        self._chunks = collection
        return collection

    def _check_model(self, metadata: dict[str, Any]) -> None:
        recorded = metadata.get("embedding_model")
        if recorded and recorded != self.settings.embedding_model:
            raise ModelMismatchError(
                f"the collection '{self.settings.collection}' at {self.location} was built with the embedding model "
                f"'{recorded}' ({metadata.get('dimension')} dimensions), but '{self.settings.embedding_model}' is "
                "configured. Mixing models gives meaningless results. Re-index with "
                "`python -m rag ingest --reindex`, or use another --collection."
            )

    @property
    def files(self):
        if self._files is None:
            self._files = self.client.get_or_create_collection(self.files_collection_name, embedding_function=None)
        return self._files

    # -- writing ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Exclusive writer for an embedded store; the server handles many writers itself."""
        if self.settings.server_mode:
            yield
            return
        from filelock import FileLock, Timeout

        lock_path = Path(self.settings.data_dir) / "write.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_path))
        try:
            lock.acquire(timeout=self.settings.lock_timeout)
        except Timeout:
            raise StoreBusyError(
                f"another process is writing to the store in {self.settings.data_dir} (lock {lock_path} held for "
                f"{self.settings.lock_timeout:g} s). Wait for it to finish and try again; for many writers run a "
                "Chroma server (RAG_CHROMA_HOST)."
            ) from None
        try:
            yield
        finally:
            lock.release()

    def drop(self) -> None:
        for name in (self.settings.collection, self.files_collection_name):
            with contextlib.suppress(Exception):
                self.client.delete_collection(name)
        self._chunks = self._files = None

    def upsert_chunks(self, ids: list[str], embeddings, documents: list[str], metadatas: list[dict]) -> None:
        collection = self.chunks(dimension=len(embeddings[0]) if len(embeddings) else None)
        step = self.client.get_max_batch_size()
        for start in range(0, len(ids), step):
            end = start + step
            collection.upsert(
                ids=ids[start:end],
                embeddings=embeddings[start:end],
                documents=documents[start:end],
                metadatas=metadatas[start:end],
            )

    def chunk_ids_of(self, source_key: str) -> list[str]:
        if not self.exists():
            return []
        return self.chunks().get(where={"source_key": source_key}, include=[])["ids"]

    def delete_chunks(self, ids: list[str]) -> None:
        step = self.client.get_max_batch_size()
        for start in range(0, len(ids), step):
            self.chunks().delete(ids=ids[start : start + step])

    def save_file_records(self, records: list[FileRecord]) -> None:
        if records:
            self.files.upsert(
                ids=[r.key for r in records],
                embeddings=[[1.0]] * len(records),  # the manifest is never searched; Chroma wants a vector
                metadatas=[r.metadata() for r in records],
            )

    def delete_file_records(self, keys: list[str]) -> None:
        if keys:
            self.files.delete(ids=keys)

    def bump_revision(self) -> str:
        """Marks the chunk set as changed, so derived indexes (BM25) know to rebuild."""
        if not self.exists():
            return ""  # no chunk was ever written (only removals, or an ingest killed before its first upsert)
        revision = uuid.uuid4().hex
        collection = self.chunks()
        metadata = dict(collection.metadata or {})
        metadata.pop("hnsw:space", None)
        metadata["revision"] = revision
        collection.modify(metadata=metadata)
        return revision

    # -- reading ---------------------------------------------------------------------------
    def file_records(self) -> dict[str, FileRecord]:
        result = self.files.get(include=["metadatas"])
        return {key: FileRecord.from_metadata(key, meta or {}) for key, meta in zip(result["ids"], result["metadatas"])}

    def revision(self) -> str:
        if not self.exists():
            return ""
        fresh = self.client.get_collection(self.settings.collection, embedding_function=None)
        return str((fresh.metadata or {}).get("revision", ""))

    def count(self) -> int:
        return self.chunks().count() if self.exists() else 0

    def iter_all(self) -> Iterator[tuple[list[str], list[str], list[dict]]]:
        """Every chunk, in pages: ids, texts, metadatas."""
        collection = self.chunks()
        total = collection.count()
        for offset in range(0, total, PAGE):
            page = collection.get(offset=offset, limit=PAGE, include=["documents", "metadatas"])
            yield page["ids"], page["documents"], page["metadatas"]

    def query(self, embedding: list[float], k: int, where: dict | None = None) -> dict:
        return self.chunks().query(
            query_embeddings=[embedding],
            n_results=k,
            where=where or None,
            include=["documents", "metadatas", "distances"],
        )

    def get(self, ids: list[str] | None = None, where: dict | None = None) -> dict:
        return self.chunks().get(ids=ids, where=where or None, include=["documents", "metadatas"])
