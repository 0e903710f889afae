"""The keyword index's database format: its tables, the types of its packed arrays, how a connection is opened on
it, and the ``meta`` row that says which format and BM25 parameters wrote it.

The index lives in one SQLite database, ``<data dir>/keyword/index.sqlite3``, laid out the way search engines keep an
index they update:

- ``postings``: for each (term, segment) the chunks holding the term and how often, as two packed arrays (``DOC``,
  ``TF``). An update adds one small segment with the chunks of the files that changed; the chunks they replace are
  only marked deleted (``deleted``), and their postings are skipped at query time.
- ``segments``: each segment's chunk count and how many of them are deleted (``rag.index.keyword_writer`` merges
  and purges them).
- ``blocks``: each chunk's length in tokens (``LENGTH``, -1 once deleted) and its file, as packed arrays, so a reader
  loads a million chunks' worth in a few milliseconds; ``chunks``: each chunk number's id, file and segment;
  ``files``: each file's doc type and paths (for the filters), the groups that may read it and the manifest entry it
  was indexed from.

May import: the standard library and numpy; nothing from ``rag``.
"""

from __future__ import annotations

import json
import sqlite3

import numpy as np

INDEX_DIR = "keyword"
FORMAT = "segments/2"  # 2: each file's reader groups
# BM25's term-frequency saturation (bm25s's default is 1.5): measured 2026-12-06, 1.2 ranks our question set
# higher (MRR@10 0.915 to 0.921) and the NGINX and external sets no lower; b stays at 0.75. An index persisted
# with other parameters is rebuilt on open.
BM25_PARAMETERS = {"k1": 1.2, "b": 0.75}

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


def connect(target: str, timeout: float, uri: bool = False) -> sqlite3.Connection:
    connection = sqlite3.connect(target, timeout=timeout, isolation_level=None, uri=uri, check_same_thread=False)
    connection.execute("PRAGMA synchronous=NORMAL")  # with the write-ahead log: a killed process loses nothing
    return connection


def read_meta(connection: sqlite3.Connection) -> dict[str, str]:
    try:
        return dict(connection.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.Error:
        return {}


def usable(meta: dict[str, str]) -> bool:
    """Written by this format with our BM25 parameters (an earlier index is rebuilt, not read)."""
    return meta.get("format") == FORMAT and meta.get("bm25") == json.dumps(BM25_PARAMETERS, sort_keys=True)
