"""Answer evaluation: what a reader gets, measured on a question file whose lines carry ``facts``.

For every question the whole answer is produced (retrieval, provider, checks) and scored:
- fact coverage: the share of a line's ``facts`` (short key phrases; ``"a | b"`` accepts either) found
  in the answer, compared case-insensitively without Markdown emphasis, code ticks or ``[n]`` markers;
- all facts: the share of answers holding every fact; first 300: the share whose first 300 characters
  hold at least one (the lead answers);
- facts in its passages: the share of a line's facts that the passages the answer was given hold at all, the
  most any answer quoting them could cover (it tells a retrieval miss from a selection miss);
- mean length, and latency per answer;
- unanswerable questions abstained on, near-miss questions said not covered (naming what is missing),
  and answerable questions refused (abstained on, or told the docs say nothing about what they ask).
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from rag.answer.answering import Answerer
from rag.answer.events import Final
from rag.answer.personas import Persona
from rag.app.evaluation import Question

FIRST = 300
NOT_COVERED = re.compile(r"\b(says nothing about|does not cover|do not cover|not covered)\b", re.IGNORECASE)


def normal(text: str) -> str:
    """Lower case, no ``[n]`` markers, no emphasis or code ticks, whitespace collapsed."""
    text = re.sub(r"\[\d+\]", " ", text)
    text = re.sub(r"[*`]+|(?<!\w)_+|_+(?!\w)", "", text)
    return " ".join(text.lower().split())


def has_fact(answer: str, fact: str) -> bool:
    text = normal(answer)
    return any(normal(option) in text for option in fact.split(" | ") if option.strip())


def says_not_covered(final: Final, names: Iterable[str] = ()) -> bool:
    """The answer abstains, or says plainly that the knowledge base lacks what the question names."""
    if final.abstained:
        return True
    text = final.answer + "\n" + "\n".join(final.notes)
    names = list(names)
    if not names:
        return bool(NOT_COVERED.search(text))
    said = [normal(m.group(0) + text[m.end() : m.end() + 200]) for m in NOT_COVERED.finditer(text)]
    return any(normal(name) in statement for name in names for statement in said)


@dataclass
class Scored:
    question: Question
    final: Final
    seconds: float
    facts_found: list[str] = field(default_factory=list)

    @property
    def fact_share(self) -> float:
        return len(self.facts_found) / len(self.question.facts) if self.question.facts else 0.0

    @property
    def passages_share(self) -> float | None:
        """The share of the line's facts that the passages the answer was given hold (None: no passages)."""
        if not self.question.facts or not self.final.passages:
            return None
        text = "\n".join(passage.full_text for passage in self.final.passages)
        return sum(has_fact(text, fact) for fact in self.question.facts) / len(self.question.facts)

    @property
    def refused(self) -> bool:
        return self.final.abstained or says_not_covered(self.final)

    def to_dict(self) -> dict:
        return {
            "id": self.question.id,
            "kind": "answerable" if self.question.answerable else ("near-miss" if self.question.near_miss else "none"),
            "facts": self.question.facts,
            "facts_found": self.facts_found,
            "facts_in_passages": self.passages_share,
            "abstained": self.final.abstained,
            "refused": self.refused,
            "length": len(self.final.answer),
            "seconds": round(self.seconds, 3),
            "answer": self.final.answer,
        }


def answer_all(answerer: Answerer, persona: Persona, questions: list[Question]) -> list[Scored]:
    scored = []
    for question in questions:
        started = time.perf_counter()
        final = None
        for event in answerer.answer(question.question, persona, history=question.history):
            if isinstance(event, Final):
                final = event
        assert final is not None, "the answerer always ends with a Final record"
        found = [fact for fact in question.facts if has_fact(final.answer, fact)]
        scored.append(Scored(question, final, time.perf_counter() - started, found))
    return scored


def _share(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def _mean(values: list[float]) -> float | None:
    return round(statistics.mean(values), 4) if values else None


def summarise(scored: list[Scored]) -> dict:
    with_facts = [s for s in scored if s.question.answerable and s.question.facts]
    answerable = [s for s in scored if s.question.answerable]
    near_miss = [s for s in scored if s.question.near_miss]
    unanswerable = [s for s in scored if not s.question.answerable and not s.question.near_miss]
    seconds = sorted(s.seconds for s in scored)
    return {
        "questions": len(scored),
        "with_facts": len(with_facts),
        "fact_coverage": _mean([s.fact_share for s in with_facts]),
        "all_facts": _share([len(s.facts_found) == len(s.question.facts) for s in with_facts]),
        "fact_in_first_300": _share([any(has_fact(s.final.answer[:FIRST], f) for f in s.question.facts)
                                     for s in with_facts]),
        "facts_in_passages": _mean([s.passages_share for s in with_facts if s.passages_share is not None]),
        "mean_length": round(statistics.mean(len(s.final.answer) for s in answerable)) if answerable else None,
        "near_miss": len(near_miss),
        "near_miss_said": _share([says_not_covered(s.final, s.question.missing) for s in near_miss]),
        "unanswerable": len(unanswerable),
        "unanswerable_declined": _share([says_not_covered(s.final) for s in unanswerable]),
        "answerable_refused": _share([s.refused for s in answerable]),
        "seconds_p50": round(statistics.median(seconds), 3) if seconds else None,
        "seconds_p95": round(seconds[int(0.95 * (len(seconds) - 1))], 3) if seconds else None,
    }


ROWS = [
    ("fact_coverage", "fact coverage"),
    ("all_facts", "all facts"),
    ("fact_in_first_300", "a fact in the first 300 chars"),
    ("facts_in_passages", "facts in its passages (ceiling)"),
    ("mean_length", "mean answer length (chars)"),
    ("near_miss_said", "near-miss said not covered"),
    ("unanswerable_declined", "unanswerable declined"),
    ("answerable_refused", "answerable refused"),
    ("seconds_p50", "seconds per answer p50"),
    ("seconds_p95", "seconds per answer p95"),
]


def format_summary(columns: dict[str, dict]) -> str:
    """One row per metric, one column per summary (e.g. ours beside a baseline)."""
    names = list(columns)
    first = next(iter(columns.values()), {})
    lines = [
        f"{first.get('questions', 0)} questions: {first.get('with_facts', 0)} with facts, "
        f"{first.get('near_miss', 0)} near-miss, {first.get('unanswerable', 0)} unanswerable",
        f"{'':32}" + "".join(f"{name:>14}" for name in names),
    ]
    for key, label in ROWS:
        cells = []
        for name in names:
            value = columns[name].get(key)
            cells.append(f"{'-' if value is None else value:>14}")
        lines.append(f"{label:32}" + "".join(cells))
    return "\n".join(lines)
