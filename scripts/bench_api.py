#!/usr/bin/env python3
"""API benchmark: what the transports add to a search.

    python scripts/bench_api.py DATA_DIR [--questions FILE ...] [--limit 200] [--k 8] [--json]

Over the store in DATA_DIR, in one run: the in-process search (``Retriever.search`` and the service call the
servers make, ``KnowledgeService.search``), ``GET /v1/search`` of ``python -m rag serve``, and the MCP tool
``search_knowledge`` over streamable HTTP (the same server's ``/mcp``) and over stdio (``python -m rag mcp``),
each through a real client (httpx2, the ``mcp`` SDK's client). Every question is asked once per process and path,
in turn (in-process, HTTP, MCP over HTTP, MCP over stdio; the two HTTP paths each on a server of their own), so
every timing includes embedding the query and a change in the machine's load falls on all paths alike; the
in-process calls clear the embedder's memo first.
The overhead of a transport is, per question, its time minus the in-process service call's; the table shows
p50 and p95 of each. Target: a p50 overhead of at most 20 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mcp import Client, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

from rag.app.knowledge import KnowledgeService  # noqa: E402
from rag.config import load_settings  # noqa: E402
from rag.index.store import Store  # noqa: E402

DEFAULT_QUESTIONS = [REPO / "scripts/devsets/nginx.jsonl", REPO / "corpus/eval/questions.jsonl"]
PATHS = ("retriever", "service", "http", "mcp-http", "mcp-stdio")
LABELS = {
    "retriever": "in process: Retriever.search",
    "service": "in process: KnowledgeService.search (what the servers call)",
    "http": "HTTP GET /v1/search (rag serve)",
    "mcp-http": "MCP search_knowledge, streamable HTTP (rag serve /mcp)",
    "mcp-stdio": "MCP search_knowledge, stdio (rag mcp)",
}


def questions(files: list[Path], limit: int) -> list[str]:
    found: list[str] = []
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                found.append(json.loads(line)["question"])
    return list(dict.fromkeys(found))[:limit]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serving(store_options: list[str], tokens: Path, scratch: Path, env: dict) -> Iterator[str]:
    """``python -m rag serve`` on a free port until the block ends; yields its base URL."""
    port = free_port()
    log = scratch / f"serve-{port}.log"
    command = [sys.executable, "-m", "rag", "serve", *store_options, "--tokens-file", str(tokens), "--port", str(port)]
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=scratch)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(f"{base}/healthz", server, log)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def wait_healthy(url: str, server: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"rag serve exited with {server.returncode}:\n{log.read_text()}")
        try:
            if httpx2.get(url, timeout=2).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.5)
    sys.exit(f"rag serve did not answer in {timeout:g} s:\n{log.read_text()}")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def measure(
    service: KnowledgeService,
    asked: list[str],
    k: int,
    http_base: str,
    mcp_base: str,
    token: str,
    stdio: StdioServerParameters,
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {path: [] for path in PATHS}
    retriever = service.retriever
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=120) as http,
        httpx2.AsyncClient(headers=headers, timeout=120) as mcp_http_client,
        Client(streamable_http_client(f"{mcp_base}/mcp", http_client=mcp_http_client)) as mcp_http,
        Client(stdio_client(stdio, errlog=sys.stderr)) as mcp_stdio,
    ):
        for client in (mcp_http, mcp_stdio):  # the first call of a session lists the tools
            await client.call_tool("search_knowledge", {"query": "warm up", "k": k})
        await http.get(f"{http_base}/v1/search", params={"query": "warm up", "k": k})
        for number, question in enumerate(asked, start=1):
            retriever.embedder.clear_cache()
            started = time.perf_counter()
            retriever.search(question, k=k)
            times["retriever"].append(time.perf_counter() - started)

            retriever.embedder.clear_cache()
            started = time.perf_counter()
            service.search(question, k=k)
            times["service"].append(time.perf_counter() - started)

            started = time.perf_counter()
            answer = await http.get(f"{http_base}/v1/search", params={"query": question, "k": k})
            times["http"].append(time.perf_counter() - started)
            answer.raise_for_status()

            for path, client in (("mcp-http", mcp_http), ("mcp-stdio", mcp_stdio)):
                started = time.perf_counter()
                result = await client.call_tool("search_knowledge", {"query": question, "k": k})
                times[path].append(time.perf_counter() - started)
                if result.is_error:
                    raise SystemExit(f"{path}: {result.content[0].text}")
            if number % 25 == 0:
                print(f"{number}/{len(asked)} questions", file=sys.stderr, flush=True)
    return times


def report(times: dict[str, list[float]]) -> dict:
    rows = {}
    for path in PATHS:
        row = {"p50_ms": 1000 * percentile(times[path], 0.5), "p95_ms": 1000 * percentile(times[path], 0.95)}
        if path in ("http", "mcp-http", "mcp-stdio"):
            overhead = [t - base for t, base in zip(times[path], times["service"])]
            row["overhead_p50_ms"] = 1000 * statistics.median(overhead)
            row["overhead_p95_ms"] = 1000 * percentile(overhead, 0.95)
        rows[path] = row
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path, help="the store to search (an ingested data directory)")
    parser.add_argument(
        "--questions", type=Path, nargs="+", default=DEFAULT_QUESTIONS, help="JSONL files with a question per line"
    )
    parser.add_argument("--limit", type=int, default=200, help="questions asked (each once per path; default 200)")
    parser.add_argument("--k", type=int, default=8, help="passages per search (default 8, the tool's default)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()

    settings = load_settings(data_dir=args.data_dir)
    store = Store(settings)
    if not store.present():
        sys.exit(f"no store at {args.data_dir}: ingest into it first")
    asked = questions(args.questions, args.limit)
    service = KnowledgeService(settings, provider="extractive")
    service.warm_up()
    chunks = store.count()

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    store_options = ["--data-dir", str(args.data_dir), "--agents-dir", str(REPO / "agents"), "--provider", "extractive"]
    with tempfile.TemporaryDirectory(prefix="bench-api-") as scratch, contextlib.ExitStack() as servers:
        token = secrets.token_urlsafe(32)
        tokens = Path(scratch) / "tokens.json"
        tokens.write_text(json.dumps({token: {"user": "bench"}}))
        # one server for /v1/search and another for /mcp: a server asked the same question twice would answer the
        # second time from its memo of query embeddings
        http_base, mcp_base = (servers.enter_context(serving(store_options, tokens, Path(scratch), env)) for _ in "ab")
        stdio = StdioServerParameters(
            command=sys.executable, args=["-m", "rag", "mcp", *store_options], env=env, cwd=scratch
        )
        times = anyio.run(measure, service, asked, args.k, http_base, mcp_base, token, stdio)

    rows = report(times)
    if args.json:
        print(json.dumps({"chunks": chunks, "questions": len(asked), "k": args.k, "paths": rows}))
        return 0
    print(f"{len(asked)} questions, k={args.k}, over {chunks:,} chunks in {args.data_dir} (load average "
          f"{os.getloadavg()[0]:.1f} at the end)")
    print("| path | p50 ms | p95 ms | overhead p50 ms | overhead p95 ms |\n| --- | ---: | ---: | ---: | ---: |")
    for path, row in rows.items():
        overhead = " | "
        if "overhead_p50_ms" in row:
            overhead = f"{row['overhead_p50_ms']:.1f} | {row['overhead_p95_ms']:.1f}"
        print(f"| {LABELS[path]} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {overhead} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
