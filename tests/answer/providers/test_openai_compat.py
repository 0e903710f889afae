"""The OpenAI-compatible provider (Ollama, llama.cpp, vLLM) end to end: ``httpx`` against a local server
speaking ``/v1/chat/completions`` with SSE streaming (``tests/openai_server.py``). Retrieval, the store, the
embedding model and the citation checks are real (the shared mini corpus store)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import free_port
from openai_server import MODEL, Completion, Cut, HTTPFailure, OpenAIServer, StreamError

from rag.answer.answering import Answerer, choose_provider
from rag.answer.events import CitationEvent, Final, ProviderError, StatusEvent, TextDelta
from rag.answer.personas import load_persona
from rag.answer.providers.openai_compat import OpenAICompatibleProvider
from rag.search.retrieval import Retriever

AGENTS = Path(__file__).resolve().parents[3] / "agents"
QUESTION = "How does a token bucket handle bursts?"


@pytest.fixture(scope="module")
def fake_llm():
    with OpenAIServer() as server:
        yield server


@pytest.fixture
def llm(fake_llm: OpenAIServer) -> OpenAIServer:
    fake_llm.reset()
    yield fake_llm
    fake_llm.reset()


@pytest.fixture(scope="module")
def llm_settings(mini_corpus_store, fake_llm):
    settings, _ = mini_corpus_store
    return settings.with_overrides(
        llm_base_url=fake_llm.url, llm_model=MODEL, llm_timeout=5, anthropic_max_retries=1, abstain_threshold=0.3
    )


@pytest.fixture(scope="module")
def retriever(llm_settings, embedder) -> Retriever:
    return Retriever(llm_settings, embedder=embedder)


@pytest.fixture(scope="module")
def persona():
    return load_persona("backend-architecture-expert", AGENTS)


@pytest.fixture
def answerer(llm_settings, retriever, monkeypatch) -> Answerer:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    return Answerer(llm_settings, retriever, choose_provider(llm_settings, retriever))


def run(answerer: Answerer, question: str, persona, history=None):
    events = list(answerer.answer(question, persona, history=history))
    assert isinstance(events[-1], Final)
    return events, events[-1]


def test_streams_a_cited_answer_from_the_numbered_passages(llm, answerer, persona):
    llm.script(Completion("A token bucket refills at a fixed rate and allows short bursts up to its capacity [1]."))
    events, final = run(answerer, QUESTION, persona)
    assert isinstance(answerer.provider, OpenAICompatibleProvider)
    assert (final.provider, final.model) == ("openai-compatible", MODEL)
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 5 and "".join(deltas) == final.answer
    assert final.answer.endswith("capacity [1].")
    assert [c.n for c in final.citations] == [1] and final.citations[0].passage is final.passages[0]
    assert [e.citation.n for e in events if isinstance(e, CitationEvent)] == [1]
    assert final.checks and all(check.supported for check in final.checks), final.checks
    assert final.error is None and not final.incomplete and final.stop_reason == "stop"
    assert final.usage["input_tokens"] > 0 and final.usage["output_tokens"] > 0

    [request] = llm.requests
    body = request.body
    assert body["stream"] is True and body["model"] == MODEL and body["messages"][0]["role"] == "system"
    prompt = request.prompt()
    for n, passage in enumerate(final.passages, start=1):
        assert f"[{n}] {passage.heading}" in prompt
    assert QUESTION in prompt and "[n]" in prompt


def test_doubled_and_invented_markers_never_reach_the_answer(llm, answerer, persona):
    llm.script(Completion("Token buckets allow bursts [1] [1][1], see also [9].", delta_chars=3))
    _, final = run(answerer, QUESTION, persona)
    assert final.answer == "Token buckets allow bursts [1], see also."
    assert [c.n for c in final.citations] == [1]


def test_a_length_finish_marks_the_answer_incomplete(llm, answerer, persona):
    llm.script(Completion("A token bucket refills at a fixed", finish_reason="length"))
    _, final = run(answerer, QUESTION, persona)
    assert final.incomplete and final.stop_reason == "length"
    assert "RAG_LLM_MAX_TOKENS" in final.notes[0]


def test_connection_refused_is_a_clear_error(llm_settings, retriever, persona):
    settings = llm_settings.with_overrides(llm_base_url=f"http://127.0.0.1:{free_port()}/v1")
    _, final = run(Answerer(settings, retriever, OpenAICompatibleProvider(settings)), QUESTION, persona)
    assert final.error.startswith("Cannot reach the LLM") and "running" in final.error


def test_an_unknown_model_names_the_setting(llm_settings, retriever, persona, llm):
    settings = llm_settings.with_overrides(llm_model="llama9:404b")
    _, final = run(Answerer(settings, retriever, OpenAICompatibleProvider(settings)), QUESTION, persona)
    assert "404" in final.error and "RAG_LLM_MODEL" in final.error and "not found" in final.error


def test_a_server_error_is_reported_and_a_busy_server_retried(llm, answerer, persona):
    llm.script(HTTPFailure(500, "CUDA out of memory"))
    _, final = run(answerer, QUESTION, persona)
    assert "500" in final.error and "CUDA out of memory" in final.error and len(llm.requests) == 1

    llm.reset()
    llm.script(HTTPFailure(503, "loading model", {"retry-after": "1"}), Completion("Back [1]."))
    events, final = run(answerer, QUESTION, persona)
    assert final.error is None and final.answer == "Back [1]."
    assert [e.message for e in events if isinstance(e, StatusEvent)] == ["The LLM is busy, retrying in 1 s"]


def test_an_error_in_the_middle_of_the_stream_keeps_the_text_and_says_incomplete(llm, answerer, persona):
    llm.script(StreamError("model crashed", after_chunks=4, completion=Completion("Token buckets refill steadily.")))
    _, final = run(answerer, QUESTION, persona)
    assert final.answer.startswith("Token buckets")
    assert "model crashed" in final.error and "incomplete" in final.error and final.incomplete


def test_a_stream_cut_without_done_is_incomplete(llm, answerer, persona):
    llm.script(Cut(after_chunks=3, completion=Completion("Token buckets refill steadily.")))
    _, final = run(answerer, QUESTION, persona)
    assert final.incomplete and final.answer.startswith("Token")
    assert final.error or final.notes


def test_follow_ups_are_rewritten_and_history_is_sent_without_stale_markers(llm, answerer, persona):
    rewritten = "token bucket rate limiting for a public API in Redis"
    llm.script(Completion(rewritten), Completion("Partition the buckets by API key [1]."))
    history = [
        {"role": "user", "content": "how should we rate-limit our public API?"},
        {"role": "assistant", "content": "Use a token bucket per API key [1]."},
    ]
    _, final = run(answerer, "and in Redis?", persona, history=history)
    assert final.standalone_query == rewritten
    rewrite, generation = llm.requests
    assert not rewrite.body.get("stream")
    turns = [(m["role"], m["content"]) for m in generation.body["messages"][1:-1]]
    assert turns == [("user", history[0]["content"]), ("assistant", "Use a token bucket per API key.")]


def test_citations_are_numbered_in_reading_order_in_the_stream_and_the_final_record(llm, answerer, retriever, persona):
    retrieved = retriever.search(QUESTION, k=answerer.settings.top_k, widen=True).passages
    assert len(retrieved) >= 3
    llm.script(Completion(
        "A token bucket allows short bursts up to its capacity [3]. It refills at a fixed rate [1]. "
        "Both limit the rate [3][1]."
    ))
    events, final = run(answerer, QUESTION, persona)
    assert final.answer == (
        "A token bucket allows short bursts up to its capacity [1]. It refills at a fixed rate [2]. "
        "Both limit the rate [1][2]."
    )
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == final.answer
    # the passages are in the order they are first cited, so that [n] is still passages[n - 1]; the rest follow
    reading_order = [retrieved[2], retrieved[0]] + [p for i, p in enumerate(retrieved) if i not in (0, 2)]
    assert [p.id for p in final.passages] == [p.id for p in reading_order]
    assert [(c.n, c.passage.id) for c in final.citations] == [(1, retrieved[2].id), (2, retrieved[0].id)]
    streamed = [e.citation for e in events if isinstance(e, CitationEvent)]
    assert streamed and all(c.passage is final.passages[c.n - 1] for c in streamed)
    assert [check.cited for check in final.checks] == [[1], [2], [1, 2]]
    assert [c["n"] for c in final.to_dict()["citations"]] == [1, 2]


def test_missing_names_and_the_key_are_sent(llm, llm_settings, retriever, persona):
    settings = llm_settings.with_overrides(llm_api_key="sk-local")
    provider = OpenAICompatibleProvider(settings)
    passages = retriever.search(QUESTION, k=3).passages
    list(provider.generate(QUESTION, QUESTION, [], persona, passages, missing=["Envoy"]))
    [request] = llm.requests
    assert request.headers["authorization"] == "Bearer sk-local"
    assert re.search(r"say nothing about: Envoy", request.prompt())


def test_the_provider_is_chosen_by_its_settings(llm_settings, retriever, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-also-set")
    assert isinstance(choose_provider(llm_settings, retriever), OpenAICompatibleProvider), "local wins"
    with pytest.raises(ProviderError, match="RAG_LLM_MODEL"):
        choose_provider(llm_settings.with_overrides(llm_model=""), retriever, "openai-compatible")
