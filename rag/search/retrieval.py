"""Retrieval: hybrid search (Chroma dense vectors + BM25 keywords), fused by ``rag.search.ranking``.

Also owns what turns raw hits into passages an answer can stand on (``rag.search.passages``): filters by doc type and
source, near-duplicates collapsed, a superseded document ranked below its successor, each hit widened with its
neighbouring chunks, and the confidence signal used to abstain.
A follow-up question is made standalone before it gets here (``rag.search.followups``).
"""

from __future__ import annotations

import copy
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from rag.config import Settings
from rag.documents.doc_status import (
    DECISION_SECTION,
    RETIRED,
    adr_ids,
    asks_about_past,
    asks_what_came_before,
    document_names,
)
from rag.index.embedding import Embedder
from rag.index.keyword import KeywordIndex
from rag.index.store import Store
from rag.search.access import Reader, group_filter, narrowed, readable_where
from rag.search.confidence import Calibration, load_cached, measure, save
from rag.search.passages import Passage, collapse_near_duplicates, join_chunks
from rag.search.ranking import document_scores, keyword_weight, reciprocal_rank_fusion

CANDIDATES = 50  # hits taken from each of the dense and keyword searches before fusion (30: MRR@10 0.793 on NGINX)
MODES = ("hybrid", "dense", "keyword")
SUCCESSOR_CHUNKS = 20  # a successor's closest chunks searched for one in its decision section
# a clause of a long question counts toward the confidence when it has this many words
CLAUSE_WORDS = 3
CLAUSE_BREAK = re.compile(r"(?<=[.!?;,])\s+")


@dataclass
class SearchResult:
    query: str
    passages: list[Passage]
    confidence: float  # best cosine similarity among the dense hits (0 when there are none)
    seconds: float
    mode: str = "hybrid"
    timings: dict[str, float] = field(default_factory=dict)


class _KeywordSlot:
    """The BM25 index a retriever and its per-reader views share: one reload per store revision, not one each;
    likewise the store's confidence calibration (two numbers about the whole store, the same for every reader)."""

    def __init__(self) -> None:
        self.index: KeywordIndex | None = None
        self.calibration: Calibration | None = None
        self.lock = threading.Lock()


class Retriever:
    """Reads as ``reader`` (``rag.search.access``): every read of the store (dense search, keyword search, chunks
    by id, a section, a whole document, the first chunks of a listing) leaves out the chunks the reader may not
    read, before anything is ranked. None (the command line) reads everything; ``for_reader`` gives a view of a
    shared retriever for one reader (the UI's person, the API's token)."""

    def __init__(
        self,
        settings: Settings,
        store: Store | None = None,
        embedder: Embedder | None = None,
        reader: Reader | None = None,
    ) -> None:
        self.settings = settings
        self.store = store or Store(settings)
        self.embedder = embedder or Embedder.for_settings(settings)
        self.reader = reader
        self._keyword_slot = _KeywordSlot()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keyword-search")

    def for_reader(self, reader: Reader) -> Retriever:
        """This retriever reading as ``reader``: the same store, model, keyword index and thread, no new load."""
        view = copy.copy(self)
        view.reader = reader
        return view

    def reader_where(self) -> dict | None:
        """What the reader may read, as a Chroma ``where`` clause (``rag.search.access.readable_where``)."""
        return readable_where(self.reader)

    def _readable(self, where: dict | None) -> dict | None:
        """``where`` narrowed to the chunks the reader may read."""
        return narrowed(where, self.reader)

    @staticmethod
    def _timed(function, *args):
        started = time.perf_counter()
        return function(*args), time.perf_counter() - started

    @property
    def keyword(self) -> KeywordIndex:
        """The BM25 index, reloaded whenever an ingest (by any process) changed the store."""
        revision = self.store.revision()
        slot = self._keyword_slot
        if slot.index is None or slot.index.revision != revision:
            with slot.lock:  # concurrent requests that see a new revision load it once
                if slot.index is None or slot.index.revision != revision:
                    slot.index = KeywordIndex.open(self.store, self.settings.data_dir, previous=slot.index)
        return slot.index

    def calibration(self) -> Calibration | None:
        """The store's confidence calibration (``rag.search.confidence``), measured once per store revision and kept
        in the data directory; None for a store too small to draw probes from."""
        index = self.keyword
        slot = self._keyword_slot
        if slot.calibration is None or slot.calibration.revision != index.revision:
            with slot.lock:
                if slot.calibration is None or slot.calibration.revision != index.revision:
                    calibration = load_cached(self.settings.data_dir, index.revision)
                    if calibration is None:
                        calibration = measure(self.store, index, self.embedder)
                        if calibration is not None:
                            save(self.settings.data_dir, calibration)
                    slot.calibration = calibration
        return slot.calibration

    def keyword_hits(
        self, query: str, k: int, doc_type: str | None = None, source: str | None = None
    ) -> list[tuple[str, float]]:
        """BM25 hits among the chunks the reader may read: ``(chunk id, score)``, best first."""
        return self.keyword.search(query, k, doc_type, source, group_filter(self.reader))

    def search(
        self,
        query: str,
        k: int = 10,
        doc_type: str | None = None,
        source: str | None = None,
        mode: str = "hybrid",
        widen: bool = False,
    ) -> SearchResult:
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
        started = time.perf_counter()
        timings: dict[str, float] = {}
        dense: list[Passage] = []
        keyword: list[tuple[str, float]] = []
        # keyword search runs in a thread while the query is embedded (torch releases the GIL meanwhile)
        keyword_future = None
        if mode in ("hybrid", "keyword"):
            index = self.keyword
            keyword_future = self._pool.submit(
                self._timed, index.search, query, CANDIDATES, doc_type, source, group_filter(self.reader)
            )
        # dense search runs in every mode: its similarity is the confidence signal
        t = time.perf_counter()
        dense = self._dense(query, CANDIDATES, doc_type, source)
        timings["dense"] = time.perf_counter() - t
        if keyword_future is not None:
            keyword, timings["keyword"] = keyword_future.result()
        confidence = max((p.dense_score or 0.0 for p in dense), default=0.0)
        if dense:
            confidence = max(confidence, self._clause_confidence(query, doc_type, source))
        limit = 2 * k + 5  # room for the near-duplicates that collapsing drops
        if mode == "dense":
            ranked = dense
        elif mode == "keyword":
            ranked = self._fuse([], keyword, limit=limit)
        else:
            rare = index.rare_identifier_ids(query) if keyword else set()
            exact = [chunk_id for chunk_id, _ in keyword if chunk_id in rare]
            ranked = self._fuse(dense, keyword, exact, limit=limit)
        passages = collapse_near_duplicates(demote_superseded(ranked, query))[:k]
        if widen:
            passages = self.widen(passages)
        timings["total"] = time.perf_counter() - started
        return SearchResult(query, passages, confidence, timings["total"], mode, timings)

    def with_successors(
        self, passages: list[Passage], query: str, k: int, doc_type: str | None = None
    ) -> list[Passage]:
        """``passages`` with the best passage of each successor that a superseded or deprecated document among them
        names (``successor_passage``), when it is not among them yet: above the old document's best passage, or
        below it when the question asks about the past. Still ``k`` passages at most (the last others make room).
        Retrieval figures are untouched: this is what an answer is given, not the ranking."""
        about_past = asks_about_past(query)
        result = list(passages)
        handled: set[str] = set()  # the old documents whose successor was looked up
        vector: list[float] | None = None
        for old in passages:  # best first: the first passage of a document is its best
            if old.status not in RETIRED or not old.superseded_by or old.path in handled:
                continue
            handled.add(old.path)
            paths = [path for path in self._documents_named(old.superseded_by) if path != old.path]
            if not paths:
                continue
            vector = vector if vector is not None else self.embedder.embed_query(query)
            successor = self.successor_passage(paths, vector, doc_type)
            if successor is None or any(p.id == successor.id for p in result):
                continue
            [successor] = self.widen([successor])
            successor.score = old.score * ((1 - 1e-6) if about_past else (1 + 1e-6))
            result.insert(result.index(old) + (1 if about_past else 0), successor)
        joined = {p.id for p in result} - {p.id for p in passages}
        while len(result) > k:  # room for the successors: the last passage that is neither old nor new goes
            last = next((p for p in reversed(result) if p.id not in joined and p.status not in RETIRED), result[-1])
            result.remove(last)
        return result

    def _documents_named(self, name: str) -> list[str]:
        """The paths of the documents called ``name`` (an ADR number, a path, a file name or stem): by their file
        names in the keyword index, else by the titles of the chunks a keyword search for the name finds."""
        index = self.keyword
        paths: dict[str, None] = {}
        for entry in dict.fromkeys(index.sources):
            source, _, path = entry.partition("\n")
            if name in document_names("", source):
                paths[path] = None
        if not paths:
            for passage in self.keyword_passages(name, k=20):
                if name in document_names(passage.title, passage.source):
                    paths[passage.path] = None
        return list(paths)

    def successor_passage(self, paths: list[str], vector: list[float], doc_type: str | None) -> Passage | None:
        """The successor's best passage for the query: its closest chunk in a section that states what it decides
        ("Decision", "Summary"), else its closest chunk."""
        where: dict = {"path": {"$in": paths}}
        if doc_type:
            where = {"$and": [where, {"doc_type": doc_type}]}
        result = self.store.query(vector, SUCCESSOR_CHUNKS, self._readable(where), backend=self.embedder.backend)
        chunks = []
        for chunk_id, text, meta, distance in zip(
            result["ids"][0], result["documents"][0], result["metadatas"][0], result["distances"][0]
        ):
            passage = Passage.from_chunk(chunk_id, text, meta or {})
            passage.dense_score = 1.0 - float(distance)
            chunks.append(passage)
        decisions = [p for p in chunks if DECISION_SECTION.search(p.section)]
        return (decisions or chunks or [None])[0]

    def keyword_passages(self, query: str, k: int = 10) -> list[Passage]:
        """The best keyword hits for ``query`` across what the reader may read, no other filter, not fused."""
        if not self.store.exists():
            return []
        hits = self.keyword_hits(query, k)
        if not hits:
            return []
        return self._read(ids=[chunk_id for chunk_id, _ in hits])

    def _read(self, ids: list[str] | None = None, where: dict | None = None, texts: bool = True) -> list[Passage]:
        """Chunks of the store as passages, in the store's order (``texts=False``: metadata only, empty texts)."""
        got = self.store.get(ids=ids, where=self._readable(where), texts=texts)
        documents = got["documents"] if texts else [""] * len(got["ids"])
        return [Passage.from_chunk(i, t, m or {}) for i, t, m in zip(got["ids"], documents, got["metadatas"])]

    def _dense(self, query: str, k: int, doc_type: str | None, source: str | None) -> list[Passage]:
        if not self.store.exists():
            return []
        vector = self.embedder.embed_query(query)
        result = self.store.query(vector, k, self._readable(_where(doc_type, source)), backend=self.embedder.backend)
        passages = []
        for chunk_id, text, meta, distance in zip(
            result["ids"][0], result["documents"][0], result["metadatas"][0], result["distances"][0]
        ):
            passage = Passage.from_chunk(chunk_id, text, meta or {})
            passage.dense_score = passage.score = 1.0 - float(distance)
            passages.append(passage)
        return passages

    def _clause_confidence(self, query: str, doc_type: str | None, source: str | None) -> float:
        """The best similarity any one clause of a question reaches on its own. A question that tells a story
        before it asks ("a pentester changed the order number in the URL, and got another customer's order")
        embeds as a blend of the two and sits far from the one passage that answers it; one of its clauses
        does not."""
        clauses = [c for c in CLAUSE_BREAK.split(query.strip()) if len(c.split()) >= CLAUSE_WORDS]
        if len(clauses) < 2:
            return 0.0
        where = self._readable(_where(doc_type, source))
        best = 0.0
        for vector in self.embedder.embed(clauses):  # one encoder call for all the clauses
            result = self.store.query(vector, 1, where, self.embedder.backend)
            best = max([best] + [1.0 - float(d) for d in result["distances"][0]])
        return best

    def _fuse(
        self,
        dense: list[Passage],
        keyword: list[tuple[str, float]],
        exact: list[str] | None = None,
        limit: int = CANDIDATES,
    ) -> list[Passage]:
        """One ranking of the dense hits, the keyword hits and ``exact`` (the keyword hits that hold a rare
        identifier of the query), by ``rag.search.ranking``."""
        weight = keyword_weight([p.dense_score or 0.0 for p in dense], [score for _, score in keyword])
        scores = reciprocal_rank_fusion([p.id for p in dense], [chunk_id for chunk_id, _ in keyword], exact, weight)
        if dense and keyword:  # the single-method modes stay the plain methods
            index = self.keyword
            document_of = {p.id: p.path for p in dense}
            document_of.update(index.documents_of([c for c in scores if c not in document_of]))
            scores = document_scores(scores, document_of, len(index.ids), index.document_sizes())
        ranked = sorted(scores, key=lambda chunk_id: scores[chunk_id], reverse=True)[:limit]
        by_id = {p.id: p for p in dense}
        missing = [chunk_id for chunk_id in ranked if chunk_id not in by_id]
        if missing:  # only the keyword hits that made the cut are read from the store
            by_id.update((passage.id, passage) for passage in self._read(ids=missing))
        bm25 = dict(keyword)
        return [
            replace(by_id[chunk_id], score=scores[chunk_id], keyword_score=bm25.get(chunk_id))
            for chunk_id in ranked
            if chunk_id in by_id
        ]

    def widen(self, passages: list[Passage], radius: int = 1) -> list[Passage]:
        """Each passage gets ``context``: its text with the neighbouring chunks of the same section."""
        widened = []
        for passage in passages:
            positions = [passage.position + d for d in range(-radius, radius + 1) if d and passage.position + d >= 0]
            got = self.store.get(
                where=self._readable({"$and": [{"source_key": passage.source_key}, {"position": {"$in": positions}}]})
            )
            neighbours = {
                int(meta["position"]): (text, meta)
                for text, meta in zip(got["documents"], got["metadatas"])
                if meta and meta.get("section") == passage.section
            }
            neighbours[passage.position] = (passage.text, None)
            context = join_chunks([neighbours[pos][0] for pos in sorted(neighbours)])
            widened.append(replace(passage, context=context))
        return widened

    def neighbourhood(self, passage: Passage) -> list[Passage]:
        """All chunks of the passage's section, in order (the "open the whole section" view)."""
        chunks = self._read(where={"$and": [{"source_key": passage.source_key}, {"section": passage.section}]})
        return sorted(chunks, key=lambda p: p.position)

    def document(self, source_key: str | None = None, path: str | None = None) -> list[Passage]:
        """All chunks of one document (by its source key or its path), in reading order."""
        where = {"source_key": source_key} if source_key is not None else {"path": path}
        return sorted(self._read(where=where), key=lambda p: p.position)

    def first_chunks(self, doc_type: str | None = None, path: str | None = None) -> list[Passage]:
        """The first chunk of every document the reader may read (of ``doc_type``; at ``path``, its display path
        or its path inside its folder), metadata only: one row per document with its title, path, type, status."""
        if not self.store.exists():
            return []
        clauses: list[dict] = [{"position": 0}]
        if doc_type:
            clauses.append({"doc_type": doc_type})
        if path is not None:
            clauses.append({"$or": [{"path": path}, {"source": path}]})
        return self._read(where=clauses[0] if len(clauses) == 1 else {"$and": clauses}, texts=False)


SUPERSEDED_WEIGHT = 0.5  # a retired document's passages keep half their score


def demote_superseded(passages: list[Passage], query: str) -> list[Passage]:
    """A superseded or deprecated document's passages lose half their score; when its successor is among the
    candidates, its best passage ranks right below the successor's best (the answer can say what changed) and
    the rest below that. Nothing is dropped. A question about the past keeps the old document where it was
    ("history", "old") or, when it asks what came before ("before", "used to", "originally"), puts it just
    above its successor; a question naming the old ADR's number leaves it alone."""
    if not any(p.status in RETIRED for p in passages):
        return passages
    before = asks_what_came_before(query)
    if asks_about_past(query) and not before:
        return passages
    named = adr_ids(query)
    best_of: dict[str, float] = {}
    for passage in passages:
        for name in document_names(passage.title, passage.source):
            best_of[name] = max(best_of.get(name, passage.score), passage.score)
    rescored = []
    seen: set[str] = set()
    for passage in passages:  # best first, so the first passage of a document is its best
        successor = best_of.get(passage.superseded_by)
        if passage.status not in RETIRED or document_names(passage.title, passage.source) & named:
            rescored.append(passage)
        elif successor is None:
            rescored.append(passage if before else replace(passage, score=passage.score * SUPERSEDED_WEIGHT))
        elif before:
            rescored.append(replace(passage, score=max(passage.score, successor * (1 + 1e-6))))
        else:
            first = passage.source_key not in seen
            score = min(passage.score, successor * (1 - 1e-6)) if first else passage.score * SUPERSEDED_WEIGHT
            rescored.append(replace(passage, score=min(score, successor * (1 - 1e-6))))
        seen.add(passage.source_key)
    return sorted(rescored, key=lambda p: p.score, reverse=True)


def _where(doc_type: str | None, source: str | None) -> dict | None:
    clauses: list[dict] = []
    if doc_type:
        clauses.append({"doc_type": doc_type})
    if source:
        clauses.append({"$or": [{"source": source}, {"path": source}]})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}
