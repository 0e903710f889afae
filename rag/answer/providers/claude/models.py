"""Claude model families: how each is asked to think, how hard (effort), how many tokens, and what it costs.

The one place that knows per-model API differences (from Anthropic's model pages and thinking guide, as of
anthropic 2.14): which ``thinking`` types a model accepts, whether it can turn thinking off, whether it takes
``output_config.effort``, and its price per million tokens. ``request_settings`` turns a model id and the
user's overrides (``RAG_ANTHROPIC_THINKING``, ``RAG_ANTHROPIC_EFFORT``, ``RAG_ANTHROPIC_MAX_TOKENS``) into the
request fields; ``estimate_cost`` prices a call's usage.

Decision: answers run with thinking off where the model allows it (Sonnet 5.5 turns it off with
``between_tools``, others with ``disabled``) and effort ``medium``: the passages are already chosen, the
answer is a grounded summary, and latency is what users feel. Models that always think (Opus 5.5, Fable,
Mythos) get adaptive thinking at effort ``low`` and a ``max_tokens`` large enough for thinking plus answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import get_args

EFFORTS = ("low", "medium", "high", "xhigh", "max")
ANSWER_TOKENS = 4096  # room for the longest answer we want (thinking off)
THINKING_ROOM = 12000  # added when the model thinks: thinking tokens count toward max_tokens
REWRITE_TOKENS = 512  # a one-line query (thinking off)


class ModelError(ValueError):
    """A model id or a thinking/effort combination the API would refuse."""


@dataclass(frozen=True)
class Prices:
    """US dollars per million tokens."""

    input: float
    output: float
    cache_write: float  # 5-minute cache writes (what ``cache_control: ephemeral`` creates)
    cache_read: float


@dataclass(frozen=True)
class Family:
    ids: tuple[str, ...]  # model ids (a dated id such as claude-haiku-4-5-20251001 matches its base)
    thinking: tuple[str, ...]  # the thinking types the API accepts for these models
    off: str | None  # the thinking type that turns up-front thinking off (None: always thinks)
    effort: bool  # accepts output_config.effort
    prices: Prices
    off_max_effort: str = "high"  # turning thinking off is refused above this effort


def _prices(i: float, o: float, write: float, read: float) -> Prices:
    return Prices(i, o, write, read)


ALL = ("adaptive", "enabled", "disabled")
ADAPTIVE_OR_OFF = ("adaptive", "disabled")

# fmt: off
FAMILIES: tuple[Family, ...] = (
    Family(("claude-opus-5-5",), ("adaptive",), None, True, _prices(4, 20, 5, 0.20)),
    Family(("claude-fable-5-1", "claude-mythos-5-1"), ("adaptive",), None, True, _prices(10, 50, 12.5, 0.25)),
    # 5.2 prices are not published in our sources: the 5.1 rates are assumed
    Family(("claude-fable-5-2", "claude-mythos-5-2"), ("adaptive",), None, True, _prices(10, 50, 12.5, 0.25)),
    Family(("claude-fable-5", "claude-mythos-5"), ("adaptive",), None, True, _prices(10, 50, 12.5, 1.0)),
    Family(("claude-mythos-preview",), ("adaptive", "enabled"), None, True, _prices(25, 125, 31.25, 2.5)),
    Family(("claude-sonnet-5-5",), ("adaptive", "between_tools"), "between_tools", True, _prices(2, 10, 2.5, 0.10)),
    Family(("claude-haiku-5-5",), ("adaptive", "disabled"), "disabled", True, _prices(0.10, 0.50, 0.125, 0.01)),
    Family(("claude-opus-5",), ("adaptive", "disabled"), "disabled", True, _prices(5, 25, 6.25, 0.50)),
    Family(("claude-sonnet-5",), ("adaptive", "disabled"), "disabled", True, _prices(2, 10, 2.5, 0.20)),
    Family(("claude-opus-4-8", "claude-opus-4-7"), ADAPTIVE_OR_OFF, "disabled", True, _prices(5, 25, 6.25, 0.5), "max"),
    Family(("claude-opus-4-6",), ALL, "disabled", True, _prices(5, 25, 6.25, 0.5), "max"),
    Family(("claude-sonnet-4-6",), ALL, "disabled", True, _prices(3, 15, 3.75, 0.3), "max"),
    Family(("claude-opus-4-5",), ("enabled", "disabled"), "disabled", True, _prices(5, 25, 6.25, 0.50), "max"),
    Family(("claude-sonnet-4-5",), ("enabled", "disabled"), "disabled", False, _prices(3, 15, 3.75, 0.30), "max"),
    Family(("claude-haiku-4-5",), ("enabled", "disabled"), "disabled", False, _prices(1, 5, 1.25, 0.10), "max"),
)

DATED = re.compile(r"-\d{8}$")


@lru_cache(maxsize=1)
def known_models() -> tuple[str, ...]:
    """The model ids the installed SDK names (``anthropic.types.Model``)."""
    from anthropic.types import Model

    return tuple(name for arg in get_args(Model) for name in get_args(arg))


def family_of(model: str) -> Family | None:
    base = DATED.sub("", model)
    return next((family for family in FAMILIES if base in family.ids), None)


def check_model(model: str) -> Family:
    """The model's family; an id neither the SDK nor the table knows is refused, listing the known ones."""
    family = family_of(model)
    if family is None:
        raise ModelError(
            f"unknown Claude model {model!r} (RAG_ANTHROPIC_MODEL); the installed anthropic SDK knows: "
            + ", ".join(known_models())
        )
    return family


@dataclass(frozen=True)
class RequestSettings:
    """The fields one call sends: ``thinking`` and ``output_config`` may be absent (``None``)."""

    max_tokens: int
    thinking: dict | None
    output_config: dict | None

    def fields(self) -> dict:
        fields: dict = {"max_tokens": self.max_tokens}
        if self.thinking is not None:
            fields["thinking"] = self.thinking
        if self.output_config is not None:
            fields["output_config"] = self.output_config
        return fields


def request_settings(
    model: str, thinking: str = "auto", effort: str = "auto", max_tokens: int | None = None, rewrite: bool = False
) -> RequestSettings:
    """What an answer (or, with ``rewrite``, the follow-up rewrite) sends to ``model``.

    ``thinking`` is ``auto``/``off``/``adaptive``, ``effort`` ``auto`` or one of ``EFFORTS``. A combination
    the model refuses raises ``ModelError`` naming the setting, before any call is made."""
    family = check_model(model)
    if thinking == "auto":
        thinking = "off" if family.off else "adaptive"
    if rewrite:  # the rewrite is a one-line query: never worth thinking about when that can be avoided
        thinking, effort = ("off" if family.off else "adaptive"), "low"
    if effort == "auto":
        effort = "medium" if thinking == "off" else "low"
    if thinking == "off" and family.off is None:
        raise ModelError(
            f"{model} always thinks and refuses thinking off (RAG_ANTHROPIC_THINKING=off); "
            "use adaptive with a lower RAG_ANTHROPIC_EFFORT instead"
        )
    if thinking == "adaptive" and "adaptive" not in family.thinking:
        raise ModelError(f"{model} has no adaptive thinking (RAG_ANTHROPIC_THINKING=adaptive); use off or auto")
    if thinking == "off" and EFFORTS.index(effort) > EFFORTS.index(family.off_max_effort):
        raise ModelError(
            f"{model} refuses thinking off at effort {effort} (RAG_ANTHROPIC_EFFORT); "
            f"use at most {family.off_max_effort}, or thinking adaptive"
        )
    config = {"type": family.off} if thinking == "off" else {"type": "adaptive"}
    output_config = {"effort": effort} if family.effort else None
    if max_tokens is None:
        max_tokens = REWRITE_TOKENS if rewrite else ANSWER_TOKENS
        if thinking != "off":
            max_tokens += THINKING_ROOM
    return RequestSettings(max_tokens, config, output_config)


def usage_dict(model: str, usage) -> dict:
    """The usage record of one call (``anthropic`` Usage or a dict), with its estimated cost in US dollars."""

    def get(name: str) -> int:
        value = usage.get(name) if isinstance(usage, dict) else getattr(usage, name, None)
        return int(value or 0)

    record = {
        name: get(name)
        for name in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    }
    record["cost_usd"] = estimate_cost(model, record)
    return record


def estimate_cost(model: str, usage: dict) -> float | None:
    """Dollars for one call at list prices (``None`` for a model the table does not price)."""
    family = family_of(model)
    if family is None:
        return None
    p = family.prices
    dollars = (
        usage.get("input_tokens", 0) * p.input
        + usage.get("output_tokens", 0) * p.output
        + usage.get("cache_creation_input_tokens", 0) * p.cache_write
        + usage.get("cache_read_input_tokens", 0) * p.cache_read
    ) / 1_000_000
    return round(dollars, 6)
