"""Retrieval quality on the shipped corpus and its question set: floors, not exact numbers.

The corpus is ingested once per session (about 1,200 chunks, the slowest fixture of the suite) and the
question set is evaluated once; ``pytest -s tests/test_quality.py`` prints the measured numbers. The
floors sit a little below what was measured when they were set (see ``MEASURED``), so that a change
that really degrades retrieval fails while ordinary noise does not.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.answer.answering import Answerer
from rag.answer.events import CitationEvent, Final
from rag.answer.personas import load_persona
from rag.answer.providers.extractive import ExtractiveProvider
from rag.app.answer_eval import answer_all, format_summary, summarise
from rag.app.evaluation import Question, evaluate, format_report, is_hit, load_questions

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "corpus"
QUESTIONS = CORPUS / "eval" / "questions.jsonl"
PARTS = CORPUS / "eval" / "parts"
METRICS = ["hit@1", "hit@3", "hit@5", "mrr@10", "ndcg@10"]

# measured on the 138-question set (124 answerable, 14 unanswerable) with the configured thresholds
MEASURED = {
    "hybrid": {"hit@1": 0.806, "hit@3": 0.927, "hit@5": 0.952, "mrr@10": 0.865, "ndcg@10": 0.587},
    "dense": {"hit@1": 0.806, "hit@3": 0.911, "hit@5": 0.927, "mrr@10": 0.858, "ndcg@10": 0.580},
    "keyword": {"hit@1": 0.742, "hit@3": 0.895, "hit@5": 0.911, "mrr@10": 0.811, "ndcg@10": 0.479},
}
MARGIN = 0.05
ABSTENTION_FLOOR = 0.78  # share of the unanswerable questions recognised at the configured threshold (0.93)
FALSE_ABSTENTION_CEILING = 0.15  # share of the answerable questions wrongly refused (0.08)


def question_file() -> list[Question]:
    if QUESTIONS.is_file():
        return load_questions(QUESTIONS)
    questions: list[Question] = []
    for part in sorted(PARTS.glob("*.jsonl")):
        questions.extend(load_questions(part))
    return questions


@pytest.fixture(scope="module")
def questions() -> list[Question]:
    found = question_file()
    if not found:
        pytest.fail(f"no question set: neither {QUESTIONS} nor {PARTS}/*.jsonl")
    return found


@pytest.fixture(scope="module")
def report(shipped_store, questions) -> dict:
    settings, retriever = shipped_store
    result = evaluate(questions, retriever, settings.abstain_threshold)
    print_report(result)
    return result


def print_report(report: dict) -> None:
    print("\n\nquality on the shipped question set: " + format_report(report))
    print("MEASURED = " + json.dumps({mode: report["modes"][mode] for mode in report["modes"]}))


@pytest.mark.parametrize("mode", ["hybrid", "dense", "keyword"])
def test_retrieval_quality_floors(report, mode):
    measured = report["modes"][mode]
    for key in METRICS:
        floor = MEASURED[mode][key] - MARGIN
        assert measured[key] >= floor, f"{mode} {key} fell to {measured[key]} (floor {floor:.3f})"


def test_hybrid_is_at_least_as_good_as_the_worse_of_dense_and_keyword(report):
    modes = report["modes"]
    for key in METRICS:
        worse = min(modes["dense"][key], modes["keyword"][key])
        assert modes["hybrid"][key] >= worse, f"hybrid {key} {modes['hybrid'][key]} below both ({worse})"
    # and it does not trail dense-only by more than noise where it matters most
    assert modes["hybrid"]["mrr@10"] >= modes["dense"]["mrr@10"] - 0.01
    assert modes["hybrid"]["hit@5"] >= modes["dense"]["hit@5"]


def test_abstention_at_the_configured_threshold(report, questions):
    abstention = report["abstention"]
    assert abstention["unanswerable"] == sum(q.unanswerable for q in questions) >= 10
    assert abstention["accuracy_on_unanswerable"] >= ABSTENTION_FLOOR
    assert abstention["false_abstention_rate"] <= FALSE_ABSTENTION_CEILING


def test_follow_ups_are_found_through_their_rewrite(shipped_store, questions):
    _, retriever = shipped_store
    follow_ups = [q for q in questions if q.history and q.answerable]
    assert len(follow_ups) >= 8
    rewritten = sum(any(is_hit(p, q) for p in retriever.search(q.query, k=5).passages) for q in follow_ups)
    bare = sum(any(is_hit(p, q) for p in retriever.search(q.question, k=5).passages) for q in follow_ups)
    print(f"\nfollow-ups: hit@5 {rewritten}/{len(follow_ups)} rewritten, {bare}/{len(follow_ups)} as asked")
    assert rewritten >= bare
    assert rewritten / len(follow_ups) >= 0.75


EXACT_TERMS = [
    ("what is SC-081?", "references/tls-and-mtls.md"),
    ("what does KIP-848 change for consumers", "references/message-queues-and-streams.md"),
    ("UV_THREADPOOL_SIZE", "references/nodejs-event-loop.md"),
]


@pytest.mark.parametrize(("query", "source"), EXACT_TERMS, ids=[q for q, _ in EXACT_TERMS])
def test_an_exact_identifier_finds_its_passage(shipped_store, query, source):
    _, retriever = shipped_store
    hybrid = [p.source for p in retriever.search(query, k=3).passages]
    assert source in hybrid, hybrid


def test_extractive_answers_on_the_corpus_cite_verbatim_and_pass_their_own_checks(shipped_store, questions, embedder):
    settings, retriever = shipped_store
    answerer = Answerer(settings, retriever, ExtractiveProvider(embedder))
    persona = load_persona("backend-architecture-expert", REPO / "agents")
    sample = [q for q in questions if q.answerable and not q.history][::20]
    answered = 0
    for question in sample:
        events = list(answerer.answer(question.question, persona))
        final = events[-1]
        assert isinstance(final, Final)
        if final.abstained:
            continue
        answered += 1
        for event in events:
            if isinstance(event, CitationEvent):
                text = " ".join(final.passages[event.citation.n - 1].full_text.split())
                assert " ".join(event.citation.quote.split()) in text, (question.id, event.citation.quote)
        assert not final.unsupported, (question.id, [(c.sentence, c.score) for c in final.unsupported])
    assert answered >= len(sample) - 1


# answer metrics of the offline answerer on the shipped question set (python -m rag eval --answers), floors a
# little beyond what was measured when they were set (2026-11-27 night): fact coverage 0.587, all facts 0.370, a
# fact in the first 300 characters 0.563, near-miss said 0.96, unanswerable declined 0.92, answerable refused
# 0.04, 899 characters; with the answer budget of 2026-12-08 (1080) fact coverage 0.599 at 945 characters, the
# length held to issue 23's target of 1,000 on average
ANSWER_FLOORS = {"fact_coverage": 0.57, "all_facts": 0.33, "fact_in_first_300": 0.52, "near_miss_said": 0.87,
                 "unanswerable_declined": 0.84}
ANSWER_CEILINGS = {"answerable_refused": 0.07, "mean_length": 1000}


def test_offline_answers_carry_the_facts_and_say_what_the_docs_lack(shipped_store, questions, embedder):
    settings, retriever = shipped_store
    answerer = Answerer(settings, retriever, ExtractiveProvider(embedder))
    persona = load_persona("backend-architecture-expert", REPO / "agents")
    summary = summarise(answer_all(answerer, persona, questions))
    print("\n" + format_summary({"extractive": summary}))
    assert summary["with_facts"] >= 100 and summary["near_miss"] >= 20
    for key, floor in ANSWER_FLOORS.items():
        assert summary[key] >= floor, f"{key} fell to {summary[key]} (floor {floor})"
    for key, ceiling in ANSWER_CEILINGS.items():
        assert summary[key] <= ceiling, f"{key} rose to {summary[key]} (ceiling {ceiling})"
