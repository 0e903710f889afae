"""Superseded and stale documents: status parsing, the ranking rule, and the notices answers carry.

Unit tests for reading a status (front matter, ADR status sections and lines); an integration test on a tiny
corpus of two ADRs (the old one superseded by the new one) ingested into a real store with the real model.
"""

from __future__ import annotations

import os
import re
from datetime import date, datetime
from pathlib import Path

import pytest
from anthropic_server import AnthropicServer, text_reply
from conftest import make_settings, write_tree
from openai_server import MODEL, Completion, OpenAIServer

from rag.answer.answering import Answerer, status_notes
from rag.answer.events import Citation, Final
from rag.answer.personas import load_persona
from rag.answer.providers.claude.client import ClaudeProvider
from rag.answer.providers.extractive import ExtractiveProvider
from rag.answer.providers.openai_compat import OpenAICompatibleProvider
from rag.app.conversations import Message, history_for
from rag.documents.doc_status import (
    RETIRED_INSTRUCTION,
    DocStatus,
    age_in_words,
    asks_about_past,
    parse_status,
    read_status,
)
from rag.ingest.pipeline import ingest
from rag.search.passages import Passage
from rag.search.retrieval import Retriever, demote_superseded

AGENTS = Path(__file__).resolve().parents[2] / "agents"


# -- parsing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "Superseded by ADR-0011 on 2025-05-12. Original date: 2023-05-22.",
            DocStatus("superseded", "ADR-0011", "2025-05-12"),
        ),
        ("Accepted. Date: 2025-05-12. Supersedes ADR-0003.", DocStatus("accepted")),
        ("superseded by [ADR 11](adr-0011-kafka.md)", DocStatus("superseded", "ADR-0011")),
        ("Deprecated since the move to Kafka.", DocStatus("deprecated")),
        ("Deprecated. Superseded by ADR-0042", DocStatus("superseded", "ADR-0042")),
        ("Proposed", DocStatus("proposed")),
        ("Owner: Platform team", DocStatus()),
    ],
)
def test_status_line_variants(line, expected):
    assert parse_status(line) == expected


def test_status_from_front_matter_wins_over_the_text():
    status = read_status({"status": "superseded", "superseded_by": "adr-7"}, "## Status\n\nAccepted.\n")
    assert status == DocStatus("superseded", "ADR-0007")
    assert read_status({"status": "Deprecated"}, "").status == "deprecated"


def test_status_from_an_adr_status_section_or_a_status_line():
    section = "# ADR-0003: RabbitMQ\n\n## Status\n\nSuperseded by ADR-0011 on 2025-05-12.\n\n## Context\n\nText.\n"
    assert read_status({}, section) == DocStatus("superseded", "ADR-0011", "2025-05-12")
    assert read_status({}, "# ADR-0002\n\n- **Status:** Accepted\n\nText.\n") == DocStatus("accepted")
    assert read_status({}, "# Notes\n\nNothing about status here.\n") == DocStatus()


def test_questions_about_the_past_are_recognised():
    assert asks_about_past("what did we use before Kafka?")
    assert asks_about_past("What was the sandbox limit before the change?")
    assert asks_about_past("which broker did we originally pick for tracking events")
    assert not asks_about_past("do we still use RabbitMQ for tracking events?")
    assert not asks_about_past("how are tracking events published?")


# -- ranking rule -----------------------------------------------------------------------------------


def passage(source: str, title: str, score: float, status: str = "", superseded_by: str = "") -> Passage:
    return Passage(
        id=source + str(score), text=title, source=source, path=source, title=title, section="", doc_type="team",
        position=0, start_offset=0, score=score, status=status, superseded_by=superseded_by, source_key=source,
    )  # fmt: skip


OLD = passage("team/adr-0003-rabbitmq.md", "ADR-0003: Use RabbitMQ", 0.9, "superseded", "ADR-0011")
NEW = passage("team/adr-0011-kafka.md", "ADR-0011: Move to Kafka", 0.5, "accepted")
OTHER = passage("references/queues.md", "Message queues", 0.7)


def test_a_superseded_passage_ranks_below_its_successor_and_is_kept():
    old_too = Passage(**{**OLD.__dict__, "id": "old-2", "score": 0.8})
    other_low = Passage(**{**OTHER.__dict__, "id": "other-2", "score": 0.3})
    ranked = demote_superseded([OLD, old_too, OTHER, NEW, other_low], "do we still use RabbitMQ for tracking events?")
    # the old document's best passage right below the successor's best, its other passages halved
    assert [p.id for p in ranked] == [OTHER.id, NEW.id, OLD.id, old_too.id, other_low.id]
    alone = demote_superseded([OLD, OTHER], "which broker carries tracking events?")
    assert [(p.id, p.score) for p in alone] == [(OTHER.id, 0.7), (OLD.id, 0.45)]  # no successor: halved, kept


def test_questions_about_the_past_or_naming_the_old_adr_keep_the_ranking():
    for query in ("what did we use before Kafka?", "what does ADR-0003 say about quorum queues?", "old brokers"):
        assert [p.id for p in demote_superseded([OLD, OTHER, NEW], query)] == [OLD.id, OTHER.id, NEW.id]


def test_a_question_about_what_came_before_puts_the_old_decision_above_its_successor():
    old = Passage(**{**OLD.__dict__, "score": 0.3})
    ranked = demote_superseded([NEW, OTHER, old], "which broker did we use before Kafka?")
    assert [p.id for p in ranked] == [OTHER.id, old.id, NEW.id]
    assert [p.id for p in demote_superseded([NEW, OTHER, old], "how do we handle the history of events?")] == [
        NEW.id, OTHER.id, old.id,
    ]  # fmt: skip


# -- notes ------------------------------------------------------------------------------------------


def test_notes_name_the_successor_and_its_date_and_flag_stale_documents():
    old = Passage(**{**OLD.__dict__, "superseded_on": "2025-05-12"})
    stale = Passage(**{**OTHER.__dict__, "updated": "2020-01-01"})
    fresh = Passage(**{**NEW.__dict__, "updated": date.today().isoformat()})
    citations = [Citation(1, stale, "q"), Citation(2, old, "q"), Citation(3, fresh, "q"), Citation(4, old, "q")]
    notes = status_notes(citations, [old, stale, fresh], stale_days=365)
    assert notes[0] == (
        'ADR-0003 was superseded by ADR-0011 on 2025-05-12. The current decision is "ADR-0011: Move to Kafka".'
    )
    assert len(notes) == 2 and notes[1].startswith("Message queues was last updated on 2020-01-01, over ")
    assert notes[1].endswith(" years ago: it may be out of date.")  # in a reader's words, no setting names
    assert status_notes(citations[:1], [stale], stale_days=365 * 100) == []


def test_an_accepted_decision_or_a_document_noted_earlier_in_the_conversation_is_not_flagged_by_age():
    accepted = Passage(**{**NEW.__dict__, "updated": "2020-01-01"})  # ADR-0011, accepted: the decision in force
    stale = Passage(**{**OTHER.__dict__, "updated": "2020-01-01"})
    citations = [Citation(1, accepted, "q"), Citation(2, stale, "q")]
    assert [note.split(" was ")[0] for note in status_notes(citations, [accepted, stale], 365)] == ["Message queues"]
    earlier = {stale.document_key}  # an earlier answer cited it (and noted it)
    assert status_notes(citations, [accepted, stale], 365, earlier) == []
    old = Passage(**{**OLD.__dict__, "updated": "2020-01-01"})  # superseded: said every time, whatever its age
    superseded = status_notes([Citation(1, old, "q")], [old], 365, {old.document_key})
    assert superseded == ["ADR-0003 was superseded by ADR-0011."]


@pytest.mark.parametrize(("days", "words"), [(45, "45 days ago"), (400, "13 months ago"), (2838, "over 7 years ago")])
def test_age_in_words(days, words):
    assert age_in_words(days) == words


# -- integration: a tiny corpus of two ADRs ---------------------------------------------------------

CORPUS = {
    "team/adr-0003-rabbitmq-for-tracking-events.md": """
        ---
        title: "ADR-0003: Use RabbitMQ for tracking events"
        updated: 2023-05-22
        ---
        # ADR-0003: Use RabbitMQ for tracking events

        ## Status

        Superseded by ADR-0011 on 2025-05-12. Original date: 2023-05-22.

        ## Decision

        We use RabbitMQ for tracking events. Tracking events are published to a RabbitMQ topic exchange and every
        consumer of tracking events owns a durable RabbitMQ quorum queue bound to that exchange.
        """,
    "team/adr-0011-tracking-events-move-to-kafka.md": """
        ---
        title: "ADR-0011: Move tracking events from RabbitMQ to Kafka"
        updated: 2025-08-04
        ---
        # ADR-0011: Move tracking events from RabbitMQ to Kafka

        ## Status

        Accepted. Date: 2025-05-12. Supersedes ADR-0003.

        ## Decision

        Tracking events are published to the Kafka topic tracking-events with 48 partitions, keyed by parcel id,
        so that consumers can replay a week of history.
        """,
    "team/sandbox-notes.md": """
        # Sandbox notes

        The merchant sandbox accepts at most 100 test shipments a day per merchant account.
        """,
}


@pytest.fixture(scope="module")
def two_adrs(tmp_path_factory, embedder):
    base = tmp_path_factory.mktemp("doc-status")
    corpus = write_tree(base / "corpus", CORPUS)
    undated = corpus / "team" / "sandbox-notes.md"
    old = datetime(2021, 6, 1, 12, 0).timestamp()
    os.utime(undated, (old, old))  # no `updated`: its date is the file's modification time
    settings = make_settings(base / "data", abstain_threshold=0.2)
    report = ingest([corpus], settings, embedder=embedder)
    assert not report.files_failed and report.files_added == len(CORPUS)
    retriever = Retriever(settings, embedder=embedder)
    return settings, retriever, Answerer(settings, retriever, ExtractiveProvider(embedder))


def test_status_and_date_are_stored_with_every_chunk(two_adrs):
    _, retriever, _ = two_adrs
    got = retriever.store.get()
    by_source = {meta["source"]: meta for meta in got["metadatas"]}
    old = by_source["team/adr-0003-rabbitmq-for-tracking-events.md"]
    assert (old["status"], old["superseded_by"], old["superseded_on"], old["updated"]) == (
        "superseded", "ADR-0011", "2025-05-12", "2023-05-22",
    )  # fmt: skip
    assert by_source["team/adr-0011-tracking-events-move-to-kafka.md"]["status"] == "accepted"
    assert by_source["team/sandbox-notes.md"]["updated"] == "2021-06-01"
    assert by_source["team/sandbox-notes.md"]["status"] == ""


def test_the_successor_ranks_first_for_a_present_tense_question(two_adrs):
    _, retriever, _ = two_adrs
    passages = retriever.search("do we use RabbitMQ for tracking events?", k=5).passages
    assert passages[0].source == "team/adr-0011-tracking-events-move-to-kafka.md"
    assert any(p.source == "team/adr-0003-rabbitmq-for-tracking-events.md" for p in passages)  # demoted, not dropped


def test_a_question_about_the_past_still_finds_the_old_decision(two_adrs):
    _, retriever, _ = two_adrs
    passages = retriever.search("what did we use for tracking events before Kafka?", k=5).passages
    assert passages[0].source == "team/adr-0003-rabbitmq-for-tracking-events.md"
    assert passages[0].status == "superseded" and passages[0].superseded_by == "ADR-0011"


def test_a_present_tense_answer_leads_with_the_current_decision_not_the_superseded_one(two_adrs):
    _, _, answerer = two_adrs
    persona = load_persona("backend-architecture-expert", AGENTS)
    final = [e for e in answerer.answer("do we use RabbitMQ for tracking events?", persona)][-1]
    lead = final.answer.split("\n\n")[0]
    assert "Kafka topic tracking-events" in lead and "We use RabbitMQ" not in lead
    assert "We use RabbitMQ for tracking events." in final.answer  # it follows, to say what changed


def test_an_answer_citing_the_superseded_adr_says_so(two_adrs):
    _, _, answerer = two_adrs
    persona = load_persona("backend-architecture-expert", AGENTS)
    final = [e for e in answerer.answer("what did we use for tracking events before Kafka?", persona)][-1]
    assert isinstance(final, Final) and not final.abstained
    assert any(c.passage.source.endswith("adr-0003-rabbitmq-for-tracking-events.md") for c in final.citations)
    assert (
        'ADR-0003 was superseded by ADR-0011 on 2025-05-12. The current decision is "ADR-0011: Move tracking '
        'events from RabbitMQ to Kafka".' in final.notes
    )


def test_an_answer_citing_an_old_document_marks_it_stale(two_adrs):
    _, _, answerer = two_adrs
    persona = load_persona("backend-architecture-expert", AGENTS)
    final = [e for e in answerer.answer("how many test shipments a day does the merchant sandbox accept?", persona)][-1]
    assert any(c.passage.source == "team/sandbox-notes.md" for c in final.citations)
    assert any(note.startswith("Sandbox notes was last updated on 2021-06-01") for note in final.notes), final.notes
    # the same document cited again later in the conversation is not noted again
    history = history_for([Message("user", final.question), Message("assistant", final.answer, final=final)])
    question = "how many sandbox test shipments per merchant account a day?"
    again = [e for e in answerer.answer(question, persona, history=history)][-1]
    assert any(c.passage.source == "team/sandbox-notes.md" for c in again.citations)
    assert not any("Sandbox notes" in note for note in again.notes), again.notes


def test_a_source_card_shows_the_status_and_the_date():
    from ui.render import status_label

    assert status_label("superseded", "ADR-0011", "2023-05-22") == (
        ":material/history: superseded by ADR-0011 · :material/update: updated 2023-05-22"
    )
    assert status_label("accepted", "", "2025-08-04") == ":material/update: updated 2025-08-04"
    assert status_label("", "", "") == ""


OLD_ADR = "team/adr-0003-rabbitmq-for-tracking-events.md"
NEW_ADR = "team/adr-0011-tracking-events-move-to-kafka.md"
MARKED = (
    "ADR-0003: Use RabbitMQ for tracking events > Decision (superseded by ADR-0011 on 2025-05-12, no longer current)"
)


def test_the_successor_of_a_superseded_document_joins_the_passages_it_was_missing_from(two_adrs):
    settings, retriever, _ = two_adrs
    only_old = retriever.search("do we use RabbitMQ for tracking events?", k=2, source=OLD_ADR, widen=True).passages
    assert {p.source for p in only_old} == {OLD_ADR}
    joined = retriever.with_successors(only_old, "do we use RabbitMQ for tracking events?", k=2)
    assert len(joined) == 2 and (joined[0].source, joined[0].section) == (NEW_ADR, "Decision")
    assert joined[1].source == OLD_ADR  # kept, below its successor
    past = retriever.with_successors(only_old, "what did we use for tracking events before Kafka?", k=3)
    assert [p.source for p in past][:2] == [OLD_ADR, NEW_ADR]  # a question about the past reads the old one first
    assert retriever.with_successors(joined, "do we use RabbitMQ for tracking events?", k=2) == joined


def test_the_llm_requests_mark_superseded_passages_as_such(two_adrs, embedder):
    settings, retriever, _ = two_adrs
    persona = load_persona("backend-architecture-expert", AGENTS)
    question = "what did we use for tracking events before Kafka?"
    with OpenAIServer() as llm:
        local = settings.with_overrides(llm_base_url=llm.url, llm_model=MODEL, llm_timeout=5)
        llm.script(Completion("RabbitMQ, until ADR-0011 moved tracking events to Kafka [1]."))
        list(Answerer(local, retriever, OpenAICompatibleProvider(local)).answer(question, persona))
        [request] = llm.requests
    prompt = request.prompt()
    assert f"] {MARKED} (" in prompt and RETIRED_INSTRUCTION in prompt
    current = re.search(r"\] ADR-0011: Move tracking events from RabbitMQ to Kafka > Decision \((.*?)\)\n", prompt)
    assert current and current.group(1).endswith(NEW_ADR)  # the current decision: its file, no mark
    with AnthropicServer() as claude:
        remote = settings.with_overrides(anthropic_base_url=claude.url, anthropic_max_retries=0, anthropic_timeout=5)
        claude.script(text_reply("RabbitMQ, until ADR-0011 moved tracking events to Kafka."))
        list(Answerer(remote, retriever, ClaudeProvider(remote, api_key="test-key")).answer(question, persona))
        [sent] = claude.messages_requests()
        assert not claude.rejected
    content = sent.body["messages"][-1]["content"]
    titles = [block["title"] for block in content if block["type"] == "search_result"]
    assert MARKED in titles and "ADR-0011: Move tracking events from RabbitMQ to Kafka > Decision" in titles
    assert RETIRED_INSTRUCTION in content[-1]["text"]


# ten ways a user asks which broker carries tracking events today, against the shipped corpus (ADR-0003, RabbitMQ,
# superseded by ADR-0011, Kafka)
BROKER_QUESTIONS = [
    "do we use RabbitMQ for tracking events?",
    "Which message broker carries our tracking events, RabbitMQ?",
    "Which broker carries tracking events?",
    "What broker do parcel tracking events go through today?",
    "Are tracking events still published to RabbitMQ?",
    "Should a new consumer of tracking events bind a quorum queue to the tracking.events exchange?",
    "RabbitMQ or Kafka: which one carries our tracking events?",
    "Where do courier scans get published as tracking events, RabbitMQ or Kafka?",
    "What messaging system handles tracking events at Larkspur?",
    "Is RabbitMQ our broker for tracking events?",
]


@pytest.fixture(scope="module")
def shipped_answerer(shipped_store, embedder) -> Answerer:
    settings, retriever = shipped_store
    return Answerer(settings, retriever, ExtractiveProvider(embedder))


@pytest.mark.parametrize("question", BROKER_QUESTIONS)
def test_every_phrasing_of_the_broker_question_leads_with_the_current_decision(question, shipped_answerer):
    persona = load_persona("backend-architecture-expert", AGENTS)
    final = [e for e in shipped_answerer.answer(question, persona)][-1]
    assert isinstance(final, Final) and not final.abstained
    assert any(p.source == NEW_ADR for p in final.passages)
    lead = final.answer.split("\n\n")[0]
    assert final.citations[0].passage.source == NEW_ADR, lead
    assert "Kafka" in lead and "RabbitMQ topic exchange" not in lead, lead
