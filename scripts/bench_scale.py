#!/usr/bin/env python3
"""Scale benchmark: stores of 100,000 and 1,000,000 chunks made from real documentation, as a large team's would be.

    python scripts/bench_scale.py --base DATA_DIR [--sizes 100000 1000000] [--work DIR] [--questions FILE ...]
                                  [--queries 200] [--fts5]

``--base`` is a data directory with real documents ingested (for instance the NGINX docs beside ``corpus/``: about
20,000 chunks). Embedding a million texts on a 2-core machine would take days, so the synthetic stores are derived
from the base store's chunks and their real vectors:

- the synthetic files copy the base files in turn (copy *c* of base file *b*), each keeping its base file's chunks,
  sections and titles (the title gets " (copy c)"), so file sizes, headings and vocabulary are those of real docs;
- each chunk of a copy is varied: a share *w* of its words (*w* drawn from 5-25 %, at random places) is replaced by
  the words at the same places of another chunk of the base store, and its vector is the normalised mix
  ``(1 - w) * v_chunk + w * v_other`` of the two real vectors. Copies of a file are thus near-duplicates of each
  other, as versions of a product's docs are, and the vectors keep the real neighbourhoods of the base store;
- every synthetic file has a manifest entry, so ingest, ``stats`` and the keyword index's file-by-file updates see
  a store like any other.

For each size, in separate processes (each with its own peak memory):

1. build: the chunks into Chroma (``Store.upsert_chunks`` in batches, with the manifest), then the keyword index
   from scratch; seconds and peak RSS of each part, and the size of each on disk;
2. a reader (a long-running process, as the chat UI is) opens the store and times hybrid, keyword and dense
   queries (the questions of ``--questions``, embedded by the real model; p50 and p95), and reports its peak RSS;
3. while that reader polls, a writer process ingests one new file with the real pipeline (real encoder,
   ``rag.ingest.pipeline.ingest``); the reader reports how long after the ingest returned it first found the file
   by keyword search and by dense search;
4. with ``--server``, steps 2 and 3 again as two hosts against one ``chroma run`` serving the store: host B (the
   reader, its own data directory) builds its keyword index once from every chunk, then host A (the writer, another
   data directory) ingests the new file; B reports how long until it found it and how many chunks it pulled for
   that (only the changed files' chunks: B compares the server's manifest of files with its index, see
   ``rag.index.keyword``);
5. with ``--fts5``, the same keyword queries and a one-file update on SQLite FTS5 (``scripts/bench_keyword.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

QUESTIONS = [REPO / "corpus" / "eval" / "questions.jsonl", REPO / "scripts" / "devsets" / "nginx.jsonl"]
# The file each step's writer ingests: a word no base document holds (what keyword search looks for) and the
# file's own sentence (what dense search looks for: its own words, so that the time measured is the time until the
# reader sees the new vector, not HNSW's recall; a paraphrase at cosine 0.68 was missed by Chroma's HNSW in a
# synthetic store full of near-duplicates, though brute force ranks it first); one per step, as the steps share the
# store.
NEW_FILES = {
    "embedded": (
        "quokkanomics",
        "# Capacity notes\n\n## Warm pools\n\nThe quokkanomics rule keeps a warm pool of three spare workers per "
        "region, so that a burst of checkout traffic is served while the autoscaler adds nodes.\n",
        "The quokkanomics rule keeps a warm pool of three spare workers per region, so that a burst of checkout "
        "traffic is served while the autoscaler adds nodes.",
    ),
    "server": (
        "wombatography",
        "# Archive notes\n\n## Cold storage\n\nThe wombatography job moves invoices older than seven years to a "
        "glacier bucket every Sunday night and keeps a checksum manifest beside them.\n",
        "The wombatography job moves invoices older than seven years to a glacier bucket every Sunday night and "
        "keeps a checksum manifest beside them.",
    ),
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def disk_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 1e6
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6 if path.exists() else 0.0


# -- building -----------------------------------------------------------------------------------------------------


def base_chunks(base: Path) -> tuple[dict[str, list[int]], list[str], list[dict], np.ndarray]:
    """The base store's chunks grouped by file (in reading order), their texts, metadatas and vectors."""
    from rag.config import load_settings
    from rag.index.store import Store

    collection = Store(load_settings(data_dir=base)).chunks()
    texts, metadatas, vectors = [], [], []
    total = collection.count()
    for offset in range(0, total, 2000):
        page = collection.get(offset=offset, limit=2000, include=["documents", "metadatas", "embeddings"])
        texts += page["documents"]
        metadatas += page["metadatas"]
        vectors.append(np.asarray(page["embeddings"], dtype=np.float32))
    files: dict[str, list[int]] = {}
    for row, meta in enumerate(metadatas):
        files.setdefault(str(meta["source_key"]), []).append(row)
    for rows in files.values():
        rows.sort(key=lambda row: int(metadatas[row].get("position", 0)))
    return files, texts, metadatas, np.vstack(vectors)


def varied(words: list[str], other: list[str], share: float, rng: random.Random) -> str:
    """``words`` with ``share`` of them replaced by the words at the same places of ``other``."""
    if not words or not other:
        return " ".join(words)
    changed = list(words)
    for place in rng.sample(range(len(words)), max(1, int(share * len(words)))):
        changed[place] = other[place % len(other)]
    return " ".join(changed)


def build(base: Path, data_dir: Path, size: int, seed: int = 7) -> dict:
    """The synthetic store of ``size`` chunks, then its keyword index; timings and peak memory."""
    from rag.config import load_settings
    from rag.index.keyword import KeywordIndex
    from rag.index.store import FileRecord, Store

    rng = random.Random(seed)
    files, texts, metadatas, vectors = base_chunks(base)
    words = [text.split(" ") for text in texts]
    settings = load_settings(data_dir=data_dir)
    store = Store(settings)
    backend = str(Store(load_settings(data_dir=base)).chunks().metadata.get("embedding_backend", "onnx-int8"))
    started = time.perf_counter()
    made = copy = 0
    order = list(files)
    batch: tuple[list, list, list, list] = ([], [], [], [])
    records: list[FileRecord] = []
    step = 4000
    while made < size:
        base_key = order[copy % len(order)]
        number = copy // len(order)
        key = f"{base_key}~copy{number}"
        rows = files[base_key][: size - made]
        for position, row in enumerate(rows):
            other = rng.randrange(len(texts))
            share = rng.uniform(0.05, 0.25)
            vector = (1 - share) * vectors[row] + share * vectors[other]
            meta = dict(metadatas[row])
            title = f"{meta.get('title', '')} (copy {number})"
            meta.update(
                source_key=key,
                title=title,
                position=position,
                path=f"{meta.get('path', '')}~copy{number}",
                source=f"{meta.get('source', '')}~copy{number}",
            )
            batch[0].append(f"{key}#{position}")
            batch[1].append(vector / np.linalg.norm(vector))
            batch[2].append(varied(words[row], words[other], share, rng))
            batch[3].append(meta)
        meta = metadatas[files[base_key][0]]
        records.append(
            FileRecord(
                key,
                str(meta.get("root", "")),
                f"{meta.get('source', '')}~copy{number}",
                "0",
                str(meta.get("doc_type", "reference")),
                f"copy {number}",
                len(rows),
                0.0,
                True,
            )
        )
        made += len(rows)
        copy += 1
        if len(batch[0]) >= step or made >= size:
            store.upsert_chunks(batch[0], np.vstack(batch[1]), batch[2], batch[3], backend=backend)
            store.save_file_records(records)
            batch, records = ([], [], [], []), []
    store.bump_revision()
    chroma_seconds = time.perf_counter() - started
    chroma_rss = peak_rss_mb()
    started = time.perf_counter()
    KeywordIndex.sync(store, data_dir)
    keyword_seconds = time.perf_counter() - started
    return {
        "chunks": store.count(),
        "files": copy,
        "chroma_seconds": chroma_seconds,
        "keyword_seconds": keyword_seconds,
        "peak_rss_mb_after_chroma": chroma_rss,
        "peak_rss_mb": peak_rss_mb(),
        "chroma_mb": disk_mb(data_dir / "chroma"),
        "keyword_mb": disk_mb(data_dir / "keyword"),
    }


def build_keyword_only(data_dir: Path) -> dict:
    """The keyword index from scratch over an existing store, in a process of its own (its own peak memory)."""
    from rag.config import load_settings
    from rag.index.keyword import KeywordIndex
    from rag.index.store import Store

    started = time.perf_counter()
    KeywordIndex.rebuild(Store(load_settings(data_dir=data_dir)), data_dir)
    return {
        "keyword_seconds": time.perf_counter() - started,
        "peak_rss_mb": peak_rss_mb(),
        "keyword_mb": disk_mb(data_dir / "keyword"),
    }


# -- reading ------------------------------------------------------------------------------------------------------


def questions(paths: list[Path], limit: int) -> list[str]:
    from rag.app.evaluation import load_questions

    found = [q.query for path in paths if path.is_file() for q in load_questions(path)]
    return random.Random(11).sample(found, min(limit, len(found)))


def percentiles(timings: list[float]) -> dict[str, float]:
    return {"p50_ms": 1000 * statistics.median(timings), "p95_ms": 1000 * float(np.percentile(timings, 95))}


def counting_pulls() -> dict[str, int]:
    """Counts the chunks this process reads from the store to build or update its keyword index."""
    from rag.index.store import Store

    pulled = {"chunks": 0}
    every, some = Store.iter_all, Store.chunks_of_files

    def iter_all(self):
        for page in every(self):
            pulled["chunks"] += len(page[0])
            yield page

    def chunks_of_files(self, keys):
        found = some(self, keys)
        pulled["chunks"] += len(found[0])
        return found

    Store.iter_all, Store.chunks_of_files = iter_all, chunks_of_files
    return pulled


def reader(options: dict, queries: list[str], signal_file: Path, step: str) -> dict:
    """Times queries, then waits for the writer and polls for the new file (see the module's docstring)."""
    from rag.config import load_settings
    from rag.search.retrieval import Retriever

    pulled = counting_pulls()
    retriever = Retriever(load_settings(**options))
    started = time.perf_counter()
    retriever.search("warm up the store, the keyword index and the model")
    opened = time.perf_counter() - started
    result: dict = {"open_seconds": opened, "chunks_pulled_to_open": pulled["chunks"]}
    pulled["chunks"] = 0
    for mode in ("hybrid", "keyword", "dense"):
        timings = []
        for query in queries:
            retriever.embedder.clear_cache()  # every timing includes embedding the query
            begun = time.perf_counter()
            retriever.search(query, k=10, mode=mode)
            timings.append(time.perf_counter() - begun)
        result[mode] = percentiles(timings)
    index, timings = retriever.keyword, []
    for query in queries:  # the keyword index alone (the keyword mode above also searches densely)
        begun = time.perf_counter()
        index.search(query, 50)
        timings.append(time.perf_counter() - begun)
    result["keyword index alone"] = percentiles(timings)
    result["peak_rss_mb_queries"] = peak_rss_mb()
    signal_file.with_suffix(".ready").write_text("ready")
    found = poll_for_the_new_file(retriever, load_settings(**options), *NEW_FILES[step][::2])
    while not signal_file.exists():
        time.sleep(0.05)
    ingest_end = json.loads(signal_file.read_text())["ingest_end"]
    result["found_after_ingest_seconds"] = {mode: at - ingest_end for mode, at in found.items()}
    result["chunks_pulled_after_the_ingest"] = pulled["chunks"]
    result["chunks_in_store"] = retriever.store.count()
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def poll_for_the_new_file(retriever, settings, word: str, dense_query: str) -> dict[str, float]:
    """When the new file is first found by keyword (the keyword index alone, brought up to the store's revision as
    a search does) and by dense search (the retriever, whose Chroma client reloads the vector index when the store
    changed): two threads, so that a slow reload of one does not delay noticing the other."""
    import threading

    from rag.index.keyword import KeywordIndex
    from rag.index.store import Store

    found: dict[str, float] = {}
    deadline = time.time() + 3600

    def by_keyword() -> None:
        store, index = Store(settings), None
        while time.time() < deadline:
            revision = store.revision()
            if index is None or index.revision != revision:
                index = KeywordIndex.open(store, settings.data_dir, previous=index)
            if index.search(word, 3):
                found["keyword"] = time.time()
                return
            time.sleep(0.02)

    def by_dense() -> None:
        while time.time() < deadline:
            top = retriever.search(dense_query, k=1, mode="dense").passages
            if top and word in top[0].text:
                found["dense"] = time.time()
                return
            time.sleep(0.02)

    threads = [threading.Thread(target=by_keyword), threading.Thread(target=by_dense)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return found


def writer(options: dict, folder: Path, signal_file: Path, step: str) -> dict:
    from rag.config import load_settings
    from rag.index.keyword import KeywordIndex
    from rag.index.store import Store
    from rag.ingest.pipeline import ingest

    settings = load_settings(**options)
    warmed = 0.0
    if settings.server_mode:  # a host that has ingested before has its own keyword index already
        started = time.perf_counter()
        KeywordIndex.sync(Store(settings), settings.data_dir)
        warmed = time.perf_counter() - started

    while not signal_file.with_suffix(".ready").exists():
        time.sleep(0.1)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "new.md").write_text(NEW_FILES[step][1])
    started = time.perf_counter()
    report = ingest([folder], settings)
    seconds = time.perf_counter() - started
    signal_file.write_text(json.dumps({"ingest_end": time.time()}))
    return {
        "ingest_seconds": seconds,
        "files_added": report.files_added,
        "peak_rss_mb": peak_rss_mb(),
        "own_keyword_index_seconds": warmed,
    }


def fts5(data_dir: Path, work: Path, queries: list[str]) -> dict:
    sys.path.insert(0, str(REPO / "scripts"))
    from bench_keyword import Fts5Index

    from rag.config import load_settings
    from rag.index.store import Store

    store = Store(load_settings(data_dir=data_dir))
    started = time.perf_counter()
    index = Fts5Index.build(store, work / "fts5.sqlite3")
    built = time.perf_counter() - started
    timings = []
    for query in queries:
        begun = time.perf_counter()
        index.search(query, 50)
        timings.append(time.perf_counter() - begun)
    key = sorted(store.file_records())[0]
    begun = time.perf_counter()
    index.replace_file(store, key)
    return {
        "build_seconds": built,
        "keyword": percentiles(timings),
        "one_file_update_seconds": time.perf_counter() - begun,
        "fts5_mb": disk_mb(work / "fts5.sqlite3"),
        "peak_rss_mb": peak_rss_mb(),
    }


# -- the parent ---------------------------------------------------------------------------------------------------


def child(*args: str, wait: bool = True):
    command = [sys.executable, __file__, "--child", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return process
    return finish(process, args[0])


def finish(process: subprocess.Popen, name: str) -> dict:
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"{name} failed:\n{stderr[-3000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


def read_while_writing(
    work: Path, name: str, step: str, writing: dict, reading: dict, query_file: Path
) -> tuple[dict, dict]:
    """A reader process times queries, then polls while a writer process ingests one new file."""
    signal_file = work / f"signal-{name}"
    for path in (signal_file, signal_file.with_suffix(".ready")):
        path.unlink(missing_ok=True)
    folder = work / f"new-files-{name}"
    shutil.rmtree(folder, ignore_errors=True)
    process = child("reader", json.dumps(reading), str(query_file), str(signal_file), step, wait=False)
    written = child("writer", json.dumps(writing), str(folder), str(signal_file), step)
    return written, finish(process, "reader")


@contextlib.contextmanager
def chroma_server(path: Path, log: Path):
    """``chroma run`` over the store's own files, on a free port."""
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    binary = Path(sys.executable).parent / "chroma"
    with log.open("w") as output:
        server = subprocess.Popen(
            [str(binary), "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.time() + 600
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=5)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise SystemExit(f"chroma run did not start, see {log}") from None
                time.sleep(0.5)
        yield "127.0.0.1", port
    finally:
        server.terminate()
        server.wait(timeout=60)


def run_size(base: Path, work: Path, size: int, queries: list[str], with_fts5: bool, with_server: bool) -> dict:
    data_dir = work / f"store-{size}"
    shutil.rmtree(data_dir, ignore_errors=True)
    load_before = os.getloadavg()[0]
    result: dict = {"size": size, "build": child("build", str(base), str(data_dir), str(size))}
    print(f"{size:,}: built {json.dumps(result['build'])}", flush=True)
    query_file = work / "queries.json"
    query_file.write_text(json.dumps(queries))
    options = {"data_dir": str(data_dir)}
    result["write"], result["read"] = read_while_writing(work, f"{size}", "embedded", options, options, query_file)
    print(f"{size:,}: read {json.dumps(result['read'])}", flush=True)
    if with_server:
        with chroma_server(data_dir / "chroma", work / f"chroma-{size}.log") as (host, port):
            server = {"chroma_host": host, "chroma_port": port}
            host_a = {**server, "data_dir": str(work / f"host-a-{size}")}
            host_b = {**server, "data_dir": str(work / f"host-b-{size}")}
            result["server_write"], result["server_read"] = read_while_writing(
                work, f"server-{size}", "server", host_a, host_b, query_file
            )
        print(f"{size:,}: two hosts {json.dumps(result['server_read'])}", flush=True)
    if with_fts5:
        result["fts5"] = child("fts5", str(data_dir), str(work), str(query_file))
    result["load_average"] = [load_before, os.getloadavg()[0]]
    return result


def found_after(found: dict[str, float], mode: str) -> str:
    """Seconds from the writer's ingest returning until the reader found the file (0: found before it returned,
    as the ingest updates the keyword index before it returns)."""
    return f"{max(0.0, found[mode]):.2f} s" if mode in found else "not found"


def report(results: list[dict]) -> None:
    print("\n| chunks | build Chroma s | build keyword s | build peak RSS | Chroma on disk | keyword on disk |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in results:
        b = r["build"]
        print(
            f"| {b['chunks']:,} | {b['chroma_seconds']:.0f} | {b['keyword_seconds']:.1f} | {b['peak_rss_mb']:.0f} MB | "
            f"{b['chroma_mb']:.0f} MB | {b['keyword_mb']:.0f} MB |"
        )
    modes = ("hybrid", "keyword", "dense", "keyword index alone")
    print(
        "\n| chunks | open s | hybrid p50 / p95 ms | keyword mode | dense mode | keyword index alone | reader peak RSS "
        "| ingest of 1 file s | found by keyword after | found by dense after |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        read, found = r["read"], r["read"]["found_after_ingest_seconds"]
        cells = " | ".join(f"{read[m]['p50_ms']:.0f} / {read[m]['p95_ms']:.0f}" for m in modes)
        after = " | ".join(found_after(found, m) for m in ("keyword", "dense"))
        print(
            f"| {r['build']['chunks']:,} | {read['open_seconds']:.1f} | {cells} | {read['peak_rss_mb']:.0f} MB | "
            f"{r['write']['ingest_seconds']:.1f} | {after} |"
        )
    for r in results:
        if "server_read" in r:
            read, found = r["server_read"], r["server_read"]["found_after_ingest_seconds"]
            after = ", ".join(f"by {m} {found_after(found, m)}" for m in ("keyword", "dense"))
            print(
                f"{r['size']:,} two hosts, one chroma run: host B built its keyword index from "
                f"{read['chunks_pulled_to_open']:,} chunks in {read['open_seconds']:.1f} s (its first open); host A "
                f"(its own index {r['server_write']['own_keyword_index_seconds']:.1f} s beforehand) ingested one file "
                f"in {r['server_write']['ingest_seconds']:.1f} s; B found it {after} after, pulling "
                f"{read['chunks_pulled_after_the_ingest']:,} of {read['chunks_in_store']:,} chunks; B's hybrid p50 / "
                f"p95 {read['hybrid']['p50_ms']:.0f} / {read['hybrid']['p95_ms']:.0f} ms"
            )
        if "fts5" in r:
            f = r["fts5"]
            print(
                f"{r['size']:,} FTS5: build {f['build_seconds']:.0f} s, keyword p50 / p95 "
                f"{f['keyword']['p50_ms']:.0f} / {f['keyword']['p95_ms']:.0f} ms, "
                f"one-file update {f['one_file_update_seconds']:.2f} s, "
                f"{f['fts5_mb']:.0f} MB on disk"
            )
        print(
            f"{r['size']:,}: load average {r['load_average'][0]:.1f} before, {r['load_average'][1]:.1f} after "
            f"(on {os.cpu_count()} cores)"
        )


def run_child(argv: list[str]) -> dict:
    kind, rest = argv[0], argv[1:]
    if kind == "build":
        return build(Path(rest[0]), Path(rest[1]), int(rest[2]))
    if kind == "keyword":
        return build_keyword_only(Path(rest[0]))
    if kind == "reader":
        return reader(json.loads(rest[0]), json.loads(Path(rest[1]).read_text()), Path(rest[2]), rest[3])
    if kind == "writer":
        return writer(json.loads(rest[0]), Path(rest[1]), Path(rest[2]), rest[3])
    if kind == "fts5":
        return fts5(Path(rest[0]), Path(rest[1]), json.loads(Path(rest[2]).read_text()))
    raise SystemExit(f"unknown child {kind}")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(run_child(sys.argv[2:])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="a data directory with real documents ingested")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--work", type=Path, help="where the stores go (default: a temporary folder, removed after)")
    parser.add_argument("--questions", type=Path, nargs="*", default=QUESTIONS)
    parser.add_argument("--queries", type=int, default=200, help="questions timed per mode")
    parser.add_argument("--fts5", action="store_true", help="also time SQLite FTS5 on the same chunks")
    parser.add_argument("--server", action="store_true", help="also two hosts (processes) against one chroma run")
    args = parser.parse_args()
    queries = questions(args.questions, args.queries)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        for size in args.sizes:
            results.append(run_size(args.base, work, size, queries, args.fts5, args.server))
            (work / "results.json").write_text(json.dumps(results, indent=1))
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
