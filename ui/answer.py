"""One chat message on screen: the answer with linked ``[n]`` markers, what it was made with, warnings and
notes, source cards, "How this answer was produced", and feedback.

Source cards and feedback are ``st.fragment``s: a click on one reruns that card or that thumb, not the
page. Messages are ``rag.conversations.Message``; ``Chat`` saves them (``ConversationStore``).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import streamlit as st

from rag.conversations import ConversationStore, Message, answer_markdown, source_url
from rag.events import Citation, CitationEvent, ErrorEvent, Final, StatusEvent, TextDelta
from rag.feedback import FeedbackEntry, FeedbackStore
from ui import render
from ui.reader import open_reader

ABSTAINED_ICON = ":material/search_off:"


@dataclass
class Chat:
    """What the message views need: settings, the retriever (sections, reader) and where messages are saved."""

    settings: object
    retriever: object
    conversations: ConversationStore
    broken: str | None = None  # why conversations cannot be saved (the chat still answers)

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
            from ui.conversation_list import start_conversation

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
            self.conversations.save_message(conversation_id, message)
        except sqlite3.Error as error:
            self.fail(error)


def frame():
    """``(provenance, status, notes, body)`` slots of an answer, the same while it streams and when it is shown
    again, so the redraw after an answer replaces each element in place."""
    return st.empty(), st.empty(), st.container(), st.empty()


def provenance(message: Message) -> str:
    """The line written on every answer: persona, answerer and the filter the search used."""
    final = message.final
    persona = final.persona if final else message.persona
    doc_type = final.doc_type if final else message.doc_type
    parts = [f":material/person: {render.escape_markdown(persona or 'no persona')}"]
    if final is not None:
        parts.append(f":material/smart_toy: {render.escape_markdown(final.provider)} · "
                     f"{render.escape_markdown(final.model)}")
    parts.append(f":material/filter_alt: searched {render.filter_label(doc_type)}")
    return " · ".join(parts)


def stream_texts(events, reply: Message, status):
    """The text deltas of the answerer's events; citations, errors and the final record go into ``reply``, a
    transient status (a retry after an overload) into the ``status`` placeholder until text arrives."""
    showing_status = False
    for event in events:
        if isinstance(event, TextDelta):
            if showing_status:
                status.empty()
                showing_status = False
            reply.content += event.text
            yield event.text
        elif isinstance(event, StatusEvent):
            status.info(event.message, icon=":material/hourglass_top:")
            showing_status = True
        elif isinstance(event, CitationEvent):
            quotes = reply.quotes.setdefault(event.citation.n, [])
            for quote in event.citation.all_quotes:
                if quote and quote not in quotes:
                    quotes.append(quote)
        elif isinstance(event, ErrorEvent):
            reply.error = event.message
        elif isinstance(event, Final):
            reply.final = event
    if showing_status:
        status.empty()


def show_body(message: Message, body) -> None:
    """The answer text (``[n]`` linked to its card), or the abstention in a yellow box, into ``body``."""
    final = message.final
    if final is not None and final.abstained:
        body.warning(message.content, icon=ABSTAINED_ICON)
    elif message.content:
        cited = {c.n for c in final.citations} if final is not None else set()
        body.markdown(render.link_markers(message.content, message.id, cited))
    else:
        body.empty()


def show_notes(final: Final | None) -> None:
    for note in final.notes if final is not None else []:
        st.info(note, icon=":material/info:")


def show_problems(message: Message) -> None:
    final = message.final
    if message.error:
        st.error(message.error, icon=":material/error:")
    if not message.complete:
        st.warning("This answer is incomplete: you stopped it before it finished.", icon=":material/warning:")
    elif final is not None and final.incomplete:
        reason = render.incomplete_reason(final.stop_reason, None if message.error else final.error)
        st.warning(f"This answer is incomplete: {reason}.", icon=":material/warning:")


def show_extras(message: Message, chat: Chat) -> None:
    final = message.final
    if final is None:
        return
    if final.unsupported:
        st.caption(
            f":material/warning: {len(final.unsupported)} cited sentence(s) are not supported by the passage they "
            "cite; see *How this answer was produced*."
        )
    if final.citations:
        st.markdown("**Sources**")
        for citation in final.citations:
            source_card(message, citation, chat)
    details(message, chat.settings)
    feedback(message, chat)


@st.fragment
def copy_popover(message: Message, settings) -> None:
    """The answer as Markdown, built only while the popover is open (every element on the page costs each click)."""
    popover = st.popover("Copy", icon=":material/content_copy:", key=f"copy-{message.id}", on_change="rerun")
    if popover.open:
        with popover:
            st.caption("The answer as Markdown with its sources: use the copy icon at the top right.")
            st.code(answer_markdown(message, settings.source_url_template), language="markdown", wrap_lines=True)


# -- source cards ------------------------------------------------------------------------------------


@st.fragment
def source_card(message: Message, citation: Citation, chat: Chat) -> None:
    passage = citation.passage
    quotes = message.quotes_for(citation)
    with st.container(border=True, key=f"source-{message.id}-{citation.n}"):
        title = render.escape_markdown(passage.title or passage.path)
        st.markdown(f'<span id="{render.anchor(message.id, citation.n)}"></span>**[{citation.n}] {title}**',
                    unsafe_allow_html=True)
        where = f"`{passage.path or passage.source}`"
        url = source_url(passage.source, chat.settings.source_url_template)
        if url:
            where += f" ([open in Git]({url}))"
        st.caption(
            f":material/folder: {render.escape_markdown(passage.doc_type or 'unknown')} · "
            f":material/segment: {render.escape_markdown(render.section_label(passage.section))} · "
            f":material/description: {where}"
        )
        shown, found = render.passage_view(passage.text, passage.full_text, quotes)
        st.markdown(shown, unsafe_allow_html=True)
        if not found:
            st.caption(render.cited_words_note(quotes))
        section = st.expander(
            "Open the whole section",
            icon=":material/unfold_more:",
            key=f"section-{message.id}-{citation.n}",
            on_change="rerun",
        )
        if section.open:
            with section:
                show_section(passage, quotes, chat.retriever)
        if st.button("Read the whole document", icon=":material/menu_book:", key=f"read-{message.id}-{citation.n}",
                     type="tertiary"):
            open_reader(chat.retriever, passage, quotes, chat.settings)


def show_section(passage, quotes: list[str], retriever) -> None:
    try:
        chunks = retriever.neighbourhood(passage)
    except Exception as error:
        st.error(f"The section cannot be read from the knowledge base: {error}")
        return
    if not chunks:
        st.caption("The section is no longer in the knowledge base (the file was changed or removed).")
        return
    from rag.retrieval import join_chunks

    shown, _ = render.highlight(join_chunks([chunk.text for chunk in chunks]), quotes)
    st.markdown(shown, unsafe_allow_html=True)


# -- how this answer was produced ----------------------------------------------------------------------


def passages_table(final: Final) -> str:
    """A Markdown table (it wraps, so no passage or file name is cut and every score stays in view)."""
    rows = ["| n | passage | file | doc type | fused | dense | keyword |", "|---|---|---|---|---|---|---|"]
    for n, p in enumerate(final.passages, start=1):
        dense = "-" if p.dense_score is None else f"{p.dense_score:.3f}"
        keyword = "-" if p.keyword_score is None else f"{p.keyword_score:.3f}"
        cells = [str(n), render.escape_markdown(p.heading), f"`{p.path or p.source}`",
                 render.escape_markdown(p.doc_type), f"{p.score:.4f}", dense, keyword]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


@st.fragment
def details(message: Message, settings) -> None:
    """*How this answer was produced*, filled only while it is open."""
    expander = st.expander("How this answer was produced", icon=":material/manage_search:",
                           key=f"details-{message.id}", on_change="rerun")
    if expander.open:
        with expander:
            show_details(message, settings)


def show_details(message: Message, settings) -> None:
    final = message.final
    if final.standalone_query.strip() != final.question.strip():
        st.markdown(
            "**Searched for** (the follow-up rewritten as a standalone query): "
            f"{render.escape_markdown(final.standalone_query)}"
        )
    else:
        st.markdown("**Searched for:** the question as asked.")
    verdict = "below the threshold: abstained" if final.abstained else "above the threshold: answered"
    st.markdown(
        f"**Confidence** {final.confidence:.2f} (threshold {settings.abstain_threshold:.2f}, {verdict}) · "
        f"**Answerer** {render.escape_markdown(final.provider)} ({render.escape_markdown(final.model)}) · "
        f"**Persona** {render.escape_markdown(final.persona)} · "
        f"**Filter** {render.filter_label(final.doc_type)}"
    )
    if final.stop_reason:
        st.markdown(f"**Stop reason** {render.escape_markdown(final.stop_reason)}")
    if final.usage:
        st.markdown(f"**Usage** {render.escape_markdown(render.usage_line(final.usage))}")
    if final.passages:
        st.markdown(f"**Retrieved passages** ({len(final.passages)})")
        st.markdown(passages_table(final))
    if final.checks:
        verified = sum(check.supported for check in final.checks)
        st.markdown(
            f"**Citation checks**: {verified} verified, {len(final.checks) - verified} flagged as unsupported "
            f"(support threshold {settings.support_threshold:.2f})"
        )
        for check in final.checks:
            mark = ":green[:material/check_circle: verified]" if check.supported else (
                ":orange[:material/warning: unsupported]"
            )
            cited = "".join(f"[{n}]" for n in check.cited)
            st.markdown(
                f"- {mark} ({check.score:.2f}) {render.escape_markdown(check.sentence)} "
                + render.escape_markdown(cited)
            )
    timings = final.timings
    st.markdown(
        "**Time** "
        + " · ".join(
            f"{name} {render.format_ms(timings.get(name))}"
            for name in ("retrieval", "generation", "verification", "total")
            if name in timings
        )
    )


# -- feedback ------------------------------------------------------------------------------------------


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
                entry = FeedbackEntry.from_final(message.final, rating, history=history)
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
    from rag.conversations import earlier_questions

    messages = st.session_state.get("messages", [])
    index = next((i for i, m in enumerate(messages) if m.id == message.id), len(messages))
    return earlier_questions(messages[: max(index - 1, 0)])
