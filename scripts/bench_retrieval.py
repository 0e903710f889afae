#!/usr/bin/env python3
"""Retrieval benchmark: search latency at 1k, 10k and 100k chunks, and the quality table of ``eval``.

    python scripts/bench_retrieval.py [--sizes 1000 10000 100000] [--queries 200] [--corpus corpus]

The scale part uses synthetic chunks (random unit vectors and texts drawn from a fixed vocabulary) in
a real Chroma store and a real BM25 index; the query embedding is computed by the real model and is
included in every timing. The quality part ingests ``--corpus`` into a temporary store and runs the
question set (``--questions``) in dense, keyword and hybrid modes.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.app.evaluation import format_report, run_eval  # noqa: E402
from rag.config import load_settings  # noqa: E402
from rag.index.embedding import Embedder  # noqa: E402
from rag.index.keyword import KeywordIndex  # noqa: E402
from rag.index.store import Store  # noqa: E402
from rag.ingest.pipeline import ingest  # noqa: E402
from rag.search.retrieval import MODES, Retriever  # noqa: E402

TOPICS = (
    "cache invalidation replica failover partition consumer offset quorum leader lease token bucket "
    "retry backoff jitter deadline circuit breaker bulkhead idempotency cursor pagination index vacuum "
    "snapshot isolation deadlock shard rebalance throughput latency percentile saturation autoscaler "
    "probe rollout canary secret rotation certificate tenant schema migration outbox saga projection"
).split()


def synthetic_store(settings, size: int, dimension: int, rng: random.Random) -> Store:
    store = Store(settings)
    vocabulary = TOPICS + [f"term{i}" for i in range(5000)]
    generator = np.random.default_rng(rng.randrange(1 << 30))
    step = 5000
    for start in range(0, size, step):
        count = min(step, size - start)
        vectors = generator.normal(size=(count, dimension)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ids = [f"chunk-{start + i}" for i in range(count)]
        texts = [" ".join(rng.choices(vocabulary, k=60)) for _ in range(count)]
        metadatas = [
            {
                "source": f"doc-{(start + i) // 10}.md",
                "path": f"synthetic/doc-{(start + i) // 10}.md",
                "source_key": f"synthetic::doc-{(start + i) // 10}.md",
                "title": f"Document {(start + i) // 10}",
                "section": "Section",
                "doc_type": "reference" if (start + i) % 3 else "team",
                "position": (start + i) % 10,
                "start_offset": 0,
            }
            for i in range(count)
        ]
        store.upsert_chunks(ids, vectors.tolist(), texts, metadatas)
    store.bump_revision()
    KeywordIndex.rebuild(store, settings.data_dir)
    return store


def latency(retriever: Retriever, queries: list[str], mode: str) -> tuple[float, float]:
    timings = []
    for query in queries:
        retriever.embedder.clear_cache()  # every timing includes embedding the query
        started = time.perf_counter()
        retriever.search(query, k=10, mode=mode)
        timings.append(1000 * (time.perf_counter() - started))
    return statistics.median(timings), float(np.percentile(timings, 95))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", type=int, default=[1000, 10000, 100000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--corpus", type=Path, default=Path("corpus"))
    parser.add_argument("--questions", type=Path, default=Path("corpus/eval/questions.jsonl"))
    args = parser.parse_args()
    rng = random.Random(42)
    embedder = Embedder()
    queries = [" ".join(rng.sample(TOPICS, 4)) for _ in range(args.queries)]
    print(f"{'chunks':>8} " + " ".join(f"{mode + ' p50':>12} {mode + ' p95':>12}" for mode in MODES) + "   (ms)")
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as data_dir:
            settings = load_settings(data_dir=Path(data_dir), collection="synthetic")
            store = synthetic_store(settings, size, embedder.dimension, rng)
            retriever = Retriever(settings, store=store, embedder=embedder)
            latency(retriever, queries[:10], "hybrid")  # warm caches
            row = [latency(retriever, queries, mode) for mode in MODES]
            print(f"{size:>8} " + " ".join(f"{p50:12.1f} {p95:12.1f}" for p50, p95 in row))

    with tempfile.TemporaryDirectory(prefix="bench-quality-") as data_dir:
        settings = load_settings(data_dir=Path(data_dir))
        ingest([args.corpus], settings, embedder=embedder)
        report = run_eval(settings, args.questions, Retriever(settings, embedder=embedder))
    print(f"\nquality on {args.questions}: " + format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
