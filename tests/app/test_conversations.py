"""Saved conversations (SQLite in the data dir): round trip of real answers, order, rename, delete,
truncation for regenerate/edit, the history a follow-up gets (refused turns left out), Markdown export."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from rag.answer.answering import Answerer
from rag.answer.events import Final
from rag.answer.personas import load_persona
from rag.app.conversations import (
    FILE_NAME,
    ConversationStore,
    Message,
    conversation_markdown,
    history_for,
    source_url,
    title_from,
)
from rag.search.retrieval import Retriever

REPO = Path(__file__).resolve().parents[2]
QUESTION = "How does write-through caching keep the cache fresh?"


@pytest.fixture(scope="module")
def real_final(mini_corpus_store, embedder) -> Final:
    settings, _ = mini_corpus_store
    answerer = Answerer(settings, Retriever(settings, embedder=embedder))
    persona = load_persona("backend-architecture-expert", REPO / "agents")
    [final] = [e for e in answerer.answer(QUESTION, persona, doc_type="reference") if isinstance(e, Final)]
    assert final.citations and not final.abstained
    return final


def test_a_saved_conversation_comes_back_whole_in_a_new_store_object(tmp_path, real_final):
    store = ConversationStore(tmp_path / FILE_NAME)
    conversation = store.create(title_from(QUESTION))
    question = Message("user", QUESTION)
    reply = Message("assistant", real_final.answer, final=real_final, persona=real_final.persona,
                    quotes={1: ["an extra quote"]}, feedback_id=7)
    store.save_message(conversation.id, question)
    store.save_message(conversation.id, reply)

    loaded = ConversationStore(tmp_path / FILE_NAME).get(conversation.id)
    assert loaded.title == QUESTION
    assert [m.id for m in loaded.messages] == [question.id, reply.id]
    again = loaded.messages[1]
    assert again.final == real_final  # every field: passages, citations with their passages, checks, usage...
    assert again.quotes == {1: ["an extra quote"]} and again.feedback_id == 7
    assert again.final.citations[0].passage.text == real_final.citations[0].passage.text
    assert again.final.doc_type == "reference"

    # updating a message keeps its place
    reply.feedback_id = 8
    store.save_message(conversation.id, reply)
    assert [m.feedback_id for m in store.get(conversation.id).messages] == [None, 8]


def test_list_is_newest_first_and_rename_delete_work(tmp_path):
    store = ConversationStore(tmp_path / FILE_NAME)
    assert store.list() == [] and not (tmp_path / FILE_NAME).exists()
    first = store.create("first")
    time.sleep(0.01)
    second = store.create("second")
    assert [c.title for c in store.list()] == ["second", "first"]
    time.sleep(0.01)
    store.save_message(first.id, Message("user", "a new question"))  # activity brings it to the top
    assert [c.title for c in store.list()] == ["first", "second"]

    assert store.rename(second.id, "  Orders   and Postgres ")
    assert store.get(second.id).title == "Orders and Postgres"
    with pytest.raises(ValueError):
        store.rename(second.id, "   ")
    assert store.delete(first.id) and store.get(first.id) is None
    assert [c.title for c in store.list()] == ["Orders and Postgres"]
    assert not store.delete(first.id)


def test_delete_messages_from_drops_that_message_and_the_later_ones(tmp_path):
    store = ConversationStore(tmp_path / FILE_NAME)
    conversation = store.create("c")
    messages = [Message("user", "q1"), Message("assistant", "a1"), Message("user", "q2"), Message("assistant", "a2")]
    for message in messages:
        store.save_message(conversation.id, message)
    assert store.delete_messages_from(conversation.id, messages[2].id) == 2
    store.save_message(conversation.id, Message("user", "q2 edited"))
    assert [m.content for m in store.get(conversation.id).messages] == ["q1", "a1", "q2 edited"]


def test_title_is_the_first_question_on_one_line():
    assert title_from("  Why did we\npick Postgres?  ") == "Why did we pick Postgres?"
    long = title_from("How should the order service handle retries when the payment partner times out again and again")
    assert long.endswith("…") and len(long) <= 61 and " " in long


def test_a_refused_turn_is_not_sent_as_history(real_final):
    refused = dataclasses.replace(real_final, stop_reason="refusal", answer="I can't help with that.")
    messages = [
        Message("user", "first question"),
        Message("assistant", "first answer", final=real_final),
        Message("user", "something refused"),
        Message("assistant", "I can't help with that.", final=refused),
        Message("user", "a question that failed"),
        Message("assistant", "", error="Cannot reach Claude"),
    ]
    assert history_for(messages) == [
        {"role": "user", "content": "first question"},
        {
            "role": "assistant",
            "content": "first answer",
            "sources": [citation.passage.heading for citation in real_final.citations],
            "documents": list(dict.fromkeys(citation.passage.document_key for citation in real_final.citations)),
        },
        {"role": "user", "content": "a question that failed"},
    ]
    assert history_for(messages)[1]["sources"], "a follow-up is rewritten with the sections the answer cited"
    assert history_for(messages)[1]["documents"], "a document an answer cited is not noted as out of date again"


def test_export_has_questions_answers_citations_and_linked_sources(tmp_path, real_final):
    store = ConversationStore(tmp_path / FILE_NAME)
    conversation = store.create(title_from(QUESTION))
    store.save_message(conversation.id, Message("user", QUESTION))
    store.save_message(conversation.id, Message("assistant", real_final.answer, final=real_final))
    text = conversation_markdown(store.get(conversation.id), "https://git.example.com/docs/blob/main/{path}")
    assert text.startswith(f"# {QUESTION}\n") and f"## {QUESTION}" in text
    assert real_final.answer.strip() in text
    assert "searching reference documents only" in text
    first = real_final.citations[0]
    link = f"https://git.example.com/docs/blob/main/{first.passage.source}"
    assert f"- [{first.n}] {first.passage.heading}, [{first.passage.path}]({link})\n  > " in text
    assert f"  > {' '.join(first.quote.split())}" in text
    assert "`" + first.passage.path + "`" in conversation_markdown(store.get(conversation.id))


def test_source_url():
    assert source_url("docs/a b.md", None) is None
    assert source_url("/docs/adr.md", "https://git.example.com/x/blob/main/{path}") == (
        "https://git.example.com/x/blob/main/docs/adr.md"
    )
