#!/usr/bin/env python3
"""Retrieval on a real documentation site: our hybrid search beside BM25 alone, dense alone and the plain
LangChain default pipeline, plus how often our pipeline declines near-misses and refuses answerable questions.

    python scripts/bench_docs_retrieval.py /work/shared/corpora/nginx-docs \
        [--questions scripts/devsets/nginx.jsonl] [--data-dir DIR] [--langchain-dir DIR]

The docs folder is ingested beside ``corpus/`` (``--corpus``), as a team would use it. ``--data-dir`` reuses
a store that already holds both (an empty or missing folder is ingested into once, then reused). A full
ingest of a large site takes many CPU-minutes: run the first one under ``flock /work/wt/heavy.lock``.

The LangChain default pipeline is rebuilt from its parts (``scripts/langchain_default.py``); its store is cached
in ``--langchain-dir`` (default: a folder in the temp dir named by a hash of the files), so reruns are cheap.

Figures: hit@5 and MRR@10 over the answerable questions (a hit is a chunk of an expected source or one that
holds an evidence passage, see ``rag.app.evaluation.is_hit``). For our pipeline, "declined" counts a near-miss
that the retrieval confidence abstains on and, separately, one the offline answerer declines (abstains, or
says the knowledge base has nothing on what it names); "refused" counts the same for answerable questions.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from langchain_default import LangChainDefault, cache_dir  # noqa: E402

from rag.answer.answering import Answerer  # noqa: E402
from rag.answer.personas import load_persona  # noqa: E402
from rag.answer.providers.extractive import ExtractiveProvider  # noqa: E402
from rag.app.answer_eval import says_not_covered  # noqa: E402
from rag.app.evaluation import CUTOFF, Question, load_questions, rank_summary  # noqa: E402
from rag.config import load_settings  # noqa: E402
from rag.index.embedding import Embedder, resolve_model_path  # noqa: E402
from rag.index.store import Store  # noqa: E402
from rag.ingest.pipeline import ingest  # noqa: E402
from rag.search.retrieval import Retriever  # noqa: E402


def declines(answerer: Answerer, questions: list[Question], persona) -> dict[str, dict]:
    """Per question: the retrieval confidence, whether retrieval abstained, and whether the answer declined."""
    from rag.answer.events import Final

    out = {}
    for question in questions:
        final = next(e for e in answerer.answer(question.question, persona, question.history) if isinstance(e, Final))
        names = question.missing if question.near_miss else ()
        out[question.id] = {
            "confidence": round(final.confidence, 4),
            "abstained": final.abstained,
            "declined": says_not_covered(final, names) if question.near_miss else says_not_covered(final),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("docs", type=Path, nargs="?", help="the documentation folder (e.g. shared/corpora/nginx-docs)")
    parser.add_argument("--questions", type=Path, default=Path("scripts/devsets/nginx.jsonl"))
    parser.add_argument("--corpus", type=Path, default=Path("corpus"), help="ingested beside the docs")
    parser.add_argument("--data-dir", type=Path, help="a store of the docs and --corpus (ingested into if empty)")
    parser.add_argument("--langchain-dir", type=Path, help="where the LangChain store is cached")
    parser.add_argument("--no-langchain", action="store_true", help="skip the LangChain default pipeline")
    parser.add_argument("--no-answers", action="store_true", help="skip the answer-level declines (faster)")
    parser.add_argument("--details", type=Path, help="write per-question figures as JSON here")
    args = parser.parse_args()
    if args.docs is None or not args.docs.is_dir():
        parser.error("give the documentation folder, e.g. /work/shared/corpora/nginx-docs")
    questions = load_questions(args.questions)
    answerable = [q for q in questions if q.answerable]
    near_misses = [q for q in questions if q.near_miss]
    roots = [args.docs, args.corpus]

    with tempfile.TemporaryDirectory(prefix="bench-docs-") as scratch:
        settings = load_settings(data_dir=args.data_dir or Path(scratch))
        embedder = Embedder(settings.embedding_model, settings.embed_batch_size)
        if not Store(settings).exists():
            print(f"ingesting {args.docs} and {args.corpus} into {settings.data_dir} ...", flush=True)
            report = ingest(roots, settings, embedder=embedder)
            print(json.dumps(report.to_dict()), flush=True)
        retriever = Retriever(settings, embedder=embedder)
        retriever.search("warm up", mode="hybrid")
        rows: dict[str, dict] = {}
        for mode, label in (("hybrid", "ours (hybrid)"), ("keyword", "BM25 alone"), ("dense", "dense alone")):
            rows[label] = rank_summary(answerable, lambda q, m=mode: retriever.search(q, k=CUTOFF, mode=m).passages)
        if not args.no_langchain:
            model_path = resolve_model_path(settings.embedding_model)
            directory = args.langchain_dir or cache_dir(roots, model_path)
            baseline = LangChainDefault(roots, model_path, directory)
            rows["LangChain default"] = rank_summary(answerable, baseline.search)

        print(f"\n{args.questions}: {len(answerable)} answerable, {len(near_misses)} near-miss")
        print(f"{'pipeline':20} {'hit@5':>7} {'MRR@10':>7}")
        for label, row in rows.items():
            print(f"{label:20} {row['hit@5']:7.3f} {row['mrr@10']:7.3f}")
        if "LangChain default" in rows:
            gain = rows["ours (hybrid)"]["mrr@10"] - rows["LangChain default"]["mrr@10"]
            print(f"MRR@10 over the LangChain default: {gain:+.3f}")

        details: dict = {label: row["first_hit"] for label, row in rows.items()}
        if not args.no_answers:
            persona = load_persona(settings.persona, settings.agents_dir)
            answerer = Answerer(settings, retriever, ExtractiveProvider(embedder))
            decided = declines(answerer, near_misses + answerable, persona)
            details["answers"] = decided
            nm = [decided[q.id] for q in near_misses]
            ans = [decided[q.id] for q in answerable]
            print(
                f"near-misses declined: {sum(d['abstained'] for d in nm)}/{len(nm)} by retrieval confidence, "
                f"{sum(d['declined'] for d in nm)}/{len(nm)} by the answer"
            )
            print(
                f"answerable refused: {sum(d['abstained'] for d in ans)}/{len(ans)} by retrieval confidence, "
                f"{sum(d['declined'] for d in ans)}/{len(ans)} by the answer"
            )
        if args.details:
            args.details.write_text(json.dumps(details, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
