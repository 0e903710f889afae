"""Keyword search: BM25 over every chunk, in an index beside the store that is updated file by file.

Local Chroma has no sparse search, so this index is derived from the chunk collection. It lives in one SQLite
database, ``<data dir>/keyword/index.sqlite3``, laid out the way search engines keep an index they update:

- ``postings``: for each (term, segment) the chunks holding the term and how often, as two packed arrays. An update
  adds one small segment with the chunks of the files that changed; the chunks they replace are only marked
  deleted (``deleted``), and their postings are skipped at query time.
- Small segments are merged into one, and a segment with many deleted chunks is rewritten without them
  (``MAX_SEGMENTS``, ``PURGE_SHARE``), so a query reads a few rows per term however many updates came before.
- ``blocks``: each chunk's length in tokens and its file, as packed arrays, so a reader loads a million chunks'
  worth in a few milliseconds; ``files``: each file's doc type and paths (for the filters), the groups that may read
  it (``rag.index.chunk_access``: a search for a reader masks out the rest before BM25 ranks anything) and the
  manifest entry it was indexed from (``stamp``).

BM25 is computed at query time from the live chunks (their count, average length and each term's document
frequency), with the formula and parameters bm25s used before (Lucene's idf, k1 1.2, b 0.75): the scores are the
ones a fresh build over the same chunks gives, whatever updates and merges came before.

Which files to update comes from the ingest that just ran (``Change``), or else from comparing the store's manifest
of files with ``files``: a process that finds the store's revision newer than the index's (another process or,
in server mode, another host ingested) pulls only the chunks of the files whose manifest entry changed. A new
collection (``--reindex``, another store) is indexed from scratch.

Crash safety: every update is one SQLite transaction (write-ahead log), so a killed update leaves the index as it
was, with the store revision it had; the next open sees the revision differ and catches up. Readers never wait for
a writer: they keep the last committed state, and an update is seen by a reader's next query (``KeywordIndex.open``
with ``previous`` reads only what changed since that reader's generation).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import sqlite3
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from rag.index.chunk_access import NO_GROUP, groups_of
from rag.index.store import FileRecord, Store

INDEX_DIR = "keyword"
DB_FILE = "index.sqlite3"
FORMAT = "segments/2"  # 2: each file's reader groups
# A query token with a digit or an underscore (ERR-7731 gives "7731", KIP-848 "848", UV_THREADPOOL_SIZE) that
# occurs in at most RARE_CHUNKS chunks is an exact reference to them: an error code, a ticket, a config key.
IDENTIFIER = re.compile(r"[0-9_]")
RARE_CHUNKS = 5
# a query word the index lacks stands for the indexed words it begins, when it is this long and they are few
PREFIX_MIN = 5
PREFIX_MAX = 3
PREFIX_SCAN = 32  # indexed words looked at for a prefix (words only in deleted chunks are skipped)
# BM25's term-frequency saturation (bm25s's default is 1.5): measured 2026-12-06, 1.2 ranks our question set
# higher (MRR@10 0.915 to 0.921) and the NGINX and external sets no lower; b stays at 0.75. An index persisted
# with other parameters is rebuilt on open.
BM25_PARAMETERS = {"k1": 1.2, "b": 0.75}
BUILD_SEGMENT_CHUNKS = 250_000  # a build from scratch writes segments of at most this many chunks (bounded memory)
MAX_SEGMENTS = 8  # beyond this many, all but the MAX_SEGMENTS // 2 largest segments are merged into one
PURGE_SHARE = 0.25  # a segment whose deleted chunks reach this share is rewritten without them
MAX_BLOCKS = 16  # beyond this many length/file blocks, they are rewritten as one
FETCH_FILES = 200  # files whose chunks are read from the store in one call
FULL_SHARE = 0.5  # when more than this share of the files changed, the index is built from scratch instead
WRITER_WAIT = 600.0  # seconds an ingest waits for another process's update of the same index
POSTINGS_CACHE_BYTES = 64 << 20
MASKS_KEPT = 16  # filters whose chunk masks a reader keeps

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def tokenize(texts: list[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", stemmer=_stemmer(), return_ids=False, show_progress=False)


def keyword_text(title: str, section: str, text: str) -> str:
    return f"{title}\n{section}\n{text}"


@dataclass(frozen=True)
class Change:
    """What one ingest did to the store: the revision before and after it, and the files (source keys) whose
    chunks or manifest entries it wrote or removed. The index takes it as a shortcut only when it was at
    ``before`` and the store is at ``before`` (the ingest updates the index just before it sets the store's new
    revision, so that readers find both at once) or at ``after``; otherwise it compares manifests."""

    before: str
    after: str
    files: frozenset[str]

    @property
    def revisions(self) -> tuple[str, str]:
        return self.before, self.after


class IndexBusy(RuntimeError):
    """Another process is updating the index (a reader then searches the last committed state)."""


# -- the database ------------------------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    file INTEGER PRIMARY KEY, source_key TEXT NOT NULL UNIQUE, doc_type TEXT NOT NULL, source TEXT NOT NULL,
    path TEXT NOT NULL, access TEXT NOT NULL DEFAULT '', stamp TEXT NOT NULL, generation INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS files_by_generation ON files (generation);
CREATE TABLE IF NOT EXISTS chunks (
    doc INTEGER PRIMARY KEY, chunk_id TEXT NOT NULL UNIQUE, file INTEGER NOT NULL, segment INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_by_file ON chunks (file);
CREATE INDEX IF NOT EXISTS chunks_by_segment ON chunks (segment);
CREATE TABLE IF NOT EXISTS deleted (doc INTEGER PRIMARY KEY, generation INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS deleted_by_generation ON deleted (generation);
CREATE TABLE IF NOT EXISTS blocks (
    first_doc INTEGER PRIMARY KEY, lengths BLOB NOT NULL, files BLOB NOT NULL, generation INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS segments (segment INTEGER PRIMARY KEY, docs INTEGER NOT NULL, dead INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS postings (
    term TEXT NOT NULL, segment INTEGER NOT NULL, docs BLOB NOT NULL, tfs BLOB NOT NULL,
    PRIMARY KEY (term, segment)) WITHOUT ROWID;
"""
TABLES = ["files", "chunks", "deleted", "blocks", "segments", "postings"]
DOC = np.int32
TF = np.uint16
LENGTH = np.float32  # a deleted chunk's length is -1


def _database(data_dir: Path) -> Path:
    return Path(data_dir) / INDEX_DIR / DB_FILE


def _connect(target: str, timeout: float, uri: bool = False) -> sqlite3.Connection:
    connection = sqlite3.connect(target, timeout=timeout, isolation_level=None, uri=uri, check_same_thread=False)
    connection.execute("PRAGMA synchronous=NORMAL")  # with the write-ahead log: a killed process loses nothing
    return connection


def _open_writer(path: Path, timeout: float) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_old_format(path.parent)
    connection = _connect(str(path), timeout)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.executescript(SCHEMA)
    return connection


def _remove_old_format(folder: Path) -> None:
    """The whole-index files of earlier versions (bm25s arrays and chunks.json), and their staging folders."""
    for name in ("chunks.json", "params.index.json", "vocab.index.json", "corpus.jsonl", "corpus.mmindex.json"):
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
    for path in [*folder.glob("*.index.npy"), *folder.parent.glob(f".{INDEX_DIR}-*")]:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _remove_database(path: Path) -> None:
    """A damaged index database and its log: the index is derived, so it is built again."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            path.with_name(path.name + suffix).unlink()


def _meta(connection: sqlite3.Connection) -> dict[str, str]:
    try:
        return dict(connection.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.Error:
        return {}


def _set_meta(connection: sqlite3.Connection, **values: object) -> None:
    connection.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [(key, str(value)) for key, value in values.items()],
    )


def _usable(meta: dict[str, str]) -> bool:
    """Written by this format with our BM25 parameters (an earlier index is rebuilt, not read)."""
    return meta.get("format") == FORMAT and meta.get("bm25") == json.dumps(BM25_PARAMETERS, sort_keys=True)


def stamp(record: FileRecord) -> str:
    """What a manifest entry says about its file's chunks: any change to them changes this."""
    return f"{record.file_hash}|{record.ingested_at!r}|{int(record.complete)}|{record.chunk_count}"


# -- writing -----------------------------------------------------------------------------------------------------


@dataclass
class _Chunk:
    chunk_id: str
    source_key: str
    text: str
    doc_type: str
    source: str
    path: str
    access: str  # the groups that may read it, "a,b"; "" = everyone


def _chunks_of(ids: list[str], documents: list[str], metadatas: list[dict]) -> Iterator[_Chunk]:
    for chunk_id, text, meta in zip(ids, documents, metadatas):
        meta = meta or {}
        yield _Chunk(
            chunk_id,
            str(meta.get("source_key", "")),
            keyword_text(str(meta.get("title", "")), str(meta.get("section", "")), text or ""),
            str(meta.get("doc_type", "")),
            str(meta.get("source", "")),
            str(meta.get("path", "")),
            ",".join(groups_of(meta)),
        )


class _Writer:
    """One update of the index, inside one write transaction."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.db = connection
        meta = _meta(connection)
        self.generation = int(meta.get("generation", 0)) + 1
        self.next_doc = int(meta.get("next_doc", 0))
        self.next_segment = int(meta.get("next_segment", 0))
        self.file_numbers = dict(connection.execute("SELECT source_key, file FROM files").fetchall())

    # -- from scratch
    def clear(self, store: Store) -> None:
        for table in TABLES:
            self.db.execute(f"DELETE FROM {table}")  # noqa: S608 (table names are ours)
        self.next_doc = self.next_segment = 0
        self.file_numbers = {}
        _set_meta(
            self.db,
            format=FORMAT,
            bm25=json.dumps(BM25_PARAMETERS, sort_keys=True),
            build=uuid.uuid4().hex,
            collection=store.collection_id(),
        )

    def add_everything(self, store: Store, records: dict[str, FileRecord]) -> None:
        self._save_files(records)
        batch: list[_Chunk] = []
        if store.exists():
            for page in store.iter_all():
                batch.extend(_chunks_of(*page))
                if len(batch) >= BUILD_SEGMENT_CHUNKS:
                    self._add_segment(batch)
                    batch = []
        self._add_segment(batch)

    # -- file by file
    def replace_files(self, store: Store, keys: set[str], records: dict[str, FileRecord]) -> None:
        """The chunks of ``keys`` as the store has them now; ``records``: their manifest entries (a key without
        one left the store)."""
        self._delete_chunks_of([self.file_numbers[key] for key in keys if key in self.file_numbers])
        present = sorted(key for key in keys if key in records)
        chunks: list[_Chunk] = []
        for start in range(0, len(present), FETCH_FILES):
            chunks.extend(_chunks_of(*store.chunks_of_files(present[start : start + FETCH_FILES])))
        gone = [key for key in keys if key not in records and key in self.file_numbers]
        self.db.executemany("DELETE FROM files WHERE source_key = ?", [(key,) for key in gone])
        for key in gone:
            del self.file_numbers[key]
        self._save_files({key: records[key] for key in present})
        self._delete_chunk_ids([chunk.chunk_id for chunk in chunks])
        self._add_segment(chunks)

    def _delete_chunk_ids(self, chunk_ids: list[str]) -> None:
        """Chunks the index holds under another file (a chunk cannot move between files in an ingest, but a store
        written by other means may do it): the newer copy replaces them."""
        for start in range(0, len(chunk_ids), 500):
            part = chunk_ids[start : start + 500]
            marks = ",".join("?" * len(part))
            rows = self.db.execute(f"SELECT doc, segment FROM chunks WHERE chunk_id IN ({marks})", part).fetchall()  # noqa: S608
            self._mark_deleted(rows)
            self.db.executemany("DELETE FROM chunks WHERE doc = ?", [(doc,) for doc, _ in rows])

    def _mark_deleted(self, rows: list[tuple[int, int]]) -> None:
        """``rows``: (chunk number, segment) of chunks leaving the index."""
        self.db.executemany(
            "INSERT OR IGNORE INTO deleted (doc, generation) VALUES (?, ?)", [(doc, self.generation) for doc, _ in rows]
        )
        dead: dict[int, int] = {}
        for _, segment in rows:
            dead[segment] = dead.get(segment, 0) + 1
        self.db.executemany(
            "UPDATE segments SET dead = dead + ? WHERE segment = ?",
            [(count, segment) for segment, count in dead.items()],
        )

    def _save_files(self, records: dict[str, FileRecord]) -> None:
        """The manifest entries the index now reflects (their files described by their chunks, see ``_describe``)."""
        self.db.executemany(
            "INSERT INTO files (source_key, doc_type, source, path, stamp, generation) VALUES (?, ?, '', '', ?, ?) "
            "ON CONFLICT (source_key) DO UPDATE SET stamp = excluded.stamp, generation = excluded.generation",
            [(key, record.doc_type, stamp(record), self.generation) for key, record in records.items()],
        )
        self.file_numbers.update(
            self.db.execute("SELECT source_key, file FROM files WHERE generation = ?", (self.generation,)).fetchall()
        )

    def _describe(self, chunks: list[_Chunk]) -> np.ndarray:
        """The file number of each chunk; each file's doc type and paths as its chunks give them (a chunk whose
        file has no manifest entry, in a store written by other means, gets a file without a stamp)."""
        first = _first_chunk_of(chunks)
        access = _file_access(chunks)
        self.db.executemany(
            "INSERT INTO files (source_key, doc_type, source, path, access, stamp, generation) "
            "VALUES (?, ?, ?, ?, ?, '', ?) "
            "ON CONFLICT (source_key) DO UPDATE SET doc_type = excluded.doc_type, source = excluded.source, "
            "path = excluded.path, access = excluded.access, generation = excluded.generation",
            [(key, c.doc_type, c.source, c.path, access[key], self.generation) for key, c in first.items()],
        )
        missing = [key for key in first if key not in self.file_numbers]
        for start in range(0, len(missing), 500):
            part = missing[start : start + 500]
            marks = ",".join("?" * len(part))
            self.file_numbers.update(
                self.db.execute(f"SELECT source_key, file FROM files WHERE source_key IN ({marks})", part).fetchall()  # noqa: S608
            )
        return np.array([self.file_numbers[chunk.source_key] for chunk in chunks], dtype=DOC)

    def _delete_chunks_of(self, files: list[int]) -> None:
        for start in range(0, len(files), 500):
            part = files[start : start + 500]
            marks = ",".join("?" * len(part))
            rows = self.db.execute(f"SELECT doc, segment FROM chunks WHERE file IN ({marks})", part).fetchall()  # noqa: S608
            self._mark_deleted(rows)
            self.db.execute(f"DELETE FROM chunks WHERE file IN ({marks})", part)  # noqa: S608

    def _add_segment(self, chunks: list[_Chunk]) -> None:
        if not chunks:
            return
        chunks = list({chunk.chunk_id: chunk for chunk in chunks}.values())  # a page boundary never doubles one
        first, segment = self.next_doc, self.next_segment
        files = self._describe(chunks)
        docs = np.arange(first, first + len(chunks), dtype=DOC)
        self.db.executemany(
            "INSERT INTO chunks (doc, chunk_id, file, segment) VALUES (?, ?, ?, ?)",
            zip(docs.tolist(), (chunk.chunk_id for chunk in chunks), files.tolist(), [segment] * len(chunks)),
        )
        lengths, postings = _postings(tokenize([chunk.text for chunk in chunks]), first)
        self.db.execute(
            "INSERT INTO blocks (first_doc, lengths, files, generation) VALUES (?, ?, ?, ?)",
            (first, lengths.tobytes(), files.tobytes(), self.generation),
        )
        self.db.execute("INSERT INTO segments (segment, docs, dead) VALUES (?, ?, 0)", (segment, len(chunks)))
        self.db.executemany(
            "INSERT INTO postings (term, segment, docs, tfs) VALUES (?, ?, ?, ?)",
            ((term, segment, term_docs.tobytes(), tfs.tobytes()) for term, term_docs, tfs in postings),
        )
        self.next_doc, self.next_segment = first + len(chunks), segment + 1

    # -- keeping it small
    def compact(self) -> None:
        segments = self.db.execute("SELECT segment, docs, dead FROM segments ORDER BY docs DESC").fetchall()
        merge = {segment for segment, docs, dead in segments if docs and dead >= PURGE_SHARE * docs}
        if len(segments) > MAX_SEGMENTS:
            merge |= {segment for segment, _, _ in segments[MAX_SEGMENTS // 2 :]}
        if merge:
            self._merge(sorted(merge))
        if self.db.execute("SELECT count(*) FROM blocks").fetchone()[0] > MAX_BLOCKS:
            self._merge_blocks()

    def _merge(self, segments: list[int]) -> None:
        """One segment in place of ``segments``, without the postings of deleted chunks."""
        dead = self._dead()
        target = self.next_segment
        marks = ",".join("?" * len(segments))
        rows = self.db.execute(
            f"SELECT term, docs, tfs FROM postings WHERE segment IN ({marks}) ORDER BY term",
            segments,  # noqa: S608
        )
        merged = []
        for term, group in _grouped(rows):
            docs = np.concatenate([np.frombuffer(d, dtype=DOC) for d, _ in group])
            tfs = np.concatenate([np.frombuffer(t, dtype=TF) for _, t in group])
            keep = ~dead[docs]
            docs, tfs = docs[keep], tfs[keep]
            if len(docs):
                order = np.argsort(docs, kind="stable")
                merged.append((term, target, docs[order].tobytes(), tfs[order].tobytes()))
        self.db.execute(f"DELETE FROM postings WHERE segment IN ({marks})", segments)  # noqa: S608
        self.db.executemany("INSERT INTO postings (term, segment, docs, tfs) VALUES (?, ?, ?, ?)", merged)
        self.db.execute(f"UPDATE chunks SET segment = ? WHERE segment IN ({marks})", [target, *segments])  # noqa: S608
        live = self.db.execute("SELECT count(*) FROM chunks WHERE segment = ?", (target,)).fetchone()[0]
        self.db.execute(f"DELETE FROM segments WHERE segment IN ({marks})", segments)  # noqa: S608
        if live:  # every chunk of the merged segments deleted: nothing left to keep
            self.db.execute("INSERT INTO segments (segment, docs, dead) VALUES (?, ?, 0)", (target, live))
        self.next_segment = target + 1

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Every chunk's length (-1: deleted) and file, by chunk number, as the blocks and deletions say."""
        lengths = np.full(self.next_doc, -1, dtype=LENGTH)
        files = np.zeros(self.next_doc, dtype=DOC)
        for first, block_lengths, block_files in self.db.execute("SELECT first_doc, lengths, files FROM blocks"):
            values = np.frombuffer(block_lengths, dtype=LENGTH)
            lengths[first : first + len(values)] = values
            files[first : first + len(values)] = np.frombuffer(block_files, dtype=DOC)
        dead = np.array([doc for (doc,) in self.db.execute("SELECT doc FROM deleted")], dtype=np.int64)
        lengths[dead] = -1
        return lengths, files

    def _dead(self) -> np.ndarray:
        return self._arrays()[0] < 0

    def _merge_blocks(self) -> None:
        """All blocks as one, the deleted chunks' lengths set to -1; the deletions need no rows after that."""
        lengths, files = self._arrays()
        self.db.execute("DELETE FROM blocks")
        self.db.execute("DELETE FROM deleted")
        self.db.execute(
            "INSERT INTO blocks (first_doc, lengths, files, generation) VALUES (0, ?, ?, ?)",
            (lengths.tobytes(), files.tobytes(), self.generation),
        )

    def finish(self, revision: str) -> None:
        _set_meta(
            self.db,
            revision=revision,
            generation=self.generation,
            next_doc=self.next_doc,
            next_segment=self.next_segment,
        )


def _first_chunk_of(chunks: list[_Chunk]) -> dict[str, _Chunk]:
    first: dict[str, _Chunk] = {}
    for chunk in chunks:
        first.setdefault(chunk.source_key, chunk)
    return first


def _file_access(chunks: list[_Chunk]) -> dict[str, str]:
    """Each file's reader groups. An ingest gives every chunk of a file the same ones; a file whose chunks
    disagree (a store written by other means) is kept for readers who see everything (``NO_GROUP``)."""
    seen: dict[str, set[str]] = {}
    for chunk in chunks:
        seen.setdefault(chunk.source_key, set()).add(chunk.access)
    return {key: values.pop() if len(values) == 1 else NO_GROUP for key, values in seen.items()}


def _grouped(rows: Iterable[tuple[str, bytes, bytes]]) -> Iterator[tuple[str, list[tuple[bytes, bytes]]]]:
    """Rows ordered by term, grouped by it."""
    term, group = None, []
    for row_term, docs, tfs in rows:
        if row_term != term and group:
            yield term, group
            group = []
        term = row_term
        group.append((docs, tfs))
    if group:
        yield term, group


Postings = list[tuple[str, np.ndarray, np.ndarray]]


def _postings(token_lists: list[list[str]], first_doc: int) -> tuple[np.ndarray, Postings]:
    """Each chunk's length in tokens, and for each term the chunks holding it (ascending) with their counts."""
    vocabulary: dict[str, int] = {}
    term_ids = np.fromiter(
        (vocabulary.setdefault(token, len(vocabulary)) for tokens in token_lists for token in tokens), dtype=np.int64
    )
    lengths = np.array([len(tokens) for tokens in token_lists], dtype=np.int64)
    docs = np.repeat(np.arange(first_doc, first_doc + len(token_lists), dtype=np.int64), lengths)
    if not len(term_ids):
        return lengths.astype(LENGTH), []
    keys, counts = np.unique(term_ids * (first_doc + len(token_lists)) + docs, return_counts=True)
    key_terms, key_docs = np.divmod(keys, first_doc + len(token_lists))
    bounds = np.flatnonzero(np.diff(key_terms)) + 1
    words = list(vocabulary)
    starts = np.concatenate([[0], bounds])
    counts = np.minimum(counts, np.iinfo(TF).max).astype(TF)
    postings = [
        (words[int(key_terms[start])], doc_part.astype(DOC), count_part)
        for start, doc_part, count_part in zip(starts, np.split(key_docs, bounds), np.split(counts, bounds))
    ]
    return lengths.astype(LENGTH), postings


@contextlib.contextmanager
def _write_transaction(path: Path | None, wait: float, memory: sqlite3.Connection | None = None):
    """The index database inside a write transaction (committed when the block ends without an error). Raises
    ``IndexBusy`` when another process holds it for more than ``wait`` seconds."""
    connection = memory
    try:
        if connection is None:
            connection = _open_writer(path, wait)
        connection.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as error:
        if connection is not None and memory is None:
            connection.close()
        if "locked" in str(error) or "busy" in str(error):
            raise IndexBusy(str(error)) from None
        raise
    try:
        yield connection
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    finally:
        if memory is None:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)")  # keeps the log short for the next readers
            connection.close()


def _bring_up_to_date(
    connection: sqlite3.Connection, store: Store, change: Change | None = None, from_scratch: bool = False
) -> str:
    """Inside a write transaction: makes the index match the store; returns the revision it now matches."""
    meta = _meta(connection)
    revision = store.revision()  # read before the manifest and the chunks: a later change leaves it stale, not wrong
    if change is not None and revision in change.revisions:
        revision = change.after  # the store holds the change's chunks, and carries (or is about to) its revision
    if not from_scratch and _usable(meta) and meta.get("revision") == revision:
        return revision
    writer = _Writer(connection)
    collection = store.collection_id()
    full = from_scratch or not _usable(meta) or meta.get("collection") != collection
    if not full and change is not None and meta.get("revision") == change.before and revision == change.after:
        writer.replace_files(store, set(change.files), store.file_records(sorted(change.files)))
    elif not full:
        records = store.file_records()
        indexed = dict(connection.execute("SELECT source_key, stamp FROM files").fetchall())
        changed = {key for key, record in records.items() if indexed.get(key) != stamp(record)}
        changed |= set(indexed) - set(records)
        if len(changed) > FULL_SHARE * max(len(records), 1) and len(changed) > FETCH_FILES:
            full = True
        else:
            writer.replace_files(store, changed, {key: records[key] for key in changed if key in records})
    if full:
        records = store.file_records()
        writer.clear(store)
        writer.add_everything(store, records)
    writer.compact()
    writer.finish(revision)
    return revision


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
            connection = _connect(f"{path.resolve().as_uri()}?mode=ro", timeout=5.0, uri=True)
        except sqlite3.Error:
            return None
        try:
            meta = _meta(connection)
        finally:
            connection.close()
        return meta.get("revision") if _usable(meta) else None

    @classmethod
    def sync(cls, store: Store, data_dir: Path, change: Change | None = None, wait: float = WRITER_WAIT) -> str:
        """Brings the persisted index up to the store (file by file when it can); returns the revision it matches.
        Raises ``IndexBusy`` when another process holds the index longer than ``wait`` seconds."""
        try:
            with _write_transaction(_database(data_dir), wait) as connection:
                return _bring_up_to_date(connection, store, change)
        except sqlite3.DatabaseError as error:
            if isinstance(error, sqlite3.OperationalError) and ("locked" in str(error) or "busy" in str(error)):
                raise IndexBusy(str(error)) from None
            log.warning("the keyword index at %s was unreadable (%s); building it again", _database(data_dir), error)
            _remove_database(_database(data_dir))
            with _write_transaction(_database(data_dir), wait) as connection:
                return _bring_up_to_date(connection, store, change)

    @classmethod
    def rebuild(cls, store: Store, data_dir: Path, persist: bool = True) -> KeywordIndex:
        """The index built from every chunk (persisted, or in memory for a read-only data directory)."""
        if not persist:
            return cls._in_memory(store)
        with _write_transaction(_database(data_dir), WRITER_WAIT) as connection:
            _bring_up_to_date(connection, store, from_scratch=True)
        loaded = cls.load(data_dir)
        assert loaded is not None
        return loaded

    @classmethod
    def _in_memory(cls, store: Store) -> KeywordIndex:
        name = f"file:keyword-{uuid.uuid4().hex}?mode=memory&cache=shared"
        keepalive = _connect(name, timeout=5.0, uri=True)
        keepalive.executescript(SCHEMA)
        with _write_transaction(None, 0, memory=keepalive) as connection:
            _bring_up_to_date(connection, store, from_scratch=True)
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
            connection = _connect(location if uri else f"{Path(location).as_uri()}?mode=ro", timeout=5.0, uri=True)
        except sqlite3.Error:
            return None
        try:
            connection.execute("BEGIN")  # one snapshot for everything read below
            meta = _meta(connection)
            if not _usable(meta):
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
            connection = self._local.connection = _connect(target, timeout=5.0, uri=True)
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
