"""The shipped knowledge base: counts, front matter, and a question set whose evidence is real."""

from __future__ import annotations

import json
from pathlib import Path

import frontmatter
import pytest

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
REFERENCES = sorted((CORPUS / "references").glob("*.md"))
TEAM = sorted((CORPUS / "team").glob("*.md"))
QUESTIONS = CORPUS / "eval" / "questions.jsonl"


def body_words(path: Path) -> int:
    return len(frontmatter.load(path).content.split())


def load_questions() -> list[dict]:
    return [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]


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
