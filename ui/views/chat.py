"""Chat page: questions in, streamed cited answers out, with sources, provenance and feedback.

All retrieval and answering is ``rag.answering.Answerer``; this page only shows its events. The
conversation lives in ``st.session_state["messages"]``; each reply is stored there before it is
streamed and filled in as it arrives, so neither an error nor a stopped answer loses anything.
"""

from __future__ import annotations

import logging
import sqlite3
import uuid

import streamlit as st

from rag.events import CitationEvent, ErrorEvent, Final, TextDelta
from rag.feedback import FeedbackEntry, FeedbackStore
from rag.personas import Persona
from rag.store import StoreError
from ui import render
from ui.resources import answerer_label, get_answerer, get_retriever, get_settings, read_personas

log = logging.getLogger(__name__)

DOC_TYPES = {"All documents": None, "References": "reference", "Team docs": "team"}
ABSTAINED_ICON = ":material/search_off:"


def readable_error(error: Exception) -> str:
    if isinstance(error, StoreError):
        return f"The knowledge base is not available: {error}"
    if isinstance(error, RuntimeError):
        return str(error)
    return f"Something went wrong while answering ({type(error).__name__}: {error}). Your conversation is kept."


def new_conversation() -> None:
    st.session_state["messages"] = []


def sidebar(settings, answerer) -> tuple[Persona | None, int, str | None]:
    with st.sidebar:
        st.subheader("Answer settings")
        choice = read_personas(settings.agents_dir)
        for error in choice.errors:
            st.error(error, icon=":material/error:")
        persona = None
        if choice.personas:
            names = [p.name for p in choice.personas]
            default = names.index(settings.persona) if settings.persona in names else 0
            name = st.selectbox("Persona", names, index=default, key="persona", persist_state="session")
            persona = next((p for p in choice.personas if p.name == name), choice.personas[default])
            st.caption(persona.description)
        else:
            st.error(f"No usable persona in {settings.agents_dir}: add an agent file to ask questions.")
        is_claude, label = answerer_label(answerer)
        if is_claude:
            st.success(f"Answering with {label}", icon=":material/smart_toy:")
        else:
            st.info(label, icon=":material/cloud_off:")
        k = st.slider(
            "Passages per answer", 1, 12, value=min(settings.top_k, 12), key="top_k", persist_state="session"
        )
        doc_label = st.selectbox("Search in", list(DOC_TYPES), key="doc_type", persist_state="session")
        st.button(
            "New conversation",
            icon=":material/add_comment:",
            on_click=new_conversation,
            width="stretch",
        )
    return persona, int(k), DOC_TYPES.get(doc_label)


# -- one answer ----------------------------------------------------------------------------------


def stream_texts(events, reply: dict):
    """The text deltas of the answerer's events; citations, errors and the final record go into ``reply``."""
    for event in events:
        if isinstance(event, TextDelta):
            reply["content"] += event.text
            yield event.text
        elif isinstance(event, CitationEvent):
            quotes = reply["quotes"].setdefault(event.citation.n, [])
            if event.citation.quote not in quotes:
                quotes.append(event.citation.quote)
        elif isinstance(event, ErrorEvent):
            reply["error"] = event.message
        elif isinstance(event, Final):
            reply["final"] = event


def ask(question: str, persona: Persona, k: int, doc_type: str | None, answerer, retriever, settings) -> None:
    messages = st.session_state["messages"]
    history = [{"role": m["role"], "content": m["content"]} for m in messages if m["content"]]
    messages.append({"id": uuid.uuid4().hex, "role": "user", "content": question})
    with st.chat_message("user"):
        st.markdown(question)
    reply = {
        "id": uuid.uuid4().hex,
        "role": "assistant",
        "content": "",
        "final": None,
        "quotes": {},
        "error": None,
        "complete": False,
        "persona": persona.name,
        "history": [m["content"] for m in history if m["role"] == "user"],
        "feedback_id": None,
    }
    messages.append(reply)
    with st.chat_message("assistant"):
        body = st.empty()
        try:
            with body.container():
                st.write_stream(
                    stream_texts(answerer.answer(question, persona, history=history, k=k, doc_type=doc_type), reply)
                )
        except Exception as error:  # the store, the model, anything: shown, and the conversation is kept
            log.exception("answering failed")
            reply["error"] = readable_error(error)
        reply["complete"] = True
        if reply["final"] is not None:
            reply["content"] = reply["final"].answer
        render_body(reply, body)
        render_extras(reply, retriever, settings)


# -- rendering -----------------------------------------------------------------------------------


def render_message(message: dict, retriever, settings) -> None:
    with st.chat_message(message["role"]):
        if message["role"] == "user":
            st.markdown(message["content"])
            return
        render_body(message, st.empty())
        render_extras(message, retriever, settings)


def render_body(reply: dict, body) -> None:
    final = reply["final"]
    if final is not None and final.abstained:
        body.warning(reply["content"], icon=ABSTAINED_ICON)
    elif reply["content"]:
        body.markdown(reply["content"])
    else:
        body.empty()
    if reply["error"]:
        st.error(reply["error"], icon=":material/error:")
    elif not reply["complete"]:
        st.caption("The answer was stopped before it finished.")


def render_extras(reply: dict, retriever, settings) -> None:
    final = reply["final"]
    if final is None:
        return
    unsupported = final.unsupported
    if unsupported:
        st.caption(
            f":material/warning: {len(unsupported)} cited sentence(s) are not supported by the passage they cite; "
            "see *How this answer was produced*."
        )
    if final.citations:
        render_sources(reply, retriever)
    render_details(final, settings)
    render_feedback(reply, settings)


def render_sources(reply: dict, retriever) -> None:
    final = reply["final"]
    st.markdown("**Sources**")
    for citation in final.citations:
        passage = citation.passage
        quotes = reply["quotes"].get(citation.n) or [citation.quote]
        with st.container(border=True, key=f"source-{reply['id']}-{citation.n}"):
            st.markdown(f"**[{citation.n}] {render.escape_markdown(passage.title or passage.path)}**")
            st.caption(
                f":material/folder: {render.escape_markdown(passage.doc_type or 'unknown')} · "
                f":material/segment: {render.escape_markdown(render.section_label(passage.section))} · "
                f":material/description: {render.escape_markdown(passage.path or passage.source)}"
            )
            shown, found = render.passage_view(passage.text, passage.full_text, quotes)
            st.markdown(shown, unsafe_allow_html=True)
            if not found:
                st.caption(render.cited_words_note(quotes))
            section = st.expander(
                "Open the whole section",
                icon=":material/unfold_more:",
                key=f"section-{reply['id']}-{citation.n}",
                on_change="rerun",
            )
            if section.open:
                with section:
                    render_section(passage, retriever)


def render_section(passage, retriever) -> None:
    try:
        chunks = retriever.neighbourhood(passage)
    except Exception as error:
        st.error(readable_error(error))
        return
    if not chunks:
        st.caption("The section is no longer in the knowledge base (the file was changed or removed).")
        return
    st.markdown("\n\n".join(chunk.text for chunk in chunks))


def render_details(final: Final, settings) -> None:
    with st.expander("How this answer was produced", icon=":material/manage_search:"):
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
            f"**Persona** {render.escape_markdown(final.persona)}"
        )
        if final.passages:
            st.markdown(f"**Retrieved passages** ({len(final.passages)})")
            st.dataframe(
                [
                    {
                        "n": n,
                        "passage": p.heading,
                        "file": p.path or p.source,
                        "doc type": p.doc_type,
                        "score (fused)": round(p.score, 4),
                        "dense": None if p.dense_score is None else round(p.dense_score, 3),
                        "keyword": None if p.keyword_score is None else round(p.keyword_score, 3),
                    }
                    for n, p in enumerate(final.passages, start=1)
                ],
                hide_index=True,
            )
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


def render_feedback(reply: dict, settings) -> None:
    key = f"feedback-{reply['id']}"
    st.feedback("thumbs", key=key, on_change=save_rating, args=(reply, key, settings), persist_state="session")
    if reply.get("feedback_error"):
        st.error(reply["feedback_error"])
    if reply.get("feedback_id"):
        st.text_input(
            "Comment (optional)",
            key=f"comment-{reply['id']}",
            placeholder="What was wrong or missing? Press Enter to save.",
            on_change=save_comment,
            args=(reply, f"comment-{reply['id']}", settings),
            persist_state="session",
        )
        if reply.get("comment_saved"):
            st.caption("Thank you: feedback and comment saved.")
        else:
            st.caption("Thank you: feedback saved.")


def save_rating(reply: dict, key: str, settings) -> None:
    value = st.session_state.get(key)
    store = FeedbackStore.for_settings(settings)
    try:
        if value is None:
            if reply.get("feedback_id"):
                store.delete(reply["feedback_id"])
            reply["feedback_id"] = None
        else:
            rating = 1 if value == 1 else -1
            updated = bool(reply.get("feedback_id")) and store.update(reply["feedback_id"], rating=rating)
            if not updated:
                entry = FeedbackEntry.from_final(reply["final"], rating, history=reply["history"])
                reply["feedback_id"] = store.add(entry)
        reply["feedback_error"] = None
    except (sqlite3.Error, OSError) as error:
        reply["feedback_error"] = f"The feedback could not be saved in {store.path}: {error}"


def save_comment(reply: dict, key: str, settings) -> None:
    store = FeedbackStore.for_settings(settings)
    try:
        store.update(reply["feedback_id"], comment=str(st.session_state.get(key) or "").strip())
        reply["comment_saved"] = True
        reply["feedback_error"] = None
    except (sqlite3.Error, OSError) as error:
        reply["feedback_error"] = f"The comment could not be saved in {store.path}: {error}"


# -- page ----------------------------------------------------------------------------------------


def main() -> None:
    settings = get_settings()
    try:
        retriever = get_retriever(settings)
        answerer = get_answerer(settings, retriever)
    except Exception as error:
        log.exception("cannot load the knowledge base")
        st.error(readable_error(error))
        st.stop()
    messages = st.session_state.setdefault("messages", [])
    persona, k, doc_type = sidebar(settings, answerer)
    st.title("Architecture knowledge assistant")
    if not messages:
        st.caption(
            "Ask about backend architecture and your team's design docs. Every claim is cited [n]; "
            "the sources are listed under each answer."
        )
    for message in messages:
        render_message(message, retriever, settings)
    question = st.chat_input(
        "Ask a backend or system-design question", disabled=persona is None, submit_mode="stop", key="question"
    )
    if question and persona is not None:
        ask(question, persona, k, doc_type, answerer, retriever, settings)


main()
