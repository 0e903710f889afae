"""The small generated corpus the UI tests (AppTest and browser) ingest, and helpers they share.

Each document states facts no other one does, so a test can tell which file an answer came from.
"""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

UI_CORPUS: dict[str, str] = {
    "references/caching.md": """
        ---
        title: Caching patterns
        doc_type: reference
        ---
        # Caching patterns

        ## Cache-aside

        In cache-aside the application reads the cache first; on a miss it loads the row from the database
        and writes it into the cache with a time to live. Writes go to the database and then delete the
        cache key, so the next read fills the cache again. Cache-aside keeps only data that is actually read.

        ```python
        def get_user(user_id):
            cached = redis.get(f"user:{user_id}")
            if cached is not None:
                return json.loads(cached)
            user = db.fetch_user(user_id)
            redis.set(f"user:{user_id}", json.dumps(user), ex=600)
            return user
        ```

        ## Cache stampede

        A cache stampede happens when a hot key expires and hundreds of requests miss at once and all hit
        the database. Request coalescing lets a single request rebuild the key while the others wait, and
        random jitter on the time to live spreads expirations out.
        """,
    "references/circuit-breakers.md": """
        ---
        title: Circuit breakers
        doc_type: reference
        ---
        # Circuit breakers

        ## States

        A circuit breaker wraps calls to a remote dependency. When the failure rate over a sliding window
        crosses a threshold, the breaker opens and calls fail fast without reaching the dependency. After a
        cool-down period the breaker becomes half-open and lets a few trial calls through; if they succeed
        it closes again.

        ```mermaid
        stateDiagram-v2
            [*] --> Closed
            Closed --> Open: failure rate above threshold
            Open --> HalfOpen: cool-down elapsed
            HalfOpen --> Closed: trial calls succeed
            HalfOpen --> Open: trial call fails
        ```

        ## Bulkheads

        Bulkheads give each dependency its own bounded pool of threads or connections, so one slow
        dependency cannot exhaust the resources every other request needs.
        """,
    "team/adr-0007-orders-in-postgresql.md": """
        ---
        title: "ADR 0007: Orders stay in PostgreSQL"
        doc_type: team
        ---
        # ADR 0007: Orders stay in PostgreSQL

        ## Decision

        The order service keeps its data in PostgreSQL 16 with one primary and two streaming replicas,
        because orders need multi-row transactions across order lines, payments and stock reservations.

        ## Consequences

        Reporting queries run on a replica so that they never slow down checkout. Moving orders to
        MongoDB was rejected because it would give up the transactional guarantees the order flow relies on.
        """,
    "team/runbook-kafka-consumer-lag.md": """
        ---
        title: "Runbook: Kafka consumer lag on tracking events"
        doc_type: team
        ---
        # Runbook: Kafka consumer lag on tracking events

        ## Symptoms

        The consumer lag of the tracking-events consumer group grows above fifty thousand messages and the
        parcel tracking page shows positions that are several minutes old.

        ## Actions

        First check whether a consumer instance is stuck in a rebalance loop. Then scale the consumer
        deployment up to the number of partitions, which is twelve for the tracking-events topic.
        """,
}

# confidence (best cosine) on this corpus: about 0.65 for the question, 0.57 for the follow-up once rewritten
# (0.27 as typed), 0.15 off topic; the calibrated abstention threshold is 0.46
ON_TOPIC_QUESTION = "What is a cache stampede and how is it prevented?"
FOLLOW_UP_QUESTION = "and how does jitter help with it?"
OFF_TOPIC_QUESTION = "What is a good recipe for a sourdough bread with a crispy crust?"

# uploaded during the tests: a fact that is in no other document
UPLOAD_NAME = "zephyr-gateway-design.md"
UPLOAD_FACT = "the Zephyr gateway retries each upstream call exactly four times"
UPLOAD_DOC = f"""# Zephyr gateway design

## Retry policy

To keep the payment partners safe, {UPLOAD_FACT}, with a backoff of 250 milliseconds between attempts.
The Zephyr gateway never retries a request that already reached the partner's ledger.
"""
UPLOAD_QUESTION = "How many times does the Zephyr gateway retry an upstream call?"


def write_corpus(root: Path) -> Path:
    for relpath, text in UI_CORPUS.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return root


def copy_agents(target: Path) -> Path:
    """The repository's personas copied to ``target`` (tests may add files there)."""
    target.mkdir(parents=True, exist_ok=True)
    for path in (REPO / "agents").glob("*.md"):
        shutil.copy(path, target / path.name)
    return target


SECOND_PERSONA = """---
name: database-reliability-reviewer
description: Reviews designs for data safety, replication and recovery before anything else.
color: green
---

You are a database reliability engineer. Review every design for data loss, replication lag and recovery
time first, and say which failure you would test before going live.
"""


def app_env(data_dir: Path, agents_dir: Path) -> dict[str, str]:
    """``RAG_*`` variables for the app under test: everything else at its default, no Claude key."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAG_")}
    env.pop("ANTHROPIC_API_KEY", None)
    env.pop("ANTHROPIC_BASE_URL", None)
    env.update(RAG_DATA_DIR=str(data_dir), RAG_AGENTS_DIR=str(agents_dir), HF_HUB_OFFLINE="1")
    if "RAG_MODEL_CACHE" in os.environ:  # the session's model cache (tests/conftest.py)
        env["RAG_MODEL_CACHE"] = os.environ["RAG_MODEL_CACHE"]
    return env
