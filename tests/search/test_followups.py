"""Follow-ups: a question leaning on the conversation is made standalone, and the rewrite reaches what it asks."""

from __future__ import annotations

import pytest

from rag.search.followups import last_turn_context, looks_like_follow_up, rewrite_follow_up, search_follow_up
from rag.search.retrieval import Retriever


@pytest.fixture(scope="module")
def retriever(mini_corpus_store, embedder) -> Retriever:
    return Retriever(mini_corpus_store[0], embedder=embedder)


def test_rewrite_follow_up_borrows_the_topic_of_the_conversation(retriever):
    history = ["how should we rate-limit our public API?"]
    follow_up = "and how would that work with Kafka?"
    assert looks_like_follow_up(follow_up)
    rewritten = rewrite_follow_up(follow_up, history)
    lowered = rewritten.lower()
    assert "kafka" in lowered and "rate-limit" in lowered and "public" in lowered and "api" in lowered
    assert rewritten.startswith(follow_up)
    # the rewrite brings back the rate-limiting material that the bare follow-up cannot reach
    bare = [p.source for p in retriever.search(follow_up, k=3).passages]
    assert not any("rate-limiting" in s for s in bare), bare
    sources = [p.source for p in retriever.search(rewritten, k=3).passages]
    assert any("rate-limiting" in s for s in sources), sources


def test_rewrite_leaves_standalone_questions_alone():
    history = ["how should we rate-limit our public API?"]
    standalone = "How should we partition the orders topic in Kafka so that events of one order stay in order?"
    assert not looks_like_follow_up(standalone)
    assert rewrite_follow_up(standalone, history) == standalone
    assert rewrite_follow_up("and with Kafka?", []) == "and with Kafka?"
    # it borrows from the last turn only (its question and the sections its answer cited), without repeating words
    turns = [
        {"role": "user", "content": "what about saga compensation?"},
        {"role": "assistant", "content": "Compensations run in reverse [1].", "sources": ["Sagas > Compensation"]},
        {"role": "user", "content": "and rate limits for it?"},
        {"role": "assistant", "content": "A token bucket [1].", "sources": ["Redis > Rate limiting with Redis"]},
    ]
    assert last_turn_context(turns) == ["and rate limits for it?", "Redis > Rate limiting with Redis"]
    rewritten = rewrite_follow_up("what if it fails?", last_turn_context(turns))
    assert "saga" not in rewritten and "compensation" not in rewritten
    assert "redis" in rewritten and "rate" in rewritten
    assert len(rewritten.split()) == len(set(rewritten.lower().replace("(", "").replace(")", "").split()))
    # an interjection before the follow-up word still reads as a follow-up
    assert looks_like_follow_up("ok, and where should the connection be opened?")


def test_a_question_whose_first_clause_points_back_is_a_follow_up_however_long():
    # "that topic" names nothing in the question itself: it is the topic of the last turn
    follow_up = "how many partitions does that topic have and how long do we keep the data?"
    assert looks_like_follow_up(follow_up)
    rewritten = rewrite_follow_up(follow_up, ["why did tracking events move off RabbitMQ onto Kafka?"])
    assert "kafka" in rewritten.lower() and rewritten.startswith(follow_up)
    # a pointer after the question's own story points at the story: the question stands alone
    story = "Our consumers keep re-processing the same Kafka messages after every rebalance, why is that happening?"
    assert not looks_like_follow_up(story)
    assert not looks_like_follow_up("We keep adding read replicas and the lag keeps getting worse. Is that expected?")


def test_a_follow_up_reads_the_document_the_last_answer_rested_on_first(retriever):
    earlier = "how do we retry calls to the card processor?"
    follow_up = rewrite_follow_up("and how long can it take?", [earlier])
    plain = [(p.source, p.section) for p in retriever.search(follow_up, k=2, widen=True).passages]
    assert ("team/payments-service.md", "Timeouts") not in plain, "the corpus no longer tests what it should"
    focused = [(p.source, p.section) for p in search_follow_up(retriever, follow_up, [earlier], k=2).passages]
    assert ("team/payments-service.md", "Timeouts") in focused  # the timeouts of the same service's design
    assert len(focused) == 2
