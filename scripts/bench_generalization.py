#!/usr/bin/env python3
"""Transfer benchmark: retrieval and offline answers on each development corpus ingested alone, one row per corpus.

    python scripts/bench_generalization.py [--corpus NAME DOCS QUESTIONS ...] [--only NAME,...] [--stores DIR]
        [--no-langchain] [--no-answers] [--grid MODULE.CONSTANT=V1,V2,...] [--details FILE]

Each corpus is ingested alone into its own store, ``--stores``/NAME (default /tmp/genbench-stores/NAME), which
is reused while its files and the code that makes chunks and vectors are unchanged (a stamp file in the store
records both; changed files are ingested incrementally, changed chunking code rebuilds the store). Building a
store, ours or the LangChain one, takes ``--lock`` (default /tmp/heavy.lock) first: on a shared machine only one
heavy job runs at a time. Without ``--corpus`` the six development corpora are used; a corpus whose question
file or folder is missing is skipped with a line saying so.

Columns, over each question file's answerable questions unless said otherwise:
- hybrid, dense, keyword: MRR@10 and hit@5 of our search in that mode (``rag.app.evaluation.is_hit``);
- LangChain: the same for the plain LangChain default pipeline (``scripts/langchain_default.py``), same run;
- facts: offline answers' fact coverage; ceiling: the share of facts the answer's passages hold at all;
  lead: a fact in the first 300 characters; chars: mean answer length (``rag.app.answer_eval``);
- said: near-miss questions that get the "says nothing about" notice naming what is missing, or an abstention;
- refused: answerable questions the answer abstains on (the confidence bar, the close band included);
- missing: answerable questions told the knowledge base "says nothing about" something (a false alarm).
- out: unanswerable (out-of-scope) questions declined, where a question file has them.

``--grid`` sets a module constant to each value in turn and prints per corpus and value hybrid MRR@10 (a ranking
constant) or near-misses said / answerable refused by the answerer's verdict alone (a constant of
``rag.search.confidence`` or ``rag.answer.answering``), then the leave-one-corpus-out column: for each corpus,
the value that is best on the other corpora (for a confidence constant: the best balanced share of said and
answered among the values refusing at most 5 % there; of values they cannot tell apart, the last listed), and
that corpus's figures under it. That column, not the best value in hindsight, is what a fitted constant is judged
by.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib
import json
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from langchain_default import LangChainDefault, cache_dir  # noqa: E402

from rag.answer.answering import Answerer  # noqa: E402
from rag.answer.personas import load_persona  # noqa: E402
from rag.answer.providers.extractive import ExtractiveProvider  # noqa: E402
from rag.app.answer_eval import Scored, answer_all, normal, says_not_covered, summarise  # noqa: E402
from rag.app.evaluation import CUTOFF, Question, load_questions, rank_summary  # noqa: E402
from rag.config import Settings, load_settings  # noqa: E402
from rag.documents.discovery import discover  # noqa: E402
from rag.documents.doc_status import status_metadata  # noqa: E402
from rag.documents.loading import TextLimits, load  # noqa: E402
from rag.index.embedding import Embedder, resolve_model_path  # noqa: E402
from rag.index.store import Store  # noqa: E402
from rag.ingest.chunking import chunk_document  # noqa: E402
from rag.ingest.pipeline import ingest  # noqa: E402
from rag.search.retrieval import Retriever  # noqa: E402

SHARED = Path("/work/shared/corpora")
DEVSETS = REPO / "scripts" / "devsets"
DEFAULT_CORPORA = [
    ("corpus", REPO / "corpus", REPO / "corpus" / "eval" / "questions.jsonl"),
    ("external", SHARED / "external", DEVSETS / "external.jsonl"),
    ("nginx", SHARED / "nginx-docs" / "docs", DEVSETS / "nginx.jsonl"),
    ("kubernetes", SHARED / "kubernetes-concepts" / "docs", DEVSETS / "kubernetes.jsonl"),
    ("envoy", SHARED / "envoy-docs" / "docs", DEVSETS / "envoy.jsonl"),
    ("kafka", SHARED / "kafka-docs" / "docs", DEVSETS / "kafka.jsonl"),
]
# the modules whose code decides a store's chunks and vectors: a change to any of them rebuilds the stores
CHUNKING_MODULES = [
    "rag.documents.discovery",
    "rag.documents.loading",
    "rag.documents.converters",
    "rag.documents.shortcodes",
    "rag.documents.site_path",
    "rag.documents.doc_status",
    "rag.ingest.chunking",
    "rag.ingest.block_cutting",
    "rag.text.embedded_text",
    "rag.index.embedding",
    "rag.index.onnx_encoder",
]
STAMP = "genbench-stamp.json"
MODES = ("hybrid", "dense", "keyword")
NEAR_MISS_NOTICE = "says nothing about"
# a constant of these modules decides whether to answer: its grid measures near-misses said and questions refused
DECISION_MODULES = ("rag.search.confidence.", "rag.answer.answering.")


@dataclass
class Corpus:
    name: str
    docs: Path
    questions_path: Path
    questions: list[Question] = field(default_factory=list)


@dataclass
class Row:
    name: str
    counts: str
    figures: dict[str, float | None] = field(default_factory=dict)


def _hash_files(files: list[Path], digest) -> None:
    for file in sorted(files):
        stat = file.stat()
        digest.update(f"{file}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())


def files_stamp(docs: Path) -> str:
    digest = hashlib.sha256()
    _hash_files([f for f in docs.rglob("*") if f.is_file()], digest)
    return digest.hexdigest()


def code_stamp(settings: Settings) -> str:
    digest = hashlib.sha256(
        f"{settings.embedding_model}|{settings.embedding_backend}|{settings.chunk_tokens}|{settings.chunk_overlap}".encode()
    )
    for name in CHUNKING_MODULES:
        digest.update(Path(importlib.import_module(name).__file__).read_bytes())
    return digest.hexdigest()


@contextmanager
def heavy_lock(path: Path, what: str) -> Iterator[None]:
    """Holds ``path`` exclusively (``flock``): the one heavy job of the machine at a time."""
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for {path} to {what} ...", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


ChunkKey = tuple[str, str, str, str, str]


def stored_chunks(store: Store) -> set[ChunkKey]:
    """What the store holds, as what retrieval sees of each chunk: title, section, text and status."""
    keys: set[ChunkKey] = set()
    for _, texts, metadatas in store.iter_all():
        for text, meta in zip(texts, metadatas):
            meta = meta or {}
            keys.add((str(meta.get("title", "")), str(meta.get("section", "")), text or "",
                      str(meta.get("status", "")), str(meta.get("superseded_by", ""))))
    return keys


def chunks_of_files(docs: Path, settings: Settings, embedder: Embedder) -> set[ChunkKey]:
    """What the current code makes of the corpus's files (loaded and chunked, nothing embedded)."""
    keys: set[ChunkKey] = set()
    for ref in discover([docs], False).files:
        try:
            document = load(ref, settings.max_file_bytes, None, (), TextLimits.for_settings(settings))
            chunks = chunk_document(document, embedder.count_tokens, settings.chunk_tokens, settings.chunk_overlap,
                                    embedder.max_seq_length, settings.max_chunks_per_file)
        except Exception:  # a file the ingest refuses or skips is not in the store either
            continue
        status = status_metadata(document)
        keys.update((c.title, c.section, c.text, str(status.get("status", "")), str(status.get("superseded_by", "")))
                    for c in chunks)
    return keys


def ensure_store(corpus: Corpus, settings: Settings, embedder: Embedder, lock: Path) -> None:
    """The corpus alone in ``settings.data_dir``: reused when the stamp matches, else ingested. When only the code
    that makes chunks changed, the files are chunked again without embedding: the same chunks keep the store (a
    change elsewhere in that code costs no rebuild), others rebuild it."""
    stamp_file = Path(settings.data_dir) / STAMP
    wanted = {"files": files_stamp(corpus.docs), "code": code_stamp(settings), "docs": str(corpus.docs)}
    have = json.loads(stamp_file.read_text()) if stamp_file.is_file() else {}
    store = Store(settings)
    if have == wanted and store.exists():
        return
    rebuild = bool(have) and (have.get("code") != wanted["code"] or have.get("docs") != wanted["docs"])
    if rebuild and have.get("docs") == wanted["docs"] and have.get("files") == wanted["files"] and store.exists():
        if chunks_of_files(corpus.docs, settings, embedder) == stored_chunks(store):
            print(f"{corpus.name}: the chunking code changed, the chunks did not: store kept", flush=True)
            stamp_file.write_text(json.dumps(wanted))
            return
    with heavy_lock(lock, f"ingest {corpus.name}"):
        started = time.perf_counter()
        print(f"{corpus.name}: {'rebuilding' if rebuild else 'ingesting'} {corpus.docs} into {settings.data_dir}",
              flush=True)
        report = ingest([corpus.docs], settings, embedder=embedder, reindex=rebuild and store.exists())
        print(f"{corpus.name}: {report.chunks_total} chunks, {report.files_added + report.files_updated} files "
              f"ingested, {len(report.files_failed)} failed, {time.perf_counter() - started:.0f} s", flush=True)
    stamp_file.write_text(json.dumps(wanted))


def langchain_baseline(corpus: Corpus, settings: Settings, stores: Path, lock: Path) -> LangChainDefault:
    model_path = resolve_model_path(settings.embedding_model)
    directory = cache_dir([corpus.docs], model_path, parent=stores)
    if LangChainDefault.is_built(directory):
        return LangChainDefault([corpus.docs], model_path, directory)
    with heavy_lock(lock, f"build the LangChain store of {corpus.name}"):
        return LangChainDefault([corpus.docs], model_path, directory)


def answer_figures(scored: list[Scored]) -> dict[str, float | None]:
    summary = summarise(scored)
    answerable = [s for s in scored if s.question.answerable]
    near_misses = [s for s in scored if s.question.near_miss]
    unanswerable = [s for s in scored if s.question.unanswerable]

    def share(flags: list[bool]) -> float | None:
        return sum(flags) / len(flags) if flags else None

    def notice(s: Scored) -> bool:
        return NEAR_MISS_NOTICE in (s.final.answer + "\n" + "\n".join(s.final.notes)).lower()

    return {
        "facts": summary["fact_coverage"],
        "ceiling": summary["facts_in_passages"],
        "lead": summary["fact_in_first_300"],
        "chars": summary["mean_length"],
        "said": share([says_not_covered(s.final, s.question.missing) for s in near_misses]),
        "refused": share([s.final.abstained for s in answerable]),
        "missing": share([notice(s) and not s.final.abstained for s in answerable]),
        "out": share([says_not_covered(s.final) for s in unanswerable]),
    }


def retrieval_figures(questions: list[Question], retriever: Retriever, baseline: LangChainDefault | None) -> dict:
    figures: dict = {}
    for mode in MODES:
        ranked = rank_summary(questions, lambda q, m=mode: retriever.search(q, k=CUTOFF, mode=m).passages)
        figures[mode], figures[f"{mode} hit@5"], figures[f"{mode} first"] = (
            ranked["mrr@10"], ranked["hit@5"], ranked["first_hit"])
    if baseline is not None:
        ranked = rank_summary(questions, baseline.search)
        figures["LangChain"], figures["LangChain hit@5"], figures["LangChain first"] = (
            ranked["mrr@10"], ranked["hit@5"], ranked["first_hit"])
    return figures


@contextmanager
def constant_set(constant: str, value: float) -> Iterator[None]:
    """``constant`` (``module.NAME``) set to ``value`` for the duration, restored after."""
    module_name, name = constant.rsplit(".", 1)
    module = importlib.import_module(module_name)
    before = getattr(module, name)
    setattr(module, name, type(before)(value) if isinstance(before, int | float) else value)
    try:
        yield
    finally:
        setattr(module, name, before)


def ranking_grid(questions: list[Question], retriever: Retriever, constant: str, values: list[float]) -> dict:
    """Hybrid MRR@10 with ``constant`` set to each value."""
    out = {}
    for value in values:
        with constant_set(constant, value):
            out[value] = {"mrr": rank_summary(questions, lambda q: retriever.search(q, k=CUTOFF).passages)["mrr@10"]}
    return out


def decision_grid(questions: list[Question], answerer: Answerer, constant: str, values: list[float]) -> dict:
    """Near-misses said, out-of-scope questions declined, answerable questions refused and answerable questions told
    something is missing, with ``constant`` set to each value, by the answerer's verdict alone (``Answerer.judge``:
    the bar, the close band, the names it lacks), each question searched once."""
    found = {q.id: answerer.retrieve(q.question, q.history) for q in questions}
    out = {}
    for value in values:
        said: list[bool] = []
        declined: list[bool] = []
        refused: list[bool] = []
        alarms: list[bool] = []
        with constant_set(constant, value):
            for question in questions:
                standalone, result = found[question.id]
                verdict = answerer.judge(question.question, standalone, result)
                named = normal(" ".join(verdict.missing))
                if question.near_miss:
                    said.append(verdict.abstain or verdict.close or any(normal(m) in named for m in question.missing))
                elif question.unanswerable:
                    declined.append(verdict.abstain or verdict.close or bool(verdict.missing))
                else:
                    refused.append(verdict.abstain or verdict.close)
                    alarms.append(bool(verdict.missing))
        out[value] = {
            "said": statistics.mean(said) if said else None,
            "out": statistics.mean(declined) if declined else None,
            "refused": statistics.mean(refused),
            "missing": statistics.mean(alarms),
            "declined": statistics.mean(said + declined) if said or declined else None,
        }
    return out


def grid_objective(figures: dict) -> float:
    """What a fitted value is chosen by: MRR@10 for a ranking constant; for a confidence constant the balanced
    share of the questions to decline that are declined (near-misses and out-of-scope ones together) and of
    answerable questions answered."""
    if "mrr" in figures:
        return figures["mrr"]
    return ((figures["declined"] if figures["declined"] is not None else 1.0) + 1.0 - figures["refused"]) / 2


MAX_REFUSED = 0.05  # a confidence constant may refuse at most this share of answerable questions (mean of the fit set)


def fit_mean(per_corpus: dict[str, dict[float, dict]], corpora: list[str], value: float, key: str | None = None
             ) -> float:
    """The mean over ``corpora`` of the objective (or of the figure ``key``) under ``value``."""
    return statistics.mean(
        grid_objective(per_corpus[c][value]) if key is None else per_corpus[c][value][key] for c in corpora
    )


def leave_one_out(per_corpus: dict[str, dict[float, dict]]) -> dict[str, float]:
    """For each corpus: the value best on the mean objective of the other corpora (for a confidence constant,
    among the values that refuse at most MAX_REFUSED there; the least refusing one when none does)."""
    out = {}
    for held in per_corpus:
        others = [c for c in per_corpus if c != held] or [held]
        values = list(per_corpus[held])
        allowed = values
        if "refused" in per_corpus[held][values[0]]:
            allowed = [v for v in values if fit_mean(per_corpus, others, v, "refused") <= MAX_REFUSED + 1e-9] or [
                min(values, key=lambda v, o=others: fit_mean(per_corpus, o, v, "refused"))
            ]
        best = max(fit_mean(per_corpus, others, v) for v in allowed)
        # values the other corpora cannot tell apart: the last listed (list the values from the boldest change
        # to the most conservative one)
        out[held] = [v for v in allowed if fit_mean(per_corpus, others, v) >= best - 1e-9][-1]
    return out


def format_grid(constant: str, values: list[float], grids: dict[str, dict[float, dict]]) -> str:
    loco = leave_one_out(grids)
    keys = [k for k in next(iter(next(iter(grids.values())).values()))]
    lines = [f"{constant}: {', '.join(keys)} per value; LOCO = the value chosen on the other corpora, and this "
             "corpus's figures under it",
             "| corpus | " + " | ".join(f"{v:g}" for v in values) + " | LOCO value | LOCO |",
             "| --- | " + " | ".join("---" for _ in values) + " | ---: | --- |"]

    def cell(figures: dict) -> str:
        return " / ".join("-" if figures[k] is None else f"{figures[k]:.3f}" for k in keys)

    for name, by_value in grids.items():
        chosen = loco[name]
        lines.append(f"| {name} | " + " | ".join(cell(by_value[v]) for v in values)
                     + f" | {chosen:g} | {cell(by_value[chosen])} |")
    means = {}
    for v in values:
        means[v] = {k: statistics.mean(g[v][k] for g in grids.values() if g[v][k] is not None) for k in keys}
    loco_means = {k: statistics.mean(g[loco[n]][k] for n, g in grids.items() if g[loco[n]][k] is not None)
                  for k in keys}
    lines.append("| macro | " + " | ".join(cell(means[v]) for v in values) + f" | | {cell(loco_means)} |")
    return "\n".join(lines)


COLUMNS = [
    ("hybrid", "hybrid"), ("dense", "dense"), ("keyword", "keyword"), ("LangChain", "LangCh"),
    ("hybrid hit@5", "hyb@5"), ("dense hit@5", "den@5"), ("keyword hit@5", "key@5"), ("LangChain hit@5", "LC@5"),
    ("facts", "facts"), ("ceiling", "ceil"), ("lead", "lead"), ("chars", "chars"),
    ("said", "said"), ("refused", "refused"), ("missing", "missing"), ("out", "out"),
]


def format_table(rows: list[Row]) -> str:
    shown = [(key, label) for key, label in COLUMNS if any(r.figures.get(key) is not None for r in rows)]
    lines = [f"| {'corpus':10} | {'questions':>13} | " + " | ".join(f"{label:>7}" for _, label in shown) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in shown) + " |"]

    def cell(value: float | None, key: str) -> str:
        if value is None:
            return f"{'':>7}"
        return f"{value:7.0f}" if key == "chars" else f"{value:7.3f}"

    for row in rows:
        lines.append(f"| {row.name:10} | {row.counts:>13} | "
                     + " | ".join(cell(row.figures.get(k), k) for k, _ in shown) + " |")
    return "\n".join(lines)


def macro(rows: list[Row]) -> Row:
    figures: dict[str, float | None] = {}
    for key, _ in COLUMNS:
        values = [r.figures[key] for r in rows if r.figures.get(key) is not None]
        figures[key] = statistics.mean(values) if values else None
    return Row("macro", f"{len(rows)} corpora", figures)


def parse_corpora(args: argparse.Namespace) -> list[Corpus]:
    specs = [(n, Path(d), Path(q)) for n, d, q in args.corpus] if args.corpus else DEFAULT_CORPORA
    wanted = set(args.only.split(",")) if args.only else None
    corpora = []
    for name, docs, questions in specs:
        if wanted is not None and name not in wanted:
            continue
        if not docs.is_dir():
            print(f"{name}: skipped, no documents folder at {docs}")
        elif not questions.is_file():
            print(f"{name}: skipped, no question file at {questions}")
        else:
            try:
                corpora.append(Corpus(name, docs, questions, load_questions(questions)))
            except ValueError as error:
                print(f"{name}: skipped, {error}")
    return corpora


def parse_grid(text: str | None) -> tuple[str, list[float]] | None:
    if not text:
        return None
    constant, _, values = text.partition("=")
    try:
        return constant.strip(), [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"--grid {text!r}: give MODULE.CONSTANT=V1,V2,... with numbers") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", nargs=3, action="append", metavar=("NAME", "DOCS", "QUESTIONS"),
                        help="a corpus folder and its question file (repeat; default: the six development corpora)")
    parser.add_argument("--only", help="comma-separated corpus names to run")
    parser.add_argument("--stores", type=Path, default=Path("/tmp/genbench-stores"), help="where the stores live")
    parser.add_argument("--lock", type=Path, default=Path("/tmp/heavy.lock"), help="taken while a store is built")
    parser.add_argument("--no-langchain", action="store_true", help="skip the LangChain default pipeline")
    parser.add_argument("--no-answers", action="store_true", help="skip the offline answers (retrieval only)")
    parser.add_argument("--grid", help="MODULE.CONSTANT=V1,V2,...: figures per value and leave-one-corpus-out")
    parser.add_argument("--details", type=Path, help="write per-question figures as JSON here")
    args = parser.parse_args()
    grid = parse_grid(args.grid)
    corpora = parse_corpora(args)
    if not corpora:
        print("no corpus to run")
        return 1
    args.stores.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    grids: dict[str, dict[float, dict]] = {}
    details: dict = {}
    for corpus in corpora:
        settings = load_settings(data_dir=args.stores / corpus.name, model_cache=args.stores / "models")
        embedder = Embedder.for_settings(settings)
        ensure_store(corpus, settings, embedder, args.lock)
        baseline = None if args.no_langchain else langchain_baseline(corpus, settings, args.stores, args.lock)
        retriever = Retriever(settings, embedder=embedder)
        retriever.search("warm up")
        answerable = [q for q in corpus.questions if q.answerable]
        started = time.perf_counter()
        figures = retrieval_figures(answerable, retriever, baseline)
        details[corpus.name] = {k: figures.pop(k) for k in list(figures) if k.endswith(" first")}
        answerer = Answerer(settings, retriever, ExtractiveProvider(embedder))
        if grid and grid[0].startswith(DECISION_MODULES):
            grids[corpus.name] = decision_grid(corpus.questions, answerer, *grid)
        elif grid:
            grids[corpus.name] = ranking_grid(answerable, retriever, *grid)
        if not args.no_answers:
            persona = load_persona(settings.persona, settings.agents_dir)
            scored = answer_all(answerer, persona, corpus.questions)
            figures.update(answer_figures(scored))
            details[corpus.name]["answers"] = [
                {**s.to_dict(), "confidence": round(s.final.confidence, 4), "missing": s.question.missing}
                for s in scored
            ]
        near = sum(q.near_miss for q in corpus.questions)
        rows.append(Row(corpus.name, f"{len(answerable)} + {near} nm", figures))
        print(f"{corpus.name}: measured in {time.perf_counter() - started:.0f} s", flush=True)
    print()
    print(format_table(rows + [macro(rows)]))
    if grid:
        print()
        print(format_grid(*grid, grids))
    if args.details:
        args.details.write_text(json.dumps(details, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
