"""What the fake Messages API accepts: each request checked against the SDK's own parameter types, and the
per-model rules the real API enforces beyond them (documented on Anthropic's model and thinking pages).

``check_request(body)`` returns ``None`` for a request the API would take, else ``(status, error_type,
message)`` as the API reports it. The model rules here are written from the documentation, independently
of ``rag.answer.providers.claude.models``, so that the fake server does not simply agree with our own table.
"""

from __future__ import annotations

import collections.abc
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, Required, Union, get_args, get_origin

from anthropic.types.message_create_params import MessageCreateParamsNonStreaming, MessageCreateParamsStreaming
from typing_extensions import get_type_hints, is_typeddict

Problem = tuple[int, str, str]


@dataclass(frozen=True)
class ModelRules:
    thinking: tuple[str, ...]  # accepted thinking types
    thinks_by_default: bool  # thinking omitted = adaptive thinking
    effort: bool = True  # accepts output_config.effort
    off_only_up_to_high: bool = False  # disabled/between_tools refused at effort xhigh or max
    prefill: bool = False  # accepts a final assistant turn
    max_output: int = 128_000
    min_cacheable: int = 1024  # tokens: a shorter cached prefix is silently not cached


def _rules() -> dict[str, ModelRules]:
    always = ModelRules(("adaptive",), True)
    rules = {
        "claude-opus-5-5": ModelRules(("adaptive",), True, min_cacheable=512),
        "claude-sonnet-5-5": ModelRules(
            ("adaptive", "between_tools"), True, off_only_up_to_high=True, min_cacheable=512
        ),
        "claude-haiku-5-5": ModelRules(("adaptive", "disabled"), True, off_only_up_to_high=True, min_cacheable=512),
        "claude-opus-5": ModelRules(("adaptive", "disabled"), True, off_only_up_to_high=True),
        "claude-sonnet-5": ModelRules(("adaptive", "disabled"), True),
        "claude-opus-4-8": ModelRules(("adaptive", "disabled"), False),
        "claude-opus-4-7": ModelRules(("adaptive", "disabled"), False),
        "claude-opus-4-6": ModelRules(("adaptive", "enabled", "disabled"), False),
        "claude-sonnet-4-6": ModelRules(("adaptive", "enabled", "disabled"), False),
        "claude-opus-4-5": ModelRules(("enabled", "disabled"), False, prefill=True, max_output=64_000),
        "claude-sonnet-4-5": ModelRules(("enabled", "disabled"), False, effort=False, prefill=True, max_output=64_000),
        "claude-haiku-4-5": ModelRules(("enabled", "disabled"), False, effort=False, prefill=True, max_output=64_000),
        "claude-mythos-preview": ModelRules(("adaptive", "enabled"), True),
    }
    for name in ("claude-fable-5-2", "claude-mythos-5-2", "claude-fable-5-1", "claude-mythos-5-1", "claude-fable-5",
                 "claude-mythos-5"):
        rules[name] = always
    for dated in ("claude-haiku-4-5-20251001", "claude-opus-4-5-20251101", "claude-sonnet-4-5-20250929"):
        rules[dated] = rules[dated.rsplit("-", 1)[0]]
    return rules


MODELS = _rules()


def thinks(body: dict) -> bool:
    """Whether this request makes the model think up front (a thinking block begins the reply)."""
    rules = MODELS[body["model"]]
    thinking = body.get("thinking")
    if thinking is None:
        return rules.thinks_by_default
    return thinking.get("type") in ("adaptive", "enabled")


def check_request(body: Any) -> Problem | None:
    if not isinstance(body, dict):
        return 400, "invalid_request_error", "the request body must be a JSON object"
    params = MessageCreateParamsStreaming if body.get("stream") else MessageCreateParamsNonStreaming
    errors = check_type(body, params, "")
    if errors:
        return 400, "invalid_request_error", errors[0]
    model = body["model"]
    if model not in MODELS:
        return 404, "not_found_error", f"model: {model}"
    return _check_rules(body, MODELS[model])


def _check_rules(body: dict, rules: ModelRules) -> Problem | None:
    def bad(message: str) -> Problem:
        return 400, "invalid_request_error", message

    if not 0 <= body["max_tokens"] <= rules.max_output:
        return bad(f"max_tokens: {body['max_tokens']} > {rules.max_output}, the maximum for {body['model']}")
    effort = (body.get("output_config") or {}).get("effort")
    if effort is not None and not rules.effort:
        return bad(f"output_config.effort: this model does not support effort ({body['model']})")
    thinking = body.get("thinking")
    if thinking is not None:
        kind = thinking["type"]
        if kind not in rules.thinking:
            return bad(
                f'"thinking.type.{kind}" is not supported for this model. Use '
                + " or ".join(f'"thinking.type.{t}"' for t in rules.thinking)
                + ' and "output_config.effort" to control thinking behavior.'
            )
        if kind == "enabled" and not 1024 <= thinking["budget_tokens"] < body["max_tokens"]:
            return bad("thinking.budget_tokens: must be >= 1024 and less than max_tokens")
        if kind in ("disabled", "between_tools") and rules.off_only_up_to_high and effort in ("xhigh", "max"):
            return bad(f'"thinking.type.{kind}" is only supported with effort low, medium or high.')
    messages = list(body["messages"])
    if not messages:
        return bad("messages: at least one message is required")
    for index, message in enumerate(messages):
        content = message["content"]
        if isinstance(content, str):
            if not content.strip() and not (index == len(messages) - 1 and message["role"] == "assistant"):
                return bad(f"messages.{index}: all messages must have non-empty content except for the optional "
                           "final assistant message")
            continue
        for block_index, block in enumerate(content):
            problem = _check_block(block, f"messages.{index}.content.{block_index}")
            if problem:
                return bad(problem)
    if messages[-1]["role"] == "assistant" and not rules.prefill:
        return bad("This model does not support assistant message prefill. The conversation must end with a user "
                   "message.")
    system = body.get("system")
    if isinstance(system, list):
        for block_index, block in enumerate(system):
            problem = _check_block(block, f"system.{block_index}")
            if problem:
                return bad(problem)
    return None


def _check_block(block: dict, path: str) -> str | None:
    if block.get("type") == "text" and not block.get("text", "").strip():
        return f"{path}: text content blocks must contain non-whitespace text"
    if block.get("type") == "search_result":
        content = list(block.get("content") or [])
        if not content:
            return f"{path}.content: search result content must contain at least one text block"
        if not block["title"].strip() or not block["source"].strip():
            return f"{path}: search result title and source must be non-empty"
        for index, part in enumerate(content):
            problem = _check_block(part, f"{path}.content.{index}")
            if problem:
                return problem
    return None


# -- the SDK's TypedDicts as a schema ----------------------------------------------------------------


def check_type(value: Any, annotation: Any, path: str) -> list[str]:
    """The ways ``value`` (parsed JSON) does not fit ``annotation`` (an SDK param type), as API-style
    messages (``messages.0.content.1.text: Field required``); empty when it fits."""
    origin, args = get_origin(annotation), get_args(annotation)
    where = path or "body"
    if origin in (Required, NotRequired, typing.Annotated):
        return check_type(value, args[0], path)
    if annotation is Any or annotation is object:
        return []
    if annotation is type(None):
        return [] if value is None else [f"{where}: Input should be null"]
    if origin is Literal:
        return [] if value in args else [f"{where}: Input should be {' or '.join(map(repr, args))}"]
    if origin in (Union, types.UnionType):
        return _check_union(value, args, path)
    if is_typeddict(annotation):
        return _check_typeddict(value, annotation, path)
    if origin in (list, collections.abc.Iterable, collections.abc.Sequence) or getattr(
        origin, "__name__", ""
    ) == "SequenceNotStr":
        if not isinstance(value, list):
            return [f"{where}: Input should be a valid list"]
        return [error for index, item in enumerate(value) for error in check_type(item, args[0], f"{path}.{index}")]
    if origin in (dict, collections.abc.Mapping):
        return [] if isinstance(value, dict) else [f"{where}: Input should be a valid dictionary"]
    if annotation is bool:
        return [] if isinstance(value, bool) else [f"{where}: Input should be a valid boolean"]
    if annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{where}: Input should be a valid integer"]
    if annotation is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return [] if ok else [f"{where}: Input should be a valid number"]
    if annotation is str:
        return [] if isinstance(value, str) else [f"{where}: Input should be a valid string"]
    if isinstance(annotation, type):  # e.g. the SDK's response models, which JSON can never be
        return [f"{where}: Input should be a valid {annotation.__name__}"]
    return []  # a typing construct the SDK's params do not use: accepted


def _check_union(value: Any, members: tuple, path: str) -> list[str]:
    results = [check_type(value, member, path) for member in members]
    if any(not errors for errors in results):
        return []
    # a tagged union (content blocks): report against the member whose ``type`` matches
    if isinstance(value, dict) and "type" in value:
        for member, errors in zip(members, results):
            hints = get_type_hints(member, include_extras=True) if is_typeddict(member) else {}
            tag = hints.get("type")
            if tag is not None and value["type"] in get_args(get_args(tag)[0] if get_origin(tag) else tag):
                return errors
        return [f"{path or 'body'}.type: Input tag {value['type']!r} does not match any of the expected tags"]
    same_shape = [errors for member, errors in zip(members, results) if _shape(member) == _shape_of(value)]
    return min(same_shape or results, key=len)


def _shape(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin in (Required, NotRequired):
        return _shape(get_args(annotation)[0])
    if is_typeddict(annotation) or origin in (dict, collections.abc.Mapping):
        return "object"
    if origin in (list, collections.abc.Iterable, collections.abc.Sequence) or "Sequence" in str(origin):
        return "array"
    return getattr(annotation, "__name__", str(annotation))


def _shape_of(value: Any) -> str:
    return "object" if isinstance(value, dict) else "array" if isinstance(value, list) else type(value).__name__


def _check_typeddict(value: Any, annotation: Any, path: str) -> list[str]:
    where = path or "body"
    if not isinstance(value, dict):
        return [f"{where}: Input should be a valid dictionary"]
    hints = get_type_hints(annotation, include_extras=True)
    errors = []
    for key in value:
        if key not in hints:
            errors.append(f"{_join(path, key)}: Extra inputs are not permitted")
    for key, hint in hints.items():
        required = get_origin(hint) is Required or (
            key in getattr(annotation, "__required_keys__", ()) and get_origin(hint) is not NotRequired
        )
        if key not in value:
            if required:
                errors.append(f"{_join(path, key)}: Field required")
            continue
        errors.extend(check_type(value[key], hint, _join(path, key)))
    return errors


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
