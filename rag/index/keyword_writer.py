"""Updating the keyword index: one update is one write transaction that adds a segment with the chunks of the
files that changed and marks the chunks they replace deleted (``replace_files``), or builds every segment from
scratch; then it merges small segments and purges ones with many deleted chunks (``MAX_SEGMENTS``,
``PURGE_SHARE``), so a query reads a few rows per term however many updates came before.

Which files to update comes from the ingest that just ran (``Change``), or else from comparing the store's manifest
of files with the index's ``files`` (``stamp``): a process that finds the store's revision newer than the index's
(another process or, in server mode, another host ingested) pulls only the chunks of the files whose manifest entry
changed. A new collection (``--reindex``, another store) is indexed from scratch.

Crash safety: every update is one SQLite transaction (write-ahead log), so a killed update leaves the index as it
was, with the store revision it had; the next open sees the revision differ and catches up.

May import: ``rag.index.keyword_segments``, ``rag.index.keyword_text``, ``rag.index.store``,
``rag.index.chunk_access``; never ``rag.index.keyword`` (the reader).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.index.chunk_access import NO_GROUP, groups_of
from rag.index.keyword_segments import (
    BM25_PARAMETERS,
    DOC,
    FORMAT,
    INDEX_DIR,
    LENGTH,
    SCHEMA,
    TABLES,
    TF,
    connect,
    read_meta,
    usable,
)
from rag.index.keyword_text import keyword_text, tokenize
from rag.index.store import FileRecord, Store

BUILD_SEGMENT_CHUNKS = 250_000  # a build from scratch writes segments of at most this many chunks (bounded memory)
MAX_SEGMENTS = 8  # beyond this many, all but the MAX_SEGMENTS // 2 largest segments are merged into one
PURGE_SHARE = 0.25  # a segment whose deleted chunks reach this share is rewritten without them
MAX_BLOCKS = 16  # beyond this many length/file blocks, they are rewritten as one
FETCH_FILES = 200  # files whose chunks are read from the store in one call
FULL_SHARE = 0.5  # when more than this share of the files changed, the index is built from scratch instead


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


def _open_writer(path: Path, timeout: float) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_old_format(path.parent)
    connection = connect(str(path), timeout)
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


def _set_meta(connection: sqlite3.Connection, **values: object) -> None:
    connection.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [(key, str(value)) for key, value in values.items()],
    )


def stamp(record: FileRecord) -> str:
    """What a manifest entry says about its file's chunks: any change to them changes this."""
    return f"{record.file_hash}|{record.ingested_at!r}|{int(record.complete)}|{record.chunk_count}"


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
        meta = read_meta(connection)
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
def write_transaction(path: Path | None, wait: float, memory: sqlite3.Connection | None = None):
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


def bring_up_to_date(
    connection: sqlite3.Connection, store: Store, change: Change | None = None, from_scratch: bool = False
) -> str:
    """Inside a write transaction: makes the index match the store; returns the revision it now matches."""
    meta = read_meta(connection)
    revision = store.revision()  # read before the manifest and the chunks: a later change leaves it stale, not wrong
    if change is not None and revision in change.revisions:
        revision = change.after  # the store holds the change's chunks, and carries (or is about to) its revision
    if not from_scratch and usable(meta) and meta.get("revision") == revision:
        return revision
    writer = _Writer(connection)
    collection = store.collection_id()
    full = from_scratch or not usable(meta) or meta.get("collection") != collection
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
