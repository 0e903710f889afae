#!/usr/bin/env python3
"""Retrieval on a real documentation site: our hybrid search beside BM25 alone, dense alone and the plain
LangChain default pipeline, plus how often our pipeline declines near-misses and refuses answerable questions.

    python scripts/bench_docs_retrieval.py /work/shared/corpora/nginx-docs \
        [--questions scripts/devsets/nginx.jsonl] [--data-dir DIR] [--langchain-dir DIR]

The docs folder is ingested beside ``corpus/`` (``--corpus``), as a team would use it. ``--data-dir`` reuses
a store that already holds both (an empty or missing folder is ingested into once, then reused). A full
ingest of a large site takes many CPU-minutes: run the first one under ``flock /work/wt/heavy.lock``.

The LangChain default pipeline is rebuilt from its parts: every Markdown file read raw, split by
``RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200)``, embedded by the same local
sentence-transformers model (what ``HuggingFaceEmbeddings`` calls, no extra options) into a Chroma
collection with its default (L2) distance, and queried for the 10 nearest chunks. Its store is cached in
``--langchain-dir`` (default: a folder in the temp dir named by a hash of the files), so reruns are cheap.

Figures: hit@5 and MRR@10 over the answerable questions (a hit is a chunk of an expected source or one that
holds an evidence passage, see ``rag.app.evaluation.is_hit``). For our pipeline, "declined" counts a near-miss
that the retrieval confidence abstains on and, separately, one the offline answerer declines (abstains, or
says the knowledge base has nothing on what it names); "refused" counts the same for answerable questions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.answer.answering import Answerer  # noqa: E402
from rag.answer.personas import load_persona  # noqa: E402
from rag.answer.providers.extractive import ExtractiveProvider  # noqa: E402
from rag.app.answer_eval import says_not_covered  # noqa: E402
from rag.app.evaluation import CUTOFF, Question, is_hit, load_questions, rank_metrics  # noqa: E402
from rag.config import load_settings  # noqa: E402
from rag.index.embedding import Embedder, resolve_model_path  # noqa: E402
from rag.index.store import Store  # noqa: E402
from rag.ingest.pipeline import ingest  # noqa: E402
from rag.search.passages import Passage  # noqa: E402
from rag.search.retrieval import Retriever  # noqa: E402

LANGCHAIN_SUFFIXES = (".md", ".markdown")
LANGCHAIN_COLLECTION = "langchain"


def markdown_files(roots: list[Path]) -> list[Path]:
    return sorted(f for root in roots for f in root.rglob("*") if f.is_file() and f.suffix in LANGCHAIN_SUFFIXES)


def langchain_cache_dir(roots: list[Path], model_path: str) -> Path:
    digest = hashlib.sha256(f"{model_path}\n1000/200".encode())
    for file in markdown_files(roots):
        stat = file.stat()
        digest.update(f"{file}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return Path(tempfile.gettempdir()) / f"bench-langchain-{digest.hexdigest()[:16]}"


class LangChainDefault:
    """The default pipeline of the LangChain tutorials, from its parts (see the module docstring)."""

    def __init__(self, roots: list[Path], model_path: str, directory: Path) -> None:
        import chromadb
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(model_path, device="cpu")
        self.client = chromadb.PersistentClient(path=str(directory))
        names = {c.name for c in self.client.list_collections()}
        done = directory / "complete"
        if LANGCHAIN_COLLECTION in names and done.is_file():
            self.collection = self.client.get_collection(LANGCHAIN_COLLECTION)
            return
        if LANGCHAIN_COLLECTION in names:  # an interrupted build
            self.client.delete_collection(LANGCHAIN_COLLECTION)
        self.collection = self.client.create_collection(LANGCHAIN_COLLECTION)
        self._build(roots)
        done.write_text(str(self.collection.count()))

    def _build(self, roots: list[Path]) -> None:
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200)
        texts: list[str] = []
        paths: list[str] = []
        for file in markdown_files(roots):
            for chunk in splitter.split_text(file.read_text(encoding="utf-8", errors="replace")):
                texts.append(chunk)
                paths.append(str(file))
        started = time.perf_counter()
        step = 1000
        for start in range(0, len(texts), step):
            batch = texts[start : start + step]
            vectors = self.model.encode(batch, batch_size=32, show_progress_bar=False)
            self.collection.add(
                ids=[str(i) for i in range(start, start + len(batch))],
                embeddings=vectors.tolist(),
                documents=batch,
                metadatas=[{"path": p} for p in paths[start : start + step]],
            )
        print(f"LangChain default: {len(texts)} chunks embedded in {time.perf_counter() - started:.0f} s", flush=True)

    def search(self, query: str, k: int = CUTOFF) -> list[Passage]:
        vector = self.model.encode([query], show_progress_bar=False)[0].tolist()
        got = self.collection.query(query_embeddings=[vector], n_results=k)
        return [
            Passage(id=i, text=t, source="", path=m["path"], title="", section="", doc_type="", position=0,
                    start_offset=0)
            for i, t, m in zip(got["ids"][0], got["documents"][0], got["metadatas"][0])
        ]


def ranking(questions: list[Question], search) -> dict:
    """hit@5, MRR@10 and the rank of the first hit per question (None: not in the top 10)."""
    firsts: dict[str, int | None] = {}
    hit5 = mrr = 0.0
    for question in questions:
        hits = [is_hit(p, question) for p in search(question.query)]
        metrics = rank_metrics(hits, 1)
        hit5 += metrics["hit@5"]
        mrr += metrics["mrr@10"]
        firsts[question.id] = next((i + 1 for i, hit in enumerate(hits) if hit), None)
    n = max(1, len(questions))
    return {"hit@5": hit5 / n, "mrr@10": mrr / n, "first_hit": firsts}


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
            rows[label] = ranking(answerable, lambda q, m=mode: retriever.search(q, k=CUTOFF, mode=m).passages)
        if not args.no_langchain:
            model_path = resolve_model_path(settings.embedding_model)
            directory = args.langchain_dir or langchain_cache_dir(roots, model_path)
            baseline = LangChainDefault(roots, model_path, directory)
            rows["LangChain default"] = ranking(answerable, baseline.search)

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
