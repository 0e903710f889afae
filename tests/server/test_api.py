"""The knowledge base as other tools reach it, through real clients and real servers: the ``mcp`` SDK's client
spawning ``python -m rag mcp`` over stdio and connecting to ``python -m rag serve`` over streamable HTTP, and
plain HTTP against the same uvicorn server (bearer tokens, Server-Sent Events, concurrent searches, an ingest
running beside it).

The store holds the shipped team docs and three reference articles of ``corpus/``, ingested once for the module.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import httpx2
import pytest
from conftest import REPO, clean_env, free_port, make_settings, parse_json_output, run_rag, serving, write_tree
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from rag.app.knowledge import MAX_REQUEST_BYTES
from rag.ingest.pipeline import ingest

REFERENCES = ["sagas-and-outbox-pattern.md", "idempotency-keys.md", "caching-strategies.md"]
OUTBOX_ADR = "corpus/team/adr-0009-outbox-pattern-for-order-events.md"
RABBITMQ_ADR = "corpus/team/adr-0003-rabbitmq-for-tracking-events.md"
TOKEN = "test-token-alice-5f0c2d9e8b7a6f41"
OTHER_TOKEN = "test-token-bob-0a1b2c3d4e5f6a7b"
WRONG_TOKEN = "test-token-mallory-ffffffffffffffff"
QUESTION = "Why do we write order events to an outbox table instead of publishing them to Kafka directly?"
TOOLS = {"search_knowledge", "ask", "read_document", "list_documents"}


@pytest.fixture(scope="module")
def store(tmp_path_factory, embedder):
    """``(settings, files)``: corpus/team and three references ingested as named from the repository (paths
    ``corpus/team/...``), the way `python -m rag ingest corpus/team ...` run in the repository names them."""
    base = tmp_path_factory.mktemp("api-store")
    settings = make_settings(base / "data", lock_timeout=5.0)
    roots = [Path("corpus/team")] + [Path("corpus/references") / name for name in REFERENCES]
    with contextlib.chdir(REPO):
        report = ingest(roots, settings, embedder=embedder)
    assert not report.files_failed and report.files_added == report.files_seen
    return settings, report.files_added


def rag_args(settings, *extra: str) -> list[str]:
    """The store options and an offline answerer, the same for the servers and the CLI they are compared with."""
    return [
        "--data-dir", str(settings.data_dir), "--agents-dir", str(REPO / "agents"), "--provider", "extractive", *extra
    ]


@pytest.fixture(scope="module")
def api(store, tmp_path_factory):
    """``python -m rag serve`` on a free port over the store: ``(base url, log path)``."""
    settings, _ = store
    base = tmp_path_factory.mktemp("api-server")
    tokens = base / "tokens.json"
    tokens.write_text(
        json.dumps(
            {
                TOKEN: {"user": "alice", "role": "reader", "groups": ["orders"]},
                OTHER_TOKEN: {"user": "bob", "groups": []},
            }
        )
    )
    port = free_port()
    options = rag_args(settings, "--tokens-file", str(tokens), "--port", str(port))
    command = [sys.executable, "-m", "rag", "serve", *options]
    log = base / "serve.log"
    with serving(command, f"http://127.0.0.1:{port}/healthz", log, 180, cwd=base, env=clean_env()):
        yield f"http://127.0.0.1:{port}", log


def get(url: str, token: str | None = TOKEN) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def post(url: str, body: dict | bytes, token: str | None = TOKEN, accept: str = "application/json"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Accept": accept}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=180) as answer:
            return answer.status, answer.headers.get("content-type", ""), answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("content-type", ""), error.read().decode()


def declared_too_large(url: str) -> int:
    """The status of a POST that declares a body over the limit (refused before a byte of it is read)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.putrequest("POST", parts.path)
        for name, value in (("Authorization", f"Bearer {TOKEN}"), ("Content-Type", "application/json"),
                            ("Content-Length", str(MAX_REQUEST_BYTES + 1))):
            connection.putheader(name, value)
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def search_url(base: str, query: str, **params) -> str:
    return f"{base}/v1/search?" + urllib.parse.urlencode({"query": query, **params})


# -- MCP: what an agent sees and does ------------------------------------------------------------------------


async def agent_session(client: Client, documents: int) -> dict:
    """What an agent does with the tools; returns what it saw for the assertions."""
    seen: dict = {"tools": {tool.name: tool for tool in (await client.list_tools()).tools}}
    found = await client.call_tool("search_knowledge", {"query": "transactional outbox for order events", "k": 3})
    seen["search"] = found
    seen["team_only"] = await client.call_tool(
        "search_knowledge", {"query": "retry storms and circuit breakers", "doc_type": "team", "k": 5}
    )
    seen["bad_doc_type"] = await client.call_tool("search_knowledge", {"query": "outbox", "doc_type": "adr"})
    seen["bad_source"] = await client.call_tool(
        "search_knowledge", {"query": "outbox", "source": "corpus/team/adr-0009-outbox.md"}
    )
    seen["listed"] = await client.call_tool("list_documents", {})
    seen["read"] = await client.call_tool("read_document", {"path": OUTBOX_ADR, "section": "Decision"})
    seen["bad_section"] = await client.call_tool("read_document", {"path": OUTBOX_ADR, "section": "Pricing"})
    seen["after_errors"] = await client.call_tool("list_documents", {"doc_type": "reference"})
    return seen


def check_agent_session(seen: dict, documents: int) -> None:
    tools = seen["tools"]
    assert set(tools) == TOOLS
    search = tools["search_knowledge"]
    schema = search.input_schema["properties"]
    assert search.input_schema["required"] == ["query"]
    assert (schema["k"]["minimum"], schema["k"]["maximum"], schema["k"]["default"]) == (1, 50, 8)
    assert schema["doc_type"]["enum"] == ["reference", "team", None]
    assert "source" in schema and "ctx" not in schema
    assert tools["read_document"].input_schema["required"] == ["path"]
    assert "history" in tools["ask"].input_schema["properties"]
    for tool in tools.values():
        assert tool.annotations.read_only_hint is True
        assert len(tool.description) > 200  # written for an agent: when to use it, what comes back
        assert tool.output_schema is not None
    assert "before answering" in search.description and "path" in search.description

    found = seen["search"]
    assert not found.is_error
    passages = found.structured_content["passages"]
    assert passages[0]["path"] == OUTBOX_ADR
    assert {"title", "section", "doc_type", "score", "text", "status_note"} <= set(passages[0])
    team = seen["team_only"].structured_content["passages"]
    assert team and {p["doc_type"] for p in team} == {"team"}

    for name in ("bad_doc_type", "bad_source", "bad_section"):
        assert seen[name].is_error, name
    assert "reference, team" in seen["bad_doc_type"].content[0].text
    assert OUTBOX_ADR in seen["bad_source"].content[0].text  # the closest path is named
    assert "'Context'" in seen["bad_section"].content[0].text  # the document's sections are listed

    listed = seen["listed"].structured_content
    assert listed["count"] == documents
    by_path = {d["path"]: d for d in listed["documents"]}
    assert by_path[RABBITMQ_ADR]["status_note"] == "superseded by ADR-0011 on 2025-05-12"
    assert by_path[OUTBOX_ADR]["chunks"] > 1
    read = seen["read"].structured_content
    assert read["document"]["path"] == OUTBOX_ADR
    assert [s["name"] for s in read["sections"]][0] == "Decision"
    assert "outbox table in the same PostgreSQL transaction" in " ".join(s["text"] for s in read["sections"])
    assert seen["after_errors"].structured_content["count"] == len(REFERENCES)  # the server kept running


def test_mcp_over_stdio(store, tmp_path):
    settings, documents = store
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "rag", "mcp", *rag_args(settings)], env=clean_env(), cwd=str(tmp_path)
    )

    async def scenario() -> dict:
        with (tmp_path / "mcp.log").open("w") as errlog:
            async with Client(stdio_client(params, errlog=errlog)) as client:
                seen = await agent_session(client, documents)
                seen["ask"] = await client.call_tool("ask", {"question": QUESTION})
                return seen

    seen = anyio.run(scenario)
    check_agent_session(seen, documents)
    answer = seen["ask"].structured_content
    assert not seen["ask"].is_error and not answer["abstained"]
    assert answer["citations"] and answer["citations"][0]["path"].startswith("corpus/")
    assert all(f"[{c['n']}]" in answer["answer"] for c in answer["citations"])


def test_mcp_over_streamable_http(api, store):
    base, _ = api
    _, documents = store

    async def scenario(token: str | None) -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx2.AsyncClient(headers=headers, timeout=120) as http:
            async with Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client:
                return await agent_session(client, documents)

    check_agent_session(anyio.run(scenario, TOKEN), documents)
    for token in (None, WRONG_TOKEN):
        with pytest.raises((MCPError, httpx2.HTTPStatusError, ExceptionGroup)):
            anyio.run(scenario, token)


# -- the HTTP API ----------------------------------------------------------------------------------------------


def test_tokens_are_required_and_health_is_open(api):
    base, _ = api
    assert get(f"{base}/healthz", token=None) == (200, {"status": "ok"})
    assert get(search_url(base, "outbox"), token=None)[0] == 401
    assert get(search_url(base, "outbox"), token=WRONG_TOKEN)[0] == 401
    assert get(f"{base}/v1/documents", token=None)[0] == 401
    assert post(f"{base}/v1/ask", {"question": QUESTION}, token=None)[0] == 401
    status, found = get(search_url(base, "transactional outbox for order events", k=3))
    assert status == 200 and found["passages"][0]["path"] == OUTBOX_ADR
    assert get(search_url(base, "outbox"), token=OTHER_TOKEN)[0] == 200
    status, schema = get(f"{base}/openapi.json", token=None)
    assert status == 200
    assert {"/v1/search", "/v1/ask", "/v1/documents", "/v1/documents/{path}", "/healthz"} <= set(schema["paths"])


def test_the_api_docs_page_works_without_internet(api):
    """/docs loads Swagger UI from the server itself: a page pointing at a CDN stays blank offline."""
    base, _ = api
    with urllib.request.urlopen(f"{base}/docs", timeout=60) as answer:
        page = answer.read().decode()
    scripts = re.findall(r'<script src="([^"]+)"', page) + re.findall(r'<link[^>]+href="([^"]+)"', page)
    assert scripts and all(src.startswith("/") for src in scripts), scripts
    for src in scripts:
        with urllib.request.urlopen(f"{base}{src}", timeout=60) as asset:
            assert asset.status == 200 and asset.read()


def test_mcp_answers_behind_a_reverse_proxy(api):
    """A proxy forwards its own host name; the token, not a host allow-list, is what guards /mcp."""
    base, _ = api
    parts = urllib.parse.urlsplit(base)
    client = {"name": "proxy", "version": "1"}
    body = {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": client},
    }
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request("POST", "/mcp", json.dumps(body), {
            "Host": "rag.example.com", "Origin": "https://rag.example.com", "Authorization": f"Bearer {TOKEN}",
            "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
        })
        answer = connection.getresponse()
        assert answer.status == 200, answer.read()
        assert json.loads(answer.read())["result"]["serverInfo"]["name"] == "architecture-knowledge"
    finally:
        connection.close()


def test_bad_requests_say_what_is_allowed(api):
    base, _ = api
    status, body = get(search_url(base, "outbox", doc_type="adr"))
    assert status == 400 and "reference, team" in body["detail"]
    assert get(search_url(base, "outbox", k=51))[0] == 422
    assert get(search_url(base, "outbox", k=0))[0] == 422
    assert get(search_url(base, "x" * 2001))[0] == 422
    status, body = get(f"{base}/v1/documents/corpus/team/adr-0009-outbox.md")
    assert status == 404 and OUTBOX_ADR in body["detail"]
    status, body = get(f"{base}/v1/documents/{OUTBOX_ADR}?section=Pricing")
    assert status == 404 and "'Monitoring'" in body["detail"]
    assert declared_too_large(f"{base}/v1/ask") == 413
    assert declared_too_large(f"{base}/mcp") == 413
    status, _, text = post(f"{base}/v1/ask", {"question": QUESTION, "history": [{"role": "system", "content": "x"}]})
    assert status == 422 and "role" in text


def test_documents(api, store):
    base, _ = api
    _, documents = store
    status, listed = get(f"{base}/v1/documents")
    assert status == 200 and listed["count"] == documents
    status, team = get(f"{base}/v1/documents?doc_type=team")
    assert status == 200 and team["count"] == documents - len(REFERENCES)
    status, whole = get(f"{base}/v1/documents/{OUTBOX_ADR}")
    assert status == 200 and whole["document"]["title"] == "ADR-0009: Transactional outbox for order events"
    names = [section["name"] for section in whole["sections"]]
    assert names[:3] == ["Status", "Context", "Decision"] and "Consequences" in names and not whole["truncated"]


def test_sse_streams_the_answer_the_cli_gives(api, store, tmp_path):
    base, _ = api
    settings, _ = store
    status, content_type, body = post(f"{base}/v1/ask", {"question": QUESTION}, accept="text/event-stream")
    assert status == 200 and content_type.startswith("text/event-stream")
    events = parse_sse(body)
    names = [name for name, _ in events]
    assert names[-1] == "final" and names.count("final") == 1 and "text" in names and "citation" in names
    final = events[-1][1]
    assert "".join(data["text"] for name, data in events if name == "text") == final["answer"]
    cited = [data for name, data in events if name == "citation"]
    assert {c["n"] for c in cited} == {c["n"] for c in final["citations"]}

    cli = parse_json_output(run_rag("ask", QUESTION, "--json", *rag_args(settings), cwd=tmp_path, env=clean_env()))
    status, _, plain = post(f"{base}/v1/ask", {"question": QUESTION})
    assert status == 200
    for answer in (final, json.loads(plain)):
        assert without_timings(answer) == without_timings(cli)
    assert cli["citations"] and not cli["abstained"]


def test_twenty_concurrent_searches_all_answer(api):
    base, _ = api
    status, listed = get(f"{base}/v1/documents?doc_type=team")
    assert status == 200
    documents = listed["documents"][:20]
    assert len(documents) == 20

    def search(document: dict) -> tuple[int, dict]:
        return get(search_url(base, document["title"], k=5, doc_type="team"))

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(search, documents))
    for document, (status, found) in zip(documents, answers):
        assert status == 200
        assert found["query"] == document["title"]
        assert document["path"] in [p["path"] for p in found["passages"]], document["title"]


def test_tokens_never_reach_the_log(api):
    base, log = api
    get(search_url(base, "outbox"), token=WRONG_TOKEN)
    get(search_url(base, "outbox"))
    text = log.read_text()
    assert "/v1/search?query=outbox" in text  # the requests are logged...
    for token in (TOKEN, OTHER_TOKEN, WRONG_TOKEN):
        assert token not in text  # ...their tokens are not


def test_an_ingest_runs_beside_the_server_and_its_documents_are_found(api, store, tmp_path, embedder):
    """The server only reads: an ingest takes the write lock while it serves, and the next search sees the new
    document without a restart. (Last in the module: it adds a document to the shared store.)"""
    base, _ = api
    settings, documents = store
    folder = write_tree(
        tmp_path / "new-docs",
        {"adr-0042-zebra-crossing-cache.md": "# ADR-0042: Zebra crossing cache\n\n## Decision\n\nThe zebra "
         "crossing service caches signal timings in Valkey for ninety seconds.\n"},
    )
    report = ingest([folder], settings.with_overrides(lock_timeout=2.0), embedder=embedder, prune=False)
    assert report.files_added == 1
    for mode in ("dense", "keyword"):  # each index sees it: the vectors and the BM25 index are both reloaded
        status, found = get(search_url(base, "zebra crossing signal timings in Valkey", k=3, mode=mode))
        assert status == 200
        assert found["passages"][0]["title"] == "ADR-0042: Zebra crossing cache", (mode, found["passages"])
    assert get(f"{base}/v1/documents")[1]["count"] == documents + 1


def parse_sse(body: str) -> list[tuple[str, dict]]:
    events = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def without_timings(answer: dict) -> dict:
    return {key: value for key, value in answer.items() if key != "timings"}


def test_a_restricted_document_reaches_only_the_tokens_of_its_group(api, store, tmp_path, embedder):
    """Issue 27 through the API: a token's groups decide what its searches, answers, listings and reads see. Alice's
    token is in ``orders``, Bob's in no group. (After the test above: this one adds a document too.)"""
    base, _ = api
    settings, _ = store
    before = {token: get(f"{base}/v1/documents", token=token)[1]["count"] for token in (TOKEN, OTHER_TOKEN)}
    folder = write_tree(
        tmp_path / "orders-only",
        {"refund-limits.md": "# Refund limits\n\n## Limits\n\nA support agent may refund at most 180 euros per "
         "order without a second approval from the Kestrel desk.\n"},
    )
    report = ingest([folder], settings.with_overrides(lock_timeout=2.0), embedder=embedder, prune=False,
                    access=("orders",))
    assert report.files_added == 1
    assert get(f"{base}/v1/documents", token=TOKEN)[1]["count"] == before[TOKEN] + 1
    assert get(f"{base}/v1/documents", token=OTHER_TOKEN)[1]["count"] == before[OTHER_TOKEN]
    [path] = [d["path"] for d in get(f"{base}/v1/documents", token=TOKEN)[1]["documents"]
              if d["path"].endswith("refund-limits.md")]
    query = "refund limit per order without a second approval from the Kestrel desk"
    for mode in ("hybrid", "dense", "keyword"):
        alice = get(search_url(base, query, k=5, mode=mode))[1]["passages"]
        assert alice[0]["path"] == path, mode
        bob = get(search_url(base, query, k=5, mode=mode), token=OTHER_TOKEN)[1]["passages"]
        assert path not in [p["path"] for p in bob] and "Kestrel" not in json.dumps(bob), mode
    assert get(f"{base}/v1/documents/{path}")[0] == 200
    status, refused = get(f"{base}/v1/documents/{path}", token=OTHER_TOKEN)
    assert status == 404 and "refund-limits" not in refused["detail"].replace(path, "", 1)
    question = {"question": "How much may a support agent refund without a second approval?"}
    assert "180 euros" in json.loads(post(f"{base}/v1/ask", question)[2])["answer"]
    bob_answer = post(f"{base}/v1/ask", question, token=OTHER_TOKEN)[2]
    assert "180 euros" not in bob_answer and "Kestrel" not in bob_answer and "refund-limits" not in bob_answer
