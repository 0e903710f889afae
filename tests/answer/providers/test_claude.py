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
    SPEND_LIMIT,
    AnthropicServer,
    Block,
    Cite,
    Drop,
    Failure,
    Reply,
    Stall,
    StreamFailure,
    bad_request,
    text_reply,
)

from rag.answer.answering import Answerer, choose_provider
from rag.answer.events import CitationEvent, ErrorEvent, Final, ProviderError, StatusEvent, TextDelta
from rag.answer.personas import load_persona
from rag.answer.providers.claude.client import ClaudeProvider, content_blocks
from rag.answer.providers.extractive import ExtractiveProvider
from rag.search.followups import rewrite_follow_up
from rag.search.retrieval import Retriever

AGENTS = Path(__file__).resolve().parents[3] / "agents"
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
    rejected = [message for _, _, message in fake_anthropic.rejected]
    fake_anthropic.reset()
    assert not rejected, f"the API would have refused our requests: {rejected}"


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
    # markers are numbered in reading order, whatever the passages' ranks: the first passage cited is [1]
    assert final.answer == (
        "According to the rate limiting notes, a token bucket refills at a fixed rate and allows short bursts up "
        "to its capacity [1]. When a burst outlasts the consumers, producers must slow down or shed load as "
        "the broker's lag grows [2][1]."
    )
    assert final.error is None and not final.abstained
    assert (final.provider, final.model) == ("claude", answerer.settings.anthropic_model)
    reading_order = [passages[bucket], passages[backpressure]] + [
        p for i, p in enumerate(passages) if i not in (bucket, backpressure)
    ]
    assert [(p.source, p.section) for p in final.passages] == [(p.source, p.section) for p in reading_order]

    # every citation points at the passage Claude cited, and quotes what Claude says it cited
    request = server.messages_requests()[-1]
    results = request.search_results()
    result_of = {1: results[bucket], 2: results[backpressure]}  # the search results Claude saw, by shown number
    streamed = [e.citation for e in events if isinstance(e, CitationEvent)]
    assert sorted(c.n for c in streamed) == [1, 1, 2]  # each sent once its marker has streamed, under that number
    assert [c.n for c in final.citations] == [1, 2]
    for citation in final.citations:
        assert citation.passage is final.passages[citation.n - 1]
        cited_blocks = result_of[citation.n]["content"]
        assert citation.quote == cited_blocks[0]["text"].strip()
        assert citation.quote.strip() and " ".join(citation.quote.split()) in " ".join(
            citation.passage.full_text.split()
        )
    assert "token bucket refills" in final.citations[0].quote.lower()
    assert "backpressure" in final.citations[1].passage.heading.lower()
    as_dict = final.to_dict()["citations"][0]
    assert as_dict["source"].endswith("references/rate-limiting.md") and as_dict["quote"] == final.citations[0].quote

    # the claims Claude tied to a passage are checked against it, and these are supported
    assert [check.cited for check in final.checks] == [[1], [2, 1]]
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
    assert body["max_tokens"] >= 4096
    assert "temperature" not in body, "the 2.x API has no temperature parameter"
    # Sonnet 5.5 thinks by default and refuses "disabled": thinking is turned off with between_tools
    assert body["thinking"] == {"type": "between_tools"} and body["output_config"] == {"effort": "medium"}
    assert body["system"] == [{"type": "text", "text": persona.system_prompt, "cache_control": {"type": "ephemeral"}}]
    assert "Grounding rules" in body["system"][0]["text"]

    [message] = body["messages"]
    assert message["role"] == "user"
    *results, instruction = message["content"]
    assert len(results) == len(final.passages) == claude_settings.top_k
    for block, passage in zip(results, final.passages):
        assert block["type"] == "search_result"
        assert block["citations"] == {"enabled": True}
        assert passage.path in block["source"]
        assert block["title"] == passage.heading and "[" not in block["title"], "the number is the position"
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
    assert citation.n == 1 and citation.passage is final.passages[0]  # the first cited is [1], whatever its rank
    assert (citation.passage.source, citation.passage.section) == (passages[multi].source, passages[multi].section)
    assert citation.quote == (blocks[0]["text"] + blocks[1]["text"]).strip()
    assert citation.quote in citation.passage.full_text, "a quote is a verbatim stretch of the passage"
    assert final.answer == "Two paragraphs say so [1]."


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


def test_history_is_sent_as_conversation_turns_without_stale_markers(server, answerer, persona):
    server.script(text_reply("How does a token bucket rate limiter handle bursts?"), Reply([Block("Yes.")]))
    history = [*HISTORY, {"role": "user", "content": ""}, {"role": "assistant", "content": "See `items[0]` [2][3]."}]
    run(answerer, "and what about bursts?", persona, history=history)
    generation = server.messages_requests()[-1]
    turns = [(m["role"], m["content"]) for m in generation.body["messages"][:-1]]
    # an earlier answer's [n] pointed at another search's passages: gone; code is left alone
    assert turns == [
        ("user", HISTORY[0]["content"]),
        ("assistant", "Use a token bucket per API key."),
        ("assistant", "See `items[0]`."),
    ]
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
    with pytest.raises(ProviderError, match="ANTHROPIC_API_KEY"):
        choose_provider(claude_settings, retriever, "claude")
    with pytest.raises(ValueError, match="unknown provider"):
        choose_provider(claude_settings, retriever, "gpt")


def test_an_off_topic_question_abstains_without_calling_claude(server, answerer, persona):
    events, final = run(answerer, "What is the best recipe for banana bread?", persona)
    assert final.abstained and "does not cover" in final.answer
    assert server.requests == []
    assert not final.citations


# -- the Messages API contract (issue 9): one test per defect found in review ----------------------------


def test_the_fake_server_refuses_what_the_real_api_refuses(fake_anthropic):
    """The checks the provider's requests pass in every other test: the SDK's own types and the model rules."""
    import anthropic

    client = anthropic.Anthropic(api_key=KEY, base_url=fake_anthropic.url, max_retries=0)
    good = {
        "model": "claude-sonnet-5-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }
    cases = {
        "sampling parameter": ({"extra_body": {"temperature": 0.2}}, "temperature: Extra inputs are not permitted"),
        "disabled thinking on Sonnet 5.5": ({"thinking": {"type": "disabled"}}, "thinking.type.disabled"),
        "empty text block": (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": " "}]}]},
            "non-whitespace text",
        ),
        "search result without a title": (
            {"messages": [{"role": "user", "content": [
                {"type": "search_result", "source": "a.md", "content": [{"type": "text", "text": "x"}]},
                {"type": "text", "text": "q"},
            ]}]},
            "messages.0.content.0.title: Field required",
        ),
        "prefill": ({"messages": [*good["messages"], {"role": "assistant", "content": "Sure"}]}, "prefill"),
    }
    try:
        for name, (change, words) in cases.items():
            with pytest.raises(anthropic.BadRequestError) as caught:
                client.messages.create(**{**good, **change})
            body = caught.value.body
            assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error", name
            assert words in body["error"]["message"], (name, body)
        with pytest.raises(anthropic.NotFoundError):
            client.messages.create(**{**good, "model": "claude-sonet-5-5"})
        assert client.messages.create(**good).content[0].type == "thinking", "Sonnet 5.5 thinks by default"
    finally:
        fake_anthropic.reset()


STOP_CASES = {
    "end_turn": (False, None),
    "stop_sequence": (False, None),
    "max_tokens": (True, "output tokens"),
    "tool_use": (True, "tool"),
    "pause_turn": (True, "paused"),
    "refusal": (True, "declined"),
    "model_context_window_exceeded": (True, "context window"),
}


def test_every_stop_reason_the_sdk_defines_is_handled():
    from typing import get_args

    from anthropic.types import StopReason

    assert set(get_args(StopReason)) == set(STOP_CASES), "a new stop_reason in the SDK needs a case here"


@pytest.mark.parametrize("reason", STOP_CASES)
def test_stop_reasons_mark_the_answer_complete_or_incomplete(reason, server, answerer, persona):
    incomplete, words = STOP_CASES[reason]
    details = {"type": "refusal", "category": "cyber", "explanation": "flagged"} if reason == "refusal" else None
    server.script(Reply([Block("A token bucket allows short bursts", [Cite(0)])], stop_reason=reason,
                        stop_details=details))
    _, final = run(answerer, QUESTION, persona)
    assert final.stop_reason == reason
    assert final.incomplete is incomplete
    assert final.to_dict()["stop_reason"] == reason and final.to_dict()["incomplete"] is incomplete
    if incomplete:
        assert any(words in note for note in final.notes), final.notes
    else:
        assert not final.notes and final.error is None
    if reason == "refusal":
        assert "cyber" in final.notes[0] and "flagged" in final.notes[0]


def test_an_empty_answer_is_incomplete(server, answerer, persona):
    server.script(Reply([]))
    _, final = run(answerer, QUESTION, persona)
    assert final.answer == "" and final.incomplete and "without writing" in final.notes[0]


def test_thinking_does_not_eat_the_answer_on_a_model_that_thinks_by_default(server, answerer, persona):
    """Sonnet 5.5 thinks unless told otherwise, and thinking tokens count toward max_tokens."""
    long_answer = " ".join(["A token bucket refills at a fixed rate and allows short bursts."] * 40)
    server.script(Reply([Block(long_answer, [Cite(0)])], thinking_tokens=3000))
    _, final = run(answerer, QUESTION, persona)
    assert final.stop_reason == "end_turn" and not final.incomplete
    assert final.answer == long_answer[:-1] + " [1]."


def test_a_follow_up_rewrite_is_not_cut_by_thinking(server, answerer, persona):
    query = "Rate limiting a public API with a token bucket per key in Redis, with Kafka consumers downstream"
    server.script(Reply([Block(query)], thinking_tokens=90), Reply([Block("Partition by API key.")]))
    _, final = run(answerer, FOLLOW_UP, persona, history=HISTORY)
    rewrite = server.messages_requests()[0].body
    assert rewrite["thinking"] == {"type": "between_tools"} and rewrite["max_tokens"] >= 256
    assert final.standalone_query == query


def test_a_cut_rewrite_falls_back_to_the_deterministic_one(server, answerer, persona):
    server.script(Reply([Block("Rate limiting a public")], stop_reason="max_tokens"), Reply([Block("Yes.")]))
    _, final = run(answerer, FOLLOW_UP, persona, history=HISTORY)
    assert final.standalone_query == rewrite_follow_up(FOLLOW_UP, [HISTORY[0]["content"]])


@pytest.mark.parametrize(
    "model", ["claude-sonnet-5-5", "claude-opus-5-5", "claude-haiku-5-5", "claude-sonnet-5", "claude-haiku-4-5"]
)
def test_each_model_family_gets_thinking_settings_the_api_accepts(model, server, claude_settings, retriever, persona):
    settings = claude_settings.with_overrides(anthropic_model=model)
    server.script(Reply([Block("A token bucket allows short bursts", [Cite(0)])], thinking_tokens=2000))
    _, final = run(Answerer(settings, retriever, ClaudeProvider(settings, api_key=KEY)), QUESTION, persona)
    assert final.error is None and not final.incomplete and final.answer.endswith("[1]"), final
    body = server.messages_requests()[-1].body
    assert body["max_tokens"] > 2000 + 1000, "room for thinking plus the answer"


def test_thinking_and_effort_overrides_and_refused_combinations(claude_settings):
    settings = claude_settings.with_overrides(anthropic_thinking="adaptive", anthropic_effort="high")
    request = ClaudeProvider(settings, api_key=KEY).answer_settings
    assert request.thinking == {"type": "adaptive"} and request.output_config == {"effort": "high"}
    assert request.max_tokens >= 16000
    with pytest.raises(ProviderError, match="always thinks"):
        ClaudeProvider(claude_settings.with_overrides(anthropic_model="claude-opus-5-5", anthropic_thinking="off"),
                       api_key=KEY)
    with pytest.raises(ProviderError, match="effort max"):
        ClaudeProvider(claude_settings.with_overrides(anthropic_effort="max", anthropic_thinking="off"), api_key=KEY)


def test_an_unknown_model_name_is_refused_listing_the_known_ones(claude_settings):
    with pytest.raises(ProviderError) as caught:
        ClaudeProvider(claude_settings.with_overrides(anthropic_model="claude-sonet-5-5"), api_key=KEY)
    assert "claude-sonet-5-5" in str(caught.value) and "claude-sonnet-5-5" in str(caught.value)


def test_ask_with_claude_but_no_key_is_a_clear_error(mini_corpus_store, monkeypatch, capsys, tmp_path):
    from rag.cli import main as cli

    settings, _ = mini_corpus_store
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env here
    argv = ["ask", QUESTION, "--provider", "claude", "--data-dir", str(settings.data_dir), "--agents-dir", str(AGENTS)]
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 1 and "ANTHROPIC_API_KEY" in err and "Traceback" not in err


def test_the_key_is_read_from_dotenv(server, claude_settings, retriever, persona, monkeypatch, tmp_path):
    from rag.config import Settings

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("ANTHROPIC_API_KEY=sk-from-dotenv\n")
    settings = Settings(**claude_settings.model_dump(exclude={"anthropic_api_key"}))
    provider = choose_provider(settings, retriever)
    assert isinstance(provider, ClaudeProvider)
    run(Answerer(settings, retriever, provider), QUESTION, persona)
    assert server.messages_requests()[0].api_key == "sk-from-dotenv"


def test_an_overload_mid_stream_says_the_answer_is_incomplete(server, answerer, persona):
    server.script(StreamFailure(OVERLOADED, after_events=5, reply=Reply([Block("Token buckets")])))
    _, final = run(answerer, QUESTION, persona)
    assert final.answer.startswith("Token buckets")
    assert final.incomplete and "overloaded" in final.error and "incomplete" in final.error


def test_an_overload_before_any_text_is_retried(server, answerer, persona):
    server.script(StreamFailure(OVERLOADED, after_events=2), Reply([Block("Recovered", [Cite(0)])]))
    events, final = run(answerer, QUESTION, persona)
    assert final.error is None and final.answer == "Recovered [1]"
    assert any(isinstance(e, StatusEvent) and "overloaded" in e.message for e in events)


def test_a_spend_limit_is_not_reported_as_a_rate_limit(server, answerer, persona):
    server.script(SPEND_LIMIT, Reply([Block("never sent")]))
    _, final = run(answerer, QUESTION, persona)
    assert "spend limit" in final.error and "usage limit" in final.error
    assert len(server.messages_requests()) == 1, "x-should-retry: false is not retried"


def test_retry_waits_follow_retry_after_and_show_a_countdown(server, answerer, persona):
    import time

    server.script(Failure(529, "overloaded_error", "Overloaded", {"retry-after": "2"}), Reply([Block("Back.")]))
    started = time.monotonic()
    events, final = run(answerer, QUESTION, persona)
    waited = time.monotonic() - started
    statuses = [e.message for e in events if isinstance(e, StatusEvent)]
    assert final.error is None and final.answer == "Back."
    assert statuses[:2] == ["Claude is overloaded, retrying in 2 s", "Claude is overloaded, retrying in 1 s"]
    assert 1.9 < waited < 3.5, "one wait of retry-after seconds, not two"


def test_a_retry_after_beyond_the_limit_gives_up_at_once(server, claude_settings, retriever, persona):
    settings = claude_settings.with_overrides(anthropic_max_wait=5)
    answerer = Answerer(settings, retriever, ClaudeProvider(settings, api_key=KEY))
    server.script(Failure(529, "overloaded_error", "Overloaded", {"retry-after": "600"}))
    _, final = run(answerer, QUESTION, persona)
    assert "600 s" in final.error and len(server.messages_requests()) == 1


def test_markers_once_per_passage_and_sentence_never_doubled(server, answerer, persona):
    server.script(
        Reply([
            Block("Token buckets allow bursts [1]", [Cite(0)]),  # Claude typed a marker of its own
            Block(", and they refill steadily", [Cite(0)]),  # the same passage again in the same sentence
            Block(". Windows smooth edges", [Cite(0), Cite(1)]),
            Block("."),
        ])
    )
    _, final = run(answerer, QUESTION, persona)
    assert final.answer == (
        "Token buckets allow bursts [1], and they refill steadily. Windows smooth edges [1][2]."
    )


def test_a_marker_goes_before_the_newline_of_a_list_item(server, answerer, persona):
    server.script(
        Reply([
            Block("- a token bucket allows bursts\n", [Cite(0)]),
            Block("- a sliding window smooths edges.\n", [Cite(1)]),
            Block("\n```yaml\nlimit: 10\n```\n", [Cite(0)]),
        ])
    )
    _, final = run(answerer, QUESTION, persona)
    assert final.answer.startswith(
        "- a token bucket allows bursts [1]\n- a sliding window smooths edges [2].\n"
    ), final.answer
    assert "```\n[1]" in final.answer, "never on the closing fence"


def test_usage_and_cost_are_recorded_and_the_cache_is_read_the_second_time(server, answerer, persona):
    _, first = run(answerer, QUESTION, persona)
    _, second = run(answerer, QUESTION, persona)
    for final in (first, second):
        assert final.usage["input_tokens"] > 0 and final.usage["output_tokens"] > 0
        assert final.usage["cost_usd"] > 0
        assert final.to_dict()["usage"] == final.usage
    assert first.usage["cache_creation_input_tokens"] > 0 and first.usage["cache_read_input_tokens"] == 0
    assert second.usage["cache_read_input_tokens"] == first.usage["cache_creation_input_tokens"]
    assert second.usage["cost_usd"] < first.usage["cost_usd"]


def test_names_the_passages_do_not_mention_are_sent_as_an_instruction(server, answerer, retriever, persona):
    passages = retrieved(retriever, answerer.settings, QUESTION)
    list(answerer.provider.generate(QUESTION, QUESTION, [], persona, passages, missing=["Envoy", "Istio"]))
    instruction = server.messages_requests()[-1].body["messages"][-1]["content"][-1]["text"]
    assert "Envoy; Istio" in instruction and "says nothing" in instruction


def test_an_overloaded_rewrite_falls_back_at_once_instead_of_waiting(server, answerer, persona):
    import time

    server.script(Failure(529, "overloaded_error", "Overloaded", {"retry-after": "5"}), Reply([Block("Yes.")]))
    started = time.monotonic()
    _, final = run(answerer, FOLLOW_UP, persona, history=HISTORY)
    assert time.monotonic() - started < 4
    assert final.standalone_query == rewrite_follow_up(FOLLOW_UP, [HISTORY[0]["content"]])


def test_a_model_the_api_does_not_serve_lists_the_known_models(server, claude_settings, retriever, persona,
                                                                monkeypatch):
    import anthropic_params

    monkeypatch.delitem(anthropic_params.MODELS, "claude-haiku-4-5")  # e.g. not offered to this account
    settings = claude_settings.with_overrides(anthropic_model="claude-haiku-4-5")
    _, final = run(Answerer(settings, retriever, ClaudeProvider(settings, api_key=KEY)), QUESTION, persona)
    assert "404" in final.error and "claude-haiku-4-5" in final.error and "claude-sonnet-5-5" in final.error
    server.rejected.clear()  # refused on purpose


def test_ask_json_records_usage_and_exits_non_zero_when_cut_off(server, mini_corpus_store, monkeypatch, capsys):
    import json

    from rag.cli import main as cli

    settings, _ = mini_corpus_store
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("RAG_ANTHROPIC_BASE_URL", server.url)
    monkeypatch.setenv("RAG_ABSTAIN_THRESHOLD", "0.3")
    argv = ["ask", QUESTION, "--json", "--data-dir", str(settings.data_dir), "--agents-dir", str(AGENTS)]
    server.script(Reply([Block("A token bucket allows short bursts", [Cite(0)])], stop_reason="max_tokens"))
    code = cli.main(argv)
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1 and record["stop_reason"] == "max_tokens" and record["incomplete"] is True
    assert record["usage"]["output_tokens"] > 0 and record["usage"]["cost_usd"] > 0

    server.script(Reply([Block("A token bucket allows short bursts", [Cite(0)])]))
    assert cli.main(argv) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["provider"] == "claude" and not record["incomplete"] and record["usage"]["input_tokens"] > 0
