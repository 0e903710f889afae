"""Bounded retry waits that show a sign of life: the providers' shared rule for when and how long to wait.

The SDKs' own retries sleep silently (a ``retry-after`` of N seconds froze the UI for about 2N), so the
providers retry themselves: ``retry_delay`` decides the wait (the server's ``retry-after`` when it gives one,
else a short exponential backoff), and ``countdown`` sleeps it in one-second steps, yielding a
``StatusEvent`` at each ("Claude is overloaded, retrying in 8 s") so a caller can keep its page alive.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

from rag.answer.events import StatusEvent

FIRST_BACKOFF = 0.5  # seconds before the first retry when the server does not say


def parse_retry_after(value: str | None) -> float | None:
    """``retry-after`` in seconds (the Anthropic and OpenAI-style APIs send seconds); ``None`` if absent/odd."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 and math.isfinite(seconds) else None


def retry_delay(attempt: int, retry_after: float | None) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based)."""
    if retry_after is not None:
        return retry_after
    return FIRST_BACKOFF * 2**attempt


def countdown(seconds: float, template: str) -> Iterator[StatusEvent]:
    """Sleeps ``seconds``, yielding ``template.format(seconds=remaining)`` about once a second."""
    deadline = time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        yield StatusEvent(template.format(seconds=max(1, math.ceil(remaining))))
        time.sleep(min(1.0, remaining))
