"""Answering: one interface for the CLI and the UI that turns a question into a stream of events.

``Answerer.answer`` rewrites a follow-up into a standalone query, retrieves passages, abstains when
the confidence is too low, streams the provider's text and citations, then verifies every cited
claim against the passage it cites and ends with a ``Final`` record (sources, timings, checks).
Providers: Claude (``rag.claude``) when ``ANTHROPIC_API_KEY`` is set, else the offline extractive
answerer (``rag.extractive``).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from rag.config import Settings
from rag.personas import Persona
from rag.retrieval import Passage, Retriever, content_words

MARKERS = re.compile(r"(?:\s*\[\d+\])+")
MARKER = re.compile(r"\[(\d+)\]")


@dataclass
class Citation:
    n: int  # the [n] in the answer: 1-based index into the retrieved passages
    passage: Passage
    quote: str  # the cited words (Claude's cited_text, or the extracted sentence)

    def to_dict(self) -> dict:
        p = self.passage
        return {
            "n": self.n,
            "source": p.path or p.source,
            "title": p.title,
            "section": p.section,
            "doc_type": p.doc_type,
            "quote": self.quote,
        }


@dataclass
class SentenceCheck:
    sentence: str
    cited: list[int]
    score: float
    supported: bool


@dataclass
class TextDelta:
    text: str


@dataclass
class CitationEvent:
    citation: Citation


@dataclass
class ErrorEvent:
    message: str


@dataclass
class Final:
    question: str
    standalone_query: str
    answer: str
    citations: list[Citation]
    passages: list[Passage]
    abstained: bool
    provider: str
    model: str
    persona: str
    confidence: float
    checks: list[SentenceCheck] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def unsupported(self) -> list[SentenceCheck]:
        return [check for check in self.checks if not check.supported]

    def to_dict(self) -> dict:
        return {
            "answer": self.answer,
            "citations": [c.to_dict() for c in self.citations],
            "abstained": self.abstained,
            "provider": self.provider,
            "model": self.model,
            "persona": self.persona,
            "standalone_query": self.standalone_query,
            "confidence": round(self.confidence, 4),
            "unsupported": [c.sentence for c in self.unsupported],
            "checks": [
                {"sentence": c.sentence, "cited": c.cited, "score": round(c.score, 3), "supported": c.supported}
                for c in self.checks
            ],
            "timings": {key: round(value, 3) for key, value in self.timings.items()},
            "error": self.error,
        }


Event = TextDelta | CitationEvent | ErrorEvent | Final


class Provider(Protocol):
    name: str
    model: str

    def rewrite(self, question: str, history: list[str]) -> str: ...

    def generate(
        self, question: str, query: str, history: list[dict], persona: Persona, passages: list[Passage]
    ) -> Iterator[TextDelta | CitationEvent | ErrorEvent]:
        """``query`` is the standalone query that was searched (the question itself unless a follow-up)."""
        ...


def choose_provider(settings: Settings, retriever: Retriever, name: str | None = None) -> Provider:
    """``claude`` when asked or when ANTHROPIC_API_KEY is set, otherwise the offline extractive answerer."""
    wanted = name or ("claude" if os.environ.get("ANTHROPIC_API_KEY") else "extractive")
    if wanted == "claude":
        from rag.claude import ClaudeProvider

        return ClaudeProvider(settings)
    if wanted == "extractive":
        from rag.extractive import ExtractiveProvider

        return ExtractiveProvider(retriever.embedder)
    raise ValueError(f"unknown provider {wanted!r}: use claude or extractive")


def abstention_text(passages: list[Passage]) -> str:
    text = (
        "The knowledge base does not cover this question: no passage is close enough to answer it "
        "with sources, so I will not guess."
    )
    if passages:
        nearest = "; ".join(dict.fromkeys(p.heading for p in passages[:3]))
        text += f" The nearest material is about: {nearest}."
    return text + " Rephrase the question, or add the relevant design doc to the knowledge base."


class Answerer:
    def __init__(self, settings: Settings, retriever: Retriever | None = None, provider: Provider | None = None):
        self.settings = settings
        self.retriever = retriever or Retriever(settings)
        self.provider = provider or choose_provider(settings, self.retriever)

    def answer(
        self,
        question: str,
        persona: Persona,
        history: list[dict] | None = None,
        k: int | None = None,
        doc_type: str | None = None,
    ) -> Iterator[Event]:
        history = history or []
        started = time.perf_counter()
        earlier_questions = [turn["content"] for turn in history if turn.get("role") == "user"]
        standalone = self.provider.rewrite(question, earlier_questions) if earlier_questions else question
        result = self.retriever.search(standalone, k=k or self.settings.top_k, doc_type=doc_type, widen=True)
        timings = {"retrieval": time.perf_counter() - started}
        passages = result.passages
        final = Final(
            question=question,
            standalone_query=standalone,
            answer="",
            citations=[],
            passages=passages,
            abstained=False,
            provider=self.provider.name,
            model=self.provider.model,
            persona=persona.name,
            confidence=result.confidence,
        )
        if not passages or result.confidence < self.settings.abstain_threshold:
            final.abstained = True
            final.answer = abstention_text(passages)
            yield TextDelta(final.answer)
            final.timings = {**timings, "generation": 0.0, "total": time.perf_counter() - started}
            yield final
            return
        generation_started = time.perf_counter()
        parts: list[str] = []
        cited: dict[int, Citation] = {}
        markers = MarkerFilter(len(passages))
        for event in self.provider.generate(question, standalone, history, persona, passages):
            if isinstance(event, TextDelta):
                text = markers.feed(event.text)
                if not text:
                    continue
                event = TextDelta(text)
                parts.append(text)
            elif isinstance(event, CitationEvent):
                if not 1 <= event.citation.n <= len(passages):
                    continue
                cited.setdefault(event.citation.n, event.citation)
            elif isinstance(event, ErrorEvent):
                final.error = event.message
            yield event
        rest = markers.flush()
        if rest:
            parts.append(rest)
            yield TextDelta(rest)
        timings["generation"] = time.perf_counter() - generation_started
        final.answer = "".join(parts)
        final.citations = _citations_in_order(final.answer, cited, passages)
        verify_started = time.perf_counter()
        final.checks = verify(final.answer, passages, self.retriever.embedder, self.settings.support_threshold)
        timings["verification"] = time.perf_counter() - verify_started
        timings["total"] = time.perf_counter() - started
        final.timings = timings
        yield final


# Code is quoted, never cited: ``ARGV[1]`` or ``items[0]`` in a code block or inline code is not a marker.
# A fence left open (still streaming) runs to the end of the text.
CODE = re.compile(r"```.*?(?:```|\Z)|`[^`\n]*`", re.DOTALL)


def _code_spans(text: str) -> list[tuple[int, int]]:
    return [match.span() for match in CODE.finditer(text)]


def _in_code(position: int, spans: list[tuple[int, int]]) -> bool:
    return any(start <= position < end for start, end in spans)


def _markers(pattern: re.Pattern, answer: str) -> list[re.Match]:
    """The matches of a marker pattern outside code."""
    spans = _code_spans(answer)
    return [match for match in pattern.finditer(answer) if not _in_code(match.start(), spans)]


def strip_invalid_markers(answer: str, passage_count: int) -> str:
    """An [n] that points at no retrieved passage is removed, never shown (code is left as it is)."""
    spans = _code_spans(answer)

    def keep(match: re.Match) -> str:
        valid = 1 <= int(match.group(1)) <= passage_count
        return match.group(0) if valid or _in_code(match.start(), spans) else ""

    return MARKER.sub(keep, answer)


class MarkerFilter:
    """Strips invalid [n] markers from streamed text. A marker split across deltas ("[", "9]") and an inline
    code span not closed yet are held back until they can be told apart; fences are tracked over the whole text."""

    PARTIAL = re.compile(r"\[\d*$|`[^`\n]*$")

    def __init__(self, passage_count: int) -> None:
        self.passage_count = passage_count
        self.pending = ""
        self.raw = ""  # everything released so far, as received
        self.sent = 0  # characters of the cleaned text already returned

    def feed(self, text: str) -> str:
        text = self.pending + text
        partial = self.PARTIAL.search(text)
        cut = partial.start() if partial else len(text)
        self.pending = text[cut:]
        return self._release(text[:cut])

    def flush(self) -> str:
        rest, self.pending = self.pending, ""
        return self._release(rest)

    def _release(self, text: str) -> str:
        self.raw += text
        cleaned = strip_invalid_markers(self.raw, self.passage_count)
        out, self.sent = cleaned[self.sent :], len(cleaned)
        return out


def _citations_in_order(answer: str, cited: dict[int, Citation], passages: list[Passage]) -> list[Citation]:
    result = []
    for n in dict.fromkeys(int(m.group(1)) for m in _markers(MARKER, answer)):
        result.append(cited.get(n) or Citation(n, passages[n - 1], passages[n - 1].text[:300]))
    return result


def cited_claims(answer: str) -> list[tuple[str, list[int]]]:
    """Each stretch of text that ends in citation markers, with the numbers it cites."""
    claims = []
    cursor = 0
    for match in _markers(MARKERS, answer):
        text = answer[cursor : match.start()]
        cursor = match.end()
        numbers = [int(n) for n in MARKER.findall(match.group(0))]
        claim = _last_sentences(text)
        if claim:
            claims.append((claim, numbers))
    return claims


def _last_sentences(text: str) -> str:
    """The claim a marker closes: the last paragraph since the previous marker, without Markdown decoration."""
    fenced = re.search(r"```[^\n]*\n(.*?)```\s*$", text.strip(), flags=re.DOTALL)
    if fenced:  # a code block closed by the marker: the code itself is the claim
        return fenced.group(1).strip()
    text = re.sub(r"```.*?```", " ", text, flags=re.DOTALL)
    text = re.split(r"\n\s*\n", text.strip())[-1]
    lines = [re.sub(r"^\s*(?:[-*>]|\d+\.|#+)\s*", "", line) for line in text.strip().splitlines()]
    cleaned = " ".join(line for line in lines if line.strip())
    cleaned = re.sub(r"[*`]+|(?<!\w)_+|_+(?!\w)", "", cleaned).strip(" .;:-")  # emphasis, not snake_case
    return cleaned


def passage_units(text: str, limit: int = 40) -> list[str]:
    """The paragraphs of a passage (a code block whole): a claim is compared with each one, since the
    embedding model reads only its first 256 tokens and a widened passage is longer than that."""
    units: list[str] = []
    current: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        if not line.strip() and not fenced:
            if current:
                units.append("\n".join(current))
            current = []
        else:
            current.append(line)
    if current:
        units.append("\n".join(current))
    return units[:limit] or [text]


def support_scores(embedder, pairs: list[tuple[str, str]]) -> list[float]:
    """For each (claim, passage text): half the best embedding similarity between the claim and one
    paragraph of the passage, half the share of the claim's content words found in the passage."""
    if not pairs:
        return []
    units = [passage_units(passage) for _, passage in pairs]
    texts = list(dict.fromkeys([claim for claim, _ in pairs] + [unit for group in units for unit in group]))
    vectors = dict(zip(texts, np.array(embedder.embed(texts))))
    scores = []
    for (claim, passage), group in zip(pairs, units):
        similarity = max(float(np.dot(vectors[claim], vectors[unit])) for unit in group)
        words = set(content_words(claim))
        overlap = len(words & set(content_words(passage))) / len(words) if words else 0.0
        scores.append(0.5 * similarity + 0.5 * overlap)
    return scores


def verify(answer: str, passages: list[Passage], embedder, threshold: float) -> list[SentenceCheck]:
    """Scores every cited claim against the passages it cites; the best one must reach ``threshold``."""
    claims = [(claim, [n for n in numbers if 1 <= n <= len(passages)]) for claim, numbers in cited_claims(answer)]
    pairs = [(claim, passages[n - 1].full_text) for claim, numbers in claims for n in numbers]
    scores = iter(support_scores(embedder, pairs))
    checks = []
    for claim, numbers in claims:
        best = max((next(scores) for _ in numbers), default=0.0)
        checks.append(SentenceCheck(claim, numbers, best, best >= threshold))
    return checks
