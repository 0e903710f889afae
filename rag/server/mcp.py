"""MCP server: the knowledge base as four read-only tools for Claude Code and other agents (the official ``mcp``
SDK's ``MCPServer``), over stdio (``python -m rag mcp``) or mounted at ``/mcp`` of the HTTP API (``rag.server.http``).

The tools only translate ``rag.app.knowledge``: the same limits and checks as the HTTP API. A mistake of the caller
(an unknown doc type or file, an empty query) or a store that cannot be read comes back as a tool error with a
readable message; the server keeps running. Over stdio the tools read as the local user; over HTTP as the
bearer token's reader, which the HTTP layer puts in the request's scope under ``READER_SCOPE_KEY``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from rag.answer.events import ProviderError
from rag.answer.personas import PersonaError
from rag.app.knowledge import (
    DEFAULT_K,
    MAX_HISTORY_TURNS,
    MAX_K,
    MAX_QUERY_CHARS,
    MAX_QUESTION_CHARS,
    AskReply,
    DocumentList,
    KnowledgeService,
    SearchReply,
    Turn,
    ask_reply,
)
from rag.documents.loading import DOC_TYPES
from rag.index.store import StoreError
from rag.search.access import LOCAL, Reader
from rag.search.catalog import DocumentText

SERVER_NAME = "architecture-knowledge"
READER_SCOPE_KEY = "rag.reader"
TOOLS = ("search_knowledge", "ask", "read_document", "list_documents")
READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)

INSTRUCTIONS = """\
The team's architecture knowledge base: its own design docs, ADRs, runbooks and postmortems (doc type "team")
and reference articles on backend and system design (doc type "reference"). Search it with search_knowledge
before answering a question about how this team builds, runs or decided something, and cite the `path` of every
passage you use. A superseded document (status_note "superseded by ...") is history, not the current decision.
Read a whole document with read_document when a passage is not enough."""

DOC_TYPE_FIELD = Field(
    description=f"Only documents of this type: {' or '.join(repr(t) for t in DOC_TYPES)} (the team's own design "
    "docs, ADRs, runbooks / general reference articles). Leave it out to search everything.",
    json_schema_extra={"enum": [*DOC_TYPES, None]},
)
SearchQuery = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_QUERY_CHARS,
        description="What to look for, in plain words: a question or the topic (\"how do we retry card "
        "payments\", \"kafka consumer lag runbook\"). Names, config keys and error texts match exactly too.",
    ),
]
PassageCount = Annotated[int, Field(ge=1, le=MAX_K, description=f"How many passages to return (1-{MAX_K}).")]
DocType = Annotated[str | None, DOC_TYPE_FIELD]
Source = Annotated[
    str | None,
    Field(
        max_length=MAX_QUERY_CHARS,
        description="Only passages of this one file: its `path` as list_documents or an earlier result gives it.",
    ),
]
Question = Annotated[
    str,
    Field(min_length=1, max_length=MAX_QUESTION_CHARS, description="The question, as a person would ask it."),
]
History = Annotated[
    list[Turn] | None,
    Field(
        max_length=MAX_HISTORY_TURNS,
        description="Earlier turns when the question is a follow-up (\"and with Kafka?\"): questions as role "
        "'user', answers as role 'assistant' with the files they cited in `sources`. Oldest first.",
    ),
]
DocumentPath = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_QUERY_CHARS,
        description="The document's `path` as search_knowledge or list_documents give it "
        "(e.g. \"corpus/team/adr-0009-outbox-pattern-for-order-events.md\").",
    ),
]
SectionName = Annotated[
    str | None,
    Field(
        max_length=MAX_QUERY_CHARS,
        description="Only this section (with its subsections): a result's `section` (\"Decision\", \"A > B\") or "
        "just its last heading. Leave it out for the whole document.",
    ),
]


def build_mcp_server(service: KnowledgeService) -> MCPServer:
    server = MCPServer(SERVER_NAME, instructions=INSTRUCTIONS)

    @server.tool(title="Search the knowledge base", annotations=READ_ONLY)
    def search_knowledge(
        query: SearchQuery,
        ctx: Context,
        k: PassageCount = DEFAULT_K,
        doc_type: DocType = None,
        source: Source = None,
    ) -> SearchReply:
        """Search the team's architecture knowledge base (design docs, ADRs, runbooks, postmortems and reference
        articles) and get the best-matching passages, best first.

        Use it before answering anything about how this team builds, runs or decided something, and cite the
        `path` of each passage you rely on. Each passage has its title, section, path, doc type, text, scores and
        its document's status: a `status_note` such as "superseded by ADR-0011 on 2025-05-12" means the passage
        is no longer the current decision (look for its successor); "stale since ..." means it may be out of
        date. A `confidence` under about 0.46 means the knowledge base probably does not cover the query: say so
        rather than guess. An unknown `doc_type` or `source` is an error that names the valid values.
        """
        with tool_errors():
            return service.search(query, k, doc_type, source, reader=reader_of(ctx))

    @server.tool(title="Ask the knowledge base", annotations=READ_ONLY)
    def ask(question: Question, ctx: Context, history: History = None, doc_type: DocType = None) -> AskReply:
        """Ask the knowledge base a question and get a written answer whose claims carry numbered citations
        [n], each naming its file and quoting the words it rests on. Every citation is checked against its
        passage: `unsupported` lists sentences whose citation did not hold. `abstained` true means the knowledge
        base does not cover the question; `notes` say what it says nothing about and which cited documents are
        superseded or stale.

        Slower than search_knowledge: it writes the answer with the configured model (or, offline, from quotes
        of the passages). When you will write the answer yourself, search_knowledge and read_document give you
        the material directly.
        """
        with tool_errors():
            final = service.ask(question, history, doc_type, reader=reader_of(ctx))
        return ask_reply(final)

    @server.tool(title="Read a document", annotations=READ_ONLY)
    def read_document(path: DocumentPath, ctx: Context, section: SectionName = None) -> DocumentText:
        """Read one document of the knowledge base whole, or one section of it, as the knowledge base holds it
        (PDF and DOCX files too), with its title, doc type and status. Use it when a passage is not enough: the
        context and consequences of a decision, every step of a runbook. A very long document comes back in
        part (`truncated`), naming the `omitted_sections` to read one at a time. An unknown path is an error
        that names the closest paths; an unknown section one that lists the document's sections.
        """
        with tool_errors():
            return service.document(path, section, reader=reader_of(ctx))

    @server.tool(title="List the documents", annotations=READ_ONLY)
    def list_documents(ctx: Context, doc_type: DocType = None) -> DocumentList:
        """List the documents in the knowledge base: title, path, doc type, number of chunks, when it was
        ingested, and status (superseded by what, deprecated, stale since when). Use it to see what the team
        has written on a subject, or to find the path for read_document or for search_knowledge's `source`.
        """
        with tool_errors():
            return service.documents(doc_type, reader=reader_of(ctx))

    return server


def reader_of(ctx: Context) -> Reader:
    """Over stdio, the local user (whoever started the server); over HTTP, the reader of the request's token."""
    request = ctx.request_context.request
    if request is None:
        return LOCAL
    reader = request.scope.get(READER_SCOPE_KEY)
    if not isinstance(reader, Reader):  # the HTTP layer authenticates every request; never read unauthenticated
        raise ToolError("the request carries no valid bearer token")
    return reader


@contextlib.contextmanager
def tool_errors() -> Iterator[None]:
    """The caller's mistakes and what the store, persona or provider cannot do, as tool errors with their
    message (anything else is a bug: the SDK reports it as a failed call without details and logs it)."""
    try:
        yield
    except (ValueError, StoreError, PersonaError, ProviderError) as error:
        raise ToolError(str(error)) from None


def serve_stdio(service: KnowledgeService) -> None:
    build_mcp_server(service).run("stdio")
