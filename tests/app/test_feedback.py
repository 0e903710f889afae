"""Feedback storage (SQLite in the data dir), JSONL export, and thumbs-down answers as eval questions.

The answers rated here are real: produced by the extractive answerer over the shared mini store.
"""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest

from rag.answer.answering import Answerer
from rag.answer.events import Final
from rag.answer.personas import load_persona
from rag.app.evaluation import evaluate, load_questions
from rag.app.feedback import FILE_NAME, FeedbackEntry, FeedbackStore
from rag.search.retrieval import Retriever

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def answered(mini_corpus_store, embedder) -> tuple[Retriever, list[Final]]:
    """Real answers from the mini store: an answered question, a follow-up, and an abstention."""
    settings, _ = mini_corpus_store
    retriever = Retriever(settings, embedder=embedder)
    answerer = Answerer(settings, retriever)
    persona = load_persona("backend-architecture-expert", REPO / "agents")
    history: list[dict] = []
    finals = []
    for question in (
        "How does write-through caching keep the cache fresh?",
        "and what about eviction policies?",
        "Who won the football world cup in 1998?",
    ):
        final = [event for event in answerer.answer(question, persona, history=history) if isinstance(event, Final)]
        finals.append(final[0])
        history += [{"role": "user", "content": question}, {"role": "assistant", "content": final[0].answer}]
    assert finals[0].citations and not finals[0].abstained
    assert finals[2].abstained and not finals[2].citations
    return retriever, finals


def test_entries_are_stored_with_everything_needed_to_judge_the_answer(tmp_path, answered):
    _, finals = answered
    store = FeedbackStore(tmp_path / "data" / FILE_NAME)
    entry = FeedbackEntry.from_final(finals[1], -1, comment="ignored my question", history=[finals[0].question])
    entry_id = store.add(entry)
    assert (tmp_path / "data" / FILE_NAME).is_file()

    got = store.get(entry_id)
    assert got is not None
    assert got.question == "and what about eviction policies?"
    assert got.standalone_query == finals[1].standalone_query != got.question  # the follow-up was rewritten
    assert got.history == [finals[0].question]
    assert got.answer == finals[1].answer
    assert got.rating == -1 and got.comment == "ignored my question"
    assert got.persona == "backend-architecture-expert"
    assert got.provider == "extractive" and got.model == finals[1].model
    assert got.created_at and got.created_at == got.updated_at
    assert got.citations == [c.to_dict() for c in finals[1].citations]
    assert got.sources == list(dict.fromkeys(c.passage.path for c in finals[1].citations))

    assert store.update(entry_id, rating=1, comment="fine after all")
    got = store.get(entry_id)
    assert (got.rating, got.comment) == (1, "fine after all")
    assert not store.update(entry_id + 100, rating=1)
    assert store.delete(entry_id) and store.get(entry_id) is None


def test_invalid_ratings_are_refused(tmp_path, answered):
    _, finals = answered
    store = FeedbackStore(tmp_path / FILE_NAME)
    with pytest.raises(ValueError, match="thumbs"):
        store.add(FeedbackEntry.from_final(finals[0], 0))
    entry_id = store.add(FeedbackEntry.from_final(finals[0], 1))
    with pytest.raises(ValueError):
        store.update(entry_id, rating=5)
    # the database itself refuses a bad rating too (another writer cannot corrupt the table)
    with sqlite3.connect(store.path) as db, pytest.raises(sqlite3.IntegrityError):
        db.execute("UPDATE feedback SET rating = 3 WHERE id = ?", (entry_id,))
    assert store.get(entry_id).rating == 1


def test_reading_without_a_database_creates_nothing(tmp_path):
    store = FeedbackStore(tmp_path / "missing" / FILE_NAME)
    assert store.all() == [] and store.get(1) is None
    out = io.StringIO()
    assert store.export_jsonl(out) == 0 and out.getvalue() == ""
    assert not (tmp_path / "missing").exists()


def test_export_jsonl_has_every_entry(tmp_path, answered):
    _, finals = answered
    store = FeedbackStore(tmp_path / FILE_NAME)
    ids = [store.add(FeedbackEntry.from_final(final, rating)) for final, rating in zip(finals, (1, -1, -1))]
    out = io.StringIO()
    assert store.export_jsonl(out) == 3
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [row["id"] for row in rows] == ids
    assert [row["rating"] for row in rows] == [1, -1, -1]
    assert rows[0]["question"] == finals[0].question and rows[0]["answer"] == finals[0].answer
    assert rows[0]["citations"][0]["source"] == finals[0].citations[0].passage.path
    assert rows[2]["abstained"] is True
    assert all(row["created_at"] and row["persona"] == "backend-architecture-expert" for row in rows)


def test_thumbs_down_answers_become_a_question_file_that_eval_reads(tmp_path, answered):
    retriever, finals = answered
    store = FeedbackStore(tmp_path / FILE_NAME)
    store.add(FeedbackEntry.from_final(finals[0], 1))  # thumbs up: not a regression case
    down_id = store.add(FeedbackEntry.from_final(finals[1], -1, comment="wrong policy", history=[finals[0].question]))
    abstained_id = store.add(FeedbackEntry.from_final(finals[2], -1))
    path = tmp_path / "bad-answers.jsonl"
    with path.open("w", encoding="utf-8") as out:
        assert store.export_questions(out) == 2

    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [row["id"] for row in rows] == [f"feedback-{down_id}", f"feedback-{abstained_id}"]
    assert rows[0]["kind"] == "feedback" and rows[0]["evidence"] == []
    assert rows[0]["bad_answer"] == finals[1].answer and rows[0]["comment"] == "wrong policy"

    questions = load_questions(path)
    assert [q.question for q in questions] == [finals[1].question, finals[2].question]
    follow_up, abstained = questions
    assert follow_up.sources == list(dict.fromkeys(c.passage.path for c in finals[1].citations))
    assert follow_up.history == [{"role": "user", "content": finals[0].question}]  # read back as chat turns
    assert follow_up.query == finals[1].standalone_query  # eval replays the follow-up as it was understood
    assert abstained.sources == [] and not abstained.answerable

    report = evaluate(questions, retriever, retriever.settings.abstain_threshold)
    assert report["questions"] == 2 and report["answerable"] == 1
    assert report["modes"]["hybrid"]["hit@5"] == 1.0  # the cited sources are found again by the same search


def test_feedback_export_command(tmp_path, answered, run_rag):
    _, finals = answered
    data = tmp_path / "data"
    store = FeedbackStore(data / FILE_NAME)
    store.add(FeedbackEntry.from_final(finals[0], 1))
    down_id = store.add(FeedbackEntry.from_final(finals[1], -1))

    everything = run_rag("feedback", "export", "--data-dir", data, cwd=tmp_path)
    assert everything.returncode == 0, everything.stderr
    rows = [json.loads(line) for line in everything.stdout.splitlines()]
    assert [row["rating"] for row in rows] == [1, -1]
    assert "2 feedback entries" in everything.stderr

    out = tmp_path / "out" / "questions.jsonl"
    as_questions = run_rag("feedback", "export", "--as-questions", "--out", out, "--data-dir", data, cwd=tmp_path)
    assert as_questions.returncode == 0, as_questions.stderr
    assert as_questions.stdout == ""
    assert [q.id for q in load_questions(out)] == [f"feedback-{down_id}"]
    assert "1 thumbs-down answers as questions" in as_questions.stderr

    empty = run_rag("feedback", "export", "--data-dir", tmp_path / "nothing-here", cwd=tmp_path)
    assert empty.returncode == 0 and empty.stdout == "" and "0 feedback entries" in empty.stderr
    usage = run_rag("feedback", cwd=tmp_path)
    assert usage.returncode == 2


def test_export_refuses_to_write_over_the_feedback_it_reads(tmp_path, capsys):
    """``--out`` naming the feedback file (directly or through a link) used to truncate it before reading it."""
    from rag.cli import main as cli

    data = tmp_path / "data"
    store = FeedbackStore(data / FILE_NAME)
    for n in range(3):
        store.add(FeedbackEntry(question=f"question {n}", answer="an answer", rating=-1))
    (tmp_path / "link.sqlite3").symlink_to(data / FILE_NAME)
    for out in (data / FILE_NAME, tmp_path / "link.sqlite3", tmp_path / "data" / ".." / "data" / FILE_NAME):
        for extra in ([], ["--as-questions"]):
            code = cli.main(["feedback", "export", *extra, "--out", str(out), "--data-dir", str(data)])
            err = capsys.readouterr().err
            assert code == cli.EXIT_USAGE, err
            assert "is the feedback file itself" in err and str(out) in err
            assert len(FeedbackStore(data / FILE_NAME).all()) == 3
    fresh = tmp_path / "fresh"  # no feedback yet: the file the chat would create is refused all the same
    assert cli.main(["feedback", "export", "--out", str(fresh / FILE_NAME), "--data-dir", str(fresh)]) == 2
    assert not (fresh / FILE_NAME).exists()


@pytest.mark.parametrize(
    ("column", "value"),
    [("citations", "[1, 2, 3]"), ("citations", '{"n": 1}'), ("citations", '[{"source": 5}]'), ("history", "[1, 2]")],
)
def test_export_skips_a_row_whose_stored_json_has_the_wrong_shape(tmp_path, capsys, column, value):
    from rag.cli import main as cli

    data = tmp_path / "data"
    store = FeedbackStore(data / FILE_NAME)
    for n in range(3):
        store.add(FeedbackEntry(question=f"question {n}", answer="an answer", rating=-1))
    with sqlite3.connect(store.path) as db:
        db.execute(f"UPDATE feedback SET {column} = ? WHERE id = 2", (value,))
    for extra in ([], ["--as-questions"]):
        out = tmp_path / f"out{len(extra)}.jsonl"
        code = cli.main(["feedback", "export", *extra, "--out", str(out), "--data-dir", str(data)])
        err = capsys.readouterr().err
        assert code == 0, err
        assert [json.loads(line)["question"] for line in out.read_text().splitlines()] == ["question 0", "question 2"]
        assert "skipped row 2" in err and column in err and "Traceback" not in err


def test_export_to_a_folder_is_a_usage_error(tmp_path, capsys):
    from rag.cli import main as cli

    data = tmp_path / "data"
    FeedbackStore(data / FILE_NAME).add(FeedbackEntry(question="q", answer="a", rating=1))
    (tmp_path / "exports").mkdir()
    code = cli.main(["feedback", "export", "--out", str(tmp_path / "exports"), "--data-dir", str(data)])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE and "is a folder" in err and "Traceback" not in err
