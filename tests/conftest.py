"""Shared fixtures: the real embedding model (loaded once), isolated settings, sample corpora, a small
ingested store, subprocess runners for the command line, and a real ``chroma run`` server.

Everything is real: no mocks. Fixtures that other test files are expected to reuse:

- ``embedder`` (session): one ``Embedder`` for the whole run; its model loads on first use.
- ``MODEL_CACHE``: one model cache for the session (``RAG_MODEL_CACHE``, also handed to subprocesses), so the
  int8 ONNX graph is built once per run rather than once per temporary data directory.
- ``settings``: ``Settings`` with ``data_dir`` under ``tmp_path``, untouched by ``RAG_*`` variables or a ``.env``.
- ``write_docs``: writes ``{relative path: text}`` under a folder (str or bytes values).
- ``sample_corpus``: a small mixed corpus (references/ and team docs) under ``tmp_path/"corpus"``.
- ``mini_corpus_store`` (session): ``(settings, corpus_path)`` of 8 short docs already ingested.
- ``shipped_store`` (session): ``(settings, retriever)`` of the shipped ``corpus/`` ingested once (the slowest).
- ``run_rag`` / ``run_python``: run ``python -m rag ...`` or a script in a clean subprocess.
- ``store_state`` / ``assert_store_consistent``: what the store holds, and that it matches its manifest.
- ``chroma_server`` (session): ``(host, port)`` of a real ``chroma run`` server on a free port.
- ``load_in_a_box``: loads one file in a child process held to a memory limit, with a hang guard.
- ``hang_guard(seconds)``: fails the test when the code inside takes longer (a guard, never a speed test).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.config import DEFAULT_BACKEND, Settings
from rag.index.embedding import Embedder
from rag.index.store import Store
from rag.ingest.pipeline import ingest
from rag.search.retrieval import Retriever

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
MODEL_CACHE = Path(tempfile.mkdtemp(prefix="rag-test-models-"))
os.environ["RAG_MODEL_CACHE"] = str(MODEL_CACHE)  # Settings made without make_settings share it too


def pytest_sessionfinish(session, exitstatus) -> None:
    shutil.rmtree(MODEL_CACHE, ignore_errors=True)


# -- settings ---------------------------------------------------------------------------------------


def make_settings(data_dir: Path, **values) -> Settings:
    """Settings that ignore the developer's ``RAG_*`` variables and ``.env``; ``values`` override."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("RAG_"):
                patch.delenv(name)
        values.setdefault("model_cache", MODEL_CACHE)
        return Settings(_env_file=None, data_dir=data_dir, **values)


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The real default model and backend, shared by the whole session (the encoder loads on first ``embed``)."""
    return Embedder(backend=DEFAULT_BACKEND, cache_dir=MODEL_CACHE)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data", lock_timeout=2.0)


# -- sample documents -------------------------------------------------------------------------------


def write_tree(root: Path, docs: dict[str, str | bytes]) -> Path:
    """Writes ``{relative path: content}`` under ``root`` (text is dedented and UTF-8 encoded)."""
    for relpath, content in docs.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content).lstrip("\n"), encoding="utf-8")
    return root


@pytest.fixture
def write_docs():
    return write_tree


def pdf_bytes(pages: list[str], title: str = "", password: str | None = None) -> bytes:
    """A real PDF (reportlab), one string per page (lines split on newlines), optionally encrypted (pypdf)."""
    import io

    from reportlab.pdfgen import canvas

    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer)
    if title:
        pdf.setTitle(title)
    for page in pages:
        y = 760
        for line in page.splitlines():
            pdf.drawString(72, y, line)
            y -= 16
        pdf.showPage()
    pdf.save()
    if password is None:
        return buffer.getvalue()
    from pypdf import PdfWriter

    writer = PdfWriter(clone_from=io.BytesIO(buffer.getvalue()))
    writer.encrypt(user_password=password, owner_password=password + "-owner")
    encrypted = io.BytesIO()
    writer.write(encrypted)
    return encrypted.getvalue()


def docx_bytes(title: str | None, blocks: list[tuple[str, object]]) -> bytes:
    """A real DOCX (python-docx): ``blocks`` of ("h1".."h3", text), ("p", text) or ("table", rows)."""
    import io

    import docx

    document = docx.Document()
    if title:
        document.add_heading(title, level=0)
    for kind, value in blocks:
        if kind.startswith("h"):
            document.add_heading(str(value), level=int(kind[1:]))
        elif kind == "p":
            document.add_paragraph(str(value))
        elif kind == "table":
            rows = list(value)  # type: ignore[arg-type]
            table = document.add_table(rows=len(rows), cols=len(rows[0]))
            for r, row in enumerate(rows):
                for c, cell in enumerate(row):
                    table.cell(r, c).text = str(cell)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


@pytest.fixture
def make_pdf():
    return pdf_bytes


@pytest.fixture
def make_docx():
    return docx_bytes


CACHING_MD = """
---
title: Caching strategies
tags: [caching, redis]
updated: 2024-03-01
---
# Caching strategies

A cache keeps hot data close to the service so that reads avoid the database.

## Invalidation

Stale entries are the main risk of a cache; every strategy trades freshness for load.

### Write-through

The service writes to the cache and the database in the same request, so the cache is never stale.

```python
def save(user):
    db.save(user)
    cache.set(f"user:{user.id}", user, ttl=300)
```

### Cache-aside

The service reads the cache first and on a miss loads from the database and fills the cache.

## Eviction

| policy | evicts | good for |
| --- | --- | --- |
| LRU | least recently used | general workloads |
| LFU | least frequently used | skewed popularity |
| TTL | expired entries | data with a known shelf life |
"""

MINI_CORPUS: dict[str, str] = {
    "references/caching.md": CACHING_MD,
    "references/message-queues.md": """
        ---
        title: Message queues and backpressure
        tags: [queues, kafka]
        ---
        # Message queues and backpressure

        A message queue decouples producers from consumers and absorbs bursts of traffic.

        ## Delivery guarantees

        At-least-once delivery means consumers must be idempotent: a message can arrive twice.

        ## Backpressure

        When consumers fall behind, the broker's lag grows; producers must slow down or shed load.

        ```yaml
        consumer:
          max_poll_records: 500
          enable_auto_commit: false
        ```
        """,
    "references/database-indexing.md": """
        ---
        title: Database indexing
        tags: [postgres, indexes]
        ---
        # Database indexing

        ## B-tree indexes

        A B-tree index keeps keys sorted, serving equality and range queries in logarithmic time.

        ## Composite indexes

        Column order matters: an index on (tenant_id, created_at) serves filters on tenant_id alone,
        never on created_at alone.
        """,
    "references/rate-limiting.md": """
        ---
        title: Rate limiting
        tags: [api, redis]
        ---
        # Rate limiting

        ## Token bucket

        A token bucket refills at a fixed rate and allows short bursts up to its capacity.

        ## Sliding window

        A sliding window counter in Redis smooths the edge effects of fixed windows.
        """,
    "team/adr-0001-postgres-for-orders.md": """
        ---
        title: "ADR 0001: PostgreSQL for the order service"
        tags: [adr, postgres]
        updated: 2024-06-10
        ---
        # ADR 0001: PostgreSQL for the order service

        ## Context

        Orders need multi-row transactions and strong consistency across order lines and payments.

        ## Decision

        We use PostgreSQL 16 with one primary and two streaming replicas.

        ## Consequences

        Reporting queries run on a replica so that they never slow down checkout.
        """,
    "team/adr-0002-outbox-for-events.md": """
        ---
        title: "ADR 0002: Transactional outbox for order events"
        tags: [adr, events]
        ---
        # ADR 0002: Transactional outbox for order events

        ## Decision

        The order service writes events to an outbox table in the same transaction as the order;
        a relay publishes them to Kafka and marks them sent.
        """,
    "team/payments-service.md": """
        # Payments service design

        ## Retries

        Calls to the card processor are retried three times with exponential backoff and jitter,
        always with the same idempotency key.

        ## Timeouts

        | call | timeout |
        | --- | --- |
        | authorize | 5 s |
        | capture | 10 s |
        """,
    "team/oncall-runbook.txt": """
        On-call runbook for the checkout platform.

        When the error rate of checkout exceeds two percent for five minutes, page the on-call engineer.
        First check the payment processor status page, then the database replication lag dashboard.
        """,
}


@pytest.fixture
def sample_corpus(tmp_path: Path) -> Path:
    """The mini corpus written under ``tmp_path/"corpus"`` (4 references, 4 team docs)."""
    return write_tree(tmp_path / "corpus", MINI_CORPUS)


@pytest.fixture(scope="session")
def mini_corpus_store(tmp_path_factory, embedder) -> tuple[Settings, Path]:
    """The mini corpus ingested once for the session into its own data dir: ``(settings, corpus_path)``.

    Read it, never write to it (other tests share it)."""
    base = tmp_path_factory.mktemp("mini-store")
    corpus = write_tree(base / "corpus", MINI_CORPUS)
    settings = make_settings(base / "data")
    report = ingest([corpus], settings, embedder=embedder)
    assert not report.files_failed, report.files_failed
    assert report.files_added == len(MINI_CORPUS)
    return settings, corpus


@pytest.fixture(scope="session")
def shipped_store(tmp_path_factory, embedder) -> tuple[Settings, Retriever]:
    """``corpus/`` ingested once into a session directory: ``(settings, retriever)``. Read it, never write to it."""
    settings = make_settings(tmp_path_factory.mktemp("shipped-corpus") / "data")
    report = ingest([REPO / "corpus"], settings, embedder=embedder)
    assert not report.files_failed, report.files_failed
    assert report.files_added >= 60
    return settings, Retriever(settings, embedder=embedder)


# -- store inspection -------------------------------------------------------------------------------


def store_state(settings: Settings) -> tuple[dict[str, str], dict[str, tuple]]:
    """``({chunk id: source_key}, {manifest key: (file_hash, chunk_count, complete, doc_type)})``."""
    store = Store(settings)
    chunks: dict[str, str] = {}
    if store.exists():
        for ids, _texts, metadatas in store.iter_all():
            chunks.update({i: m["source_key"] for i, m in zip(ids, metadatas)})
    manifest = {key: (r.file_hash, r.chunk_count, r.complete, r.doc_type) for key, r in store.file_records().items()}
    return chunks, manifest


def assert_store_consistent(settings: Settings) -> tuple[dict[str, str], dict[str, tuple]]:
    """Every manifest entry is complete and owns exactly ``chunk_count`` chunks; no chunk is orphaned."""
    chunks, manifest = store_state(settings)
    assert all(entry[2] for entry in manifest.values()), f"incomplete manifest entries: {manifest}"
    per_source: dict[str, int] = {}
    for source_key in chunks.values():
        per_source[source_key] = per_source.get(source_key, 0) + 1
    assert set(per_source) <= set(manifest), f"orphan chunks of {set(per_source) - set(manifest)}"
    assert {key: count for key, count in per_source.items()} == {
        key: entry[1] for key, entry in manifest.items() if entry[1]
    }
    assert Store(settings).count() == sum(entry[1] for entry in manifest.values())
    return chunks, manifest


@pytest.fixture
def check_store():
    """``check_store(settings)`` asserts the store matches its manifest and returns ``store_state``."""
    return assert_store_consistent


# -- subprocesses -----------------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess: no ``RAG_*`` leaking in, the repo importable, offline."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAG_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env["RAG_MODEL_CACHE"] = str(MODEL_CACHE)
    env.update(extra)
    return env


def run_python(args: list[str], cwd: Path, timeout: float = 180, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=kwargs.pop("env", clean_env()),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def run_rag(*args: str, cwd: Path, timeout: float = 180, **kwargs) -> subprocess.CompletedProcess:
    """``python -m rag ARGS`` in ``cwd``; returns the completed process (stdout, stderr, returncode)."""
    return run_python(["-m", "rag", *map(str, args)], cwd, timeout, **kwargs)


@pytest.fixture(name="run_rag")
def run_rag_fixture():
    return run_rag


@pytest.fixture(name="run_python")
def run_python_fixture():
    return run_python


def parse_json_output(process: subprocess.CompletedProcess) -> dict:
    assert process.stdout.strip(), f"no output; stderr:\n{process.stderr}"
    return json.loads(process.stdout.strip().splitlines()[-1])


class Hung(Exception):
    """Raised inside code that ran past its ``hang_guard``."""


@contextlib.contextmanager
def hang_guard(seconds: int, what: str = "the code") -> Iterator[None]:
    """Fails the test when the block runs longer than ``seconds``: a guard against the quadratic or worse
    (minutes on a hostile input), generous enough never to trip on linear work; never a speed assertion.
    Python's regex engine checks for signals, so a runaway pattern is interrupted too."""

    def expire(signum, frame):
        raise Hung(f"{what} ran past the {seconds} s hang guard")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    except Hung as hung:
        pytest.fail(str(hung))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


BOXED_LOAD = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path
    limit = int(sys.argv[3]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from rag.config import Settings
    from rag.documents.discovery import SourceFile
    from rag.documents.errors import LoadError
    from rag.documents.loading import load
    path, root = Path(sys.argv[1]), Path(sys.argv[2])
    ref = SourceFile(path, root.name, path.relative_to(root).as_posix(), root.as_posix())
    try:
        document = load(ref, Settings(_env_file=None).max_file_bytes)
    except LoadError as error:
        print(json.dumps({"error": str(error)}))
    else:
        print(json.dumps({"chars": len(document.text), "title": document.title[:200]}))
    """
)


def load_in_a_box(path: Path, root: Path | None = None, memory_mb: int = 1024, timeout: float = 60) -> dict:
    """Loads ``path`` (found under ``root``) with the default settings in a child process held to ``memory_mb``
    of address space; ``timeout`` is a hang guard, not a speed test. Returns ``{"error": reason}`` or
    ``{"chars", "title"}``; a child that runs out of memory, crashes or hangs fails the test."""
    root = root or path.parent
    command = [sys.executable, "-c", BOXED_LOAD, str(path), str(root), str(memory_mb)]
    try:
        done = subprocess.run(command, env=clean_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"loading {path.name} did not finish in {timeout:g} s")
    assert done.returncode == 0, f"loading {path.name} failed: {done.stderr[-2000:]}"
    return json.loads(done.stdout)


# -- chroma server ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serving(command: list[str], health_url: str, log_path: Path, timeout: float, **popen) -> Iterator[None]:
    """Runs a server process until ``health_url`` answers 200, yields, then stops it (kills if it hangs)."""
    name = Path(command[0]).name if command[0] != sys.executable else command[2]
    with log_path.open("w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, **popen)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                pytest.fail(f"{name} exited with {server.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(health_url, timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{name} did not answer in {timeout:g} s:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory) -> Iterator[tuple[str, int]]:
    """A real ``chroma run`` on a free port for the session: ``(host, port)``; stopped at the end."""
    binary = Path(sys.executable).parent / "chroma"
    if not binary.exists():
        pytest.fail(f"the chroma server binary is missing at {binary} (install chromadb in the venv)")
    path = tmp_path_factory.mktemp("chroma-server")
    port = free_port()
    command = [str(binary), "run", "--path", str(path / "db"), "--host", "127.0.0.1", "--port", str(port)]
    health = f"http://127.0.0.1:{port}/api/v2/heartbeat"
    with serving(command, health, path / "server.log", 60, env=clean_env()):
        yield "127.0.0.1", port
