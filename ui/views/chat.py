"""Chat page: questions in, streamed cited answers out, with sources, provenance and feedback.

All retrieval and answering is ``rag.answer.answering.Answerer``; this page only shows its events. Every
message is saved as it is made (``rag.app.conversations``, via ``ui.answer.Chat``): the question before the
answer starts, the answer when it ends, also when it fails or is stopped, so a reload, a restart or
an error loses nothing. The open conversation is ``st.session_state["messages"]`` and ``?c=<id>``.

Everything reads as the person using the app (``ui.identity``): the answerer and retriever search only what they
may read, the sidebar lists only their conversations, the suggestions name only documents they may read.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass

import streamlit as st

from rag.answer.personas import Persona
from rag.app.conversations import (
    Conversation,
    ConversationStore,
    Message,
    NotYourConversation,
    history_for,
    title_from,
)
from rag.app.stats import collect_stats
from rag.index.store import StoreError
from ui import answer as views
from ui import conversation_list, rating
from ui.identity import current_reader
from ui.resources import answerer_label, get_answerer, get_retriever, get_settings, read_personas

log = logging.getLogger(__name__)

DOC_TYPES = {"All documents": None, "References": "reference", "Team docs": "team"}
SUGGESTIONS = 4


def readable_error(error: Exception) -> str:
    if isinstance(error, StoreError):
        return f"The knowledge base is not available: {error}"
    if isinstance(error, RuntimeError):
        return str(error)
    return f"Something went wrong while answering ({type(error).__name__}: {error}). Your conversation is kept."


def sidebar(settings, answerer, store: ConversationStore, conversations: list[Conversation]):
    with st.sidebar:
        conversation_list.sidebar_list(store, conversations)
        st.subheader("Answer settings")
        choice = read_personas(settings.agents_dir)
        for error in choice.errors:
            st.error(error, icon=":material/error:")
        persona = None
        if choice.personas:
            names = [p.name for p in choice.personas]
            default = names.index(settings.persona) if settings.persona in names else 0
            name = st.radio(
                "Persona", names, index=default, key="persona", persist_state="session",
                captions=[p.description for p in choice.personas],
            )
            persona = next((p for p in choice.personas if p.name == name), choice.personas[default])
        else:
            st.error(f"No usable persona in {settings.agents_dir}: add an agent file to ask questions.")
        online, label = answerer_label(answerer)
        if online:
            st.success(f"Answering with {label}", icon=":material/smart_toy:")
        else:
            st.info(label, icon=":material/cloud_off:")
        k = st.slider(
            "Passages per answer", 1, 12, value=min(settings.top_k, 12), key="top_k", persist_state="session"
        )
        doc_label = st.selectbox("Search in", list(DOC_TYPES), key="doc_type", persist_state="session")
    return persona, int(k), DOC_TYPES.get(doc_label)


# -- one answer ----------------------------------------------------------------------------------


@dataclass
class RatedAnswer:
    """A rated answer that *Regenerate* replaces: made again the same, the new one keeps its rating."""

    content: str
    feedback_id: int


def ask(question: str, persona: Persona, k: int, doc_type: str | None, answerer, chat: conversation_list.Chat) -> None:
    messages: list[Message] = st.session_state["messages"]
    replaced: RatedAnswer | None = st.session_state.pop("replaced_answer", None)
    history = history_for(messages)
    conversation_id = chat.start(question)
    user = Message("user", question)
    messages.append(user)
    chat.save(user, conversation_id)
    with st.chat_message("user"):
        st.markdown(question)
        edit_button(user)
    reply = Message("assistant", complete=False, persona=persona.name, doc_type=doc_type)
    messages.append(reply)
    with st.chat_message("assistant"):
        meta, status, notes, body = views.frame()
        meta.caption(views.provenance(reply))
        try:
            with body.container():
                st.write_stream(
                    views.stream_texts(answerer.answer(question, persona, history=history, k=k, doc_type=doc_type),
                                 reply, status)
                )
        except Exception as error:  # the store, the model, anything: shown, and the conversation is kept
            log.exception("answering failed")
            reply.error = readable_error(error)
        finally:
            # also when the user stops the answer (no Streamlit call works then, session state included):
            # what arrived so far is kept
            if reply.final is not None:
                reply.content = reply.final.answer
            reply.complete = reply.final is not None or reply.error is not None
            if replaced is not None and reply.complete and not reply.error and reply.content == replaced.content:
                reply.feedback_id = replaced.feedback_id
            chat.save(reply, conversation_id)
        if replaced is not None and reply.feedback_id is None:  # a different answer: the rating stays with the old
            st.session_state[rating.replaced_key(reply)] = replaced.feedback_id
        meta.caption(views.provenance(reply))
        with notes:
            views.show_notes(reply.final)
        views.show_body(reply, body)
        views.show_problems(reply)
        if chat.broken:
            st.error(chat.broken, icon=":material/error:")
        actions(reply, chat, last=True)
        views.show_extras(reply, chat)


# -- the conversation on screen ------------------------------------------------------------------


def show_message(message: Message, chat: conversation_list.Chat, last: bool) -> None:
    last = last and not chat.read_only
    with st.chat_message(message.role):
        if message.role == "user":
            if last and st.session_state.get("editing") == message.id:
                edit_box(message, chat)
                return
            st.markdown(message.content)
            if last:
                edit_button(message)
            return
        meta, _, notes, body = views.frame()
        meta.caption(views.provenance(message))
        with notes:
            views.show_notes(message.final)
        views.show_body(message, body)
        views.show_problems(message)
        actions(message, chat, last)
        views.show_extras(message, chat)


def actions(message: Message, chat: conversation_list.Chat, last: bool) -> None:
    columns = st.columns([1, 1, 4], gap="small")
    with columns[0]:
        views.copy_answer(message, chat.settings)
    if last:
        columns[1].button("Regenerate", icon=":material/refresh:", key=f"regenerate-{message.id}",
                          on_click=resend, args=(chat, None))


def edit_button(message: Message) -> None:
    st.button("Edit", icon=":material/edit:", key=f"edit-{message.id}", type="tertiary",
              on_click=st.session_state.__setitem__, args=("editing", message.id))


def edit_box(message: Message, chat: conversation_list.Chat) -> None:
    st.text_area("Edit your question", value=message.content, key=f"edited-{message.id}")
    send, cancel, _ = st.columns([1, 1, 4])
    send.button("Send", type="primary", icon=":material/send:", key=f"resend-{message.id}", on_click=resend,
                args=(chat, f"edited-{message.id}"))
    cancel.button("Cancel", key=f"cancel-{message.id}", on_click=st.session_state.pop, args=("editing", None))


def resend(chat: conversation_list.Chat, edited_key: str | None) -> None:
    """Takes back the last question and its answer and asks again: the same question (regenerate) or its
    edited text."""
    messages: list[Message] = st.session_state["messages"]
    index = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if index is None:
        return
    asked = messages[index].content
    question = asked
    if edited_key:
        question = str(st.session_state.get(edited_key) or "").strip() or question
    conversation_id = st.session_state.get("conversation_id")
    if conversation_id and not chat.broken:
        try:
            chat.conversations.delete_messages_from(conversation_id, messages[index].id, user=chat.reader.user)
            if index == 0 and question != asked:
                retitle(chat.conversations, conversation_id, asked, question, chat.reader.user)
        except sqlite3.Error as error:
            chat.fail(error)
    answer = messages[index + 1] if index + 1 < len(messages) else None
    if question == asked and answer is not None and answer.feedback_id:
        st.session_state["replaced_answer"] = RatedAnswer(answer.content, answer.feedback_id)
    del messages[index:]
    st.session_state.pop("editing", None)
    st.session_state["pending_question"] = question


def retitle(store: ConversationStore, conversation_id: str, asked: str, question: str, user: str) -> None:
    """An edited first question renames the conversation it titled (a title the user chose stays)."""
    conversation = store.get(conversation_id)
    if conversation is not None and conversation.title == title_from(asked):
        store.rename(conversation_id, title_from(question), user=user)


def suggested_questions(retriever, limit: int = SUGGESTIONS) -> list[str]:
    """Questions about the knowledge base's own documents that the reader may read (``rag.app.stats``, as the
    knowledge base page lists them): team docs first, then references, spread out."""
    try:
        files = collect_stats(retriever.settings, store=retriever.store, reader=retriever.reader)["files"]
    except Exception:  # a store that cannot be read: the page still opens, without suggestions
        log.exception("cannot read the knowledge base's documents for suggestions")
        return []
    files = [f for f in files if f["title"] and f["complete"]]
    team = sorted((f for f in files if f["doc_type"] == "team"), key=lambda f: f["title"])
    others = sorted((f for f in files if f["doc_type"] != "team"), key=lambda f: f["title"])
    picked = spread(team, limit // 2) + spread(others, limit)
    titles = list(dict.fromkeys(f["title"] for f in picked))[:limit]
    return [f"What are the key points of “{title}”?" for title in titles]


def spread(items: list, count: int) -> list:
    if len(items) <= count:
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def empty_page(retriever) -> None:
    st.caption(
        "Ask about backend architecture and your team's design docs. Every claim is cited [n]; "
        "the sources are listed under each answer."
    )
    questions = suggested_questions(retriever)
    if not questions:
        return
    st.markdown("**Try one of these**")
    columns = st.columns(2)
    for i, question in enumerate(questions):
        columns[i % 2].button(question, key=f"suggestion-{i}", width="stretch", icon=":material/lightbulb:",
                              on_click=st.session_state.__setitem__, args=("pending_question", question))


# -- page ----------------------------------------------------------------------------------------


def main() -> None:
    settings = get_settings()
    reader = current_reader()
    try:
        retriever = get_retriever(settings)
        answerer = get_answerer(settings, retriever).for_reader(reader)
    except Exception as error:
        log.exception("cannot load the knowledge base")
        st.error(readable_error(error))
        st.stop()
    store = ConversationStore.for_settings(settings)
    chat = conversation_list.Chat(settings, answerer.retriever, store, reader=reader)
    try:
        conversation_list.sync_with_url(store)
        conversations = store.list(reader.user)
    except sqlite3.Error as error:
        log.exception("cannot read the saved conversations")
        chat.fail(error)
        conversations = []
        st.session_state.setdefault("messages", [])
    persona, k, doc_type = sidebar(settings, answerer, store, conversations)
    messages: list[Message] = st.session_state["messages"]
    current = next((c for c in conversations if c.id == st.session_state.get("conversation_id")), None)
    if current is None and st.session_state.get("conversation_id"):  # a teammate's conversation shared with them
        try:
            current = store.read(st.session_state["conversation_id"], reader)
        except NotYourConversation:  # no longer shared
            conversation_list.open_conversation(store, None)
            st.rerun()
        chat.read_only = current is not None and not current.owned_by(reader)
    st.title(current.title if current else "Architecture knowledge assistant")
    if chat.broken:
        st.error(chat.broken, icon=":material/error:")
    missing = st.session_state.pop("missing_conversation", None)
    if missing:
        st.warning(f"The conversation {missing} does not exist (it was deleted, or the link is wrong).")
    not_yours = st.session_state.pop("not_yours", None)
    if not_yours:
        st.warning(f"The conversation {not_yours} is not yours: its owner has not shared it with you.",
                   icon=":material/lock:")
    if st.session_state.pop("deleted_notice", None):
        st.success("The conversation was deleted.", icon=":material/delete:")
    if current is not None:
        current.messages = messages
        conversation_list.toolbar(store, current, settings.source_url_template)
        rename_error = st.session_state.pop("rename_error", None)
        if rename_error:
            st.error(rename_error)
    pending = st.session_state.pop("pending_question", None)
    welcome = st.empty()
    if not messages and not pending:
        with welcome.container():
            empty_page(retriever)
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    for i, message in enumerate(messages):
        last = not pending and (i == last_user if message.role == "user" else i == len(messages) - 1)
        show_message(message, chat, last)
    if chat.read_only:
        st.caption("To ask a question of your own, start a new conversation.")
    question = st.chat_input(
        "Ask a backend or system-design question", disabled=persona is None or chat.read_only, submit_mode="stop",
        key="question",
    )
    question = question or pending
    if question and persona is not None and not chat.read_only:
        welcome.empty()
        ask(question, persona, k, doc_type, answerer, chat)
        # the page above was drawn before this turn (the list, the toolbar, which turn is the last): redraw it
        st.rerun()


main()
