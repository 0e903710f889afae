"""A local stand-in for an OpenAI-compatible chat completions endpoint (what Ollama, llama.cpp's server and
vLLM serve at ``/v1/chat/completions``), for the OpenAI-compatible provider's tests.

``POST /v1/chat/completions`` answers a JSON completion, or with ``"stream": true`` a ``text/event-stream``
of ``data: {chat.completion.chunk}`` lines ending with ``data: [DONE]``: a first chunk with the role, content
deltas, a last chunk with ``finish_reason``, and (when ``stream_options.include_usage``) a usage chunk with
empty ``choices``. A request for a model the server does not have gets a 404 with an OpenAI-style error
body; a malformed request a 400. Every request is recorded; responses are scripted in order
(``server.script(...)``), else ``server.default``:

- ``Completion(text, finish_reason="stop")``;
- ``HTTPFailure(status, message, headers)``: an error response;
- ``StreamError(message, after_chunks)``: an ``{"error": ...}`` chunk in the middle of the stream;
- ``Cut(after_chunks)``: the connection closes mid-stream, without ``[DONE]``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "llama3.1:8b"


@dataclass
class Completion:
    text: str
    finish_reason: str | None = "stop"
    delta_chars: int = 8


@dataclass
class HTTPFailure:
    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class StreamError:
    message: str
    after_chunks: int
    completion: Completion | None = None


@dataclass
class Cut:
    after_chunks: int
    completion: Completion | None = None


Response = Completion | HTTPFailure | StreamError | Cut


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any

    def prompt(self) -> str:
        return self.body["messages"][-1]["content"]


class OpenAIServer:
    def __init__(self, models: tuple[str, ...] = (MODEL,)) -> None:
        self.models = set(models)
        self.requests: list[Recorded] = []
        self.default: Response = Completion("Default answer from the fake LLM server.")
        self._script: deque[Response] = deque()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-openai", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> OpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def script(self, *responses: Response) -> None:
        with self._lock:
            self._script.extend(responses)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.requests.clear()

    def _next(self) -> Response:
        with self._lock:
            return self._script.popleft() if self._script else self.default


def check(body: Any, models: set[str]) -> tuple[int, str] | None:
    """What an OpenAI-compatible server refuses: ``(status, message)``, or ``None``."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
        return 400, "'messages' must be a non-empty array"
    if body.get("model") not in models:
        return 404, f"model '{body.get('model')}' not found, try pulling it first"
    for index, message in enumerate(body["messages"]):
        if message.get("role") not in ("system", "user", "assistant"):
            return 400, f"messages[{index}].role: invalid role {message.get('role')!r}"
        if not isinstance(message.get("content"), str) or not message["content"].strip():
            return 400, f"messages[{index}].content must be a non-empty string"
    if not isinstance(body.get("max_tokens", 1), int) or body.get("max_tokens", 1) < 1:
        return 400, "max_tokens must be a positive integer"
    return None


def _chunks(completion: Completion, body: dict) -> list[dict]:
    base = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1, "model": body["model"]}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    step = max(1, completion.delta_chars)
    for at in range(0, len(completion.text), step):
        delta = {"content": completion.text[at : at + step]}
        chunks.append({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": completion.finish_reason}]})
    if (body.get("stream_options") or {}).get("include_usage"):
        chunks.append({**base, "choices": [], "usage": _usage(completion, body)})
    return chunks


def _usage(completion: Completion, body: dict) -> dict:
    prompt = sum(len(m["content"]) // 4 for m in body["messages"])
    output = max(1, len(completion.text) // 4)
    return {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output}


def _handler(server: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            record = Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            with server._lock:
                server.requests.append(record)
            if self.path != "/v1/chat/completions":
                self._error(HTTPFailure(404, f"no route {self.path}"))
                return
            problem = check(body, server.models)
            if problem:
                self._error(HTTPFailure(*problem))
                return
            response = server._next()
            if isinstance(response, HTTPFailure):
                self._error(response)
                return
            completion = response if isinstance(response, Completion) else response.completion or server.default
            if not body.get("stream"):
                message = {"role": "assistant", "content": completion.text}
                self._json(200, {
                    "id": "chatcmpl-test", "object": "chat.completion", "model": body["model"],
                    "choices": [{"index": 0, "message": message, "finish_reason": completion.finish_reason}],
                    "usage": _usage(completion, body),
                })
                return
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for count, chunk in enumerate(_chunks(completion, body)):
                if isinstance(response, StreamError) and count == response.after_chunks:
                    self._write(f"data: {json.dumps({'error': {'message': response.message}})}\n\n")
                    break
                if isinstance(response, Cut) and count == response.after_chunks:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self._write(f"data: {json.dumps(chunk)}\n\n")
                time.sleep(0.001)
            else:
                self._write("data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def _write(self, text: str) -> None:
            payload = text.encode()
            self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
            self.wfile.flush()

        def _json(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _error(self, failure: HTTPFailure) -> None:
            error = {"message": failure.message, "type": "invalid_request_error", "code": failure.status}
            self._json(failure.status, {"error": error}, failure.headers)

        def finish(self) -> None:
            try:
                super().finish()
            except OSError:
                pass

    return Handler
