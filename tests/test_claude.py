"""The Claude path end to end: the real ``anthropic`` SDK against a local server speaking the Messages API.

Only Claude is faked, at the HTTP boundary (``tests/anthropic_server.py``); retrieval, the store, the
embedding model and the citation checks are real (the shared mini corpus store of conftest).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from anthropic_server import (
    AUTH_ERROR,
    OVERLOADED,
    RATE_LIMITED,
    AnthropicServer,
    Block,
    Cite,
    Drop,
    Reply,
    Stall,
    StreamFailure,
    bad_request,
    text_reply,
)

from rag.answering import Answerer, choose_provider
from rag.claude import ClaudeProvider, content_blocks
from rag.events import CitationEvent, ErrorEvent, Final, TextDelta
from rag.extractive import ExtractiveProvider
from rag.personas import load_persona
from rag.retrieval import Retriever, rewrite_follow_up

AGENTS = Path(__file__).resolve().parent.parent / "agents"
KEY = "test-key"
QUESTION = "How does a token bucket handle bursts?"
HISTORY = [
    {"role": "user", "content": "how should we rate-limit our public API?"},
    {"role": "assistant", "content": "Use a token bucket per API key [1]."},
]
FOLLOW_UP = "and how would that work with Kafka?"


@pytest.fixture(scope="module")
def fake_anthropic():
    with AnthropicServer() as server:
        yield server


@pytest.fixture
def server(fake_anthropic: AnthropicServer) -> AnthropicServer:
    fake_anthropic.reset()
    yield fake_anthropic
    fake_anthropic.reset()


@pytest.fixture(scope="module")
def claude_settings(mini_corpus_store, fake_anthropic):
    settings, _ = mini_corpus_store
    # the abstention threshold is calibrated on the real corpus; this 8-document one scores lower overall
    return settings.with_overrides(
        anthropic_base_url=fake_anthropic.url, anthropic_max_retries=1, anthropic_timeout=5, abstain_threshold=0.3
    )


@pytest.fixture(scope="module")
def retriever(claude_settings, embedder) -> Retriever:
    return Retriever(claude_settings, embedder=embedder)


@pytest.fixture(scope="module")
def persona():
    return load_persona("backend-architecture-expert", AGENTS)


@pytest.fixture
def answerer(claude_settings, retriever, monkeypatch) -> Answerer:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    return Answerer(claude_settings, retriever, ClaudeProvider(claude_settings, api_key=KEY))


def run(answerer: Answerer, question: str, persona, history: list[dict] | None = None):
    events = list(answerer.answer(question, persona, history=history))
    assert isinstance(events[-1], Final), f"the stream must end with a Final record, got {events[-1]!r}"
    assert sum(isinstance(e, Final) for e in events) == 1
    return events, events[-1]


def retrieved(retriever: Retriever, settings, query: str):
    """The passages the answerer will send for ``query`` (retrieval is deterministic)."""
    return retriever.search(query, k=settings.top_k, widen=True).passages


def position(passages, source: str, section: str) -> int:
    for index, passage in enumerate(passages):
        if passage.source == source and passage.section == section:
            return index
    raise AssertionError(f"{source} > {section} not retrieved: {[(p.source, p.section) for p in passages]}")


# -- streaming and citations ------------------------------------------------------------------------


def test_streamed_answer_maps_claude_citations_to_markers_and_passages(server, answerer, retriever, persona):
    passages = retrieved(retriever, answerer.settings, QUESTION)
    bucket = position(passages, "references/rate-limiting.md", "Token bucket")
    backpressure = position(passages, "references/message-queues.md", "Backpressure")
    server.script(
        Reply(
            [
                Block("According to the rate limiting notes, "),
                Block(
                    "a token bucket refills at a fixed rate and allows short bursts up to its capacity", [Cite(bucket)]
                ),
                Block(". When a burst outlasts the consumers, "),
                Block(
                    "producers must slow down or shed load as the broker's lag grows",
                    [Cite(backpressure), Cite(bucket)],
                ),
                Block("."),
            ],
            delta_chars=7,
        )
    )
    events, final = run(answerer, QUESTION, persona)

    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 10, "the text must arrive as a stream of small deltas, not in one piece"
    assert "".join(deltas) == final.answer
    b, p = bucket + 1, backpressure + 1
    assert final.answer == (
        "According to the rate limiting notes, a token bucket refills at a fixed rate and allows short bursts up "
        f"to its capacity [{b}]. When a burst outlasts the consumers, producers must slow down or shed load as "
        f"the broker's lag grows [{p}][{b}]."
    )
    assert final.error is None and not final.abstained
    assert (final.provider, final.model) == ("claude", answerer.settings.anthropic_model)
    assert [(p.source, p.section) for p in final.passages] == [(p.source, p.section) for p in passages]

    # every citation points at the passage Claude cited, and quotes what Claude says it cited
    request = server.messages_requests()[-1]
    results = request.search_results()
    streamed = [e.citation for e in events if isinstance(e, CitationEvent)]
    assert [c.n for c in streamed] == [b, p, b]
    assert [c.n for c in final.citations] == [b, p]
    for citation in final.citations:
        assert citation.passage is final.passages[citation.n - 1]
        cited_blocks = results[citation.n - 1]["content"]
        assert citation.quote == cited_blocks[0]["text"].strip()
        assert citation.quote.strip() and " ".join(citation.quote.split()) in " ".join(
            citation.passage.full_text.split()
        )
    assert "token bucket refills" in final.citations[0].quote.lower()
    assert "backpressure" in final.citations[1].passage.heading.lower()
    as_dict = final.to_dict()["citations"][0]
    assert as_dict["source"].endswith("references/rate-limiting.md") and as_dict["quote"] == final.citations[0].quote

    # the claims Claude tied to a passage are checked against it, and these are supported
    assert [check.cited for check in final.checks] == [[b], [p, b]]
    assert all(check.supported for check in final.checks), final.checks
    assert final.timings["generation"] > 0 and final.timings["total"] >= final.timings["retrieval"]


def test_request_sends_cached_persona_and_passages_as_search_results(server, answerer, persona, claude_settings):
    _, final = run(answerer, QUESTION, persona)
    [request] = server.messages_requests()
    body = request.body
    assert request.streaming
    assert request.api_key == KEY
    assert request.headers.get("anthropic-version")
    assert body["model"] == claude_settings.anthropic_model
    assert body["max_tokens"] > 0
    assert "temperature" not in body, "the 2.x API has no temperature parameter"
    assert body["system"] == [{"type": "text", "text": persona.system_prompt, "cache_control": {"type": "ephemeral"}}]
    assert "Grounding rules" in body["system"][0]["text"]

    [message] = body["messages"]
    assert message["role"] == "user"
    *results, instruction = message["content"]
    assert len(results) == len(final.passages) == claude_settings.top_k
    for n, (block, passage) in enumerate(zip(results, final.passages), start=1):
        assert block["type"] == "search_result"
        assert block["citations"] == {"enabled": True}
        assert passage.path in block["source"]
        assert passage.title in block["title"] and f"[{n}]" in block["title"]
        texts = [part["text"] for part in block["content"]]
        assert all(part["type"] == "text" and part["text"].strip() for part in block["content"])
        assert "".join(texts).split() == passage.full_text.split()
    assert instruction["type"] == "text" and QUESTION in instruction["text"]


def test_passages_are_split_into_citable_paragraphs_and_quotes_are_exact(server, answerer, retriever, persona):
    passages = retrieved(retriever, answerer.settings, QUESTION)
    multi = next(i for i, p in enumerate(passages) if len(content_blocks(p.full_text)) >= 2)
    server.script(Reply([Block("Two paragraphs say so", [Cite(multi, 0, 2)]), Block(".")]))
    _, final = run(answerer, QUESTION, persona)
    blocks = server.messages_requests()[-1].search_results()[multi]["content"]
    assert len(blocks) >= 2
    [citation] = final.citations
    assert citation.n == multi + 1 and citation.passage is final.passages[multi]
    assert citation.quote == (blocks[0]["text"] + blocks[1]["text"]).strip()
    assert citation.quote in citation.passage.full_text, "a quote is a verbatim stretch of the passage"
    assert final.answer == f"Two paragraphs say so [{multi + 1}]."


def test_content_blocks_keep_the_text_whole_and_code_fences_intact():
    text = "Intro line\nsecond line\n\n```yaml\na: 1\n\nb: 2\n```\n\n- item one\n- item two\n\nLast."
    blocks = [block["text"] for block in content_blocks(text)]
    assert "".join(blocks) == text
    assert [b.strip() for b in blocks] == [
        "Intro line\nsecond line",
        "```yaml\na: 1\n\nb: 2\n```",
        "- item one\n- item two",
        "Last.",
    ]
    assert content_blocks("one paragraph") == [{"type": "text", "text": "one paragraph"}]


def test_history_is_sent_as_conversation_turns(server, answerer, persona):
    server.script(text_reply("How does a token bucket rate limiter handle bursts?"), Reply([Block("Yes.")]))
    run(answerer, "and what about bursts?", persona, history=HISTORY)
    generation = server.messages_requests()[-1]
    turns = [(m["role"], m["content"]) for m in generation.body["messages"][:-1]]
    assert turns == [(t["role"], t["content"]) for t in HISTORY]
    assert generation.body["messages"][-1]["role"] == "user"


def test_out_of_range_citations_and_invented_markers_never_reach_the_answer(server, answerer, persona):
    server.script(
        Reply(
            [
                Block("Token buckets allow bursts", [Cite(0)]),
                Block(", and so do leaky buckets", [Cite(17, cited_text="a result that was never sent")]),
                Block(" (see [9] and [0])", [Cite(-1, cited_text="negative index")]),
                Block(", per [2]."),
            ],
            delta_chars=3,  # markers are split across deltas: "[", "9]"
        )
    )
    events, final = run(answerer, QUESTION, persona)
    passage_count = len(final.passages)
    assert passage_count < 9
    streamed = "".join(e.text for e in events if isinstance(e, TextDelta))
    for text in (streamed, final.answer):
        assert "[9]" not in text and "[0]" not in text and "[18]" not in text and "[17]" not in text
    assert streamed == final.answer, "what was streamed must be what the final record holds"
    assert "[1]" in final.answer and "[2]" in final.answer
    citations = [e.citation for e in events if isinstance(e, CitationEvent)]
    assert [c.n for c in citations] == [1]
    assert all(1 <= c.n <= passage_count for c in final.citations)
    assert {c.n for c in final.citations} == {1, 2}
    assert all(c.passage is final.passages[c.n - 1] for c in final.citations)


# -- follow-ups ---------------------------------------------------------------------------------------


def test_follow_up_is_rewritten_by_the_llm_and_the_rewrite_is_searched(server, answerer, persona):
    rewritten = "Rate limiting a public API with a token bucket in Redis, fed by Kafka"
    server.script(text_reply(rewritten + "\n"), Reply([Block("Partition by API key.")]))
    _, final = run(answerer, FOLLOW_UP, persona, history=HISTORY)
    rewrite, generation = server.messages_requests()
    assert not rewrite.streaming
    prompt = rewrite.body["messages"][-1]["content"]
    assert FOLLOW_UP in prompt and HISTORY[0]["content"] in prompt
    assert generation.streaming
    assert final.standalone_query == rewritten
    assert final.question == FOLLOW_UP
    assert final.passages[0].source == "references/rate-limiting.md"
    assert final.to_dict()["standalone_query"] == rewritten
    # the user's own words go to Claude; the rewrite only drives the search
    assert FOLLOW_UP in generation.body["messages"][-1]["content"][-1]["text"]


def test_follow_up_falls_back_to_the_deterministic_rewrite_when_the_llm_fails(server, answerer, persona):
    server.script(bad_request("prompt is too long"), Reply([Block("Partition by API key.")]))
    _, final = run(answerer, FOLLOW_UP, persona, history=HISTORY)
    assert final.standalone_query == rewrite_follow_up(FOLLOW_UP, [HISTORY[0]["content"]])
    assert "rate-limit" in final.standalone_query and "kafka" in final.standalone_query.lower()
    assert final.error is None and len(server.messages_requests()) == 2


# -- errors ---------------------------------------------------------------------------------------------

ERROR_CASES = {
    "bad key": ([AUTH_ERROR], 1, ["API key", "401"]),
    "rate limited": ([RATE_LIMITED, RATE_LIMITED], 2, ["429", "rate"]),
    "overloaded": ([OVERLOADED, OVERLOADED], 2, ["overloaded"]),
    "refused": ([bad_request("messages.0.content: too many search results")], 1, ["400", "too many search results"]),
    "dropped before answering": ([Drop(), Drop()], 2, ["network"]),
    "dropped mid-stream": (
        [Drop(after_events=8, reply=Reply([Block("Token buckets refill at a fixed rate.")], delta_chars=4))],
        1,
        ["network"],
    ),
    "overloaded mid-stream": (
        [StreamFailure(OVERLOADED, after_events=5, reply=Reply([Block("Token buckets")]))],
        1,
        ["overloaded"],
    ),
}


@pytest.mark.parametrize("case", ERROR_CASES, ids=list(ERROR_CASES))
def test_errors_become_a_readable_message_and_the_conversation_goes_on(case, server, answerer, persona):
    responses, attempts, words = ERROR_CASES[case]
    server.script(*responses)
    events, final = run(answerer, QUESTION, persona)
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert len(errors) == 1, events
    message = errors[0].message
    for word in words:
        assert word.lower() in message.lower(), message
    assert "Traceback" not in message
    assert final.error == message
    assert final.question == QUESTION and final.passages and not final.abstained
    assert len(server.messages_requests()) == attempts, "retried on 429/529/network only, max_retries=1"
    assert server.pending == 0
    assert all(1 <= c.n <= len(final.passages) for c in final.citations)
    if case == "dropped mid-stream":
        assert final.answer.startswith("Token buckets"), "the text that did arrive is kept"

    # the same answerer carries on with the next question
    server.script(Reply([Block("A token bucket allows short bursts", [Cite(0)]), Block(".")]))
    _, after = run(answerer, QUESTION, persona)
    assert after.error is None and "[1]" in after.answer


def test_retries_honour_the_configured_count(server, claude_settings, retriever, persona):
    settings = claude_settings.with_overrides(anthropic_max_retries=2)
    answerer = Answerer(settings, retriever, ClaudeProvider(settings, api_key=KEY))
    server.script(OVERLOADED, RATE_LIMITED, Reply([Block("Recovered", [Cite(0)])]))
    events, final = run(answerer, QUESTION, persona)
    assert final.error is None and final.answer == "Recovered [1]"
    assert not [e for e in events if isinstance(e, ErrorEvent)]
    assert len(server.messages_requests()) == 3


def test_a_stalled_stream_times_out_with_a_clear_message(server, claude_settings, retriever, persona):
    settings = claude_settings.with_overrides(anthropic_timeout=0.5, anthropic_max_retries=0)
    answerer = Answerer(settings, retriever, ClaudeProvider(settings, api_key=KEY))
    server.script(Stall(2.0, after_events=6, reply=Reply([Block("Token buckets refill.")], delta_chars=3)))
    events, final = run(answerer, QUESTION, persona)
    assert final.error and "in time" in final.error
    assert [e.message for e in events if isinstance(e, ErrorEvent)] == [final.error]


def test_a_wrong_key_from_the_environment_is_reported(server, claude_settings, retriever, persona, monkeypatch):
    server.valid_keys = {KEY}
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-wrong")
    provider = choose_provider(claude_settings, retriever)
    assert isinstance(provider, ClaudeProvider)
    _, final = run(Answerer(claude_settings, retriever, provider), QUESTION, persona)
    assert server.messages_requests()[0].api_key == "sk-wrong"
    assert final.error and "API key" in final.error

    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    server.script(Reply([Block("Fine", [Cite(0)])]))
    _, final = run(Answerer(claude_settings, retriever, choose_provider(claude_settings, retriever)), QUESTION, persona)
    assert final.error is None and final.answer == "Fine [1]"


def test_without_a_key_the_extractive_provider_is_chosen(claude_settings, retriever, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert isinstance(choose_provider(claude_settings, retriever), ExtractiveProvider)
    assert isinstance(choose_provider(claude_settings, retriever, "claude"), ClaudeProvider)
    with pytest.raises(ValueError, match="unknown provider"):
        choose_provider(claude_settings, retriever, "gpt")


def test_an_off_topic_question_abstains_without_calling_claude(server, answerer, persona):
    events, final = run(answerer, "What is the best recipe for banana bread?", persona)
    assert final.abstained and "does not cover" in final.answer
    assert server.requests == []
    assert not final.citations
