"""Feedback on an answer in the chat: thumbs up or down and an optional comment, saved with ``rag.app.feedback``.

A fragment: a thumb reruns only itself. The rating's id is kept on the message, so a reopened
conversation shows the rating it was given. *Regenerate* keeps a rating when the answer comes back the same
(``ui.views.chat``); a different answer starts unrated and says the old one's rating is kept.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import streamlit as st

from rag.app.conversations import Message, earlier_questions
from rag.app.feedback import FeedbackEntry, FeedbackStore

if TYPE_CHECKING:
    from ui.conversation_list import Chat


@st.fragment
def feedback(message: Message, chat: Chat) -> None:
    key = f"feedback-{message.id}"
    if key not in st.session_state and message.feedback_id:
        entry = FeedbackStore.for_settings(chat.settings).get(message.feedback_id)
        if entry is not None:  # a reopened conversation shows the rating it was given
            st.session_state[key] = 1 if entry.rating == 1 else 0
            st.session_state[f"comment-{message.id}"] = entry.comment
    st.feedback("thumbs", key=key, on_change=save_rating, args=(message, key, chat), persist_state="session")
    error = st.session_state.get(f"feedback-error-{message.id}")
    if error:
        st.error(error)
    if message.feedback_id:
        comment_key = f"comment-{message.id}"
        st.text_input(
            "Comment (optional)",
            key=comment_key,
            placeholder="What was wrong or missing? Press Enter to save.",
            on_change=save_comment,
            args=(message, comment_key, chat),
            persist_state="session",
        )
        saved = st.session_state.get(f"comment-saved-{message.id}")
        st.caption("Thank you: feedback and comment saved." if saved else "Thank you: feedback saved.")
    elif st.session_state.get(replaced_key(message)):
        entry = FeedbackStore.for_settings(chat.settings).get(st.session_state[replaced_key(message)])
        if entry is not None:
            thumb = "thumbs up" if entry.rating == 1 else "thumbs down"
            st.caption(f"Your {thumb} on the answer this one replaced is kept in the feedback.")


def replaced_key(message: Message) -> str:
    """Session key of the feedback id a regenerated, different answer's predecessor was rated with."""
    return f"replaced-feedback-{message.id}"


def save_rating(message: Message, key: str, chat: Chat) -> None:
    value = st.session_state.get(key)
    store = FeedbackStore.for_settings(chat.settings)
    try:
        if value is None:
            if message.feedback_id:
                store.delete(message.feedback_id)
            message.feedback_id = None
        else:
            rating = 1 if value == 1 else -1
            updated = bool(message.feedback_id) and store.update(message.feedback_id, rating=rating)
            if not updated:
                history = earlier_questions_before(message)
                entry = FeedbackEntry.from_final(message.final, rating, history=history, user=chat.reader.user)
                message.feedback_id = store.add(entry)
        chat.save(message)
        st.session_state[f"feedback-error-{message.id}"] = None
    except (sqlite3.Error, OSError) as error:
        st.session_state[f"feedback-error-{message.id}"] = f"The feedback could not be saved in {store.path}: {error}"


def save_comment(message: Message, key: str, chat: Chat) -> None:
    store = FeedbackStore.for_settings(chat.settings)
    try:
        store.update(message.feedback_id, comment=str(st.session_state.get(key) or "").strip())
        st.session_state[f"comment-saved-{message.id}"] = True
        st.session_state[f"feedback-error-{message.id}"] = None
    except (sqlite3.Error, OSError) as error:
        st.session_state[f"feedback-error-{message.id}"] = f"The comment could not be saved in {store.path}: {error}"


def earlier_questions_before(message: Message) -> list[str]:
    """The questions asked before this answer's own question, as the answer was given with them."""
    messages = st.session_state.get("messages", [])
    index = next((i for i, m in enumerate(messages) if m.id == message.id), len(messages))
    return earlier_questions(messages[: max(index - 1, 0)])
