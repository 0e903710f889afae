"""Evaluation: the metrics, hits, question files, the report of ``evaluate`` and threshold calibration."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rag.app.evaluation import (
    Question,
    _best_cut,
    calibrate,
    evaluate,
    is_hit,
    load_questions,
    rank_metrics,
    run_eval,
)
from rag.search.followups import rewrite_follow_up
from rag.search.passages import Passage
from rag.search.retrieval import Retriever

METRICS = ["hit@1", "hit@3", "hit@5", "mrr@10", "ndcg@10"]

# questions about the shared mini corpus of conftest (8 short documents)
MINI_QUESTIONS = [
    {
        "id": "bucket",
        "question": "How does a token bucket handle bursts of requests?",
        "sources": ["references/rate-limiting.md"],
        "evidence": ["allows short bursts up to its capacity"],
    },
    {
        "id": "replica",
        "question": "Where do reporting queries run for the order service?",
        "sources": ["team/adr-0001-postgres-for-orders.md"],
    },
    {
        "id": "outbox",
        "question": "How are order events published to Kafka reliably?",
        "sources": ["team/adr-0002-outbox-for-events.md"],
    },
    {
        "id": "evidence-only",
        "question": "What does at-least-once delivery require from consumers?",
        "sources": [],
        "evidence": ["consumers must be idempotent"],
    },
    {
        "id": "follow-up",
        "question": "and what about composite ones?",
        "history": ["how do database indexes work?"],
        "sources": ["references/database-indexing.md"],
    },
    {"id": "off-topic-1", "question": "What is the best recipe for banana bread?", "sources": []},
    {"id": "off-topic-2", "question": "Who painted the ceiling of the Sistine Chapel?", "sources": []},
]


def passage(source: str, text: str = "some text", root: str = "corpus") -> Passage:
    return Passage("id", text, source, f"{root}/{source}", "Title", "Section", "reference", 0, 0)


def write_questions(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n", encoding="utf-8")
    return path


# -- metrics ------------------------------------------------------------------------------------------


def test_rank_metrics():
    assert rank_metrics([True, False, True], 2) == {
        "hit@1": 1.0,
        "hit@3": 1.0,
        "hit@5": 1.0,
        "mrr@10": 1.0,
        "ndcg@10": pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))),
    }
    second = rank_metrics([False, False, False, True] + [False] * 6, 1)
    assert (second["hit@1"], second["hit@3"], second["hit@5"], second["mrr@10"]) == (0.0, 0.0, 1.0, 0.25)
    assert second["ndcg@10"] == pytest.approx(1 / math.log2(5))
    assert rank_metrics([False] * 10, 3) == dict.fromkeys(METRICS, 0.0)
    assert rank_metrics([False] * 10 + [True], 1)["mrr@10"] == 0.0, "a hit past rank 10 does not count"
    assert rank_metrics([], 0) == dict.fromkeys(METRICS, 0.0)


def test_a_hit_is_an_expected_source_or_an_evidence_passage():
    question = Question("q", "?", ["references/caching.md"], ["Stale entries are  the MAIN risk"])
    assert is_hit(passage("references/caching.md"), question)
    assert is_hit(passage("caching.md", root="/elsewhere/references"), question), "the display path counts too"
    assert not is_hit(passage("references/caching-strategies.md"), question)
    assert not is_hit(passage("team/caching.md"), question)
    evidence = passage("team/notes.md", "Our notes: stale entries are the\nmain risk of a cache.")
    assert is_hit(evidence, question), "evidence matches whatever the case and the line breaks"
    assert not is_hit(passage("team/notes.md", "Stale entries are a risk."), question)


def test_load_questions(tmp_path: Path):
    path = write_questions(tmp_path / "q.jsonl", MINI_QUESTIONS)
    questions = load_questions(path)
    assert [q.id for q in questions] == [row["id"] for row in MINI_QUESTIONS]
    assert [q.answerable for q in questions] == [True, True, True, True, True, False, False]
    follow_up = questions[4]
    assert follow_up.history == [{"role": "user", "content": "how do database indexes work?"}]
    assert follow_up.query == rewrite_follow_up(follow_up.question, ["how do database indexes work?"])
    assert follow_up.query != follow_up.question
    assert questions[0].query == questions[0].question


def test_a_bad_question_line_names_the_file_and_line(tmp_path: Path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a", "question": "ok?"}\n{"id": "b"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        load_questions(path)
    path.write_text('{"id": "a", "question": "ok?"}\nnot json\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        load_questions(path)


def test_best_cut_separates_the_classes():
    cut = _best_cut([0.7, 0.8, 0.9], [0.2, 0.3])
    assert 0.3 < cut["value"] < 0.7 and cut["balanced_accuracy"] == 1.0
    # balanced: 20 positives cannot outvote the two negatives
    uneven = _best_cut([0.5] * 18 + [0.3, 0.35], [0.32, 0.34])
    assert uneven["value"] > 0.34


# -- evaluate on a real store ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mini_retriever(mini_corpus_store, embedder) -> Retriever:
    settings, _ = mini_corpus_store
    return Retriever(settings, embedder=embedder)


def test_evaluate_reports_every_mode_abstention_and_latency(mini_retriever, tmp_path):
    questions = load_questions(write_questions(tmp_path / "q.jsonl", MINI_QUESTIONS))
    report = evaluate(questions, mini_retriever, threshold=0.3)
    assert report["questions"] == 7 and report["answerable"] == 5
    assert set(report["modes"]) == {"hybrid", "dense", "keyword"}
    for mode, metrics in report["modes"].items():
        assert set(metrics) == set(METRICS), mode
        assert all(0.0 <= value <= 1.0 for value in metrics.values())
        assert metrics["hit@1"] <= metrics["hit@3"] <= metrics["hit@5"]
        assert metrics["mrr@10"] >= metrics["hit@1"]
    assert report["modes"]["hybrid"]["hit@3"] == 1.0
    assert report["modes"]["dense"]["hit@5"] == 1.0
    abstention = report["abstention"]
    assert abstention["threshold"] == 0.3 and abstention["unanswerable"] == 2
    assert abstention["accuracy_on_unanswerable"] == 1.0
    assert abstention["false_abstention_rate"] == 0.0
    latency = report["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"]


def test_the_abstention_threshold_drives_abstention_accuracy(mini_retriever, tmp_path):
    questions = load_questions(write_questions(tmp_path / "q.jsonl", MINI_QUESTIONS))
    never = evaluate(questions, mini_retriever, threshold=0.0)["abstention"]
    always = evaluate(questions, mini_retriever, threshold=1.01)["abstention"]
    assert never["accuracy_on_unanswerable"] == 0.0 and never["false_abstention_rate"] == 0.0
    assert always["accuracy_on_unanswerable"] == 1.0 and always["false_abstention_rate"] == 1.0


def test_calibrate_puts_the_threshold_between_answerable_and_off_topic(mini_retriever, tmp_path):
    questions = load_questions(write_questions(tmp_path / "q.jsonl", MINI_QUESTIONS))
    result = calibrate(questions, mini_retriever)
    off_topic = max(mini_retriever.search(q.query).confidence for q in questions if not q.answerable)
    assert result["abstain_threshold"]["value"] > off_topic
    assert result["answerable"] == 5 and result["unanswerable"] == 2
    assert result["support_pairs"] > 0 and 0 < result["support_threshold"]["value"] < 1


def test_run_eval_reads_a_question_file(mini_corpus_store, mini_retriever, tmp_path):
    settings, _ = mini_corpus_store
    report = run_eval(settings, write_questions(tmp_path / "q.jsonl", MINI_QUESTIONS[:2]), mini_retriever)
    assert report["questions"] == 2 and report["seconds"] >= 0
    assert report["abstention"]["accuracy_on_unanswerable"] is None


def test_abstention_cut_refuses_at_most_five_percent_of_answerable_questions():
    answerable = [0.30, 0.32, 0.345] + [0.6] * 37  # 5% of 40 is 2: refusing two lows is allowed, a third is not
    unanswerable = [0.31, 0.33, 0.34, 0.35]
    free = _best_cut(answerable, unanswerable)
    assert free["value"] > 0.35  # balanced accuracy alone refuses all three lows
    capped = _best_cut(answerable, unanswerable, max_refused=0.05)
    assert 0.34 < capped["value"] <= 0.345
