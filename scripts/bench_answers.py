#!/usr/bin/env python3
"""Answer benchmark: what a reader gets from our offline answers, beside a plain "top chunk" baseline.

    python scripts/bench_answers.py [--questions corpus/eval/questions.jsonl] [--docs corpus] [--data-dir DIR]

Ingests ``--docs`` into a temporary store (or uses ``--data-dir``), answers every question of the file with
our answerer, and answers it again the way a plain LangChain pipeline would: its default splitter
(RecursiveCharacterTextSplitter, 1,000 characters, 200 overlap) over the raw files, the same embedding
model, and the top chunk printed as the answer. Prints the answer metrics of ``rag.app.answer_eval`` side by
side. Development sets over real docs: ``--questions scripts/devsets/external.jsonl --docs
../shared/corpora/external``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.answer.answering import Answerer  # noqa: E402
from rag.answer.events import Final  # noqa: E402
from rag.answer.personas import load_persona  # noqa: E402
from rag.answer.providers.extractive import ExtractiveProvider  # noqa: E402
from rag.app.answer_eval import Scored, answer_all, format_summary, has_fact, summarise  # noqa: E402
from rag.app.evaluation import Question, load_questions  # noqa: E402
from rag.config import load_settings  # noqa: E402
from rag.index.embedding import Embedder  # noqa: E402
from rag.ingest.pipeline import ingest  # noqa: E402
from rag.search.retrieval import Retriever  # noqa: E402

SUFFIXES = {".md", ".markdown", ".txt", ".rst"}


def top_chunk_baseline(docs: list[Path], questions: list[Question], embedder: Embedder) -> list[Scored]:
    """The plain pipeline: default splitter over raw text, same model, the best chunk as the answer."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200)
    files = [f for root in docs for f in ([root] if root.is_file() else sorted(root.rglob("*")))]
    chunks = [c for f in files if f.suffix in SUFFIXES for c in splitter.split_text(f.read_text(errors="replace"))]
    vectors = np.array(embedder.embed(chunks))
    scored = []
    for question in questions:
        started = time.perf_counter()
        query = question.query
        best = int(np.argmax(vectors @ np.array(embedder.embed_query(query))))
        answer = chunks[best]
        final = Final(question.question, query, answer, [], [], False, "top-chunk", "", "", 0.0)
        found = [fact for fact in question.facts if has_fact(answer, fact)]
        scored.append(Scored(question, final, time.perf_counter() - started, found))
    return scored


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=Path, default=Path("corpus/eval/questions.jsonl"))
    parser.add_argument("--docs", type=Path, nargs="+", default=[Path("corpus")])
    parser.add_argument("--data-dir", type=Path, help="an existing store of --docs (default: ingest into a temp dir)")
    args = parser.parse_args()
    questions = load_questions(args.questions)
    with tempfile.TemporaryDirectory(prefix="bench-answers-") as scratch:
        settings = load_settings(data_dir=args.data_dir or Path(scratch))
        embedder = Embedder(settings.embedding_model, settings.embed_batch_size)
        if not args.data_dir:
            ingest(args.docs, settings, embedder=embedder)
        retriever = Retriever(settings, embedder=embedder)
        answerer = Answerer(settings, retriever, ExtractiveProvider(embedder))
        persona = load_persona(settings.persona, settings.agents_dir)
        answer_all(answerer, persona, questions[:3])  # warm-up: models, indexes and caches loaded
        ours = summarise(answer_all(answerer, persona, questions))
        baseline = summarise(top_chunk_baseline(args.docs, questions, embedder))
    print(format_summary({"ours": ours, "top chunk": baseline}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
