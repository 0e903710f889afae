"""The shipped knowledge base: counts, front matter, a question set whose evidence and facts are real,
and team docs that agree with themselves (cited ADRs exist, supersession is named both ways, `updated` is
not older than the dates in the text)."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import frontmatter
import pytest

from rag.app.answer_eval import has_fact, normal

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
REFERENCES = sorted((CORPUS / "references").glob("*.md"))
TEAM = sorted((CORPUS / "team").glob("*.md"))
QUESTIONS = CORPUS / "eval" / "questions.jsonl"


def body_words(path: Path) -> int:
    return len(frontmatter.load(path).content.split())


def load_questions() -> list[dict]:
    return [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]


def source_texts(question: dict) -> list[str]:
    return [(CORPUS / source).read_text(encoding="utf-8") for source in question["sources"]]


def test_counts():
    assert len(REFERENCES) >= 45
    assert len(TEAM) >= 15
    assert len(load_questions()) >= 100


@pytest.mark.parametrize("path", REFERENCES + TEAM, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_front_matter_and_structure(path: Path):
    post = frontmatter.load(path)
    meta = post.metadata
    assert isinstance(meta.get("title"), str) and meta["title"].strip()
    assert isinstance(meta.get("tags"), list) and meta["tags"]
    assert meta.get("doc_type") == ("reference" if path.parent.name == "references" else "team")
    assert meta.get("updated"), "updated date missing"
    assert "\n## " in "\n" + post.content, "no ## sections to cite"
    low, high = (800, 2000) if path.parent.name == "references" else (300, 2000)
    assert low <= body_words(path) <= high


def test_questions_are_well_formed_and_evidence_is_verbatim():
    questions = load_questions()
    ids = [q["id"] for q in questions]
    assert len(ids) == len(set(ids)), "duplicate question ids"
    unanswerable = [q for q in questions if not q["sources"]]
    assert len(unanswerable) >= 10
    assert any(q.get("history") for q in questions), "no follow-up questions"
    assert any(len(q["sources"]) >= 2 for q in questions), "no two-document questions"
    assert any(any(s.startswith("team/") for s in q["sources"]) for q in questions), "no team questions"
    for question in questions:
        assert question["question"].strip()
        if not question["sources"]:
            assert question["evidence"] == []
            continue
        assert 1 <= len(question["evidence"]) <= 3, question["id"]
        texts = {}
        for source in question["sources"]:
            path = CORPUS / source
            assert path.is_file(), f"{question['id']}: {source} does not exist"
            texts[source] = path.read_text(encoding="utf-8")
        for evidence in question["evidence"]:
            assert 8 <= len(evidence.split()) <= 20, f"{question['id']}: evidence length"
            assert any(evidence in text for text in texts.values()), f"{question['id']}: not verbatim: {evidence}"


def test_every_fact_of_an_answerable_question_is_in_one_of_its_sources():
    answerable = [q for q in load_questions() if q["sources"]]
    assert answerable
    for question in answerable:
        facts = question.get("facts")
        assert isinstance(facts, list) and 2 <= len(facts) <= 4, f"{question['id']}: needs 2 to 4 facts"
        texts = source_texts(question)
        for fact in facts:
            alternatives = [normal(a) for a in fact.split(" | ")]
            assert all(1 <= len(a.split()) <= 6 for a in alternatives), f"{question['id']}: fact length: {fact}"
            assert any(has_fact(text, fact) for text in texts), f"{question['id']}: not in a source: {fact}"


def test_near_miss_names_appear_nowhere_in_the_corpus():
    near_misses = [q for q in load_questions() if q.get("kind") == "near-miss"]
    assert len(near_misses) >= 20
    corpus = [normal(path.read_text(encoding="utf-8")) for path in REFERENCES + TEAM]
    for question in near_misses:
        assert not question["sources"] and not question["evidence"], question["id"]
        assert question["missing"], f"{question['id']}: names nothing missing"
        for name in question["missing"]:
            assert name in question["question"], f"{question['id']}: {name!r} is not worded as in the question"
            assert not any(normal(name) in text for text in corpus), f"{question['id']}: {name!r} is in the corpus"


def test_follow_ups_with_answers_in_their_history():
    with_answers = [
        q
        for q in load_questions()
        if any(isinstance(turn, dict) and turn.get("role") == "assistant" for turn in q.get("history", []))
    ]
    assert len(with_answers) >= 10
    for question in with_answers:
        roles = [turn["role"] for turn in question["history"]]
        assert roles[0] == "user" and roles[-1] == "assistant", question["id"]
        assert all(a != b for a, b in zip(roles, roles[1:])), f"{question['id']}: turns do not alternate"
        assert all(turn["content"].strip() for turn in question["history"]), question["id"]
    # "last-turn-only": an earlier turn is on another topic; "new-topic": the follow-up is to be searched as asked
    follows = [q.get("follows") for q in with_answers]
    assert follows.count("last-turn-only") >= 3 and follows.count("new-topic") >= 2
    for question in with_answers:
        if question.get("follows") == "last-turn-only":
            assert sum(turn["role"] == "user" for turn in question["history"]) >= 2, question["id"]


# -- mechanical consistency of the team docs (issue 13) ----------------------------------------------

ADR_NAME = re.compile(r"\bADR-(\d{4})\b")
ISO_DATE = re.compile(r"(?<![\w-])(due\s+)?(\d{4})-(\d{2})-(\d{2})(?![\w-])")
MONTH_YEAR = re.compile(
    r"\b(January|February|March|April|May|June|July|August|September|October|November|December)\s+(\d{4})\b"
)
MONTHS = "January February March April May June July August September October November December".split()


def adr_files() -> dict[str, Path]:
    return {re.match(r"adr-(\d{4})", p.name).group(1): p for p in TEAM if p.name.startswith("adr-")}


def test_every_adr_referenced_exists():
    known = adr_files()
    for path in REFERENCES + TEAM:
        for number in set(ADR_NAME.findall(path.read_text(encoding="utf-8"))):
            assert number in known, f"{path.name} cites ADR-{number}, which does not exist"


def status_line(path: Path) -> str:
    """The first paragraph of the ADR's Status section."""
    content = frontmatter.load(path).content
    section = content.split("## Status", 1)[1]
    return section.strip().split("\n\n", 1)[0]


def test_superseded_adrs_and_their_successors_name_each_other():
    known = adr_files()
    superseded = 0
    for number, path in known.items():
        status = status_line(path)
        if not status.lower().startswith("superseded"):
            continue
        superseded += 1
        successors = ADR_NAME.findall(status)
        assert successors, f"{path.name}: superseded, but its status names no successor"
        for successor in successors:
            text = frontmatter.load(known[successor]).content
            assert f"ADR-{number}" in text, f"ADR-{successor} does not name ADR-{number}, which it supersedes"
            says_so = re.search(rf"[Ss]upersedes\s+(\S+\s+)?ADR-{number}", text)
            assert says_so, f"ADR-{successor} never says it supersedes ADR-{number}"
    assert superseded >= 1


def dates_in(text: str) -> list[date]:
    """Dates the text reports as having happened: ISO dates (not due dates) and 'Month YYYY' (its first day)."""
    found = [date(int(y), int(m), int(d)) for due, y, m, d in ISO_DATE.findall(text) if not due]
    found += [date(int(y), MONTHS.index(month) + 1, 1) for month, y in MONTH_YEAR.findall(text)]
    return found


@pytest.mark.parametrize("path", TEAM, ids=lambda p: p.name)
def test_updated_is_not_older_than_the_dates_in_the_text(path: Path):
    post = frontmatter.load(path)
    updated = post.metadata["updated"]
    updated = updated if isinstance(updated, date) else date.fromisoformat(str(updated))
    latest = max(dates_in(post.content), default=updated)
    assert latest <= updated, f"{path.name}: updated {updated} but the text mentions {latest}"
