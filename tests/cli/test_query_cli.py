"""The query commands as other tools script them: ``python -m rag search|ask|eval``.

The output formats other tools depend on are checked on real subprocesses. Each pays a few seconds of
imports, so they all start at once in one module fixture (they only read the shared mini corpus store);
the quick checks run ``rag.cli.main.main`` in process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from anthropic_server import AnthropicServer, Block, Cite, Reply
from conftest import clean_env

from rag.cli import main as cli

REPO = Path(__file__).resolve().parents[2]
PASSAGE_KEYS = {"source", "title", "section", "text", "score"}
CITATION_KEYS = {"n", "source", "title", "section", "quote"}
QUESTION = "How does a token bucket handle bursts?"

BATCH = [
    {"id": "q1", "question": "How does a token bucket handle bursts?"},
    {"id": "q2", "question": "Where do reporting queries run?"},
    {"id": "q3", "question": "What must a consumer do when a message can arrive twice?"},
]
EVAL_QUESTIONS = [
    {
        "id": "bucket",
        "question": "How does a token bucket handle bursts of requests?",
        "sources": ["references/rate-limiting.md"],
    },
    {
        "id": "outbox",
        "question": "How are order events published to Kafka reliably?",
        "sources": ["team/adr-0002-outbox-for-events.md"],
    },
    {"id": "off-topic", "question": "What is the best recipe for banana bread?", "sources": []},
]


ASKS = [
    {"id": "a1", "question": QUESTION},
    {
        "id": "a2",
        "question": "and what happens to them in RabbitMQ?",
        "history": [
            {"role": "user", "content": "How are order events published to Kafka reliably?"},
            {"role": "assistant", "content": "Through a transactional outbox [1]."},
        ],
    },
    {"id": "a3", "question": "What is the best recipe for banana bread?"},
]


@pytest.fixture(scope="module")
def runs(mini_corpus_store, tmp_path_factory):
    """Starts every command concurrently; returns ``{name: CompletedProcess}``."""
    settings, _ = mini_corpus_store
    work = tmp_path_factory.mktemp("query-cli")  # not the repo: no .env or agents/ picked up by accident
    batch = work / "batch.jsonl"
    batch.write_text("\n".join(json.dumps(row) for row in BATCH) + "\n", encoding="utf-8")
    questions = work / "questions.jsonl"
    questions.write_text("\n".join(json.dumps(row) for row in EVAL_QUESTIONS) + "\n", encoding="utf-8")
    asks = work / "asks.jsonl"
    asks.write_text("\n".join(json.dumps(row) for row in ASKS) + "\n", encoding="utf-8")
    store = ["--data-dir", str(settings.data_dir)]
    agents = ["--agents-dir", str(REPO / "agents")]
    commands = {
        "batch": ["search", "--batch", str(batch), "--k", "3", *store],
        "ask": ["ask", QUESTION, "--json", "--provider", "extractive", *agents, *store],
        "ask-text": ["ask", QUESTION, "--provider", "extractive", *agents, *store],
        "ask-claude": ["ask", QUESTION, "--json", "--provider", "claude", *agents, *store],
        "eval": ["eval", "--questions", str(questions), "--json", *store],
        "ask-batch": ["ask", "--batch", str(asks), "--provider", "extractive", *agents, *store],
    }
    with AnthropicServer() as server:
        server.script(Reply([Block("A token bucket allows short bursts", [Cite(0)]), Block(".")]))
        env = clean_env(
            ANTHROPIC_API_KEY="test-key",
            RAG_ANTHROPIC_BASE_URL=server.url,
            RAG_ANTHROPIC_MAX_RETRIES="0",
            RAG_ANTHROPIC_TIMEOUT="20",
        )
        env.pop("ANTHROPIC_BASE_URL", None)
        started = time.perf_counter()
        processes = {
            name: subprocess.Popen(
                [sys.executable, "-m", "rag", *args],
                cwd=work,
                env=env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for name, args in commands.items()
        }
        results = {}
        for name, process in processes.items():
            try:
                stdout, stderr = process.communicate(timeout=240)
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
            results[name] = subprocess.CompletedProcess(commands[name], process.returncode, stdout, stderr)
        results["_requests"] = list(server.messages_requests())
        results["_seconds"] = time.perf_counter() - started
    return results


def output(run: subprocess.CompletedProcess) -> dict:
    assert run.returncode == 0, f"exit {run.returncode}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1, f"--json prints exactly one line:\n{run.stdout}"
    return json.loads(lines[0])


def test_search_json(mini_corpus_store, capsys):
    """In process (the entry point itself is exercised by the subprocesses below)."""
    settings, _ = mini_corpus_store
    assert cli.main(["search", "token bucket bursts", "--json", "--k", "4", "--data-dir", str(settings.data_dir)]) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1
    data = json.loads(out)
    assert data["query"] == "token bucket bursts" and 0 < data["confidence"] <= 1
    retrieved = data["retrieved"]
    assert 1 <= len(retrieved) <= 4
    assert all(PASSAGE_KEYS <= set(row) for row in retrieved)
    assert retrieved[0]["source"].endswith("references/rate-limiting.md")
    assert "token bucket" in retrieved[0]["text"].lower()
    scores = [row["score"] for row in retrieved]
    assert scores == sorted(scores, reverse=True)
    code = cli.main(
        ["search", "token bucket bursts", "--json", "--doc-type", "team", "--data-dir", str(settings.data_dir)]
    )
    assert code == 0
    team = json.loads(capsys.readouterr().out)["retrieved"]
    assert team and all(row["doc_type"] == "team" and "/team/" in row["source"] for row in team)


def test_search_batch_writes_one_jsonl_line_per_question(runs):
    run = runs["batch"]
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.strip().splitlines()]
    assert [line["id"] for line in lines] == ["q1", "q2", "q3"]
    for line in lines:
        assert set(line) == {"id", "retrieved"}
        assert 1 <= len(line["retrieved"]) <= 3
        assert all(PASSAGE_KEYS <= set(row) for row in line["retrieved"])
        scores = [row["score"] for row in line["retrieved"]]
        assert scores == sorted(scores, reverse=True)
    expected = ["references/rate-limiting.md", "team/adr-0001-postgres-for-orders.md", "references/message-queues.md"]
    assert [line["retrieved"][0]["source"].split("corpus/")[-1] for line in lines] == expected


def test_ask_says_after_the_answer_that_it_is_an_offline_one(runs):
    run = runs["ask-text"]
    assert run.returncode == 0, run.stderr
    answer, after = run.stdout.split("\nnote: ", 1)
    assert "See also: " in answer and "language model" not in answer
    assert after.startswith("offline answer: quoted from the knowledge base, no language model\n")
    assert "\n[1] " in after  # then the sources


def test_ask_json_with_the_extractive_provider(runs):
    data = output(runs["ask"])
    assert {"answer", "citations", "abstained", "provider", "timings"} <= set(data)
    assert data["provider"] == "extractive" and data["abstained"] is False
    # it ends with the sections it used; that it is an offline answer is said beside it, not in it
    assert data["provider_note"] == "offline answer: quoted from the knowledge base, no language model"
    assert "\n" not in data["answer"].rsplit("\nSee also: ", 1)[1] and "language model" not in data["answer"]
    assert data["citations"] and all(CITATION_KEYS <= set(c) for c in data["citations"])
    first = data["citations"][0]
    assert first["n"] == 1 and first["source"].endswith("references/rate-limiting.md")
    assert first["quote"] in data["answer"] and f"[{first['n']}]" in data["answer"]
    assert {"retrieval", "generation", "total"} <= set(data["timings"])
    assert data["unsupported"] == [] and data["error"] is None


def test_ask_batch_answers_every_line_with_its_id(runs):
    run = runs["ask-batch"]
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.strip().splitlines()]
    assert [line["id"] for line in lines] == ["a1", "a2", "a3"]
    assert all({"answer", "citations", "abstained", "standalone_query", "notes"} <= set(line) for line in lines)
    first, follow_up, off_topic = lines
    assert first["citations"] and not first["abstained"]
    # the follow-up is searched with the words of the last turn, not as asked
    assert follow_up["standalone_query"] != "and what happens to them in RabbitMQ?"
    assert "order" in follow_up["standalone_query"].lower()
    assert off_topic["abstained"] and not off_topic["citations"]


def test_ask_json_with_claude_against_the_local_api(runs):
    data = output(runs["ask-claude"])
    assert data["provider"] == "claude" and data["error"] is None
    assert data["provider_note"] == ""  # the model's name says what made it
    assert data["answer"] == "A token bucket allows short bursts [1]."
    [citation] = data["citations"]
    assert citation["n"] == 1 and citation["source"].endswith("references/rate-limiting.md")
    assert "token bucket" in citation["quote"].lower()
    [request] = runs["_requests"]
    assert request.streaming and request.api_key == "test-key"
    assert request.body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert request.search_results() and all(r["citations"] == {"enabled": True} for r in request.search_results())


def test_ask_numbers_sources_in_reading_order_in_json_and_text(mini_corpus_store, embedder, tmp_path):
    """Claude cites the third result first: it is [1] in the answer, first in the citations and the source list."""
    from rag.search.retrieval import Retriever

    settings, _ = mini_corpus_store
    retrieved = Retriever(settings, embedder=embedder).search(QUESTION, k=settings.top_k, widen=True).passages
    third, first = retrieved[2].path, retrieved[0].path
    reply = Reply([Block("The third result says one thing", [Cite(2)]), Block(" and the first another", [Cite(0)]),
                   Block(".")])
    with AnthropicServer() as server:
        env = clean_env(ANTHROPIC_API_KEY="test-key", RAG_ANTHROPIC_BASE_URL=server.url, RAG_ANTHROPIC_MAX_RETRIES="0")
        env.pop("ANTHROPIC_BASE_URL", None)
        store = ["--data-dir", str(settings.data_dir), "--agents-dir", str(REPO / "agents"), "--provider", "claude"]
        server.script(reply)
        as_json = subprocess.run([sys.executable, "-m", "rag", "ask", QUESTION, "--json", *store], cwd=tmp_path,
                                 env=env, text=True, capture_output=True, timeout=240)
        server.script(reply)
        as_text = subprocess.run([sys.executable, "-m", "rag", "ask", QUESTION, *store], cwd=tmp_path, env=env,
                                 text=True, capture_output=True, timeout=240)
    data = output(as_json)
    assert data["answer"] == "The third result says one thing [1] and the first another [2]."
    assert [(c["n"], c["source"]) for c in data["citations"]] == [(1, third), (2, first)]
    assert as_text.returncode == 0, as_text.stderr
    answer, sources = as_text.stdout.split("\n\n", 1)
    assert answer == data["answer"]
    assert sources.strip().splitlines() == [
        f"[1] {retrieved[2].heading} ({third})",
        f"[2] {retrieved[0].heading} ({first})",
    ]


def test_eval_json_has_every_metric_for_every_mode(runs):
    report = output(runs["eval"])
    assert report["questions"] == 3 and report["answerable"] == 2
    assert set(report["modes"]) == {"dense", "keyword", "hybrid"}
    for metrics in report["modes"].values():
        assert set(metrics) == {"hit@1", "hit@3", "hit@5", "mrr@10", "ndcg@10"}
    assert report["modes"]["hybrid"]["hit@1"] == 1.0
    abstention = report["abstention"]
    assert abstention["unanswerable"] == 1 and abstention["accuracy_on_unanswerable"] == 1.0
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p95"]


def test_an_unknown_persona_is_a_usage_error_that_lists_the_personas(mini_corpus_store, capsys):
    settings, _ = mini_corpus_store
    code = cli.main(
        [
            "ask",
            QUESTION,
            "--persona",
            "nobody",
            "--agents-dir",
            str(REPO / "agents"),
            "--data-dir",
            str(settings.data_dir),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "nobody" in err and "backend-architecture-expert" in err


def test_search_needs_a_query_or_a_batch(mini_corpus_store, capsys):
    settings, _ = mini_corpus_store
    assert cli.main(["search", "--data-dir", str(settings.data_dir)]) == 2
    assert "--batch" in capsys.readouterr().err


# -- batch files are checked whole before anything is searched (issue 24, fault 8) --------------------


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"id": 1, "question": null}', "'question' must be a non-empty text"),
        ('{"id": 1, "question": 123}', "'question' must be a non-empty text"),
        ('{"id": 1, "question": "   "}', "'question' must be a non-empty text"),
        ('{"id": 1, "question": ["a"]}', "'question' must be a non-empty text"),
        ('{"question": "no id"}', "missing 'id'"),
        ('[1, 2]', "not a JSON object"),
        ("{not json", "not valid JSON"),
    ],
)
@pytest.mark.parametrize("command", ["search", "ask"])
def test_a_bad_batch_line_is_refused_before_any_result(mini_corpus_store, tmp_path, capsys, command, line, reason):
    settings, _ = mini_corpus_store
    batch = tmp_path / "batch.jsonl"
    batch.write_text('{"id": "good", "question": "How does a token bucket handle bursts?"}\n' + line + "\n")
    extra = ["--provider", "extractive", "--agents-dir", str(REPO / "agents")] if command == "ask" else []
    code = cli.main([command, "--batch", str(batch), *extra, "--data-dir", str(settings.data_dir)])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_USAGE, err
    assert out == ""  # the good first line was not answered: the file is refused whole
    assert f"{batch}:2:" in err and reason in err and "Traceback" not in err
