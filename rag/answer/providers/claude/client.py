"""Claude provider: streams an answer from the Anthropic Messages API with native citations.

Retrieved passages go in as ``search_result`` content blocks with citations enabled; each citation
Claude returns (which result, which words) becomes an ``[n]`` marker after the text it supports (before
its closing punctuation or newline, once per passage and sentence) and a ``Citation`` carrying the cited
words. Thinking, effort and ``max_tokens`` come from the model table (``rag.answer.providers.claude.models``). The call
ends with a ``StopEvent``: every ``stop_reason`` the API defines is mapped to complete or incomplete with
a message, and the usage (tokens, cache reads and writes, estimated cost) is recorded. Overloads and rate
limits are retried here, with a visible countdown (``rag.answer.retrying``); every other failure becomes one
readable ``ErrorEvent``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from rag.answer.citations import MARKER, strip_markers
from rag.answer.events import Citation, CitationEvent, ErrorEvent, ProviderError, StatusEvent, StopEvent, TextDelta
from rag.answer.personas import Persona
from rag.answer.providers.claude.errors import Failure, transport_errors
from rag.answer.providers.claude.models import ModelError, check_model, request_settings, usage_dict
from rag.answer.retrying import countdown, retry_delay
from rag.config import Settings
from rag.documents.doc_status import RETIRED_INSTRUCTION, retired_label
from rag.search.followups import REWRITE_PROMPT, rewrite_follow_up
from rag.search.passages import Passage, marked_heading

INSTRUCTIONS = (
    "Answer the question above using the search results provided, which are numbered in order. "
    "Cite the results that support each claim. If they do not cover the question, say so first, "
    "and mark anything you add from general knowledge as such."
)
MISSING = (
    "The search results say nothing about: {names}. Begin by saying plainly, for each of them, that the "
    "knowledge base says nothing about it; then give the closest material the results do contain."
)
COMPLETE = {"end_turn", "stop_sequence"}
STOP_MESSAGES = {
    "max_tokens": "The answer was cut off: Claude reached its limit of {max_tokens} output tokens (thinking "
    "included). Ask a narrower question, or raise RAG_ANTHROPIC_MAX_TOKENS.",
    "refusal": "Claude declined to answer this question{details}. The partial answer is not kept in the "
    "conversation; rephrase the question if it was misread.",
    "pause_turn": "Claude paused its turn before finishing; the answer is incomplete. Ask again.",
    "tool_use": "Claude stopped to call a tool, but this assistant offers none; the answer is incomplete.",
    "model_context_window_exceeded": "The conversation and the passages filled {model}'s context window, so "
    "the answer is cut short. Start a new conversation, or lower RAG_TOP_K.",
}
EMPTY = "Claude finished without writing any answer text; ask again."
UNKNOWN_STOP = "Claude stopped for a reason this version does not know ({reason}); the answer may be incomplete."
HELD = re.compile(r"[.,;:!?]?\s*$")  # what a block's text may end with that belongs after its marker
SENTENCE_END = re.compile(r"[.!?](?:\s+|$)|\n")


def find_api_key(settings: Settings) -> str | None:
    """The key from the environment (read now) or, failing that, from the settings (``.env``)."""
    if os.environ.get("ANTHROPIC_API_KEY"):
        return os.environ["ANTHROPIC_API_KEY"]
    secret = settings.anthropic_api_key
    return secret.get_secret_value() if secret is not None and secret.get_secret_value() else None


class ClaudeProvider:
    name = "claude"

    def __init__(self, settings: Settings, api_key: str | None = None) -> None:
        import anthropic

        key = api_key or find_api_key(settings)
        if not key:
            raise ProviderError(
                "Claude needs an API key: set ANTHROPIC_API_KEY in the environment or in .env "
                "(or use --provider extractive for offline answers)"
            )
        self.model = settings.anthropic_model
        try:
            check_model(self.model)
            self.answer_settings = request_settings(
                self.model, settings.anthropic_thinking, settings.anthropic_effort, settings.anthropic_max_tokens
            )
            self.rewrite_settings = request_settings(self.model, rewrite=True)
        except ModelError as error:
            raise ProviderError(str(error)) from None
        self.max_retries = settings.anthropic_max_retries
        self.max_wait = settings.anthropic_max_wait
        self.client = anthropic.Anthropic(
            api_key=key,
            base_url=settings.anthropic_base_url or os.environ.get("ANTHROPIC_BASE_URL") or None,
            timeout=settings.anthropic_timeout,
            max_retries=0,  # retried here, so that each wait is shown (see generate)
        )

    # -- the follow-up rewrite ------------------------------------------------------------------------
    def rewrite(self, question: str, history: list[str]) -> str:
        """The LLM rewrites a follow-up; any failure or cut-off reply falls back to the deterministic rewrite."""
        import anthropic

        prompt = REWRITE_PROMPT.format(history="\n".join(f"- {q}" for q in history[-4:]), question=question)
        try:
            response = self.client.messages.create(  # no retries: a wait here would freeze the page
                model=self.model,
                messages=[{"role": "user", "content": prompt}],
                **self.rewrite_settings.fields(),
            )
        except (anthropic.APIError, *transport_errors()):
            return rewrite_follow_up(question, history)
        text = "".join(block.text for block in response.content if block.type == "text").strip()
        if response.stop_reason not in COMPLETE or not text:  # a query cut mid-way is not searched
            return rewrite_follow_up(question, history)
        return text.splitlines()[0].strip()

    # -- the answer -----------------------------------------------------------------------------------
    def request(
        self,
        question: str,
        history: list[dict],
        persona: Persona,
        passages: list[Passage],
        missing: list[str] | None = None,
    ) -> dict:
        messages = history_messages(history)
        results = [search_result_block(passage) for passage in passages]
        instructions = INSTRUCTIONS
        if missing:
            instructions += "\n\n" + MISSING.format(names="; ".join(missing))
        if any(retired_label(p.status) for p in passages):
            instructions += "\n\n" + RETIRED_INSTRUCTION
        messages.append(
            {"role": "user", "content": [*results, {"type": "text", "text": f"{question.strip()}\n\n{instructions}"}]}
        )
        return {
            "model": self.model,
            "system": [{"type": "text", "text": persona.system_prompt, "cache_control": {"type": "ephemeral"}}],
            "messages": messages,
            **self.answer_settings.fields(),
        }

    def generate(
        self,
        question: str,
        query: str,
        history: list[dict],
        persona: Persona,
        passages: list[Passage],
        missing: list[str] | None = None,
    ) -> Iterator[TextDelta | CitationEvent | StatusEvent | ErrorEvent | StopEvent]:
        """Claude reads the conversation itself, so the standalone ``query`` is not needed here."""
        import anthropic

        request = self.request(question, history, persona, passages, missing)
        attempt = 0
        while True:
            state = _Stream(passages, self.model)
            try:
                with self.client.messages.stream(**request) as stream:
                    for event in stream:
                        yield from state.handle(event)
                yield from state.finish()
                yield state.stop_event(request["max_tokens"])
                return
            except (anthropic.APIError, *transport_errors()) as error:
                failure = Failure.of(error, self.model)
            if state.started or not failure.retryable or attempt >= self.max_retries:
                yield from state.finish()
                yield ErrorEvent(failure.final_message(state.started, attempt))
                yield StopEvent(state.stop_reason, None, state.usage(), incomplete=state.started)
                return
            delay = retry_delay(attempt, failure.retry_after)
            if delay > self.max_wait:
                yield ErrorEvent(
                    f"Claude is {failure.kind} and asks to wait {delay:.0f} s before retrying, longer than "
                    f"RAG_ANTHROPIC_MAX_WAIT ({self.max_wait:.0f} s); try again later."
                )
                yield StopEvent(None, None, state.usage())
                return
            yield from countdown(delay, f"Claude is {failure.kind}, retrying in {{seconds}} s")
            attempt += 1


def history_messages(history: list[dict]) -> list[dict]:
    """The conversation as Messages API turns: empty turns dropped, stale ``[n]`` markers stripped from
    earlier answers (they point at another search's passages), and starting with a user turn."""
    messages = []
    for turn in history:
        role, content = turn.get("role"), turn.get("content")
        if role not in ("user", "assistant") or not isinstance(content, str):
            continue
        text = (strip_markers(content) if role == "assistant" else content).strip()
        if text and (messages or role == "user"):
            messages.append({"role": role, "content": text})
    return messages


class _Stream:
    """What one streamed call has produced so far, turning the SDK's events into answer events."""

    def __init__(self, passages: list[Passage], model: str) -> None:
        self.passages = passages
        self.model = model
        self.usage_so_far: dict = {}
        self.stop_reason: str | None = None
        self.stop_details: dict | None = None
        self.text = ""  # all text yielded
        self.held = ""  # the current block's trailing punctuation/whitespace, released after its markers
        self.block_citations: list[int] = []
        self.in_text_block = False
        self.told_thinking = False

    @property
    def started(self) -> bool:
        return bool(self.text.strip())

    def handle(self, event) -> Iterator[TextDelta | CitationEvent | StatusEvent]:
        kind = event.type
        if kind == "message_start":
            self._update_usage(event.message.usage)
        elif kind == "content_block_start":
            block_type = event.content_block.type
            self.in_text_block = block_type == "text"
            self.block_citations, self.held = [], ""
            if block_type in ("thinking", "redacted_thinking") and not self.told_thinking:
                self.told_thinking = True
                yield StatusEvent("Claude is thinking...")
        elif kind == "content_block_delta":
            delta = event.delta
            if delta.type == "text_delta":
                yield from self._text(delta.text)
            elif delta.type == "citations_delta":
                citation = _to_citation(delta.citation, self.passages)
                if citation is not None:
                    if citation.n not in self.block_citations:
                        self.block_citations.append(citation.n)
                    yield CitationEvent(citation)
        elif kind == "content_block_stop":
            yield from self._close_block()
        elif kind == "message_delta":
            self.stop_reason = event.delta.stop_reason
            details = getattr(event.delta, "stop_details", None)
            self.stop_details = details.model_dump() if details is not None else None
            self._update_usage(event.usage)

    def finish(self) -> Iterator[TextDelta]:
        """Releases what a block cut short still holds back."""
        yield from self._close_block()

    def _text(self, text: str) -> Iterator[TextDelta]:
        text = self.held + text
        cut = HELD.search(text).start()
        body, self.held = text[:cut], text[cut:]
        if body:
            self.text += body
            yield TextDelta(body)

    def _close_block(self) -> Iterator[TextDelta]:
        if self.block_citations:
            sentence = SENTENCE_END.split(self.text)[-1]  # markers already in this sentence are not repeated
            present = {int(n) for n in MARKER.findall(sentence)}
            new = [n for n in self.block_citations if n not in present]
            if new:
                markers = "".join(f"[{n}]" for n in new)
                last_line = self.text.rsplit("\n", 1)[-1].strip()
                if last_line.startswith(("```", "~~~")):  # never on a closing fence: on the next line
                    self.text += self.held
                    yield TextDelta(self.held)
                    self.held = ""
                    markers = markers if self.text.endswith("\n") else "\n" + markers
                else:
                    markers = " " + markers
                self.text += markers
                yield TextDelta(markers)
        if self.held:
            self.text += self.held
            yield TextDelta(self.held)
        self.block_citations, self.held = [], ""

    def _update_usage(self, usage) -> None:
        for name in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
            value = getattr(usage, name, None)
            if value is not None:
                self.usage_so_far[name] = value

    def usage(self) -> dict:
        return usage_dict(self.model, self.usage_so_far) if self.usage_so_far else {}

    def stop_event(self, max_tokens: int) -> StopEvent:
        reason = self.stop_reason
        if reason in COMPLETE:
            message = None if self.started else EMPTY
        elif reason == "refusal":
            details = self.stop_details or {}
            parts = [f"category: {details['category']}"] if details.get("category") else []
            if details.get("explanation"):
                parts.append(str(details["explanation"]))
            message = STOP_MESSAGES["refusal"].format(details=f" ({'; '.join(parts)})" if parts else "")
        elif reason in STOP_MESSAGES:
            message = STOP_MESSAGES[reason].format(max_tokens=max_tokens, model=self.model)
        else:
            message = UNKNOWN_STOP.format(reason=reason)
        return StopEvent(reason, self.stop_details, self.usage(), incomplete=message is not None, message=message)


def search_result_block(passage: Passage) -> dict:
    """A passage as a citable search result. The title carries no ``[n]``: the number is the result's
    position, and a number in the title invites Claude to type markers of its own."""
    return {
        "type": "search_result",
        "source": f"{passage.path or passage.source}#{passage.section}" if passage.section else passage.path,
        "title": marked_heading(passage),
        "content": content_blocks(passage.full_text),
        "citations": {"enabled": True},
    }


def content_blocks(text: str) -> list[dict]:
    """The passage as citable text blocks, one per paragraph (a fenced code block stays whole).

    A text block is the smallest unit Claude can cite, so one block per passage would make every
    cited_text the whole passage; per paragraph, the quote is what the claim rests on. The blocks
    keep their trailing blank lines, so that joined they are exactly the passage text.
    """
    blocks: list[str] = []
    current, fenced, ended = "", False, False
    for line in text.splitlines(keepends=True):
        if line.strip():
            if ended:
                blocks.append(current)
                current, ended = "", False
            if line.lstrip().startswith(("```", "~~~")):
                fenced = not fenced
        elif not fenced and current.strip():
            ended = True
        current += line
    if current.strip() or not blocks:
        blocks.append(current)
    else:
        blocks[-1] += current
    return [{"type": "text", "text": block} for block in blocks if block.strip()] or [{"type": "text", "text": text}]


def _to_citation(raw, passages: list[Passage]) -> Citation | None:
    if getattr(raw, "type", "") != "search_result_location":
        return None
    index = int(raw.search_result_index)
    if not 0 <= index < len(passages):
        return None  # a citation to a result we did not send can never become a marker
    return Citation(index + 1, passages[index], str(raw.cited_text).strip())
