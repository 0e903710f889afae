#!/usr/bin/env python3
"""Keyword engines side by side: our segment index (``rag.index.keyword``) against SQLite FTS5, on real stores.

    python scripts/bench_keyword.py --store corpus=DATA_DIR:corpus/eval/questions.jsonl \
        [--store nginx=DATA_DIR:scripts/devsets/nginx.jsonl ...] [--work DIR]

Each ``--store`` is an ingested data directory and a question file about it. For each, both engines index the
same chunks, with the same tokens (our tokenizer: bm25s's splitting, English stop words, Snowball stems; FTS5 is
given those tokens, one space apart, under ``unicode61`` with ``_`` kept inside words), the same prefix reading of
unknown words and the same rare-identifier signal. What differs is the ranking formula: ours is bm25s's
(Lucene's idf, k1 1.2, b 0.75); FTS5's ``bm25()`` has the same k1 and b but the classic idf, which is zero for a
word in half of the chunks or more.

Printed per store: MRR@10 and hit@5 of keyword search alone and of the hybrid search (the dense side is the same
Chroma store, fused as in ``rag.search.retrieval``), the median and 95th percentile of a keyword query, and the time
to replace the chunks of one file in each engine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.app.evaluation import CUTOFF, load_questions, rank_metrics  # noqa: E402
from rag.app.evaluation import is_hit as is_hit_of  # noqa: E402
from rag.config import load_settings  # noqa: E402
from rag.index.keyword import PREFIX_MAX, PREFIX_MIN, RARE_CHUNKS, KeywordIndex  # noqa: E402
from rag.index.keyword_text import IDENTIFIER, keyword_text, tokenize  # noqa: E402
from rag.index.store import Store  # noqa: E402
from rag.search.retrieval import Retriever  # noqa: E402

FTS_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(body, tokenize = "unicode61 remove_diacritics 0 tokenchars '_'");
CREATE VIRTUAL TABLE IF NOT EXISTS vocabulary USING fts5vocab(fts, row);
CREATE TABLE IF NOT EXISTS chunks (
    rowid INTEGER PRIMARY KEY, chunk_id TEXT UNIQUE, source_key TEXT, doc_type TEXT, source TEXT, path TEXT);
CREATE INDEX IF NOT EXISTS chunks_by_file ON chunks (source_key);
"""


@dataclass
class Fts5Index:
    """The keyword index as SQLite FTS5 would give it: the interface ``Retriever`` uses, over one database file."""

    path: Path
    revision: str = ""
    _db: sqlite3.Connection | None = field(default=None, repr=False)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.executescript(FTS_SCHEMA)
        return self._db

    @classmethod
    def build(cls, store: Store, path: Path) -> Fts5Index:
        path.unlink(missing_ok=True)
        index = cls(path, store.revision())
        index.db.execute("BEGIN")
        for ids, documents, metadatas in store.iter_all():
            index._insert(ids, documents, metadatas)
        index.db.execute("COMMIT")
        return index

    def _insert(self, ids: list[str], documents: list[str], metadatas: list[dict]) -> None:
        metas = [meta or {} for meta in metadatas]
        texts = [
            keyword_text(str(m.get("title", "")), str(m.get("section", "")), text or "")
            for text, m in zip(documents, metas)
        ]
        first = self.db.execute("SELECT coalesce(max(rowid), 0) + 1 FROM chunks").fetchone()[0]
        self.db.executemany(
            "INSERT INTO chunks (rowid, chunk_id, source_key, doc_type, source, path) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    first + n,
                    i,
                    str(m.get("source_key", "")),
                    str(m.get("doc_type", "")),
                    str(m.get("source", "")),
                    str(m.get("path", "")),
                )
                for n, (i, m) in enumerate(zip(ids, metas))
            ],
        )
        self.db.executemany(
            "INSERT INTO fts (rowid, body) VALUES (?, ?)",
            [(first + n, " ".join(tokens)) for n, tokens in enumerate(tokenize(texts))],
        )

    def replace_file(self, store: Store, source_key: str) -> None:
        """One file's chunks as the store has them now (what an update of one file costs)."""
        self.db.execute("BEGIN")
        old = [row for (row,) in self.db.execute("SELECT rowid FROM chunks WHERE source_key = ?", (source_key,))]
        self.db.executemany("DELETE FROM fts WHERE rowid = ?", [(row,) for row in old])
        self.db.execute("DELETE FROM chunks WHERE source_key = ?", (source_key,))
        self._insert(*store.chunks_of_files([source_key]))
        self.db.execute("COMMIT")

    @property
    def ids(self) -> list[str]:
        return [chunk_id for (chunk_id,) in self.db.execute("SELECT chunk_id FROM chunks")]

    def _doc_count(self, term: str) -> int:
        row = self.db.execute("SELECT doc FROM vocabulary WHERE term = ?", (term,)).fetchone()
        return int(row[0]) if row else 0

    def _known_forms(self, token: str) -> list[str]:
        if self._doc_count(token):
            return [token]
        if len(token) < PREFIX_MIN or not token.isalpha():
            return []
        rows = self.db.execute(
            "SELECT term FROM vocabulary WHERE term > ? AND term < ? ORDER BY term LIMIT ?",
            (token, token + "\U0010ffff", PREFIX_MAX + 1),
        ).fetchall()
        longer = [term for (term,) in rows]
        return longer if len(longer) <= PREFIX_MAX else []

    def rare_identifier_ids(self, query: str) -> set[str]:
        found: set[str] = set()
        for token in tokenize([query])[0]:
            if IDENTIFIER.search(token) and 0 < self._doc_count(token) <= RARE_CHUNKS:
                rows = self.db.execute(
                    "SELECT c.chunk_id FROM fts JOIN chunks c ON c.rowid = fts.rowid WHERE fts MATCH ?", (f'"{token}"',)
                )
                found.update(chunk_id for (chunk_id,) in rows)
        return found

    def documents_of(self, chunk_ids: list[str]) -> dict[str, str]:
        marks = ",".join("?" * len(chunk_ids))
        rows = self.db.execute(f"SELECT chunk_id, path FROM chunks WHERE chunk_id IN ({marks})", list(chunk_ids))  # noqa: S608
        return dict(rows.fetchall())

    def document_sizes(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT path, count(*) FROM chunks GROUP BY path").fetchall())

    @property
    def sources(self) -> list[str]:
        return [f"{source}\n{path}" for source, path in self.db.execute("SELECT DISTINCT source, path FROM chunks")]

    def search(
        self,
        query: str,
        k: int,
        doc_type: str | None = None,
        source: str | None = None,
        groups: frozenset[str] | None = None,  # the development stores restrict no document: nothing to mask
    ) -> list[tuple[str, float]]:
        tokens = [known for token in tokenize([query])[0] for known in self._known_forms(token)]
        if not tokens:
            return []
        match = " OR ".join(f'"{token}"' for token in tokens)
        where, values = ["fts MATCH ?"], [match]
        if doc_type:
            where.append("c.doc_type = ?")
            values.append(doc_type)
        if source:
            where.append("(c.source = ? OR c.path = ?)")
            values += [source, source]
        rows = self.db.execute(
            f"SELECT c.chunk_id, -bm25(fts) FROM fts JOIN chunks c ON c.rowid = fts.rowid WHERE {' AND '.join(where)} "  # noqa: S608
            "ORDER BY bm25(fts) LIMIT ?",
            [*values, k],
        )
        return [(chunk_id, float(score)) for chunk_id, score in rows if score > 0]


class EngineRetriever(Retriever):
    """Our retriever with another keyword engine under it (the fusion and everything else unchanged)."""

    def __init__(self, settings, engine) -> None:
        super().__init__(settings)
        self.engine = engine

    @property
    def keyword(self):  # type: ignore[override]
        return self.engine


def quality(retriever: Retriever, questions) -> dict[str, dict[str, float]]:
    answerable = [q for q in questions if q.answerable]
    report = {}
    for mode in ("keyword", "hybrid"):
        totals: dict[str, float] = {}
        for question in answerable:
            passages = retriever.search(question.query, k=CUTOFF, mode=mode).passages
            for key, value in rank_metrics([is_hit_of(p, question) for p in passages], 1).items():
                totals[key] = totals.get(key, 0.0) + value
        report[mode] = {key: value / len(answerable) for key, value in totals.items()}
    return report


def latency(engine, queries: list[str]) -> tuple[float, float]:
    timings = []
    for query in queries:
        started = time.perf_counter()
        engine.search(query, 50)
        timings.append(time.perf_counter() - started)
    return 1000 * statistics.median(timings), 1000 * float(np.percentile(timings, 95))


def one_file_update(store: Store, data_dir: Path, fts: Fts5Index) -> dict[str, float]:
    """Seconds to take in one file's chunks again, in each engine (the file's manifest entry touched so that our
    index sees a change, as an ingest of that file would leave it)."""
    from rag.index.keyword_writer import Change

    key = sorted(store.file_records())[0]
    before = store.revision()
    store.save_file_records([store.file_records([key])[key]])
    change = Change(before, store.bump_revision(), frozenset([key]))
    started = time.perf_counter()
    KeywordIndex.sync(store, data_dir, change)
    ours = time.perf_counter() - started
    started = time.perf_counter()
    fts.replace_file(store, key)
    return {"ours": ours, "fts5": time.perf_counter() - started}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", action="append", required=True, help="NAME=DATA_DIR:QUESTIONS")
    parser.add_argument("--work", type=Path, help="where the FTS5 databases go (default: a temporary folder)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-keyword-")))
        work.mkdir(parents=True, exist_ok=True)
        for spec in args.store:
            name, rest = spec.split("=", 1)
            data_dir, questions_path = rest.rsplit(":", 1)
            run_store(name, Path(data_dir), Path(questions_path), work)
    return 0


def run_store(name: str, data_dir: Path, questions_path: Path, work: Path) -> None:
    settings = load_settings(data_dir=data_dir)
    store = Store(settings)
    questions = load_questions(questions_path)
    queries = [q.query for q in questions]
    started = time.perf_counter()
    ours = KeywordIndex.rebuild(store, data_dir)
    built = {"ours": time.perf_counter() - started}
    started = time.perf_counter()
    fts = Fts5Index.build(store, work / f"{name}-fts5.sqlite3")
    built["fts5"] = time.perf_counter() - started
    retriever = Retriever(settings)
    retriever.search("warm up")
    scores = {"ours": quality(retriever, questions), "fts5": quality(EngineRetriever(settings, fts), questions)}
    timing = {"ours": latency(ours, queries), "fts5": latency(fts, queries)}
    update = one_file_update(store, data_dir, fts)
    print(
        f"\n{name}: {store.count():,} chunks, {sum(q.answerable for q in questions)} answerable questions "
        f"({questions_path})"
    )
    print(
        "| engine | keyword MRR@10 | keyword hit@5 | hybrid MRR@10 | hybrid hit@5 | query p50 / p95 ms "
        "| build s | one-file update s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for engine in ("ours", "fts5"):
        keyword, hybrid = scores[engine]["keyword"], scores[engine]["hybrid"]
        p50, p95 = timing[engine]
        print(
            f"| {engine} | {keyword['mrr@10']:.4f} | {keyword['hit@5']:.4f} | {hybrid['mrr@10']:.4f} | "
            f"{hybrid['hit@5']:.4f} | {p50:.1f} / {p95:.1f} | {built[engine]:.2f} | {update[engine]:.3f} |"
        )
    print(json.dumps({"store": name, "scores": scores, "latency_ms": timing, "build_s": built, "update_s": update}))


if __name__ == "__main__":
    sys.exit(main())
