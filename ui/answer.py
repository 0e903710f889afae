"""One chat message on screen: the answer with linked ``[n]`` markers, what it was made with, warnings and
notes, source cards, "How this answer was produced", and feedback.

Source cards, feedback (``ui.rating``) and the details are ``st.fragment``s: a click on one reruns that part,
not the page; *Copy* (``ui.copy_button``) works in the browser without a rerun. Messages are
``rag.app.conversations.Message``; ``ui.conversation_list.Chat`` saves them.
"""

from __future__ import annotations

import streamlit as st

from rag.answer.events import Citation, CitationEvent, ErrorEvent, Final, StatusEvent, TextDelta
from rag.app.conversations import Message, answer_markdown, source_url
from ui import rating, render
from ui.conversation_list import Chat
from ui.copy_button import copy_button
from ui.reader import open_reader

ABSTAINED_ICON = ":material/search_off:"


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
        model = final.provider_note or final.model
        parts.append(f":material/smart_toy: {render.escape_markdown(final.provider)} · {render.escape_markdown(model)}")
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
    cited = {c.n for c in final.citations} if final is not None else set()
    if final is not None and final.abstained:  # the closest material, when quoted, keeps its markers linked
        body.warning(render.link_markers(message.content, message.id, cited), icon=ABSTAINED_ICON)
    elif message.content:
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
    if not chat.read_only:  # a teammate's shared conversation is read, not rated
        rating.feedback(message, chat)


def copy_answer(message: Message, settings) -> None:
    """*Copy*: one click puts the answer as Markdown, with its numbered sources and quotes, on the clipboard."""
    copy_button(answer_markdown(message, settings.source_url_template), key=f"copy-{message.id}")


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
        dated = render.status_label(passage.status, passage.superseded_by, passage.updated)
        site = render.escape_markdown(render.section_label(passage.site)) if passage.site else ""
        st.caption(
            (f":material/account_tree: {site} · " if site else "")
            + f":material/folder: {render.escape_markdown(passage.doc_type or 'unknown')} · "
            f":material/segment: {render.escape_markdown(render.section_label(passage.section))} · "
            f":material/description: {where}"
            + (f" · {dated}" if dated else "")
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
    from rag.search.passages import join_chunks

    shown, _ = render.highlight(join_chunks([chunk.text for chunk in chunks]), quotes)
    st.markdown(render.demote_headings(shown), unsafe_allow_html=True)


# -- how this answer was produced ----------------------------------------------------------------------


def passages_list(final: Final) -> str:
    """The retrieved passages as a Markdown list numbered as the answer's ``[n]``: heading, file and doc type, then
    the fused, dense and keyword scores. A list wraps at any width; a table of seven columns ran off a phone's
    screen at the scores."""
    items = []
    for n, p in enumerate(final.passages, start=1):
        dense = "-" if p.dense_score is None else f"{p.dense_score:.3f}"
        keyword = "-" if p.keyword_score is None else f"{p.keyword_score:.3f}"
        items.append(
            f"{n}. **{render.escape_markdown(p.heading)}** · `{p.path or p.source}` · "
            f"{render.escape_markdown(p.doc_type)}  \n    fused {p.score:.4f} · dense {dense} · keyword {keyword}"
        )
    return "\n".join(items)


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
    bar = "" if final.threshold is None else f"threshold {final.threshold:.2f}, "
    st.markdown(
        f"**Confidence** {final.confidence:.2f} ({bar}{verdict}) · "
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
        st.markdown(passages_list(final))
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
