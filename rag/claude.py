"""Claude provider: streams an answer from the Anthropic Messages API with native citations.

Retrieved passages go in as ``search_result`` content blocks with citations enabled; each citation
Claude returns (which result, which words) becomes an ``[n]`` marker after the text it supports and
a ``Citation`` carrying the cited words. The persona prompt is cached with ``cache_control``.
Errors (bad key, refusal, overload, network) become one readable ``ErrorEvent``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from functools import lru_cache

from rag.config import Settings
from rag.events import Citation, CitationEvent, ErrorEvent, TextDelta
from rag.personas import Persona
from rag.retrieval import Passage, rewrite_follow_up

MAX_TOKENS = 2048
INSTRUCTIONS = (
    "Answer the question above using the search results provided, which are numbered in order. "
    "Cite the results that support each claim. If they do not cover the question, say so first, "
    "and mark anything you add from general knowledge as such."
)
REWRITE_PROMPT = (
    "Rewrite the last question of this conversation as one standalone search query that names its topic "
    "explicitly. Reply with the query only.\n\nEarlier questions:\n{history}\n\nLast question: {question}"
)


class ClaudeProvider:
    name = "claude"

    def __init__(self, settings: Settings, api_key: str | None = None) -> None:
        import anthropic

        self.model = settings.anthropic_model
        self.client = anthropic.Anthropic(
            api_key=api_key or os.environ.get("ANTHROPIC_API_KEY"),
            base_url=settings.anthropic_base_url or os.environ.get("ANTHROPIC_BASE_URL") or None,
            timeout=settings.anthropic_timeout,
            max_retries=settings.anthropic_max_retries,
        )

    def rewrite(self, question: str, history: list[str]) -> str:
        """The LLM rewrites a follow-up; any failure falls back to the deterministic rewrite."""
        import anthropic

        try:
            response = self.client.messages.create(
                model=self.model,
                max_tokens=100,
                messages=[
                    {
                        "role": "user",
                        "content": REWRITE_PROMPT.format(
                            history="\n".join(f"- {q}" for q in history[-4:]), question=question
                        ),
                    }
                ],
            )
            text = "".join(block.text for block in response.content if block.type == "text").strip()
            return text.splitlines()[0].strip() if text else rewrite_follow_up(question, history)
        except anthropic.APIError:
            return rewrite_follow_up(question, history)

    def request(self, question: str, history: list[dict], persona: Persona, passages: list[Passage]) -> dict:
        messages = [
            {"role": turn["role"], "content": turn["content"]}
            for turn in history
            if turn.get("role") in ("user", "assistant") and turn.get("content")
        ]
        results = [search_result_block(n, passage) for n, passage in enumerate(passages, start=1)]
        messages.append(
            {"role": "user", "content": [*results, {"type": "text", "text": f"{question}\n\n{INSTRUCTIONS}"}]}
        )
        return {
            "model": self.model,
            "max_tokens": MAX_TOKENS,
            "system": [{"type": "text", "text": persona.system_prompt, "cache_control": {"type": "ephemeral"}}],
            "messages": messages,
        }

    def generate(
        self, question: str, query: str, history: list[dict], persona: Persona, passages: list[Passage]
    ) -> Iterator[TextDelta | CitationEvent | ErrorEvent]:
        """Claude reads the conversation itself, so the standalone ``query`` is not needed here."""
        import anthropic

        block_citations: list[int] = []
        try:
            with self.client.messages.stream(**self.request(question, history, persona, passages)) as stream:
                for event in stream:
                    if event.type == "content_block_start":
                        block_citations = []
                    elif event.type == "content_block_delta":
                        delta = event.delta
                        if delta.type == "text_delta":
                            yield TextDelta(delta.text)
                        elif delta.type == "citations_delta":
                            citation = _to_citation(delta.citation, passages)
                            if citation is not None:
                                if citation.n not in block_citations:
                                    block_citations.append(citation.n)
                                yield CitationEvent(citation)
                    elif event.type == "content_block_stop" and block_citations:
                        yield TextDelta(" " + "".join(f"[{n}]" for n in block_citations))
                        block_citations = []
        except anthropic.AuthenticationError:
            yield ErrorEvent("Claude rejected the API key (401). Check ANTHROPIC_API_KEY.")
        except anthropic.PermissionDeniedError as error:
            yield ErrorEvent(f"Claude refused the request (403): {_message(error)}")
        except anthropic.RateLimitError:
            yield ErrorEvent("Claude is rate-limiting this key (429) even after retries; try again in a minute.")
        except anthropic.InternalServerError as error:
            status = getattr(error, "status_code", 500)
            kind = "overloaded" if status == 529 else f"failing ({status})"
            yield ErrorEvent(f"Claude is {kind} even after retries; try again shortly.")
        except anthropic.BadRequestError as error:
            yield ErrorEvent(f"Claude refused the request (400): {_message(error)}")
        except anthropic.APITimeoutError:
            yield ErrorEvent("Claude did not answer in time; try again.")
        except anthropic.APIConnectionError as error:
            yield ErrorEvent(f"Cannot reach Claude (network failure): {error}")
        except anthropic.APIError as error:
            yield ErrorEvent(f"Claude returned an error: {_message(error)}")
        except _transport_errors() as error:
            # the SDK wraps transport errors of the request, not those raised while a stream is read
            if "timeout" in type(error).__name__.lower():
                yield ErrorEvent("Claude stopped sending in the middle of the answer and did not resume in time; "
                                 "the answer is incomplete, try again.")
            else:
                yield ErrorEvent(f"Lost the connection to Claude in the middle of the answer (network failure: "
                                 f"{error or type(error).__name__}); the answer is incomplete, try again.")


@lru_cache(maxsize=1)
def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP library's transport errors (``httpx2`` for the 2.x SDK, ``httpx`` before it)."""
    found = []
    for name in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def search_result_block(n: int, passage: Passage) -> dict:
    return {
        "type": "search_result",
        "source": f"{passage.path or passage.source}#{passage.section}" if passage.section else passage.path,
        "title": f"[{n}] {passage.heading}",
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


def _message(error) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        detail = body.get("error", {})
        if isinstance(detail, dict) and detail.get("message"):
            return str(detail["message"])
    return str(error)
