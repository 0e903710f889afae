"""Answer events: the plain data an answer is streamed as, shared by the answerer, its providers and callers.

A provider yields ``TextDelta``, ``CitationEvent``, ``StatusEvent``, ``ErrorEvent`` and at most one ``StopEvent``
(which the answerer folds into ``Final``, never passing it on); the answerer ends
every answer with one ``Final`` record (the whole answer, its citations, checks, timings and usage).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rag.search.passages import Passage


class ProviderError(RuntimeError):
    """A provider that cannot work as configured (no key, unknown model, refused settings): the reason, no call."""


@dataclass
class Citation:
    n: int  # the [n] in the answer: 1-based index into the retrieved passages
    passage: Passage
    quote: str  # the cited words (Claude's cited_text, or the extracted sentence)
    quotes: list[str] = field(default_factory=list)  # every quote this passage is cited for in the answer

    @property
    def all_quotes(self) -> list[str]:
        return list(dict.fromkeys([self.quote, *self.quotes]))

    def to_dict(self) -> dict:
        p = self.passage
        return {
            "n": self.n,
            "source": p.path or p.source,
            "title": p.title,
            "section": p.section,
            "doc_type": p.doc_type,
            "quote": self.quote,
            "quotes": self.all_quotes,
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
class StatusEvent:
    """A transient sign of life while the answer is delayed (e.g. "Claude is overloaded, retrying in 8 s")."""

    message: str


@dataclass
class StopEvent:
    """How the provider's call ended: its ``stop_reason`` (and ``stop_details``), the tokens it used (``usage``
    as in ``Final.usage``), whether the answer is ``incomplete``, and a ``message`` saying why, if it is."""

    stop_reason: str | None
    stop_details: dict | None = None
    usage: dict = field(default_factory=dict)
    incomplete: bool = False
    message: str | None = None


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
    stop_reason: str | None = None  # the provider's reason for stopping (Claude's stop_reason), when it has one
    incomplete: bool = False  # the answer was cut short (max_tokens, refusal, an error mid-stream...)
    usage: dict = field(default_factory=dict)  # tokens, cache reads/writes, estimated cost
    notes: list[str] = field(default_factory=list)  # notices shown with the answer (e.g. what the docs do not cover)
    doc_type: str | None = None  # the doc-type filter the search used (None = all)
    # what the reader is told about how every answer of this provider is made (the offline note), shown in place
    # of the model; "" when the model's name says it
    provider_note: str = ""
    threshold: float | None = None  # the confidence bar this question was held to (None: not judged)

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
            "stop_reason": self.stop_reason,
            "incomplete": self.incomplete,
            "usage": self.usage,
            "notes": self.notes,
            "doc_type": self.doc_type,
            "provider_note": self.provider_note,
            "threshold": None if self.threshold is None else round(self.threshold, 4),
        }


Event = TextDelta | CitationEvent | ErrorEvent | StatusEvent | Final


def event_record(event: Event) -> tuple[str, dict]:
    """An event as a name and a JSON object, as the HTTP API streams it (Server-Sent Events): ``text``,
    ``citation``, ``status``, ``error``, and last ``final`` (the same object as ``python -m rag ask --json``)."""
    if isinstance(event, TextDelta):
        return "text", {"text": event.text}
    if isinstance(event, CitationEvent):
        return "citation", event.citation.to_dict()
    if isinstance(event, StatusEvent):
        return "status", {"message": event.message}
    if isinstance(event, ErrorEvent):
        return "error", {"message": event.message}
    return "final", event.to_dict()
