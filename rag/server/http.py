"""HTTP API: ``python -m rag serve``, a FastAPI app under uvicorn, read-only.

``GET /v1/search``, ``POST /v1/ask`` (JSON, or Server-Sent Events with the chat's events: ``text``, ``citation``,
``status``, ``error``, ``final``), ``GET /v1/documents``, ``GET /v1/documents/{path}``, ``GET /healthz``,
OpenAPI at ``/docs``, and the MCP tools (``rag.server.mcp``) over streamable HTTP at ``/mcp``. Every route but
``/healthz`` and the API docs needs ``Authorization: Bearer <token>`` with a token of ``RAG_API_TOKENS_FILE``
(``rag.search.access.TokenTable``); the token's reader goes with the request into every read. Requests larger than
``MAX_REQUEST_BYTES`` are refused (413), and the query, question, history and ``k`` limits of ``rag.app.knowledge``
hold on both the API and the tools. Tokens are never written to the log (uvicorn logs the request line only).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.transport_security import RequestBodyLimitMiddleware, TransportSecuritySettings
from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from rag.answer.events import Event, Final, ProviderError, event_record
from rag.answer.personas import PersonaError
from rag.app.knowledge import (
    DEFAULT_K,
    MAX_HISTORY_TURNS,
    MAX_K,
    MAX_QUERY_CHARS,
    MAX_QUESTION_CHARS,
    MAX_REQUEST_BYTES,
    DocumentList,
    KnowledgeService,
    SearchReply,
    Turn,
)
from rag.index.store import StoreError
from rag.search.access import Reader, TokenFileError, TokenTable, token_digest
from rag.search.catalog import DocumentText
from rag.server.mcp import READER_SCOPE_KEY, build_mcp_server

log = logging.getLogger("rag.server.http")
UNAVAILABLE = (StoreError, PersonaError, ProviderError, TokenFileError)


class AskRequest(BaseModel):
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    history: list[Turn] = Field(
        default_factory=list, max_length=MAX_HISTORY_TURNS, description="Earlier turns, oldest first (follow-ups)."
    )
    doc_type: str | None = Field(None, description="'reference' or 'team'; leave it out for every document.")
    stream: bool = Field(
        False, description="Stream Server-Sent Events (as does `Accept: text/event-stream`) instead of one JSON answer."
    )


def create_app(service: KnowledgeService, tokens: TokenTable) -> FastAPI:
    mcp = build_mcp_server(service)
    # stateless: every MCP request stands alone (the tools keep no state), so no session outlives its request.
    # No Host/Origin allow-list (the SDK's DNS-rebinding guard): the bearer token is what a page in a browser
    # cannot send, and the allow-list would refuse the host name a reverse proxy forwards.
    mcp.streamable_http_app(
        streamable_http_path="/mcp",
        stateless_http=True,
        json_response=True,
        max_request_body_size=MAX_REQUEST_BYTES,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    sessions = mcp.session_manager

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with sessions.run():
            yield

    app = FastAPI(
        title="Architecture knowledge API",
        description="Search, ask and read the team's architecture knowledge base (read-only). Send "
        "`Authorization: Bearer <token>` with a token of the server's RAG_API_TOKENS_FILE. The same tools for "
        "agents are served over MCP (streamable HTTP) at /mcp.",
        version="1",
        lifespan=lifespan,
        docs_url=None,
    )
    mount_offline_docs(app)
    app.state.tokens = tokens
    app.add_middleware(RequestBodyLimitMiddleware, max_body_size=MAX_REQUEST_BYTES)

    @app.exception_handler(ValueError)
    async def bad_request(_request: Request, error: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=400)

    for unavailable in UNAVAILABLE:

        @app.exception_handler(unavailable)
        async def service_unavailable(_request: Request, error: Exception) -> JSONResponse:
            log.error("%s", error)
            return JSONResponse({"detail": str(error)}, status_code=503)

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict:
        """Whether the server is up and its store can be read (no token needed)."""
        service.retriever.store.check_health()
        return {"status": "ok"}

    @app.get("/v1/search", tags=["knowledge"])
    def search(
        who: Authenticated,
        query: Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS, description="What to look for.")],
        k: Annotated[int, Query(ge=1, le=MAX_K, description="How many passages.")] = DEFAULT_K,
        doc_type: Annotated[str | None, Query(description="'reference' or 'team'.")] = None,
        source: Annotated[str | None, Query(max_length=MAX_QUERY_CHARS, description="Only this file.")] = None,
        mode: Literal["hybrid", "dense", "keyword"] = "hybrid",
    ) -> SearchReply:
        """Passages that match the query, best first, with their document's status."""
        return service.search(query, k, doc_type, source, mode, reader=who)

    @app.post(
        "/v1/ask",
        tags=["knowledge"],
        responses={200: {"content": {"text/event-stream": {}}, "description": "`python -m rag ask --json`'s answer"}},
    )
    def ask(who: Authenticated, body: AskRequest, request: Request):
        """A written answer with verified citations: one JSON object (the same as `python -m rag ask --json`), or
        with `stream` (or `Accept: text/event-stream`) the events as they come: `text`, `citation`, `status`,
        `error`, and last `final` holding that same object."""
        events = service.answer_events(body.question, body.history, body.doc_type, reader=who)
        if body.stream or "text/event-stream" in request.headers.get("accept", ""):
            return StreamingResponse(server_sent(events), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-store"})
        final = [event for event in events if isinstance(event, Final)][-1]
        return JSONResponse(final.to_dict())

    @app.get("/v1/documents", tags=["knowledge"])
    def documents(
        who: Authenticated, doc_type: Annotated[str | None, Query(description="'reference' or 'team'.")] = None
    ) -> DocumentList:
        """Every document: title, path, doc type, chunks, when ingested, status."""
        return service.documents(doc_type, reader=who)

    @app.get("/v1/documents/{path:path}", tags=["knowledge"])
    def document(
        who: Authenticated,
        path: str,
        section: Annotated[str | None, Query(max_length=MAX_QUERY_CHARS, description="Only this section.")] = None,
    ) -> DocumentText:
        """One document (or one section) as the knowledge base holds it; 404 names the closest paths."""
        try:
            return service.document(path, section, reader=who)
        except ValueError as error:
            raise HTTPException(404, str(error)) from None

    app.router.routes.append(Route("/mcp", endpoint=BearerOnly(sessions.handle_request, tokens)))
    return app


BEARER = HTTPBearer(auto_error=False, description="A token of the server's RAG_API_TOKENS_FILE.")


async def request_reader(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
) -> Reader:
    """The reader of the request's bearer token; 401 without a valid one. (A dictionary look-up: async, so it
    costs no trip to the thread pool.)"""
    found = authenticate(request.app.state.tokens, credentials.credentials if credentials else None)
    if found is None:
        raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    return found


Authenticated = Annotated[Reader, Depends(request_reader)]


def authenticate(tokens: TokenTable, token: str | None) -> Reader | None:
    """The reader of ``token``; None when there is none or it is unknown."""
    return tokens.reader_for(token) if token else None


class BearerOnly:
    """The MCP endpoint behind the bearer tokens: 401 without a valid one; with one, its reader in the scope (the
    tools read it) and as the connection's user (the SDK ties a session to the credential that opened it)."""

    def __init__(self, app: ASGIApp, tokens: TokenTable) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        header = Headers(scope=scope).get("authorization", "")
        scheme, _, token = header.partition(" ")
        try:
            found = authenticate(self.tokens, token.strip()) if scheme.lower() == "bearer" else None
        except TokenFileError as error:
            log.error("%s", error)
            await JSONResponse({"detail": str(error)}, status_code=503)(scope, receive, send)
            return
        if found is None:
            response = JSONResponse(
                {"detail": "a valid bearer token is required"}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
            await response(scope, receive, send)
            return
        access = AccessToken(token=token_digest(token.strip()), client_id=found.user, scopes=[found.role])
        await self.app({**scope, READER_SCOPE_KEY: found, "user": AuthenticatedUser(access)}, receive, send)


def server_sent(events: Iterator[Event]) -> Iterator[str]:
    """The events as Server-Sent Events; a failure mid-answer ends the stream with an ``error`` event."""
    try:
        for event in events:
            name, data = event_record(event)
            yield f"event: {name}\ndata: {json.dumps(data)}\n\n"
    except (ValueError, *UNAVAILABLE) as error:
        yield f"event: error\ndata: {json.dumps({'message': str(error)})}\n\n"
    except Exception:
        log.exception("the answer failed")
        yield f"event: error\ndata: {json.dumps({'message': 'the answer failed (see the server log)'})}\n\n"


def run_server(service: KnowledgeService, tokens: TokenTable, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(
        create_app(service, tokens), host=host, port=port, log_level="info", server_header=False,
        timeout_graceful_shutdown=5,
    )


def mount_offline_docs(app: FastAPI) -> None:
    """Swagger UI at /docs from the assets of the swagger-ui-bundle package: FastAPI's default page loads them
    from a CDN, which a server without internet access cannot reach (the page stays blank)."""
    import swagger_ui_bundle
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - docs",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )
