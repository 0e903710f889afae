"""OpenAI-compatible provider: answers from a self-hosted LLM (Ollama, llama.cpp's server, vLLM) through
``POST {RAG_LLM_BASE_URL}/chat/completions``, streamed as server-sent events.

The passages are numbered in the prompt and the model is asked to cite them as ``[n]``; the markers it
writes are read back from the text as citations (the answerer then checks each cited claim against its
passage, as for Claude). ``finish_reason: length`` marks the answer incomplete; connection failures, HTTP
errors and an error sent in the middle of the stream become one readable ``ErrorEvent``; 429/503 are
retried with a visible countdown (``rag.answer.retrying``).

Decision: this speaks HTTP with ``httpx`` (already installed, and maintained) rather than adding the
``openai`` package: one endpoint, a few lines of SSE parsing, and no second SDK to keep in step with
servers that only imitate the OpenAI API.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx

from rag.answer.citations import MARKER, strip_markers
from rag.answer.events import Citation, CitationEvent, ErrorEvent, ProviderError, StatusEvent, StopEvent, TextDelta
from rag.answer.personas import Persona
from rag.answer.retrying import countdown, parse_retry_after, retry_delay
from rag.config import Settings
from rag.documents.doc_status import RETIRED_INSTRUCTION, retired_label
from rag.search.followups import REWRITE_PROMPT, rewrite_follow_up
from rag.search.passages import Passage, marked_heading

CITING = (
    "Answer the question using only the numbered passages below. After each claim, cite the passage that "
    "supports it as [n] (its number), before the sentence's final punctuation; cite each passage at most "
    "once per sentence and never invent a number. If the passages do not cover the question, say so first, "
    "and mark anything you add from general knowledge as such."
)
MISSING = (
    "The passages say nothing about: {names}. Begin by saying plainly, for each of them, that the knowledge "
    "base says nothing about it; then give the closest material the passages do contain."
)
FINISH_MESSAGES = {
    "length": "The answer was cut off at the model's output limit ({max_tokens} tokens); ask a narrower "
    "question, or raise RAG_LLM_MAX_TOKENS.",
    "content_filter": "The server's content filter stopped the answer; it is incomplete.",
    "tool_calls": "The model stopped to call a tool, but this assistant offers none; the answer is incomplete.",
    "function_call": "The model stopped to call a tool, but this assistant offers none; the answer is incomplete.",
}
HELD = re.compile(r"(?:\s*\[\d*\]?)+$|\s+$")  # trailing markers (maybe partial) wait for what follows
REPEATED = re.compile(r"(\[\d+\])(?:\s*\1)+")
SPACED_MARKER = re.compile(r"[ \t]+\[(\d+)\]")
RETRYABLE = {429, 502, 503, 504}


class OpenAICompatibleProvider:
    name = "openai-compatible"

    def __init__(self, settings: Settings) -> None:
        if not settings.llm_base_url or not settings.llm_model:
            raise ProviderError(
                "the OpenAI-compatible provider needs RAG_LLM_BASE_URL (e.g. http://localhost:11434/v1 for "
                "Ollama) and RAG_LLM_MODEL (e.g. llama3.1:8b)"
            )
        self.base_url = settings.llm_base_url.rstrip("/")
        self.model = settings.llm_model
        self.max_tokens = settings.llm_max_tokens
        self.max_retries = settings.anthropic_max_retries
        self.max_wait = settings.anthropic_max_wait
        headers = {"content-type": "application/json"}
        if settings.llm_api_key is not None and settings.llm_api_key.get_secret_value():
            headers["authorization"] = f"Bearer {settings.llm_api_key.get_secret_value()}"
        self.client = httpx.Client(headers=headers, timeout=httpx.Timeout(settings.llm_timeout, connect=10.0))

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def rewrite(self, question: str, history: list[str]) -> str:
        """The LLM rewrites a follow-up; any failure or cut-off reply falls back to the deterministic rewrite."""
        prompt = REWRITE_PROMPT.format(history="\n".join(f"- {q}" for q in history[-4:]), question=question)
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 256}
        try:
            response = self.client.post(self.url, json=body)
            response.raise_for_status()
            choice = response.json()["choices"][0]
            text = (choice.get("message") or {}).get("content") or ""
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
            return rewrite_follow_up(question, history)
        text = text.strip()
        if choice.get("finish_reason") not in ("stop", None) or not text:
            return rewrite_follow_up(question, history)
        return text.splitlines()[0].strip()

    def request(
        self,
        question: str,
        history: list[dict],
        persona: Persona,
        passages: list[Passage],
        missing: list[str] | None = None,
    ) -> dict:
        messages = [{"role": "system", "content": persona.system_prompt}]
        for turn in history:
            role, content = turn.get("role"), turn.get("content")
            if role in ("user", "assistant") and isinstance(content, str):
                text = (strip_markers(content) if role == "assistant" else content).strip()
                if text:
                    messages.append({"role": role, "content": text})
        numbered = "\n\n".join(
            f"[{n}] {marked_heading(passage)} ({passage.path or passage.source})\n{passage.full_text.strip()}"
            for n, passage in enumerate(passages, start=1)
        )
        instructions = CITING + ("\n\n" + MISSING.format(names="; ".join(missing)) if missing else "")
        if any(retired_label(p.status) for p in passages):
            instructions += "\n\n" + RETIRED_INSTRUCTION
        messages.append(
            {"role": "user", "content": f"Passages:\n\n{numbered}\n\nQuestion: {question.strip()}\n\n{instructions}"}
        )
        return {
            "model": self.model,
            "messages": messages,
            "max_tokens": self.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
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
        body = self.request(question, history, persona, passages, missing)
        attempt = 0
        while True:
            stream = _Stream(passages)
            retry_after: float | None = None
            try:
                with self.client.stream("POST", self.url, json=body) as response:
                    if response.status_code >= 400:
                        response.read()
                        message = self._http_error(response)
                        if response.status_code in RETRYABLE and attempt < self.max_retries:
                            retry_after = parse_retry_after(response.headers.get("retry-after"))
                        else:
                            yield ErrorEvent(message)
                            yield StopEvent(None)
                            return
                    else:
                        yield from stream.read(response)
                        yield from stream.finish()
                        yield stream.stop_event(self.max_tokens)
                        return
            except _StreamError as error:
                yield from stream.finish()
                yield ErrorEvent(f"The LLM at {self.base_url} sent an error in the middle of the answer: {error}; "
                                 "the answer above is incomplete, ask again")
                yield StopEvent(None, usage=stream.usage, incomplete=True)
                return
            except httpx.TimeoutException:
                yield from stream.finish()
                yield ErrorEvent(self._cut("did not answer in time (timeout)", stream.started))
                yield StopEvent(None, usage=stream.usage, incomplete=stream.started)
                return
            except httpx.ConnectError as error:
                yield ErrorEvent(
                    f"Cannot reach the LLM at {self.base_url} ({error or 'connection refused'}): is the server "
                    "(Ollama, llama.cpp, vLLM) running, and is RAG_LLM_BASE_URL right?"
                )
                yield StopEvent(None)
                return
            except httpx.HTTPError as error:
                yield from stream.finish()
                yield ErrorEvent(self._cut(f"lost the connection ({error or type(error).__name__})", stream.started))
                yield StopEvent(None, usage=stream.usage, incomplete=stream.started)
                return
            delay = retry_delay(attempt, retry_after)
            if delay > self.max_wait:
                yield ErrorEvent(f"The LLM at {self.base_url} is busy and asks to wait {delay:.0f} s, longer than "
                                 f"RAG_ANTHROPIC_MAX_WAIT ({self.max_wait:.0f} s); try again later.")
                yield StopEvent(None)
                return
            yield from countdown(delay, "The LLM is busy, retrying in {seconds} s")
            attempt += 1

    def _cut(self, what: str, started: bool) -> str:
        message = f"The LLM at {self.base_url} {what}"
        return message + ("; the answer above is incomplete, ask again" if started else "; try again")

    def _http_error(self, response: httpx.Response) -> str:
        status, detail = response.status_code, _error_message(response)
        if status == 404:
            return (f"The server at {self.base_url} answered 404 ({detail}): check RAG_LLM_MODEL ({self.model!r}) "
                    "and that RAG_LLM_BASE_URL ends with the API prefix (often /v1)")
        if status in (401, 403):
            return f"The LLM server refused the key ({status}: {detail}); check RAG_LLM_API_KEY"
        if status in RETRYABLE:
            return f"The LLM at {self.base_url} is busy or failing ({status}: {detail}) even after retries"
        return f"The LLM at {self.base_url} refused the request ({status}): {detail}"


class _StreamError(Exception):
    """An error object sent as a chunk of an otherwise successful stream."""


class _Stream:
    """Reads a chat-completions SSE stream into answer events, with the ``[n]`` markers as citations."""

    def __init__(self, passages: list[Passage]) -> None:
        self.passages = passages
        self.text = ""
        self.held = ""
        self.cited: set[int] = set()
        self.finish_reason: str | None = None
        self.done = False
        self.usage: dict = {}

    @property
    def started(self) -> bool:
        return bool(self.text.strip())

    def read(self, response: httpx.Response) -> Iterator[TextDelta | CitationEvent]:
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue  # blank separators, comments (": keep-alive"), event: lines
            data = line[5:].strip()
            if data == "[DONE]":
                self.done = True
                return
            try:
                chunk = json.loads(data)
            except ValueError:
                raise _StreamError(f"an unreadable chunk ({data[:80]!r})") from None
            if chunk.get("error"):
                error = chunk["error"]
                raise _StreamError(error.get("message", error) if isinstance(error, dict) else error)
            if chunk.get("usage"):
                self.usage = _usage(chunk["usage"])
            for choice in chunk.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if content:
                    yield from self._text(content)
                if choice.get("finish_reason"):
                    self.finish_reason = choice["finish_reason"]

    def _text(self, text: str) -> Iterator[TextDelta | CitationEvent]:
        text = self.held + text
        match = HELD.search(text)
        cut = match.start() if match else len(text)
        body, self.held = text[:cut], text[cut:]
        yield from self._release(body)

    def finish(self) -> Iterator[TextDelta | CitationEvent]:
        rest, self.held = self.held, ""
        yield from self._release(rest)

    def _release(self, text: str) -> Iterator[TextDelta | CitationEvent]:
        text = REPEATED.sub(r"\1", text)

        def invented(match: re.Match) -> str:  # "see [9]" with 6 passages: the marker and its space go
            valid = 1 <= int(match.group(1)) <= len(self.passages)
            return match.group(0) if valid or _in_code(self.text + text[: match.start()]) else ""

        text = SPACED_MARKER.sub(invented, text)
        if not text:
            return
        self.text += text
        yield TextDelta(text)
        for match in MARKER.finditer(text):
            n = int(match.group(1))
            if 1 <= n <= len(self.passages) and n not in self.cited:
                self.cited.add(n)
                passage = self.passages[n - 1]
                yield CitationEvent(Citation(n, passage, passage.text[:300]))

    def stop_event(self, max_tokens: int) -> StopEvent:
        reason = self.finish_reason
        if reason == "stop":
            message = None if self.started else "The LLM finished without writing any answer text; ask again."
        elif reason in FINISH_MESSAGES:
            message = FINISH_MESSAGES[reason].format(max_tokens=max_tokens)
        elif reason is None:
            message = "The LLM's stream ended without saying it had finished; the answer may be incomplete."
        else:
            message = f"The LLM stopped for a reason this version does not know ({reason}); it may be incomplete."
        return StopEvent(reason, None, self.usage, incomplete=message is not None, message=message)


def _in_code(text: str) -> bool:
    """Whether the end of ``text`` is inside a fenced block or an inline code span."""
    if text.count("```") % 2:
        return True
    return text.rsplit("\n", 1)[-1].count("`") % 2 == 1


def _usage(raw: dict) -> dict:
    cached = (raw.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return {
        "input_tokens": int(raw.get("prompt_tokens") or 0) - int(cached),
        "output_tokens": int(raw.get("completion_tokens") or 0),
        "cache_read_input_tokens": int(cached),
        "cache_creation_input_tokens": 0,
        "cost_usd": None,  # self-hosted: no price per token
    }


def _error_message(response: httpx.Response) -> str:
    """The error text of an OpenAI-style ``{"error": {"message": ...}}`` or Ollama-style ``{"error": "..."}``."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error or body)[:300]
