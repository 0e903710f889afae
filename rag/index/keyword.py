"""Keyword search: BM25 over every chunk, in an index beside the store that is updated file by file.

Local Chroma has no sparse search, so this index is derived from the chunk collection. This module is its reader and
public entry point (``KeywordIndex``): opening the index at the store's revision (bringing it up to date first when
it lags), loading its arrays, and answering searches. The database's layout is ``rag.index.keyword_segments``, its
updates ``rag.index.keyword_writer``, the tokens ``rag.index.keyword_text``.

BM25 is computed at query time from the live chunks (their count, average length and each term's document
frequency), with the formula and parameters bm25s used before (Lucene's idf, k1 1.2, b 0.75): the scores are the
ones a fresh build over the same chunks gives, whatever updates and merges came before. A search for a reader masks
out the chunks of files its groups may not read (``rag.index.chunk_access``) before BM25 ranks anything.

Readers never wait for a writer: they keep the last committed state, and an update is seen by a reader's next query
(``KeywordIndex.open`` with ``previous`` reads only what changed since that reader's generation).

May import: the other ``rag.index.keyword_*`` modules and ``rag.index.store``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rag.index.keyword_segments import (
    BM25_PARAMETERS,
    DOC,
    INDEX_DIR,
    LENGTH,
    SCHEMA,
    TF,
    connect,
    read_meta,
    usable,
)
from rag.index.keyword_text import IDENTIFIER, tokenize
from rag.index.keyword_writer import Change, IndexBusy, bring_up_to_date, write_transaction
from rag.index.store import Store

DB_FILE = "index.sqlite3"
# A query token that is an identifier (``rag.index.keyword_text.IDENTIFIER``) and
# occurs in at most RARE_CHUNKS chunks is an exact reference to them: an error code, a ticket, a config key.
RARE_CHUNKS = 5
# a query word the index lacks stands for the indexed words it begins, when it is this long and they are few
PREFIX_MIN = 5
PREFIX_MAX = 3
PREFIX_SCAN = 32  # indexed words looked at for a prefix (words only in deleted chunks are skipped)
WRITER_WAIT = 600.0  # seconds an ingest waits for another process's update of the same index
POSTINGS_CACHE_BYTES = 64 << 20
MASKS_KEPT = 16  # filters whose chunk masks a reader keeps

log = logging.getLogger(__name__)


def _database(data_dir: Path) -> Path:
    return Path(data_dir) / INDEX_DIR / DB_FILE


def _remove_database(path: Path) -> None:
    """A damaged index database and its log: the index is derived, so it is built again."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            path.with_name(path.name + suffix).unlink()


def _can_persist(store: Store, data_dir: Path) -> bool:
    """A reader keeps its index in the data directory when it may write there. In server mode the data directory
    holds only this host's derived files, so it is made on first use (an embedded store's reader never makes one:
    there is nothing to index without it)."""
    if data_dir.exists():
        return os.access(data_dir, os.W_OK)
    if not store.settings.server_mode:
        return False
    parent = next((p for p in data_dir.parents if p.exists()), None)
    return parent is not None and os.access(parent, os.W_OK)


# -- reading -----------------------------------------------------------------------------------------------------


@dataclass
class _FileInfo:
    doc_type: str
    source: str
    path: str
    access: str = ""  # "a,b": only readers of those groups; "" = everyone

    def readable_by(self, groups: frozenset[str] | None) -> bool:
        return groups is None or not self.access or bool(groups.intersection(self.access.split(",")))


class ChunkIds(Sequence[str]):
    """The ids of the chunks a reader sees, read from the database when they are asked for (a million chunks'
    ids are not held in memory for ``len``)."""

    def __init__(self, index: KeywordIndex) -> None:
        self._index = index

    def __len__(self) -> int:
        return self._index.chunk_count

    def __iter__(self) -> Iterator[str]:
        with self._index._reading() as db:
            rows = db.execute("SELECT doc, chunk_id FROM chunks ORDER BY doc").fetchall()
        alive = self._index.lengths
        return iter([chunk_id for doc, chunk_id in rows if doc < len(alive) and alive[doc] >= 0])

    def __getitem__(self, position):  # type: ignore[override]
        """One id or a slice of them, in chunk-number order; a slice reads only the ids it holds from the
        database (``ids[::step]`` of a million chunks reads the few it samples)."""
        docs = self._index.live_docs()[position]
        if isinstance(position, slice):
            with self._index._reading() as db:
                found = self._index._chunk_ids_of(db, [int(doc) for doc in docs])
            return [found[int(doc)] for doc in docs if int(doc) in found]
        with self._index._reading() as db:
            found = self._index._chunk_ids_of(db, [int(docs)])
        return found[int(docs)]

    def __contains__(self, chunk_id: object) -> bool:
        return bool(self._index._docs_of([str(chunk_id)]))


@dataclass
class KeywordIndex:
    """A reader of the index at one generation (what it loaded stays consistent while writers go on)."""

    location: str  # the database file, or a shared in-memory database's name
    uri: bool
    revision: str
    generation: int
    build: str
    lengths: np.ndarray  # by chunk number; -1 for a deleted chunk
    file_of: np.ndarray  # by chunk number
    files: dict[int, _FileInfo]
    live_count: int = 0
    average_length: float = 0.0
    _keepalive: sqlite3.Connection | None = field(default=None, repr=False)  # holds an in-memory database open
    _local: threading.local = field(default_factory=threading.local, repr=False)
    _cache: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _cache_bytes: int = field(default=0, repr=False)
    _masks: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _live_docs: np.ndarray | None = field(default=None, repr=False)
    _file_sizes: np.ndarray | None = field(default=None, repr=False)  # live chunks per file number
    _document_sizes: dict[str, int] | None = field(default=None, repr=False)
    _sources: list[str] | None = field(default=None, repr=False)
    _restricted: bool | None = field(default=None, repr=False)  # whether any file is restricted, found on first use

    # -- where it lives, and keeping it current
    @staticmethod
    def directory(data_dir: Path) -> Path:
        return Path(data_dir) / INDEX_DIR

    @classmethod
    def stored_revision(cls, data_dir: Path) -> str | None:
        """The store revision the persisted index matches (None: no usable index)."""
        path = _database(data_dir)
        if not path.is_file():
            return None
        try:
            connection = connect(f"{path.resolve().as_uri()}?mode=ro", timeout=5.0, uri=True)
        except sqlite3.Error:
            return None
        try:
            meta = read_meta(connection)
        finally:
            connection.close()
        return meta.get("revision") if usable(meta) else None

    @classmethod
    def sync(cls, store: Store, data_dir: Path, change: Change | None = None, wait: float = WRITER_WAIT) -> str:
        """Brings the persisted index up to the store (file by file when it can); returns the revision it matches.
        Raises ``IndexBusy`` when another process holds the index longer than ``wait`` seconds."""
        try:
            with write_transaction(_database(data_dir), wait) as connection:
                return bring_up_to_date(connection, store, change)
        except sqlite3.DatabaseError as error:
            if isinstance(error, sqlite3.OperationalError) and ("locked" in str(error) or "busy" in str(error)):
                raise IndexBusy(str(error)) from None
            log.warning("the keyword index at %s was unreadable (%s); building it again", _database(data_dir), error)
            _remove_database(_database(data_dir))
            with write_transaction(_database(data_dir), wait) as connection:
                return bring_up_to_date(connection, store, change)

    @classmethod
    def rebuild(cls, store: Store, data_dir: Path, persist: bool = True) -> KeywordIndex:
        """The index built from every chunk (persisted, or in memory for a read-only data directory)."""
        if not persist:
            return cls._in_memory(store)
        with write_transaction(_database(data_dir), WRITER_WAIT) as connection:
            bring_up_to_date(connection, store, from_scratch=True)
        loaded = cls.load(data_dir)
        assert loaded is not None
        return loaded

    @classmethod
    def _in_memory(cls, store: Store) -> KeywordIndex:
        name = f"file:keyword-{uuid.uuid4().hex}?mode=memory&cache=shared"
        keepalive = connect(name, timeout=5.0, uri=True)
        keepalive.executescript(SCHEMA)
        with write_transaction(None, 0, memory=keepalive) as connection:
            bring_up_to_date(connection, store, from_scratch=True)
        index = cls._read(name, uri=True, previous=None)
        assert index is not None
        index._keepalive = keepalive
        return index

    @classmethod
    def load(cls, data_dir: Path, previous: KeywordIndex | None = None) -> KeywordIndex | None:
        """A reader of the persisted index (None when there is none, or one of an earlier format)."""
        path = _database(data_dir)
        if not path.is_file():
            return None
        return cls._read(str(path.resolve()), uri=False, previous=previous)

    @classmethod
    def open(cls, store: Store, data_dir: Path, previous: KeywordIndex | None = None) -> KeywordIndex:
        """The index at the store's revision: the persisted one, brought up to date first when it lags (unless
        another process is doing that: then the last committed state). ``previous``, a reader of the same index,
        lets the new reader load only what changed since."""
        revision = store.revision()
        if cls.stored_revision(data_dir) != revision:
            if _can_persist(store, Path(data_dir)):
                try:
                    cls.sync(store, data_dir, wait=0.05)
                except IndexBusy:
                    log.info("the keyword index is being updated by another process; searching its last state")
            else:  # a reader on a read-only data directory keeps its index in memory
                current = cls.load(data_dir)
                return current if current is not None and current.revision == revision else cls._in_memory(store)
        index = cls.load(data_dir, previous)
        if index is None:  # unreadable while another process replaced it: build aside, in memory
            return cls._in_memory(store)
        return index

    @classmethod
    def _read(cls, location: str, uri: bool, previous: KeywordIndex | None) -> KeywordIndex | None:
        try:
            connection = connect(location if uri else f"{Path(location).as_uri()}?mode=ro", timeout=5.0, uri=True)
        except sqlite3.Error:
            return None
        try:
            connection.execute("BEGIN")  # one snapshot for everything read below
            meta = read_meta(connection)
            if not usable(meta):
                return None
            same = previous is not None and previous.location == location and previous.build == meta.get("build")
            index = cls._loaded(connection, location, uri, meta, previous if same else None)
            connection.execute("COMMIT")
        except sqlite3.Error:
            return None
        finally:
            connection.close()
        return index

    @classmethod
    def _loaded(
        cls, db: sqlite3.Connection, location: str, uri: bool, meta: dict[str, str], previous: KeywordIndex | None
    ) -> KeywordIndex:
        """The arrays and files as of this snapshot: all of them, or only what changed since ``previous``."""
        size = int(meta.get("next_doc", 0))
        since = previous.generation if previous is not None else -1
        lengths = np.full(size, -1, dtype=LENGTH)
        file_of = np.zeros(size, dtype=DOC)
        files: dict[int, _FileInfo] = {}
        if previous is not None:
            kept = min(size, len(previous.lengths))
            lengths[:kept], file_of[:kept] = previous.lengths[:kept], previous.file_of[:kept]
            files = dict(previous.files)
        for first, block_lengths, block_files in db.execute(
            "SELECT first_doc, lengths, files FROM blocks WHERE generation > ?", (since,)
        ):
            values = np.frombuffer(block_lengths, dtype=LENGTH)
            lengths[first : first + len(values)] = values
            file_of[first : first + len(values)] = np.frombuffer(block_files, dtype=DOC)
        dead = [doc for (doc,) in db.execute("SELECT doc FROM deleted WHERE generation > ?", (since,))]
        lengths[np.array(dead, dtype=np.int64)] = -1
        for number, doc_type, source, path, access in db.execute(
            "SELECT file, doc_type, source, path, access FROM files WHERE generation > ?", (since,)
        ):
            files[number] = _FileInfo(doc_type, source, path, access)
        live = lengths[lengths >= 0]
        return cls(
            location,
            uri,
            meta.get("revision", ""),
            int(meta.get("generation", 0)),
            meta.get("build", ""),
            lengths,
            file_of,
            files,
            live_count=len(live),
            average_length=float(live.sum(dtype=np.float64)) / max(1, len(live)),
        )

    # -- reading the database
    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, inside one read transaction (a consistent snapshot for one query)."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            target = self.location if self.uri else f"{Path(self.location).as_uri()}?mode=ro"
            connection = self._local.connection = connect(target, timeout=5.0, uri=True)
        connection.execute("BEGIN")
        try:
            yield connection
        finally:
            connection.execute("COMMIT")

    @property
    def chunk_count(self) -> int:
        return self.live_count

    @property
    def ids(self) -> ChunkIds:
        return ChunkIds(self)

    def live_docs(self) -> np.ndarray:
        """The numbers of the live chunks, ascending (computed once per reader)."""
        if self._live_docs is None:
            self._live_docs = np.flatnonzero(self.lengths >= 0)
        return self._live_docs

    def _sizes_by_file(self) -> np.ndarray:
        if self._file_sizes is None:
            live = self.file_of[self.lengths >= 0]
            self._file_sizes = np.bincount(live, minlength=max(self.files, default=-1) + 1)
        return self._file_sizes

    def _live_files(self) -> list[_FileInfo]:
        """The files that have live chunks (a reader loaded from an earlier one may still know removed files)."""
        sizes = self._sizes_by_file()
        return [info for number, info in self.files.items() if number < len(sizes) and sizes[number]]

    @property
    def sources(self) -> list[str]:
        """Each indexed file's relpath and display path ("source\\npath"), one entry per file (listed once per
        reader)."""
        if self._sources is None:
            self._sources = [f"{info.source}\n{info.path}" for info in self._live_files()]
        return self._sources

    def document_sizes(self) -> dict[str, int]:
        """How many chunks each file (its display path) has in the index (counted once per reader)."""
        if self._document_sizes is None:
            sizes = self._sizes_by_file()
            counted: dict[str, int] = {}
            for number, info in self.files.items():
                if number < len(sizes) and sizes[number]:
                    counted[info.path] = counted.get(info.path, 0) + int(sizes[number])
            self._document_sizes = counted
        return self._document_sizes

    def _postings(self, db: sqlite3.Connection, term: str) -> tuple[np.ndarray, np.ndarray]:
        """The live chunks holding ``term`` (as this reader sees them) and how often."""
        with self._lock:
            cached = self._cache.get(term)
            if cached is not None:
                self._cache.move_to_end(term)
                return cached
        rows = db.execute("SELECT docs, tfs FROM postings WHERE term = ?", (term,)).fetchall()
        if rows:
            docs = np.concatenate([np.frombuffer(d, dtype=DOC) for d, _ in rows])
            tfs = np.concatenate([np.frombuffer(t, dtype=TF) for _, t in rows])
            inside = docs < len(self.lengths)  # chunks added after this reader's generation are not its
            docs, tfs = docs[inside], tfs[inside]
            live = self.lengths[docs] >= 0
            found = (docs[live], tfs[live])
        else:
            found = (np.empty(0, dtype=DOC), np.empty(0, dtype=TF))
        with self._lock:
            self._cache[term] = found
            self._cache_bytes += found[0].nbytes + found[1].nbytes
            while self._cache_bytes > POSTINGS_CACHE_BYTES and len(self._cache) > 1:
                _, (old_docs, old_tfs) = self._cache.popitem(last=False)
                self._cache_bytes -= old_docs.nbytes + old_tfs.nbytes
        return found

    def _chunk_ids_of(self, db: sqlite3.Connection, docs: list[int]) -> dict[int, str]:
        found: dict[int, str] = {}
        for start in range(0, len(docs), 500):
            part = docs[start : start + 500]
            marks = ",".join("?" * len(part))
            found.update(db.execute(f"SELECT doc, chunk_id FROM chunks WHERE doc IN ({marks})", part).fetchall())  # noqa: S608
        return found

    def _docs_of(self, chunk_ids: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        with self._reading() as db:
            for start in range(0, len(chunk_ids), 500):
                part = chunk_ids[start : start + 500]
                marks = ",".join("?" * len(part))
                found.update(
                    db.execute(f"SELECT chunk_id, doc FROM chunks WHERE chunk_id IN ({marks})", part).fetchall()  # noqa: S608
                )
        return {chunk_id: doc for chunk_id, doc in found.items() if doc < len(self.lengths) and self.lengths[doc] >= 0}

    # -- the interface searches use
    def rare_identifier_ids(self, query: str) -> set[str]:
        """The chunks that hold a rare identifier of the query (see ``IDENTIFIER``)."""
        found: set[int] = set()
        with self._reading() as db:
            for token in tokenize([query])[0]:
                if IDENTIFIER.search(token):
                    docs, _ = self._postings(db, token)
                    if 0 < len(docs) <= RARE_CHUNKS:
                        found.update(int(doc) for doc in docs)
            return set(self._chunk_ids_of(db, sorted(found)).values())

    def _known_forms(self, token: str, db: sqlite3.Connection | None = None) -> list[str]:
        """The token when the index knows it; else the indexed words it is the start of ("postgres" finds
        "postgresql", "mongo" "mongodb"), when there are only a few: a short name the documents spell out."""
        if db is None:
            with self._reading() as own:
                return self._known_forms(token, own)
        if len(self._postings(db, token)[0]):
            return [token]
        if len(token) < PREFIX_MIN or not token.isalpha():
            return []
        words = [
            word
            for (word,) in db.execute(
                "SELECT DISTINCT term FROM postings WHERE term > ? AND term < ? ORDER BY term LIMIT ?",
                (token, token + "\U0010ffff", PREFIX_SCAN),
            )
        ]
        longer = [word for word in words if len(self._postings(db, word)[0])][: PREFIX_MAX + 1]
        return longer if len(longer) <= PREFIX_MAX else []

    def documents_of(self, chunk_ids: list[str]) -> dict[str, str]:
        """The file (its display path) of each of ``chunk_ids`` that the index holds."""
        return {
            chunk_id: self.files[int(self.file_of[doc])].path
            for chunk_id, doc in self._docs_of(list(chunk_ids)).items()
            if int(self.file_of[doc]) in self.files
        }

    def _mask(self, doc_type: str | None, source: str | None, groups: frozenset[str] | None) -> np.ndarray | None:
        """True for the chunks the filters and the reader's groups let through, by chunk number; None when they
        let every chunk through. Kept per filter: a query pays for it once, not per search."""
        if self._restricted is None:
            self._restricted = any(info.access for info in self.files.values())
        if doc_type is None and source is None and (groups is None or not self._restricted):
            return None
        key = (doc_type, source, groups)
        with self._lock:
            mask = self._masks.get(key)
        if mask is None:
            allowed = np.zeros(max(self.files, default=0) + 1, dtype=bool)
            for number, info in self.files.items():
                allowed[number] = (
                    (doc_type is None or info.doc_type == doc_type)
                    and (source is None or source in (info.source, info.path))
                    and info.readable_by(groups)
                )
            mask = allowed[self.file_of] if len(self.file_of) else np.zeros(0, dtype=bool)
            with self._lock:
                if len(self._masks) >= MASKS_KEPT:
                    self._masks.clear()
                self._masks[key] = mask
        return mask

    def search(
        self,
        query: str,
        k: int,
        doc_type: str | None = None,
        source: str | None = None,
        groups: frozenset[str] | None = None,
    ) -> list[tuple[str, float]]:
        """The best BM25 hits; ``groups``: only the chunks a reader of those groups may read (None: every chunk)."""
        if not self.live_count or k <= 0:
            return []
        with self._reading() as db:
            tokens = [known for token in tokenize([query])[0] for known in self._known_forms(token, db)]
            if not tokens:
                return []
            scores = self._scores(db, tokens, self.live_count, self.average_length)
            mask = self._mask(doc_type or None, source or None, groups)
            if mask is not None:
                scores *= mask
            candidates = np.flatnonzero(scores > 0)
            if len(candidates) > k:
                candidates = candidates[np.argpartition(-scores[candidates], k - 1)[:k]]
            ranked = candidates[np.lexsort((candidates, -scores[candidates]))]
            ids = self._chunk_ids_of(db, [int(doc) for doc in ranked])
        return [(ids[int(doc)], float(scores[doc])) for doc in ranked if int(doc) in ids]

    def _scores(self, db: sqlite3.Connection, tokens: list[str], count: int, average: float) -> np.ndarray:
        """BM25 (Lucene's idf) of every chunk for ``tokens``; a token given twice counts twice, as in bm25s."""
        k1, b = np.float32(BM25_PARAMETERS["k1"]), np.float32(BM25_PARAMETERS["b"])
        all_docs, all_scores = [], []
        for token in tokens:
            docs, tfs = self._postings(db, token)
            if not len(docs):
                continue
            idf = np.float32(math.log(1 + (count - len(docs) + 0.5) / (len(docs) + 0.5)))
            tf = tfs.astype(np.float32)
            norm = k1 * ((1 - b) + b * self.lengths[docs] / np.float32(average))
            all_docs.append(docs)
            all_scores.append(idf * (tf / (norm + tf)))
        if not all_docs:
            return np.zeros(len(self.lengths))
        return np.bincount(np.concatenate(all_docs), np.concatenate(all_scores), minlength=len(self.lengths))
