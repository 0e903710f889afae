"""Evaluation: retrieval quality, abstention and latency on a question file, and threshold calibration.

A question file is JSONL: ``id``, ``question``, ``sources`` (files that answer it, relative to the
ingested root), ``evidence`` (verbatim passages) and optionally ``history`` (earlier questions, or
``{"role", "content"}`` turns), ``facts`` (key phrases of a correct answer, see ``rag.app.answer_eval``),
``kind`` and, for near-miss questions, ``missing`` (what the question names that the docs lack). A retrieved chunk is a
hit when it comes from an expected source or contains an evidence passage. Questions with neither
sources nor evidence are the unanswerable ones: the assistant should abstain on them (near-miss questions
are left to the answer-level evaluation: their retrieval confidence is high by design).
"""

from __future__ import annotations

import json
import math
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rag.config import Settings
from rag.search.confidence import abstain_bar
from rag.search.followups import last_turn_context, rewrite_follow_up
from rag.search.passages import Passage
from rag.search.retrieval import MODES, Retriever

CUTOFF = 10


@dataclass
class Question:
    id: str
    question: str
    sources: list[str]
    evidence: list[str] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)  # turns {"role", "content"} before the question
    facts: list[str] = field(default_factory=list)  # key phrases a correct answer contains ("a | b": either)
    kind: str = ""
    missing: list[str] = field(default_factory=list)  # near-miss: what the question names that the docs lack

    @property
    def answerable(self) -> bool:
        """A question with an expected source or an evidence passage; with neither, the right answer is to abstain."""
        return bool(self.sources or self.evidence)

    @property
    def unanswerable(self) -> bool:
        """Nothing in the corpus is near it: retrieval should abstain (a near-miss is answered with what is missing)."""
        return not self.answerable and not self.near_miss

    @property
    def near_miss(self) -> bool:
        return not self.answerable and (self.kind == "near-miss" or bool(self.missing))

    @property
    def query(self) -> str:
        return rewrite_follow_up(self.question, last_turn_context(self.history))


def as_turns(history: list) -> list[dict]:
    """History as chat turns: a plain string is an earlier question (the older question-file form)."""
    turns = []
    for item in history:
        if isinstance(item, str):
            turns.append({"role": "user", "content": item})
        elif isinstance(item, dict) and item.get("role") in ("user", "assistant"):
            turns.append({"role": item["role"], "content": str(item.get("content") or "")})
        else:
            raise TypeError(f"a history turn must be a string or a {{role, content}} object, not {item!r}")
    return turns


def load_questions(path: Path) -> list[Question]:
    questions = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            questions.append(
                Question(
                    id=str(row["id"]),
                    question=str(row["question"]),
                    sources=list(row.get("sources") or []),
                    evidence=list(row.get("evidence") or []),
                    history=as_turns(list(row.get("history") or [])),
                    facts=[str(f) for f in row.get("facts") or []],
                    kind=str(row.get("kind") or ""),
                    missing=[str(m) for m in row.get("missing") or []],
                )
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}:{number}: not a question line ({error})") from None
    return questions


def _normal(text: str) -> str:
    return " ".join(text.split()).lower()


def is_hit(passage: Passage, question: Question) -> bool:
    if any(passage.source == s or passage.path == s or passage.path.endswith("/" + s) for s in question.sources):
        return True
    text = _normal(passage.text)
    return any(_normal(e) in text for e in question.evidence)


def rank_metrics(hits: list[bool], relevant_total: int) -> dict[str, float]:
    first = next((i for i, hit in enumerate(hits) if hit), None)
    dcg = sum(1.0 / math.log2(i + 2) for i, hit in enumerate(hits[:CUTOFF]) if hit)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(CUTOFF, max(1, relevant_total))))
    return {
        "hit@1": float(first is not None and first < 1),
        "hit@3": float(first is not None and first < 3),
        "hit@5": float(first is not None and first < 5),
        "mrr@10": 1.0 / (first + 1) if first is not None and first < CUTOFF else 0.0,
        "ndcg@10": dcg / ideal if ideal else 0.0,
    }


def rank_summary(questions: list[Question], search: Callable[[str], list[Passage]]) -> dict:
    """hit@5 and MRR@10 of any search function over ``questions``, and the rank of each question's first hit
    (None: not in the top 10). The benchmarks rank our modes and outside pipelines with it alike."""
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


def evaluate(questions: list[Question], retriever: Retriever, threshold: float | None) -> dict:
    """Retrieval metrics per mode and abstention at ``threshold`` (None: the store's calibrated bar)."""
    threshold = abstain_bar(threshold, retriever)
    answerable = [q for q in questions if q.answerable]
    # near-miss questions are in-domain by design: the retrieval confidence cannot tell them apart, the answer must
    unanswerable = [q for q in questions if q.unanswerable]
    relevant_counts = _relevant_counts(retriever, answerable)
    report: dict = {"questions": len(questions), "answerable": len(answerable), "modes": {}}
    latencies: list[float] = []
    confidences: dict[str, float] = {}
    for mode in MODES:
        totals: dict[str, float] = {}
        for question in answerable:
            result = retriever.search(question.query, k=CUTOFF, mode=mode)
            if mode == "hybrid":
                latencies.append(result.seconds)
                confidences[question.id] = result.confidence
            metrics = rank_metrics([is_hit(p, question) for p in result.passages], relevant_counts[question.id])
            for key, value in metrics.items():
                totals[key] = totals.get(key, 0.0) + value
        report["modes"][mode] = {key: round(value / max(1, len(answerable)), 4) for key, value in totals.items()}
    for question in unanswerable:
        result = retriever.search(question.query, k=CUTOFF)
        latencies.append(result.seconds)
        confidences[question.id] = result.confidence
    abstained_right = sum(confidences[q.id] < threshold for q in unanswerable)
    answered_right = sum(confidences[q.id] >= threshold for q in answerable)
    report["abstention"] = {
        "threshold": threshold,
        "unanswerable": len(unanswerable),
        "accuracy_on_unanswerable": round(abstained_right / len(unanswerable), 4) if unanswerable else None,
        "false_abstention_rate": round(1 - answered_right / len(answerable), 4) if answerable else None,
    }
    report["latency_ms"] = {
        "p50": round(1000 * statistics.median(latencies), 1) if latencies else None,
        "p95": round(1000 * float(np.percentile(latencies, 95)), 1) if latencies else None,
    }
    return report


def _relevant_counts(retriever: Retriever, questions: list[Question]) -> dict[str, int]:
    """How many chunks in the store come from each question's expected sources (for nDCG's ideal)."""
    per_source: dict[str, int] = {}
    for _, _, metadatas in retriever.store.iter_all():
        for meta in metadatas:
            per_source[str(meta.get("source", ""))] = per_source.get(str(meta.get("source", "")), 0) + 1
    return {q.id: sum(per_source.get(s, 0) for s in q.sources) for q in questions}


def calibrate(questions: list[Question], retriever: Retriever) -> dict:
    """Thresholds from the question set.

    Abstention: the best cut between the confidence of answerable and unanswerable questions.
    Support: the best cut between the support score of each evidence passage against a chunk of
    its own source (supported) and against the best chunk of another source (a plausible wrong citation).
    """
    from rag.answer.citations import support_scores

    confidence = {q.id: retriever.search(q.query, k=CUTOFF).confidence for q in questions}
    positives = [confidence[q.id] for q in questions if q.answerable]
    negatives = [confidence[q.id] for q in questions if q.unanswerable]
    abstain = _best_cut(positives, negatives, max_refused=MAX_REFUSED)

    rng = random.Random(7)
    pairs: list[tuple[str, str, bool]] = []
    for question in questions:
        for evidence in question.evidence:
            result = retriever.search(evidence, k=CUTOFF, widen=True)
            own = [p for p in result.passages if is_hit(p, question)]
            other = [p for p in result.passages if not is_hit(p, question)]
            if own:
                pairs.append((evidence, own[0].full_text, True))
            if other:
                pairs.append((evidence, rng.choice(other[:3]).full_text, False))
    scores = support_scores(retriever.embedder, [(claim, passage) for claim, passage, _ in pairs])
    scored = list(zip(scores, [label for _, _, label in pairs]))
    support = _best_cut([s for s, ok in scored if ok], [s for s, ok in scored if not ok])
    return {
        "abstain_threshold": abstain,
        "support_threshold": support,
        "answerable": len(positives),
        "unanswerable": len(negatives),
        "support_pairs": len(scored),
    }


MAX_REFUSED = 0.05  # share of answerable questions the abstention threshold may refuse


def _best_cut(positives: list[float], negatives: list[float], max_refused: float | None = None) -> dict:
    """The threshold (midpoint between neighbouring scores) with the best balanced accuracy, among those that
    keep at least ``1 - max_refused`` of the positives when ``max_refused`` is given.

    Balanced, because the classes are uneven (far more answerable questions than unanswerable ones):
    plain accuracy would happily answer everything. Capped, because refusing a question the knowledge base
    answers costs a reader more than a weak answer to one it does not.
    """
    values = sorted(set(positives + negatives))
    candidates = [(a + b) / 2 for a, b in zip(values, values[1:])] or values
    best = (-1.0, 0.0)
    for cut in candidates:
        kept = sum(p >= cut for p in positives) / max(1, len(positives))
        if max_refused is not None and 1 - kept > max_refused + 1e-9:
            continue
        refused = sum(n < cut for n in negatives) / max(1, len(negatives))
        balanced = (kept + refused) / 2
        if balanced > best[0]:
            best = (balanced, cut)
    return {"value": round(best[1], 4), "balanced_accuracy": round(best[0], 4)}


def format_report(report: dict) -> str:
    """The report of ``evaluate`` as the table ``python -m rag eval`` prints."""
    keys = ["hit@1", "hit@3", "hit@5", "mrr@10", "ndcg@10"]
    lines = [f"{report['questions']} questions ({report['answerable']} answerable)"]
    lines.append(f"{'mode':8} " + " ".join(f"{k:>8}" for k in keys))
    for mode, metrics in report["modes"].items():
        lines.append(f"{mode:8} " + " ".join(f"{metrics[k]:8.3f}" for k in keys))
    abstention = report["abstention"]
    lines.append(
        f"abstention (threshold {abstention['threshold']}): {abstention['accuracy_on_unanswerable']} on "
        f"{abstention['unanswerable']} unanswerable, false abstention {abstention['false_abstention_rate']}"
    )
    lines.append(f"retrieval latency p50 {report['latency_ms']['p50']} ms, p95 {report['latency_ms']['p95']} ms")
    return "\n".join(lines)


def run_eval(settings: Settings, questions_path: Path, retriever: Retriever | None = None) -> dict:
    retriever = retriever or Retriever(settings)
    started = time.perf_counter()
    report = evaluate(load_questions(questions_path), retriever, settings.abstain_threshold)
    report["seconds"] = round(time.perf_counter() - started, 2)
    return report
