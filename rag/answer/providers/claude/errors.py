"""How a failed Claude call is told: which failures are worth a retry (and after how long), and the one
sentence the user reads for each (bad key, unknown model, spend limit, overload, lost connection...).
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from rag.answer.providers.claude.models import known_models
from rag.answer.retrying import parse_retry_after


class Failure:
    """A failed call, classified: whether to retry, after how long, and what to tell the user."""

    def __init__(self, message: str, kind: str = "", retryable: bool = False, retry_after: float | None = None):
        self.message, self.kind, self.retryable, self.retry_after = message, kind, retryable, retry_after

    def final_message(self, started: bool, attempt: int) -> str:
        message = self.message
        if self.retryable and attempt:
            message += f" (after {attempt} {'retry' if attempt == 1 else 'retries'})"
        if started:
            message += "; the answer above is incomplete, ask again"
        return message

    @classmethod
    def of(cls, error: Exception, model: str) -> Failure:
        import anthropic

        if isinstance(error, anthropic.APITimeoutError) or "timeout" in type(error).__name__.lower():
            return cls("Claude did not answer in time (timeout)", "not answering", retryable=True)
        if isinstance(error, anthropic.APIConnectionError) or not isinstance(error, anthropic.APIStatusError):
            cause = error.__cause__ or error
            return cls(f"Cannot reach Claude (network failure: {cause or type(cause).__name__})", "unreachable", True)
        status = error.status_code
        detail = _message(error)
        error_type = _error_type(error)
        headers = error.response.headers if error.response is not None else {}
        retry_after = parse_retry_after(headers.get("retry-after"))
        if status == 200 or error_type == "overloaded_error" and status not in (429, 529):
            # an ``error`` event in the middle of a stream: the HTTP status was already 200
            kind = "overloaded" if error_type == "overloaded_error" else f"failing ({error_type or 'error'})"
            return cls(f"Claude became {kind} in the middle of the answer: {detail}", kind, retryable=True)
        if status == 401:
            return cls("Claude rejected the API key (401). Check ANTHROPIC_API_KEY.")
        if status == 403:
            return cls(f"Claude refused the request (403): {detail}")
        if status == 404:
            return cls(
                f"Claude does not serve the model {model!r} (404: {detail}). "
                f"Set RAG_ANTHROPIC_MODEL to one of: {', '.join(known_models())}"
            )
        if status == 429 and headers.get("x-should-retry") == "false":
            return cls(
                f"Claude refused the request (429) and says retrying will not help: {detail}. This is usually "
                "the organisation's spend limit: raise it in the Claude Console, or wait for the next period."
            )
        if status == 429:
            return cls(f"Claude is rate-limiting this key (429): {detail}", "rate-limited", True, retry_after)
        if status == 529 or error_type == "overloaded_error":
            return cls(f"Claude is overloaded (529): {detail}", "overloaded", True, retry_after)
        if status >= 500:
            return cls(f"Claude is failing ({status}): {detail}", f"failing ({status})", True, retry_after)
        return cls(f"Claude refused the request ({status}): {detail}")


@lru_cache(maxsize=1)
def transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP library's transport errors (``httpx2`` for the 2.x SDK, ``httpx`` before it): the SDK wraps
    those of the request, not those raised while a stream is read."""
    found = []
    for name in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _error_body(error) -> dict:
    body = getattr(error, "body", None)
    return body.get("error", {}) if isinstance(body, dict) and isinstance(body.get("error"), dict) else {}


def _error_type(error) -> str:
    return str(_error_body(error).get("type") or "")


def _message(error) -> str:
    return str(_error_body(error).get("message") or error)
