"""The "says nothing about" notice: a name the question makes up from parts whose rule the knowledge base states
is covered; a name the knowledge base lacks is still said to be missing, by the offline answer and in the request
an LLM gets. Real model, real store; the LLM is the local fake OpenAI-compatible server."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_settings, write_tree
from openai_server import MODEL, Completion, OpenAIServer

from rag.answer.answering import Answerer
from rag.answer.events import Final
from rag.answer.personas import load_persona
from rag.answer.providers.extractive import ExtractiveProvider
from rag.answer.providers.openai_compat import OpenAICompatibleProvider
from rag.ingest.pipeline import ingest
from rag.search.intent import Name, composed_by_rule, missing_names, read_intent
from rag.search.retrieval import Retriever

AGENTS = Path(__file__).resolve().parents[2] / "agents"

DOCS = {
    "team/coding-conventions.md": """
        ---
        title: Coding conventions for the order service
        ---
        # Coding conventions for the order service

        ## Method names

        A method name starts with a verb that says what it does: load, save, publish, cancel. A method that loads
        an order reads it by its id and never creates one.

        ## Asynchronous methods

        A method that returns a CompletableFuture does its work asynchronously, and its name ends with the suffix
        `Async`, so that every caller can see at a glance that the result must be awaited: `saveAsync`,
        `publishAsync`. The blocking variant keeps the plain name.
        """,
    "team/order-events.md": """
        ---
        title: Order events
        ---
        # Order events

        ## Handlers

        Each order event is consumed by one handler class, which commits the consumer offset only after the
        handler has written its result to the database. A batch of events that fails is retried three times and
        then parked on the dead-letter topic.
        """,
}
COINED = "Should the method that loads an order without blocking be named loadOrderAsync?"
ABSENT = "What does the ReplayOrderBatchHandler do when a batch of order events fails?"


@pytest.fixture(scope="module")
def store(tmp_path_factory, embedder):
    base = tmp_path_factory.mktemp("missing-names")
    settings = make_settings(base / "data")
    report = ingest([write_tree(base / "docs", DOCS)], settings, embedder=embedder)
    assert not report.files_failed
    return settings, Retriever(settings, embedder=embedder)


@pytest.fixture(scope="module")
def persona():
    return load_persona("backend-architecture-expert", AGENTS)


def answer(answerer: Answerer, question: str, persona) -> Final:
    final = list(answerer.answer(question, persona))[-1]
    assert isinstance(final, Final) and not final.abstained, final.answer
    return final


def test_a_name_made_of_parts_by_a_stated_rule_counts_as_covered():
    rule = "An asynchronous method's name ends with the suffix `Async`. Load methods read one order by id."
    assert missing_names([Name("loadOrderAsync")], [rule]) == []
    assert missing_names([Name("load_orders_async")], [rule]) == []  # split at "_", "orders" by its stem
    pattern = "Standard methods are named List{Resources}: ListBooks returns the books of a shelf."
    assert composed_by_rule(Name("ListShelves"), [pattern]) is False  # "shelves" is not "shelf" by stem
    assert composed_by_rule(Name("ListBooks"), ["List methods read shelves of books, named List{Resources}."])
    # the parts alone are not enough: NGINX documents proxy_, cache and tags, never a proxy_cache_tags directive
    parts_only = "The proxy cache stores responses; tags group cached responses by product."
    assert missing_names([Name("proxy_cache_tags")], [parts_only]) == [Name("proxy_cache_tags")]
    # Markdown emphasis is not a pattern: "*worker_processes*" states no rule for "worker"
    assert not composed_by_rule(Name("worker_autoscale"), ["Set *worker_processes* to auto; autoscale the pods."])
    # nor a rule without the parts: nothing says what "replay" or "batch" would be
    assert missing_names([Name("replayBatchAsync")], [rule]) == [Name("replayBatchAsync")]
    # a thing named by a head noun keeps its own rule: an alert of documented words is still missing
    [alert] = read_intent("What does the OrderAsyncLatencyHigh alert page for?").names
    assert missing_names([alert], [rule + " The latency of orders is high when the suffix is slow."]) == [alert]


def test_the_offline_answer_says_nothing_is_missing_for_a_coined_name_and_names_an_absent_one(
    store, embedder, persona
):
    settings, retriever = store
    answerer = Answerer(settings, retriever, ExtractiveProvider(embedder))
    coined = answer(answerer, COINED, persona)
    assert "says nothing about" not in coined.answer and not any("says nothing" in n for n in coined.notes)
    assert "ends with the suffix `Async`" in coined.answer
    absent = answer(answerer, ABSENT, persona)
    assert absent.answer.startswith("The knowledge base says nothing about ReplayOrderBatchHandler")


def test_the_llm_request_names_only_what_is_really_missing(store, embedder, persona):
    settings, retriever = store
    with OpenAIServer() as llm:
        settings = settings.with_overrides(llm_base_url=llm.url, llm_model=MODEL, llm_timeout=5)
        answerer = Answerer(settings, retriever, OpenAICompatibleProvider(settings))
        llm.script(Completion("Yes: asynchronous methods end with Async [1]."))
        answer(answerer, COINED, persona)
        llm.script(Completion("The knowledge base says nothing about ReplayOrderBatchHandler [1]."))
        answer(answerer, ABSENT, persona)
        coined_request, absent_request = llm.requests
    assert "say nothing about" not in str(coined_request.body["messages"])
    assert "The passages say nothing about: ReplayOrderBatchHandler." in str(absent_request.body["messages"])
