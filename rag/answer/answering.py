"""Answering: one interface for the CLI and the UI that turns a question into a stream of events.

``Answerer.answer`` rewrites a follow-up into a standalone query, retrieves passages, abstains when
the confidence is too low (just below the bar, it abstains by quoting the closest material under a notice
that says so), streams the provider's text and citations, then verifies every cited
claim against the passage it cites and ends with a ``Final`` record (sources, timings, checks).
Providers: an OpenAI-compatible endpoint (``rag.answer.providers.openai_compat``) when ``RAG_LLM_BASE_URL``
is set, Claude (``rag.answer.providers.claude``) when ``ANTHROPIC_API_KEY`` is set, else the offline
extractive answerer (``rag.answer.providers.extractive``).
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Protocol

from rag.answer.citations import MarkerFilter, citations_in_order, in_reading_order, verify
from rag.answer.events import Citation, CitationEvent, ErrorEvent, Event, Final, StatusEvent, StopEvent, TextDelta
from rag.answer.personas import Persona
from rag.answer.providers.extractive import OFFLINE_NOTE, ExtractiveProvider
from rag.config import Settings
from rag.documents.doc_status import IN_FORCE, RETIRED, adr_id, age_days, age_in_words, document_names
from rag.index.keyword import KeywordIndex
from rag.search.access import Reader, group_filter
from rag.search.confidence import CLOSE_MARGIN, abstain_bar
from rag.search.followups import last_turn_context, search_follow_up
from rag.search.intent import missing_names, proper_names, read_intent
from rag.search.passages import Passage
from rag.search.retrieval import Retriever, SearchResult
from rag.text.words import STOPWORDS, content_words


class Provider(Protocol):
    name: str
    model: str

    def rewrite(self, question: str, history: list[str]) -> str: ...

    def generate(
        self,
        question: str,
        query: str,
        history: list[dict],
        persona: Persona,
        passages: list[Passage],
        missing: list[str] | None = None,
    ) -> Iterator[TextDelta | CitationEvent | StatusEvent | ErrorEvent | StopEvent]:
        """``query`` is the standalone query that was searched (the question itself unless a follow-up).
        ``missing`` names the specific things the question asks about that no passage mentions: the answer
        must say plainly that the knowledge base says nothing about them (the Answerer checks it did)."""
        ...


def choose_provider(settings: Settings, retriever: Retriever, name: str | None = None) -> Provider:
    """The provider ``name``, or by default: the OpenAI-compatible endpoint when ``RAG_LLM_BASE_URL`` is set (a
    team that runs its own LLM keeps documents off the cloud), else Claude when ``ANTHROPIC_API_KEY`` is set
    (environment or ``.env``), else the offline extractive answerer. A provider that cannot work as configured
    (no key, unknown model) raises ``ProviderError`` with the reason."""
    from rag.answer.providers.claude.client import find_api_key

    if name:
        wanted = name
    elif settings.llm_base_url:
        wanted = "openai-compatible"
    else:
        wanted = "claude" if find_api_key(settings) else "extractive"
    if wanted == "claude":
        from rag.answer.providers.claude.client import ClaudeProvider

        return ClaudeProvider(settings)
    if wanted == "openai-compatible":
        from rag.answer.providers.openai_compat import OpenAICompatibleProvider

        return OpenAICompatibleProvider(settings)
    if wanted == "extractive":
        return ExtractiveProvider(retriever.embedder)
    raise ValueError(f"unknown provider {wanted!r}: use claude, openai-compatible or extractive")


def abstention_text(passages: list[Passage]) -> str:
    text = (
        "The knowledge base does not cover this question: no passage is close enough to answer it "
        "with sources, so I will not guess."
    )
    if passages:
        nearest = "; ".join(dict.fromkeys(p.heading for p in passages[:3]))
        text += f" The nearest material is about: {nearest}."
    return text + " Rephrase the question, or add the relevant design doc to the knowledge base."


# a word is rare when at most this many chunks use it, or this share of a large knowledge base's chunks
RARE_WORD_CHUNKS, RARE_WORD_SHARE = 3, 0.003
FOLLOW_UP_MARGIN = 0.12
# a confidence just below the bar (``rag.search.confidence``) is not an answer, but the closest passages may hold
# one: they are quoted under CLOSE_NOTICE and the answer counts as abstained
CLOSE_NOTICE = "This is not covered directly; the closest the knowledge base has is below.\n\n"
# ...unless the question shares this many words with the passages that at most RARE_WORD_CHUNKS chunks use: a short
# question in words the knowledge base almost never uses ("isEnabled", "boolean") sits far from any passage by cosine,
# yet those words say which passage it is about. One shared rare word is not enough ("overnight" in "overnight
# charging for the electric vans" is in one chunk about something else).
RARE_EVIDENCE_WORDS, RARE_EVIDENCE_SHARE = 2, 0.01
# a long question's best similarity runs lower (its words spread over more than one passage's worth of
# topic): past LONG_QUESTION words, each word lowers the bar by LENGTH_SLOPE, by MAX_LENGTH_ALLOWANCE at most
LONG_QUESTION, LENGTH_SLOPE, MAX_LENGTH_ALLOWANCE = 14, 0.004, 0.06


def unsaid_near_misses(answer: str, missing: list[str]) -> list[str]:
    """A notice for each thing the question names that no passage mentions and the answer did not own up to."""
    text = " ".join(answer.lower().split())
    unsaid = [name for name in missing if name.lower() not in text]
    return [f"The knowledge base says nothing about {name}: the answer draws on the closest material."
            for name in unsaid]


def cited_before(history: list[dict]) -> set[str]:
    """The documents earlier answers of the conversation cited (``documents`` of a turn: ``Passage.document_key``)."""
    return {str(key) for turn in history if turn.get("role") == "assistant" for key in turn.get("documents") or []}


def status_notes(
    citations: list[Citation], passages: list[Passage], stale_days: int, earlier: set[str] | None = None
) -> list[str]:
    """A note for each cited document that is superseded or deprecated (naming its successor and when), and for
    each cited document older than ``stale_days``, unless it is a decision in force (an accepted ADR) or
    ``earlier`` answers of the conversation cited it already (it was noted then)."""
    notes: list[str] = []
    stale: list[str] = []
    documents: dict[str, Passage] = {}
    for citation in citations:
        documents.setdefault(citation.passage.document_key, citation.passage)
    for key, passage in documents.items():
        name = adr_id(passage.title) or passage.title
        if passage.status in RETIRED:
            successor = next(
                (
                    p
                    for p in passages
                    if p.source_key != passage.source_key and passage.superseded_by in document_names(p.title, p.source)
                ),
                None,
            )
            when = passage.superseded_on or (successor.updated if successor else "")
            if passage.superseded_by:
                note = f"{name} was superseded by {passage.superseded_by}" + (f" on {when}." if when else ".")
                if successor is not None:
                    note += f' The current decision is "{successor.title}".'
            else:
                note = f"{name} is marked {passage.status}: it may no longer apply."
            notes.append(note)
            continue
        if passage.status in IN_FORCE or key in (earlier or set()):
            continue
        age = age_days(passage.updated)
        if age is not None and age > stale_days:
            stale.append(f"{name} was last updated on {passage.updated}, {age_in_words(age)}: it may be out of date.")
    return notes + stale  # what replaced a cited document matters more than its age


@dataclass
class Verdict:
    """What the passages found for a question allow: nothing (``abstain``), the closest material under a notice
    (``close``), or an answer; ``missing`` names what the question asks about that the knowledge base lacks."""

    abstain: bool
    close: bool
    missing: list[str]
    threshold: float  # the bar this question was held to (after the allowances for long questions and follow-ups)


class Answerer:
    def __init__(self, settings: Settings, retriever: Retriever | None = None, provider: Provider | None = None):
        self.settings = settings
        self.retriever = retriever or Retriever(settings)
        self.provider = provider or choose_provider(settings, self.retriever)

    def for_reader(self, reader: Reader | None) -> Answerer:
        """This answerer answering ``reader`` (``rag.search.access``): it searches only what they may read, so no
        passage, quote, heading or name of a document they may not read reaches the answer."""
        view = copy.copy(self)
        view.retriever = self.retriever.for_reader(reader)
        return view

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
        standalone, result = self.retrieve(question, history, k, doc_type)
        passages = result.passages
        timings = {"retrieval": time.perf_counter() - started}
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
            doc_type=doc_type,
            provider_note=OFFLINE_NOTE if self.provider.name == ExtractiveProvider.name else "",
        )
        verdict = self.judge(question, standalone, result)
        final.threshold = verdict.threshold
        if verdict.abstain:
            final.abstained = True
            final.answer = abstention_text(passages)
            yield TextDelta(final.answer)
            final.timings = {**timings, "generation": 0.0, "total": time.perf_counter() - started}
            yield final
            return
        generation_started = time.perf_counter()
        close, missing = verdict.close, verdict.missing
        final.abstained = close  # below the bar but close: the closest material, under a notice that says so
        parts: list[str] = []
        cited: dict[int, Citation] = {}  # by the provider's number
        waiting: dict[int, list[Citation]] = {}  # citations whose marker has not been streamed yet
        markers = MarkerFilter(len(passages))  # also numbers the markers in reading order as they stream
        if close and not missing:  # a near-miss says what is missing instead, with the same "closest" below
            parts.append(CLOSE_NOTICE)
            yield TextDelta(CLOSE_NOTICE)
        for event in self.provider.generate(question, standalone, history, persona, passages, missing=missing):
            if isinstance(event, TextDelta):
                text = markers.feed(event.text)
                if text:
                    parts.append(text)
                    yield TextDelta(text)
                    yield from _numbered(waiting, markers.numbering)
                continue
            elif isinstance(event, CitationEvent):
                if not 1 <= event.citation.n <= len(passages):
                    continue
                first = cited.setdefault(event.citation.n, event.citation)
                if first is not event.citation and event.citation.quote not in first.all_quotes:
                    first.quotes.append(event.citation.quote)
                waiting.setdefault(event.citation.n, []).append(event.citation)
                yield from _numbered(waiting, markers.numbering)
                continue
            elif isinstance(event, ErrorEvent):
                final.error = event.message
            elif isinstance(event, StopEvent):  # how the call ended: folded into Final, not passed on
                final.stop_reason, final.usage = event.stop_reason, event.usage
                final.incomplete = final.incomplete or event.incomplete
                if event.message:
                    final.notes.append(event.message)
                continue
            yield event
        rest = markers.flush()
        if rest:
            parts.append(rest)
            yield TextDelta(rest)
            yield from _numbered(waiting, markers.numbering)
        timings["generation"] = time.perf_counter() - generation_started
        final.answer = "".join(parts)
        final.notes += unsaid_near_misses(final.answer, missing)
        # [n] is the n-th passage cited in reading order: the passages are put in that order, so passages[n - 1]
        # is still the one [n] cites (source cards, exports and checks read them so)
        numbering = markers.numbering
        passages = final.passages = in_reading_order(passages, numbering)
        renumbered = {numbering[n]: replace(c, n=numbering[n], passage=passages[numbering[n] - 1])
                      for n, c in cited.items() if n in numbering}
        final.citations = citations_in_order(final.answer, renumbered, passages)
        verify_started = time.perf_counter()
        final.checks = verify(final.answer, passages, self.retriever.embedder, self.settings.support_threshold)
        timings["verification"] = time.perf_counter() - verify_started
        timings["total"] = time.perf_counter() - started
        final.timings = timings
        final.notes += status_notes(final.citations, passages, self.settings.stale_days, cited_before(history))
        yield final

    def retrieve(
        self, question: str, history: list[dict], k: int | None = None, doc_type: str | None = None
    ) -> tuple[str, SearchResult]:
        """The query searched for ``question`` (a follow-up rewritten into a standalone one) and what it found, a
        superseded document's successor among the passages (the answer can give the current decision)."""
        k = k or self.settings.top_k
        context = last_turn_context(history)
        standalone = self.provider.rewrite(question, context) if context else question
        if standalone != question:  # a follow-up: the document the last answer rested on comes first
            result = search_follow_up(self.retriever, standalone, context, k, doc_type)
        else:
            result = self.retriever.search(standalone, k=k, doc_type=doc_type, widen=True)
        return standalone, replace(
            result, passages=self.retriever.with_successors(result.passages, standalone, k, doc_type)
        )

    def bar(self) -> float:
        """The abstention bar: ``RAG_ABSTAIN_THRESHOLD`` when it is set, else the store's own calibration
        (``rag.search.confidence``)."""
        return abstain_bar(self.settings.abstain_threshold, self.retriever)

    def judge(self, question: str, standalone: str, result: SearchResult) -> Verdict:
        """Whether the passages found for ``question`` (searched as ``standalone``) can answer it."""
        passages = result.passages
        # a follow-up stays on a topic the last answer found in the knowledge base: only a far lower confidence
        # (its rewrite is a short query, whose best similarity runs lower) means there is nothing to say
        threshold = self.bar() - (FOLLOW_UP_MARGIN if standalone != question else length_allowance(question))
        below = result.confidence < threshold
        close = bool(passages) and below and result.confidence >= threshold - CLOSE_MARGIN
        # rare words the question shares with the passages vouch for them: a plain answer
        vouched = close and len(self._rare_words_shared(question, passages)) >= RARE_EVIDENCE_WORDS
        close = close and not vouched
        if not passages or (below and not close and not vouched):
            return Verdict(abstain=True, close=False, missing=[], threshold=threshold)
        return Verdict(abstain=False, close=close, missing=self._missing(question, passages), threshold=threshold)

    def _missing(self, question: str, passages: list[Passage]) -> list[str]:
        """What the question names that neither the passages nor (by keyword search) the rest of the knowledge
        base mention: the answer must say the knowledge base says nothing about it."""
        names = read_intent(question).names
        taken = [name.text.lower() for name in names]
        names += [  # "API" of "the returns API" is checked with it
            n for n in proper_names(question)
            if not any(n.text.lower() in t or t in n.text.lower() for t in taken) and self._unknown(n.text)
        ]
        unseen = missing_names(names, _texts(passages))
        return [
            name.text
            for name in unseen
            if (not name.compound or self._has_rare_word(name.text))
            and missing_names([name], _texts(self.retriever.keyword_passages(name.text)), strict=True)
        ]

    def _unknown(self, name: str) -> bool:
        """A word of the name that no chunk of the knowledge base uses (nor a longer word it begins): this store has
        never heard of it. Per store: "Kubernetes" is unknown to a knowledge base of NGINX docs, not to one of
        Kubernetes docs."""
        index, groups = self.retriever.keyword, group_filter(self.retriever.reader)
        return any(_is_rare(index, word, 0, groups) for word in name.split())

    def _has_rare_word(self, term: str) -> bool:
        """A hyphenated term of common words ("order-status", "timed-out") is ordinary wording, not a name; one
        with a word few chunks use ("permessage-deflate") names a thing of its own."""
        words = [w for w in term.lower().split("-") if len(w) > 2 and w not in STOPWORDS]
        index, groups = self.retriever.keyword, group_filter(self.retriever.reader)
        limit = rare_word_limit(len(index.ids))
        return any(_is_rare(index, word, limit, groups) for word in words)

    def _rare_words_shared(self, question: str, passages: list[Passage]) -> list[str]:
        """The question's words that the passages use and that at most RARE_WORD_CHUNKS chunks of the knowledge base
        use, and at most RARE_EVIDENCE_SHARE of them. Not the share a large knowledge base allows for names: beside
        20,000 chunks of product docs, "larkspur" and "courier" are in under 0.3 % of the chunks (the team's own
        docs), and would vouch for "How much does Larkspur pay per kilometre for courier mileage?". In a knowledge
        base of a few dozen chunks no word is rare enough to vouch for anything."""
        in_passages = set(content_words("\n".join(_texts(passages))))
        index = self.retriever.keyword  # read once: each read checks the store's revision
        groups = group_filter(self.retriever.reader)
        limit = min(RARE_WORD_CHUNKS, int(RARE_EVIDENCE_SHARE * len(index.ids)))
        return [
            w for w in dict.fromkeys(content_words(question)) if w in in_passages and _is_rare(index, w, limit, groups)
        ]


def _numbered(waiting: dict[int, list[Citation]], numbering: dict[int, int]) -> Iterator[CitationEvent]:
    """The waiting citations whose marker has been streamed, under the number the reader sees."""
    for given in [n for n in waiting if n in numbering]:
        for citation in waiting.pop(given):
            yield CitationEvent(replace(citation, n=numbering[given]))


def _is_rare(index: KeywordIndex, word: str, limit: int, groups: frozenset[str] | None = None) -> bool:
    """At most ``limit`` chunks the reader may read (``groups``, None: all) use the word."""
    return len(index.search(word, limit + 1, groups=groups)) <= limit


def _texts(passages: list[Passage]) -> list[str]:
    """What a name may be mentioned in: a passage's title, section and text."""
    return [f"{p.heading}\n{p.full_text}" for p in passages]


def rare_word_limit(chunks: int) -> int:
    """How many chunks may use a word that is still rare in a knowledge base of this many chunks: "rollback" in
    20 of 20,000 chunks is as rare as a word in 1 of 1,000."""
    return max(RARE_WORD_CHUNKS, int(RARE_WORD_SHARE * chunks))


def length_allowance(question: str) -> float:
    """How much lower the abstention bar sits for a question of this many words."""
    words = len(re.findall(r"[\w'-]+", question))
    return min(MAX_LENGTH_ALLOWANCE, LENGTH_SLOPE * max(0, words - LONG_QUESTION))
