"""A local stand-in for the Anthropic Messages API, held to the real API's contract for the ``anthropic`` client.

Each request is first checked as the API checks it (``anthropic_params.check_request``: the SDK's own
parameter types, unknown keys, thinking types per model, empty text blocks, malformed ``search_result``
blocks, unknown models), and refused with the API's error body (400 ``invalid_request_error``, 404
``not_found_error``) without using a scripted response. A model that thinks by default (or is asked to)
begins its reply with a ``thinking`` block whose tokens count toward ``max_tokens``, as on the real API:
a reply that does not fit is cut and ends with ``stop_reason: max_tokens``. Usage carries the cache
fields: a cached system prompt long enough for the model is written once, then read.

``AnthropicServer`` runs a stdlib ``ThreadingHTTPServer`` on a free port and answers ``POST /v1/messages``:
a JSON message, or with ``"stream": true`` a ``text/event-stream`` (chunked, like the real API) of
``message_start``, ``content_block_start``, ``content_block_delta`` (``citations_delta`` then
``text_delta``), ``content_block_stop``, ``message_delta`` and ``message_stop``. Citations are of type
``search_result_location``; their ``cited_text`` is computed from the ``search_result`` blocks of the
request itself (the contents of ``content[start_block_index:end_block_index]``), as the real API does.

Every request is recorded (``server.requests``: path, headers, parsed body, ``api_key``). Each test scripts the
responses, consumed one per request in order (``server.script(...)``); when the script is empty the
``server.default`` response is used. A response is one of:

- ``Reply([Block("text", [Cite(0)]), ...])``: text blocks with the search results they cite;
- ``Failure(status, error_type, message, headers)``: an API error (see ``AUTH_ERROR``, ``RATE_LIMITED``,
  ``OVERLOADED``, ``bad_request``);
- ``Drop(after_events=n)``: the socket is closed before any response (``n = 0``) or mid-stream after
  ``n`` server-sent events;
- ``Stall(seconds, after_events=n)``: the server goes silent for ``seconds`` (before the response, or
  mid-stream), to exercise timeouts;
- ``StreamFailure(failure, after_events=n)``: an ``error`` event after ``n`` events of a stream.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from anthropic_params import MODELS, check_request, thinks


@dataclass
class Cite:
    """A citation of search result ``index`` (0-based, across the request), blocks ``[start, end)``."""

    index: int
    start: int = 0
    end: int | None = None
    cited_text: str | None = None  # default: the cited blocks' text from the request (empty if none)


@dataclass
class Block:
    text: str
    cites: list[Cite] = field(default_factory=list)


@dataclass
class Reply:
    blocks: list[Block]
    stop_reason: str = "end_turn"
    delta_chars: int = 16  # the text of a block is streamed in text_delta events of this many characters
    stop_details: dict | None = None  # e.g. {"type": "refusal", "category": "cyber", "explanation": "..."}
    thinking_tokens: int = 150  # spent before the text when the model thinks (they count toward max_tokens)


@dataclass
class Failure:
    status: int
    error_type: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Drop:
    after_events: int = 0
    reply: Reply | None = None  # the streamed reply that gets cut (default: the server's default reply)


@dataclass
class Stall:
    seconds: float
    after_events: int = 0
    reply: Reply | None = None


@dataclass
class StreamFailure:
    """An ``event: error`` in the middle of a stream (how the API reports an overload once it has begun)."""

    failure: Failure
    after_events: int
    reply: Reply | None = None


Response = Reply | Failure | Drop | Stall | StreamFailure

AUTH_ERROR = Failure(401, "authentication_error", "invalid x-api-key")
# the API's retry-after is in whole seconds; 0 keeps the tests fast
RATE_LIMITED = Failure(
    429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit", {"retry-after": "0"}
)
OVERLOADED = Failure(529, "overloaded_error", "Overloaded", {"retry-after": "0"})
# a spend limit: a 429 the API marks as not worth retrying
SPEND_LIMIT = Failure(
    429,
    "rate_limit_error",
    "This request would exceed your organization's monthly usage limit",
    {"x-should-retry": "false"},
)


def bad_request(message: str = "messages: text content blocks must be non-empty") -> Failure:
    return Failure(400, "invalid_request_error", message)


def text_reply(text: str) -> Reply:
    return Reply([Block(text)])


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any

    @property
    def api_key(self) -> str | None:
        """The key the client sent: ``x-api-key``, or ``authorization: Bearer`` as the 2.x SDK does."""
        if self.headers.get("x-api-key"):
            return self.headers["x-api-key"]
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token if scheme.lower() == "bearer" and token else None

    @property
    def streaming(self) -> bool:
        return isinstance(self.body, dict) and bool(self.body.get("stream"))

    def search_results(self) -> list[dict]:
        """Every ``search_result`` block of the request, in the order the API numbers them."""
        found = []
        for message in self.body.get("messages", []):
            content = message.get("content")
            if isinstance(content, list):
                found.extend(block for block in content if block.get("type") == "search_result")
        return found


class AnthropicServer:
    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.rejected: list[tuple[RecordedRequest, int, str]] = []  # requests the API checks refused, and why
        self.cache: set[str] = set()  # cached prompt prefixes (their text)
        self.default: Response = text_reply("Default answer from the fake Anthropic server.")
        self.valid_keys: set[str] | None = None  # when set, any other x-api-key gets a 401
        self._script: deque[Response] = deque()
        self._lock = threading.Lock()
        self._counter = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-anthropic", daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> AnthropicServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> AnthropicServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- scripting ---------------------------------------------------------------------------------
    def script(self, *responses: Response) -> None:
        with self._lock:
            self._script.extend(responses)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.requests.clear()
            self.rejected.clear()
            self.cache.clear()
            self.default = text_reply("Default answer from the fake Anthropic server.")
            self.valid_keys = None

    @property
    def pending(self) -> int:
        """Scripted responses not used yet."""
        with self._lock:
            return len(self._script)

    def messages_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.split("?")[0] == "/v1/messages"]

    def _usage(self, request: RecordedRequest) -> dict:
        """Input usage as the API reports it: a ``cache_control`` system prompt long enough for the model is
        written to the cache the first time (``cache_creation_input_tokens``) and read after that."""
        body = request.body
        system = body.get("system") or []
        blocks = [system] if isinstance(system, str) else list(system)
        prefix = "".join(b if isinstance(b, str) else b.get("text", "") for b in blocks)
        marked = any(isinstance(b, dict) and b.get("cache_control") for b in blocks)
        total = tokens(json.dumps(body.get("messages", []))) + tokens(prefix)
        cached = tokens(prefix) if marked and tokens(prefix) >= MODELS[body["model"]].min_cacheable else 0
        with self._lock:
            hit = cached and prefix in self.cache
            if cached:
                self.cache.add(prefix)
        return {
            "input_tokens": total - cached,
            "cache_creation_input_tokens": 0 if hit else cached,
            "cache_read_input_tokens": cached if hit else 0,
        }

    def _next(self, request: RecordedRequest) -> tuple[Response, str]:
        with self._lock:
            self.requests.append(request)
            self._counter += 1
            response = self._script.popleft() if self._script else self.default
            return response, f"msg_test_{self._counter:04d}"


def _make_handler(server: AnthropicServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive and chunked streaming, like the real API

        def log_message(self, format: str, *args) -> None:  # quiet
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = raw.decode("utf-8", "replace")
            request = RecordedRequest("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            if self.path.split("?")[0] != "/v1/messages":
                self._send_error(Failure(404, "not_found_error", f"no route {self.path}"), "req_404")
                return
            if server.valid_keys is not None and request.api_key not in server.valid_keys:
                server.requests.append(request)
                self._send_error(AUTH_ERROR, "req_auth")
                return
            problem = check_request(body)
            if problem is not None:
                status, error_type, message = problem
                server.requests.append(request)
                server.rejected.append((request, status, message))
                self._send_error(Failure(status, error_type, message), "req_invalid")
                return
            response, message_id = server._next(request)
            request_id = message_id.replace("msg_", "req_")
            if isinstance(response, Drop) and response.after_events == 0:
                self._drop()
                return
            if isinstance(response, Stall) and response.after_events == 0:
                time.sleep(response.seconds)
                self._drop()
                return
            if isinstance(response, Failure):
                self._send_error(response, request_id)
                return
            cut = response if isinstance(response, (Drop, Stall, StreamFailure)) else None
            reply = (cut.reply if cut is not None else response) or server.default
            if not isinstance(reply, Reply):
                reply = text_reply("")
            reply = _fit(reply, body)
            usage = server._usage(request)
            if request.streaming:
                self._stream(reply, request, usage, message_id, request_id, cut)
            elif cut is not None:  # a cut non-streaming response: the body never arrives
                self._drop()
            else:
                message = _message(reply, request, usage, message_id)
                self._send_json(200, message, {"request-id": request_id})

        # -- plain responses -----------------------------------------------------------------------
        def _send_json(self, status: int, payload: dict, headers: dict[str, str]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()

        def _send_error(self, failure: Failure, request_id: str) -> None:
            payload = {
                "type": "error",
                "error": {"type": failure.error_type, "message": failure.message},
                "request_id": request_id,
            }
            self._send_json(failure.status, payload, {"request-id": request_id, **failure.headers})

        def _drop(self) -> None:
            """Closes the socket abruptly: no response, or a response cut short."""
            self.close_connection = True
            try:
                self.wfile.flush()
            except OSError:
                pass
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        # -- streaming -----------------------------------------------------------------------------
        def _stream(
            self,
            reply: Reply,
            request: RecordedRequest,
            usage: dict,
            message_id: str,
            request_id: str,
            cut: Drop | Stall | StreamFailure | None,
        ) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream; charset=utf-8")
            self.send_header("cache-control", "no-cache")
            self.send_header("transfer-encoding", "chunked")
            self.send_header("request-id", request_id)
            self.end_headers()
            for count, (name, data) in enumerate(_events(reply, request, usage, message_id)):
                if isinstance(cut, StreamFailure) and count == cut.after_events:
                    name, data = (
                        "error",
                        {"type": "error", "error": {"type": cut.failure.error_type, "message": cut.failure.message}},
                    )
                    self._write_chunk(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
                    break
                if cut is not None and count == cut.after_events:
                    if isinstance(cut, Stall):
                        time.sleep(cut.seconds)
                    self._drop()
                    return
                self._write_chunk(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def _write_chunk(self, payload: bytes) -> None:
            self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
            self.wfile.flush()

        def finish(self) -> None:
            try:
                super().finish()
            except OSError:
                pass

    return Handler


def _cited_text(request: RecordedRequest, cite: Cite) -> str:
    if cite.cited_text is not None:
        return cite.cited_text
    results = request.search_results()
    if not 0 <= cite.index < len(results):
        return ""
    content = results[cite.index].get("content") or []
    end = cite.end if cite.end is not None else cite.start + 1
    return "".join(block.get("text", "") for block in content[cite.start : end])


def _citation(request: RecordedRequest, cite: Cite) -> dict:
    results = request.search_results()
    result = results[cite.index] if 0 <= cite.index < len(results) else {}
    return {
        "type": "search_result_location",
        "source": result.get("source", "https://example.invalid/unknown"),
        "title": result.get("title"),
        "cited_text": _cited_text(request, cite),
        "search_result_index": cite.index,
        "start_block_index": cite.start,
        "end_block_index": cite.end if cite.end is not None else cite.start + 1,
    }


def tokens(text: str) -> int:
    """The fake tokenizer: about four characters a token (enough for budgets and cache minimums)."""
    return max(1, len(text) // 4) if text else 0


def _fit(reply: Reply, body: dict) -> Reply:
    """The reply as the model would produce it within ``max_tokens``: thinking first (when the request makes
    the model think), then the text, cut at the budget with ``stop_reason: max_tokens``."""
    budget = body["max_tokens"]
    thinking = min(reply.thinking_tokens, budget) if thinks(body) else 0
    left = budget - thinking
    blocks: list[Block] = []
    for block in reply.blocks:
        words = block.text.split(" ")
        kept: list[str] = []
        for word in words:
            if left <= 0:
                break
            kept.append(word)
            left -= tokens(word + " ")
        if kept:
            blocks.append(Block(" ".join(kept), block.cites))
        if len(kept) < len(words):
            return replace(reply, blocks=blocks, stop_reason="max_tokens", stop_details=None, thinking_tokens=thinking)
    return replace(reply, thinking_tokens=thinking)


def _output_tokens(reply: Reply) -> int:
    return max(1, reply.thinking_tokens + sum(tokens(block.text) for block in reply.blocks))


def _content(reply: Reply, request: RecordedRequest) -> list[dict]:
    content: list[dict[str, Any]] = []
    if reply.thinking_tokens:
        # display "omitted" is the default on current models: no thinking text, only the signature
        content.append({"type": "thinking", "thinking": "", "signature": "c2lnbmF0dXJl"})
    for block in reply.blocks:
        item: dict[str, Any] = {"type": "text", "text": block.text}
        if block.cites:
            item["citations"] = [_citation(request, cite) for cite in block.cites]
        content.append(item)
    return content


def _message(reply: Reply, request: RecordedRequest, usage: dict, message_id: str) -> dict:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": request.body["model"],
        "content": _content(reply, request),
        "stop_reason": reply.stop_reason,
        "stop_sequence": None,
        "stop_details": reply.stop_details,
        "usage": {**usage, "output_tokens": _output_tokens(reply)},
    }


def _events(reply: Reply, request: RecordedRequest, usage: dict, message_id: str):
    """The server-sent events of one streamed message, consistent with what ``MessageStream`` accumulates."""
    start = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": request.body["model"],
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "stop_details": None,
        "usage": {**usage, "output_tokens": 1},
    }
    yield "message_start", {"type": "message_start", "message": start}
    yield "ping", {"type": "ping"}
    offset = 0
    if reply.thinking_tokens:
        offset = 1
        block = {"type": "thinking", "thinking": "", "signature": ""}
        yield "content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}
        delta = {"type": "signature_delta", "signature": "c2lnbmF0dXJl"}
        yield "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
        yield "content_block_stop", {"type": "content_block_stop", "index": 0}
    for position, block in enumerate(reply.blocks):
        index = position + offset
        start_block: dict[str, Any] = {"type": "text", "text": ""}
        if block.cites:
            start_block["citations"] = []
        yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": start_block}
        for cite in block.cites:
            delta = {"type": "citations_delta", "citation": _citation(request, cite)}
            yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        step = max(1, reply.delta_chars)
        for at in range(0, len(block.text), step):
            delta = {"type": "text_delta", "text": block.text[at : at + step]}
            yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None, "stop_details": reply.stop_details},
            "usage": {**usage, "output_tokens": _output_tokens(reply)},  # cumulative, as the API sends it
        },
    )
    yield "message_stop", {"type": "message_stop"}
