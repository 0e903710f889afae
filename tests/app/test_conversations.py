"""Saved conversations (SQLite in the data dir): round trip of real answers, order, rename, delete,
truncation for regenerate/edit, the history a follow-up gets (refused turns left out), Markdown export."""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from pathlib import Path

import pytest

from rag.answer.answering import Answerer
from rag.answer.events import Final
from rag.answer.personas import load_persona
from rag.app.conversations import (
    FILE_NAME,
    WITHHELD,
    ConversationStore,
    Message,
    NotYourConversation,
    conversation_markdown,
    history_for,
    source_url,
    title_from,
)
from rag.search.access import LOCAL, Reader
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


# -- owners, sharing, upgrade ------------------------------------------------------------------------

ALICE = Reader("alice@example.com", "reader", ("payments",))
BOB = Reader("bob@example.com", "reader", ())

OLD_SCHEMA = """
CREATE TABLE conversations (id TEXT PRIMARY KEY, title TEXT NOT NULL, created_at REAL NOT NULL,
                            updated_at REAL NOT NULL);
CREATE TABLE messages (id TEXT PRIMARY KEY,
                       conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
                       position INTEGER NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL,
                       data TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL);
INSERT INTO conversations VALUES ('old1', 'Saved before owners existed', 1700000000, 1700000000);
INSERT INTO messages VALUES ('m1', 'old1', 0, 'user', 'What is cache-aside?', '{}', 1700000000);
"""


def test_conversations_saved_before_owners_belong_to_the_local_user(tmp_path):
    path = tmp_path / FILE_NAME
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
    store = ConversationStore(path)
    [old] = store.list(LOCAL.user)
    assert (old.id, old.owner, old.shared) == ("old1", "local", False)
    assert store.read("old1", LOCAL).messages[0].content == "What is cache-aside?"
    assert store.list(ALICE.user) == []
    with pytest.raises(NotYourConversation):
        store.read("old1", ALICE)
    store.save_message("old1", Message("assistant", "It reads the cache first."))  # the local user goes on
    assert len(store.get("old1").messages) == 2


def test_each_person_lists_reads_and_changes_only_their_own(tmp_path):
    store = ConversationStore(tmp_path / FILE_NAME)
    mine = store.create("Alice's question", owner=ALICE.user)
    store.save_message(mine.id, Message("user", "How do we settle cards?"), user=ALICE.user)
    theirs = store.create("Bob's question", owner=BOB.user)
    assert [c.title for c in store.list(ALICE.user)] == ["Alice's question"]
    assert [c.title for c in store.list(BOB.user)] == ["Bob's question"]
    with pytest.raises(NotYourConversation, match="is not yours"):
        store.read(mine.id, BOB)
    for change in (
        lambda: store.save_message(mine.id, Message("user", "sneaky"), user=BOB.user),
        lambda: store.rename(mine.id, "taken", user=BOB.user),
        lambda: store.share(mine.id, True, user=BOB.user),
        lambda: store.delete_messages_from(mine.id, "x", user=BOB.user),
        lambda: store.delete(mine.id, user=BOB.user),
    ):
        with pytest.raises(NotYourConversation):
            change()
    assert store.read(mine.id, ALICE).title == "Alice's question" and len(store.get(mine.id).messages) == 1

    # shared: signed-in teammates may read it, not change it; the local user (nobody signed in) may not
    assert store.share(mine.id, True, user=ALICE.user)
    assert store.read(mine.id, BOB).messages[0].content == "How do we settle cards?"
    assert [c.id for c in store.list(BOB.user)] == [theirs.id]  # a shared conversation is not in Bob's list
    with pytest.raises(NotYourConversation):
        store.rename(mine.id, "taken", user=BOB.user)
    with pytest.raises(NotYourConversation):
        store.read(mine.id, LOCAL)
    assert store.share(mine.id, False, user=ALICE.user)
    with pytest.raises(NotYourConversation):
        store.read(mine.id, BOB)
    assert store.delete(mine.id, user=ALICE.user) and store.read(mine.id, ALICE) is None


def test_an_answer_from_a_document_the_reader_may_not_read_is_withheld(tmp_path, real_final):
    restricted = dataclasses.replace(real_final.citations[0].passage, access=("payments",))
    final = dataclasses.replace(
        real_final,
        citations=[dataclasses.replace(real_final.citations[0], passage=restricted)],
        passages=[restricted, *real_final.passages[1:]],
    )
    store = ConversationStore(tmp_path / FILE_NAME)
    conversation = store.create("Settlement", owner=ALICE.user)
    store.save_message(conversation.id, Message("user", QUESTION), user=ALICE.user)
    store.save_message(conversation.id, Message("assistant", final.answer, final=final), user=ALICE.user)
    store.share(conversation.id, True, user=ALICE.user)

    alice = store.read(conversation.id, ALICE)
    assert alice.messages[1].content == final.answer and alice.messages[1].final == final
    bob = store.read(conversation.id, BOB)
    assert bob.messages[0].content == QUESTION
    assert bob.messages[1].content == WITHHELD and bob.messages[1].final is None
    exported = conversation_markdown(bob)
    assert WITHHELD in exported and restricted.path not in exported and final.answer.strip() not in exported
    assert restricted.path in conversation_markdown(alice)
