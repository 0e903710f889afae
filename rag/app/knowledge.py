"""Knowledge service: what the MCP server and the HTTP API offer (search, ask, list and read documents), read-only,
for one reader per call (``rag.search.access``), inside the request limits. Both interfaces only translate this.

Bad input (an empty or oversized query, ``k`` out of range, an unknown doc type, file or section) raises a
``ValueError`` whose message says what is wrong and what is allowed; a store, persona or provider that cannot
work raises ``StoreError``, ``PersonaError`` or ``ProviderError`` with what to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from rag.answer.answering import Answerer, Provider, choose_provider
from rag.answer.events import Event, Final
from rag.answer.personas import Persona, load_persona
from rag.config import Settings
from rag.documents.doc_status import status_summary
from rag.search.access import LOCAL, Reader
from rag.search.catalog import DocumentInfo, DocumentText, check_filters, list_documents, read_document
from rag.search.passages import Passage
from rag.search.retrieval import MODES, Retriever

DEFAULT_K = 8
MAX_K = 50
MAX_QUERY_CHARS = 2_000
MAX_QUESTION_CHARS = 4_000
MAX_HISTORY_TURNS = 20
MAX_TURN_CHARS = 10_000
MAX_REQUEST_BYTES = 512 * 1024  # an HTTP request body (a question with its whole history fits)
MAX_DOCUMENT_CHARS = 100_000  # a longer document is returned in part, naming the sections left out


class RequestError(ValueError):
    """A request outside the limits; the message names the limit."""


@dataclass
class Turn:
    """One earlier turn of the conversation: a question (``user``) or an answer (``assistant``), whose
    ``sources`` are the headings or files it cited (a follow-up leans on them)."""

    role: Literal["user", "assistant"]
    content: str
    sources: list[str] = field(default_factory=list)


@dataclass
class Hit:
    rank: int
    path: str  # the file, as list_documents and read_document name it
    title: str
    section: str  # heading path inside the document, "A > B"
    doc_type: str
    text: str
    score: float  # the fused score that ranks the passage
    dense_score: float | None  # cosine similarity to the query
    keyword_score: float | None  # BM25
    status: str  # superseded, deprecated, accepted... as the document declares it ("" when it says nothing)
    superseded_by: str
    updated: str  # the document's date, YYYY-MM-DD
    status_note: str  # "superseded by ADR-0011 on 2025-05-12", "stale since ...", "" when current


@dataclass
class SearchReply:
    query: str
    mode: str
    confidence: float  # best cosine similarity of any passage; under about 0.46 the knowledge base likely lacks it
    passages: list[Hit]


@dataclass
class CitedSource:
    n: int  # the [n] in the answer
    path: str
    title: str
    section: str
    doc_type: str
    quote: str  # the words of the document the claim rests on
    quotes: list[str]  # every quote this source is cited for


@dataclass
class AskReply:
    answer: str  # Markdown with [n] markers
    citations: list[CitedSource]
    notes: list[str]  # what the knowledge base does not cover, superseded or stale sources, how it was answered
    abstained: bool  # the knowledge base does not cover the question (the answer says so)
    unsupported: list[str]  # answer sentences whose citation did not hold up when checked
    incomplete: bool
    error: str | None
    provider: str
    model: str


@dataclass
class DocumentList:
    count: int
    documents: list[DocumentInfo]


class KnowledgeService:
    """One retriever and answerer for the whole process; each call reads as its ``reader``."""

    def __init__(
        self,
        settings: Settings,
        retriever: Retriever | None = None,
        provider: str | Provider | None = None,
        persona: str | None = None,
    ) -> None:
        self.settings = settings
        self.retriever = retriever or Retriever(settings)
        self.provider = provider if provider is not None and not isinstance(provider, str) else (
            choose_provider(settings, self.retriever, provider)
        )
        self.persona_name = persona or settings.persona

    def warm_up(self) -> None:
        """Loads the model, opens the store and the keyword index now, not on the first request."""
        self.retriever.store.check_health()
        self.retriever.embedder.embed_query("warm up")
        if self.retriever.store.exists():
            _ = self.retriever.keyword

    def search(
        self,
        query: str,
        k: int = DEFAULT_K,
        doc_type: str | None = None,
        source: str | None = None,
        mode: str = "hybrid",
        reader: Reader = LOCAL,
    ) -> SearchReply:
        _check_text("query", query, MAX_QUERY_CHARS)
        _check_k(k)
        if mode not in MODES:
            raise RequestError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
        retriever = self.retriever.for_reader(reader)
        check_filters(retriever, doc_type, source)
        result = retriever.search(query, k=k, doc_type=doc_type, source=source, mode=mode)
        hits = [self._hit(rank, passage) for rank, passage in enumerate(result.passages, start=1)]
        return SearchReply(query=query, mode=mode, confidence=round(result.confidence, 4), passages=hits)

    def answer_events(
        self,
        question: str,
        history: list[Turn] | None = None,
        doc_type: str | None = None,
        reader: Reader = LOCAL,
    ) -> Iterator[Event]:
        """The events of one answer as the chat streams them (text, citations, status, errors), ending with
        ``Final``. The checks run before the first event, so bad input raises before anything is streamed."""
        _check_text("question", question, MAX_QUESTION_CHARS)
        turns = _turns(history or [])
        retriever = self.retriever.for_reader(reader)
        check_filters(retriever, doc_type, None)
        persona = self.persona()
        answerer = Answerer(self.settings, retriever, self.provider)
        return answerer.answer(question, persona, turns, doc_type=doc_type)

    def ask(
        self,
        question: str,
        history: list[Turn] | None = None,
        doc_type: str | None = None,
        reader: Reader = LOCAL,
    ) -> Final:
        final = None
        for event in self.answer_events(question, history, doc_type, reader):
            if isinstance(event, Final):
                final = event
        if final is None:  # the answerer always ends with Final; this would be a bug, said plainly
            raise RuntimeError("the answerer ended without an answer")
        return final

    def documents(self, doc_type: str | None = None, reader: Reader = LOCAL) -> DocumentList:
        documents = list_documents(self.retriever.for_reader(reader), doc_type)
        return DocumentList(count=len(documents), documents=documents)

    def document(self, path: str, section: str | None = None, reader: Reader = LOCAL) -> DocumentText:
        _check_text("path", path, MAX_QUERY_CHARS)
        if section is not None:
            _check_text("section", section, MAX_QUERY_CHARS)
        return read_document(self.retriever.for_reader(reader), path, section, max_chars=MAX_DOCUMENT_CHARS)

    def persona(self) -> Persona:
        """Read at every answer, so an edited agent file is used without a restart."""
        return load_persona(self.persona_name, self.settings.agents_dir)

    def _hit(self, rank: int, passage: Passage) -> Hit:
        return Hit(
            rank=rank,
            path=passage.path or passage.source,
            title=passage.title,
            section=passage.section,
            doc_type=passage.doc_type,
            text=passage.text,
            score=round(passage.score, 6),
            dense_score=None if passage.dense_score is None else round(passage.dense_score, 6),
            keyword_score=None if passage.keyword_score is None else round(passage.keyword_score, 6),
            status=passage.status,
            superseded_by=passage.superseded_by,
            updated=passage.updated,
            status_note=status_summary(
                passage.status, passage.superseded_by, passage.superseded_on, passage.updated, self.settings.stale_days
            ),
        )


def ask_reply(final: Final) -> AskReply:
    """The parts of an answer an agent acts on (``Final.to_dict`` has all of it: checks, timings, usage)."""
    notes = ([final.provider_note] if final.provider_note else []) + final.notes
    citations = [
        CitedSource(
            n=c.n,
            path=c.passage.path or c.passage.source,
            title=c.passage.title,
            section=c.passage.section,
            doc_type=c.passage.doc_type,
            quote=c.quote,
            quotes=c.all_quotes,
        )
        for c in final.citations
    ]
    return AskReply(
        answer=final.answer,
        citations=citations,
        notes=notes,
        abstained=final.abstained,
        unsupported=[check.sentence for check in final.unsupported],
        incomplete=final.incomplete,
        error=final.error,
        provider=final.provider,
        model=final.model,
    )


def _check_text(name: str, value: str, limit: int) -> None:
    if not value or not value.strip():
        raise RequestError(f"the {name} is empty")
    if len(value) > limit:
        raise RequestError(f"the {name} is {len(value):,} characters long; at most {limit:,} are accepted")


def _check_k(k: int) -> None:
    if not 1 <= k <= MAX_K:
        raise RequestError(f"k must be between 1 and {MAX_K}, not {k}")


def _turns(history: list[Turn]) -> list[dict]:
    if len(history) > MAX_HISTORY_TURNS:
        raise RequestError(f"the history has {len(history)} turns; at most the last {MAX_HISTORY_TURNS} are accepted")
    turns = []
    for number, turn in enumerate(history, start=1):
        if turn.role not in ("user", "assistant"):
            raise RequestError(f"history turn {number}: role must be 'user' or 'assistant', not {turn.role!r}")
        if len(turn.content) > MAX_TURN_CHARS:
            raise RequestError(f"history turn {number} is {len(turn.content):,} characters; at most {MAX_TURN_CHARS:,}")
        turns.append({"role": turn.role, "content": turn.content, "sources": list(turn.sources)})
    return turns
