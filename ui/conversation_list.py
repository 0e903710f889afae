"""Saved conversations in the UI: which one is open (``?c=<id>`` in the URL), the sidebar list, the
toolbar of the open one (rename, export as Markdown, delete after a confirmation), and ``Chat``, through
which the views save messages (and which says so when the file cannot be written).

Storage is ``rag.app.conversations.ConversationStore``; this module only keeps ``st.session_state``
(``conversation_id``, ``messages``) and the URL in step with it. Every call names the person (``ui.identity``):
the store lists, opens and changes only their own conversations, and opens a teammate's shared one read-only.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

import streamlit as st

from rag.app.conversations import (
    Conversation,
    ConversationStore,
    Message,
    NotYourConversation,
    conversation_markdown,
    title_from,
)
from rag.search.access import LOCAL, Reader
from ui.identity import current_reader

PARAM = "c"
RENAME_POPOVER = "rename_popover"
RECENT = 8  # conversations listed in the sidebar before the rest are folded under "Older conversations"


def open_conversation(store: ConversationStore, conversation_id: str | None) -> None:
    """Shows ``conversation_id`` (None: a new, empty conversation) and puts it in the URL; someone else's
    conversation that is not shared with this person is not shown (``not_yours`` says so)."""
    try:
        conversation = store.read(conversation_id, current_reader()) if conversation_id else None
    except NotYourConversation:
        st.session_state["not_yours"] = conversation_id
        conversation = None
    st.session_state["conversation_id"] = conversation.id if conversation else None
    st.session_state["messages"] = conversation.messages if conversation else []
    st.session_state.pop("confirm_delete", None)
    st.session_state.pop("editing", None)
    if conversation:
        st.query_params[PARAM] = conversation.id
    elif PARAM in st.query_params:
        del st.query_params[PARAM]


def sync_with_url(store: ConversationStore) -> None:
    """Loads the conversation the URL names (a reload, a shared link); keeps the open one when the URL lost it
    (coming back from another page)."""
    wanted = st.query_params.get(PARAM)
    current = st.session_state.get("conversation_id")
    if "messages" in st.session_state and (wanted == current or (not wanted and current)):
        if current and not wanted:
            st.query_params[PARAM] = current
        return
    if wanted and store.get(wanted) is None:
        st.session_state["missing_conversation"] = wanted
    open_conversation(store, wanted)


def start_conversation(store: ConversationStore, question: str) -> str:
    """The open conversation's id; a first question creates it (titled from the question) and names it in the URL."""
    current = st.session_state.get("conversation_id")
    if current:
        return current
    conversation = store.create(title_from(question), owner=current_reader().user)
    st.session_state["conversation_id"] = conversation.id
    st.query_params[PARAM] = conversation.id
    return conversation.id


def sidebar_list(store: ConversationStore, conversations: list[Conversation]) -> None:
    """The newest conversations and the open one (marked) in the sidebar's own flow, the others folded away:
    the open one is always near the top, in view."""
    current = st.session_state.get("conversation_id")
    st.button("New conversation", icon=":material/add_comment:", on_click=open_conversation, args=(store, None),
              width="stretch", key="new_conversation")
    if not conversations:
        st.caption("Your conversations will be listed here.")
        return
    st.caption("Conversations")
    shown, older = split_list(conversations, current)
    for conversation in shown:
        conversation_button(store, conversation, current)
    if older:
        with st.expander(f"Older conversations ({len(older)})", key="older_conversations"):
            for conversation in older:
                conversation_button(store, conversation, current)


def split_list(conversations: list[Conversation], current: str | None) -> tuple[list[Conversation], list[Conversation]]:
    """``(listed, folded)``: the ``RECENT`` newest and the open one, then the rest."""
    shown = conversations[:RECENT] + [c for c in conversations[RECENT:] if c.id == current]
    return shown, [c for c in conversations[RECENT:] if c.id != current]


def conversation_button(store: ConversationStore, conversation: Conversation, current: str | None) -> None:
    is_open = conversation.id == current
    st.button(
        conversation.title,
        key=f"open-{conversation.id}",
        type="primary" if is_open else "tertiary",
        icon=":material/chat:" if is_open else ":material/chat_bubble_outline:",
        on_click=open_conversation,
        args=(store, conversation.id),
        width="stretch",
    )


def toolbar(store: ConversationStore, conversation: Conversation, source_template: str | None) -> None:
    """Rename, export, delete and share for the open conversation; only export for a teammate's shared one."""
    reader = current_reader()
    if not conversation.owned_by(reader):
        st.info(f"Shared by {conversation.owner}: you can read and export it, not add to it.",
                icon=":material/group:")
        export_button(conversation, source_template)
        return
    columns = st.columns([1, 1, 1, 3], gap="small")
    with columns[0].popover("Rename", icon=":material/edit:", key=RENAME_POPOVER, on_change="rerun"):
        st.text_input("Title", value=conversation.title, key=f"rename-{conversation.id}")
        st.button("Save title", key="rename_save", on_click=rename, args=(store, conversation.id))
    with columns[1]:
        export_button(conversation, source_template)
    columns[2].button("Delete", icon=":material/delete:", key="delete", on_click=ask_delete)
    if reader.signed_in:
        columns[3].toggle(
            "Share with teammates", value=conversation.shared, key=f"share-{conversation.id}", on_change=share,
            args=(store, conversation.id), help="Signed-in teammates who open its link can read it (not change it).",
        )
    if st.session_state.get("confirm_delete"):
        with st.container(border=True, key="confirm_delete_box"):
            st.warning(f"Delete the conversation “{conversation.title}” for good? This cannot be undone.",
                       icon=":material/delete_forever:")
            yes, no = st.columns(2)
            yes.button("Delete for good", type="primary", key="delete_confirmed", on_click=delete,
                       args=(store, conversation.id))
            no.button("Keep it", key="delete_cancelled", on_click=st.session_state.pop, args=("confirm_delete", None))


def export_button(conversation: Conversation, source_template: str | None) -> None:
    st.download_button(
        "Export",
        data=conversation_markdown(conversation, source_template),
        file_name=export_name(conversation.title),
        mime="text/markdown",
        icon=":material/download:",
        key="export",
        help="The conversation as Markdown, with its citations and sources",
    )


def share(store: ConversationStore, conversation_id: str) -> None:
    store.share(conversation_id, bool(st.session_state.get(f"share-{conversation_id}")), user=current_reader().user)


def ask_delete() -> None:
    st.session_state["confirm_delete"] = True


def rename(store: ConversationStore, conversation_id: str) -> None:
    title = str(st.session_state.get(f"rename-{conversation_id}") or "")
    try:
        store.rename(conversation_id, title, user=current_reader().user)
        st.session_state.pop("rename_error", None)
        st.session_state[RENAME_POPOVER] = False  # saved: the popover closes
    except ValueError as error:
        st.session_state["rename_error"] = str(error)


def delete(store: ConversationStore, conversation_id: str) -> None:
    store.delete(conversation_id, user=current_reader().user)
    open_conversation(store, None)
    st.session_state["deleted_notice"] = True


def export_name(title: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-").lower()[:60] or "conversation"
    return f"{stem}.md"


@dataclass
class Chat:
    """What the message views need: settings, the retriever (sections, reader) and where messages are saved."""

    settings: object
    retriever: object  # reading as the person (``Retriever.for_reader``)
    conversations: ConversationStore
    broken: str | None = None  # why conversations cannot be saved (the chat still answers)
    read_only: bool = False  # a teammate's shared conversation: no edit, regenerate, rating or new question
    reader: Reader = LOCAL  # who is asking: conversations are saved as theirs

    def fail(self, error: Exception) -> None:
        self.broken = (
            f"Conversations cannot be saved in {self.conversations.path}: {error}. You can still ask, but this "
            "conversation is not saved until the file is repaired or moved away."
        )

    def start(self, question: str) -> str | None:
        """The open conversation's id, created by its first question; None when conversations cannot be saved."""
        if self.broken:
            return None
        try:
            return start_conversation(self.conversations, question)
        except sqlite3.Error as error:
            self.fail(error)
            return None

    def save(self, message: Message, conversation_id: str | None = None) -> None:
        """Saves the message; ``conversation_id`` given, it makes no Streamlit call (safe once a stop arrived)."""
        conversation_id = conversation_id or st.session_state.get("conversation_id")
        if not conversation_id or self.broken:
            return
        try:
            self.conversations.save_message(conversation_id, message, user=self.reader.user)
        except sqlite3.Error as error:
            self.fail(error)
