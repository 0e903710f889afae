#!/usr/bin/env python3
"""Ingest benchmark: pipeline throughput against the raw encode ceiling, and a no-change re-ingest.

    python scripts/bench_ingest.py [PATH ...]      (default: corpus/)

Ingests PATH into a fresh temporary data directory and prints, in one run: chunks/s and characters/s
of the full ingest; the raw ``model.encode`` throughput on the same chunk texts (the ceiling for this
machine); the pipeline's share of that ceiling; and the time of a second ingest with nothing changed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.chunking import embedding_prefix  # noqa: E402
from rag.config import load_settings  # noqa: E402
from rag.embedding import Embedder  # noqa: E402
from rag.ingest import ingest  # noqa: E402
from rag.store import Store  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, default=[Path("corpus")])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as data_dir:
        settings = load_settings(data_dir=Path(data_dir))
        embedder = Embedder(settings.embedding_model, settings.embed_batch_size)
        embedder.embed(["warm up the model so both measurements start from a loaded model"])

        first = ingest(args.paths, settings, embedder=embedder)
        store = Store(settings)
        texts = [
            embedding_prefix(str(meta.get("title", "")), str(meta.get("section", ""))) + (text or "")
            for _, documents, metadatas in store.iter_all()
            for text, meta in zip(documents, metadatas)
        ]
        characters = sum(len(t) for t in texts)

        started = time.perf_counter()
        embedder.embed(texts)
        encode_seconds = time.perf_counter() - started

        second = ingest(args.paths, settings, embedder=Embedder(settings.embedding_model))

    pipeline_rate = first.chunks_embedded / first.seconds
    ceiling_rate = len(texts) / encode_seconds
    print(f"files: {first.files_seen} ({len(first.files_failed)} failed), chunks: {first.chunks_embedded}")
    print(
        f"full ingest:        {first.seconds:8.2f} s  {pipeline_rate:8.1f} chunks/s  "
        f"{characters / first.seconds:10.0f} chars/s"
    )
    print(
        f"raw model.encode:   {encode_seconds:8.2f} s  {ceiling_rate:8.1f} chunks/s  "
        f"{characters / encode_seconds:10.0f} chars/s"
    )
    print(f"pipeline / ceiling: {100 * pipeline_rate / ceiling_rate:7.1f} %   (target >= 85 %)")
    print(
        f"no-change re-ingest: {second.seconds:7.2f} s for {second.files_seen} files "
        f"({second.files_unchanged} unchanged, {second.chunks_embedded} embedded)   (target < 2 s for 1,000 files)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
