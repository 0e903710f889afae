"""Keyword search: a BM25 index (bm25s) over every chunk, persisted beside the store.

Local Chroma has no sparse search, so this index is derived from the chunk collection and rebuilt
whenever the collection's revision changes (every ingest that changed something bumps it). A
rebuild tokenizes a few thousand chunks in about a second, which keeps it simpler and safer than
patching the index in place. It keeps each chunk's groups (``rag.index.chunk_access``), so a search for a reader
masks out the restricted chunks they may not read before BM25 ranks anything.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import itertools
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from rag.index.chunk_access import groups_of
from rag.index.store import Store

INDEX_DIR = "keyword"
META_FILE = "chunks.json"
# A query token with a digit or an underscore (ERR-7731 gives "7731", KIP-848 "848", UV_THREADPOOL_SIZE) that
# occurs in at most RARE_CHUNKS chunks is an exact reference to them: an error code, a ticket, a config key.
IDENTIFIER = re.compile(r"[0-9_]")
RARE_CHUNKS = 5
# a query word the index lacks stands for the indexed words it begins, when it is this long and they are few
PREFIX_MIN = 5
PREFIX_MAX = 3
ABANDONED_SECONDS = 3600
# BM25's term-frequency saturation (bm25s's default is 1.5): measured 2026-12-06, 1.2 ranks our question set
# higher (MRR@10 0.915 to 0.921) and the NGINX and external sets no lower; b stays at bm25s's 0.75. An index
# persisted with other parameters is rebuilt on open.
BM25_PARAMETERS = {"k1": 1.2, "b": 0.75}
MASKS_KEPT = 64  # readable-chunk masks remembered per index, one per distinct set of groups


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def tokenize(texts: list[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", stemmer=_stemmer(), return_ids=False, show_progress=False)


def keyword_text(title: str, section: str, text: str) -> str:
    return f"{title}\n{section}\n{text}"


def _swap_in(staging: Path, target: Path) -> None:
    """Puts a staged index in place whole, so a reader never sees half an index. Another process may be
    swapping in its own rebuild at the same moment (the UI while the CLI ingests): one wins, none fails."""
    for _ in range(20):
        old = target.with_name(f".{INDEX_DIR}-old-{uuid.uuid4().hex}")
        with contextlib.suppress(FileNotFoundError):
            target.rename(old)
        try:
            staging.rename(target)
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            continue  # another rebuild took the place between the two renames: move it aside again
        finally:
            shutil.rmtree(old, ignore_errors=True)
        return
    shutil.rmtree(staging, ignore_errors=True)  # lost every race: the winners' index is as fresh


def _remove_abandoned_staging(folder: Path) -> None:
    """Staging folders of rebuilds that were killed (a live rebuild's folder is younger than an hour)."""
    cutoff = time.time() - ABANDONED_SECONDS
    for path in folder.glob(f".{INDEX_DIR}-*"):
        with contextlib.suppress(OSError):
            if path.is_dir() and path.stat().st_mtime < cutoff:
                shutil.rmtree(path, ignore_errors=True)


@dataclass
class KeywordIndex:
    retriever: object | None
    ids: list[str]
    doc_types: list[str]
    sources: list[str]  # relpath and display path of each chunk's file, for the source filter
    revision: str
    access: list[str] = field(default_factory=list)  # each chunk's groups, "a,b"; "" = everyone may read it
    _position: dict[str, int] | None = field(default=None, repr=False)  # chunk id -> place, built on first use
    _sorted_vocab: list[str] | None = field(default=None, repr=False)
    _masks: dict[frozenset[str], np.ndarray] = field(default_factory=dict, repr=False)
    _restricted: bool | None = field(default=None, repr=False)  # whether any chunk is restricted, found on first use
    _document_sizes: dict[str, int] | None = field(default=None, repr=False)  # chunks per file, counted on first use

    @staticmethod
    def directory(data_dir: Path) -> Path:
        return Path(data_dir) / INDEX_DIR

    @classmethod
    def stored_revision(cls, data_dir: Path) -> str | None:
        meta = cls.directory(data_dir) / META_FILE
        if not meta.is_file():
            return None
        try:
            return json.loads(meta.read_text())["revision"]
        except (ValueError, KeyError):
            return None

    @classmethod
    def rebuild(cls, store: Store, data_dir: Path, persist: bool = True) -> KeywordIndex:
        import bm25s

        ids: list[str] = []
        texts: list[str] = []
        doc_types: list[str] = []
        sources: list[str] = []
        access: list[str] = []
        revision = store.revision()
        if store.exists():
            for page_ids, documents, metadatas in store.iter_all():
                for chunk_id, text, meta in zip(page_ids, documents, metadatas):
                    ids.append(chunk_id)
                    texts.append(keyword_text(str(meta.get("title", "")), str(meta.get("section", "")), text or ""))
                    doc_types.append(str(meta.get("doc_type", "")))
                    sources.append(f"{meta.get('source', '')}\n{meta.get('path', '')}")
                    access.append(",".join(groups_of(meta)))
        retriever = None
        if ids:
            retriever = bm25s.BM25(**BM25_PARAMETERS)
            retriever.index(tokenize(texts), show_progress=False)
        index = cls(retriever, ids, doc_types, sources, revision, access)
        if persist:
            index._save(cls.directory(data_dir))
        return index

    def _save(self, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_staging(target.parent)
        staging = Path(tempfile.mkdtemp(prefix=".keyword-", dir=target.parent))
        try:
            if self.retriever is not None:
                self.retriever.save(str(staging))
            meta = {
                "revision": self.revision,
                "bm25": BM25_PARAMETERS,
                "ids": self.ids,
                "doc_types": self.doc_types,
                "sources": self.sources,
                "access": self.access,
            }
            (staging / META_FILE).write_text(json.dumps(meta))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _swap_in(staging, target)

    @classmethod
    def load(cls, data_dir: Path) -> KeywordIndex | None:
        import bm25s

        directory = cls.directory(data_dir)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("bm25") != BM25_PARAMETERS or "access" not in meta:  # an earlier version's: rebuilt
                return None
            retriever = bm25s.BM25.load(str(directory)) if meta["ids"] else None
        except (OSError, ValueError, KeyError):  # swapped out while being read: the caller rebuilds
            return None
        return cls(retriever, meta["ids"], meta["doc_types"], meta["sources"], meta["revision"], meta["access"])

    @classmethod
    def open(cls, store: Store, data_dir: Path) -> KeywordIndex:
        """The persisted index when it matches the store, otherwise a fresh rebuild."""
        index = cls.load(data_dir)
        if index is None or index.revision != store.revision():
            if os.access(Path(data_dir), os.W_OK):
                index = cls.rebuild(store, data_dir)
            else:  # a reader on a read-only data directory keeps its rebuild in memory
                index = cls.rebuild(store, data_dir, persist=False)
        return index

    def rare_identifier_ids(self, query: str) -> set[str]:
        """The chunks that hold a rare identifier of the query (see ``IDENTIFIER``)."""
        if self.retriever is None or not self.ids:
            return set()
        vocab = self.retriever.vocab_dict
        indptr, indices = self.retriever.scores["indptr"], self.retriever.scores["indices"]
        found: set[str] = set()
        for token in tokenize([query])[0]:
            if token in vocab and IDENTIFIER.search(token):
                token_id = vocab[token]
                documents = indices[indptr[token_id] : indptr[token_id + 1]]
                if len(documents) <= RARE_CHUNKS:
                    found.update(self.ids[int(d)] for d in documents)
        return found

    def _known_forms(self, token: str) -> list[str]:
        """The token when the index knows it; else the indexed words it is the start of ("postgres" finds
        "postgresql", "mongo" "mongodb"), when there are only a few: a short name the documents spell out."""
        vocab = self.retriever.vocab_dict
        if token in vocab:
            return [token]
        if len(token) < PREFIX_MIN or not token.isalpha():
            return []
        if self._sorted_vocab is None:
            self._sorted_vocab = sorted(vocab)
        words = self._sorted_vocab
        start = bisect.bisect_left(words, token)
        longer = list(itertools.takewhile(lambda word: word.startswith(token), words[start : start + PREFIX_MAX + 1]))
        return longer if len(longer) <= PREFIX_MAX else []

    def documents_of(self, chunk_ids: list[str]) -> dict[str, str]:
        """The file (its display path) of each of ``chunk_ids`` that the index holds."""
        position = self._positions()
        found = [position[chunk_id] for chunk_id in chunk_ids if chunk_id in position]
        return {self.ids[i]: self.sources[i].split("\n")[-1] for i in found}

    def document_sizes(self) -> dict[str, int]:
        """How many chunks each file (its display path) has in the store."""
        if self._document_sizes is None:
            self._document_sizes = dict(Counter(source.split("\n")[-1] for source in self.sources))
        return self._document_sizes

    def _positions(self) -> dict[str, int]:
        if self._position is None:
            self._position = {chunk_id: i for i, chunk_id in enumerate(self.ids)}
        return self._position

    def readable_mask(self, groups: frozenset[str] | None) -> np.ndarray | None:
        """1 for each chunk a reader of ``groups`` may read, 0 for the others; None when they may read every chunk
        (``groups`` None, or nothing is restricted)."""
        if self._restricted is None:
            self._restricted = any(self.access)
        if groups is None or not self._restricted:
            return None
        mask = self._masks.get(groups)
        if mask is None:
            mask = np.array(
                [not value or bool(groups.intersection(value.split(","))) for value in self.access], dtype=np.float32
            )
            if len(self._masks) >= MASKS_KEPT:
                self._masks.clear()
            self._masks[groups] = mask
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
        if self.retriever is None or not self.ids:
            return []
        tokens = [known for token in tokenize([query])[0] for known in self._known_forms(token)]
        if not tokens:
            return []
        mask = self.readable_mask(groups)
        if doc_type or source:
            wanted = np.array(
                [
                    (doc_type is None or dt == doc_type) and (source is None or source in src.split("\n"))
                    for dt, src in zip(self.doc_types, self.sources)
                ],
                dtype=np.float32,
            )
            mask = wanted if mask is None else mask * wanted
        k = min(k, len(self.ids))
        documents, scores = self.retriever.retrieve([tokens], k=k, show_progress=False, weight_mask=mask)
        return [(self.ids[int(i)], float(s)) for i, s in zip(documents[0], scores[0]) if s > 0]
