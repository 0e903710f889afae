"""Reader view: a cited document shown whole, in a dialog, with the cited passage highlighted and scrolled to.

The document is put back together from the knowledge base's own chunks (``Retriever.document`` by source
key, ``rag.search.catalog.document_sections``), so what is shown is exactly what the answer was drawn
from, for PDFs and DOCX files as much as for Markdown, and even when the file is not on this machine.
"""

from __future__ import annotations

import streamlit as st

from rag.app.conversations import source_url
from rag.search.catalog import document_sections
from rag.search.passages import Passage
from ui import render

SCROLL_TO_MARK = """<script>
(() => {
  let tries = 0;
  const scroll = () => {
    const cited = '[role="dialog"] .st-key-reader-cited';
    const mark = document.querySelector(cited + ' mark') || document.querySelector(cited);
    if (mark) { mark.scrollIntoView({block: "center"}); return; }
    if (tries++ < 40) setTimeout(scroll, 100);
  };
  setTimeout(scroll, 150);
})();
</script>"""


def heading(section: str) -> str:
    parts = [part.strip() for part in section.split(">") if part.strip()]
    if not parts:
        return ""
    return "#" * min(len(parts) + 2, 6) + " " + render.escape_markdown(parts[-1])


def show_document(retriever, passage: Passage, quotes: list[str], settings) -> None:
    st.caption(
        f":material/description: `{passage.path or passage.source}` · "
        f":material/folder: {render.escape_markdown(passage.doc_type or 'unknown')}"
    )
    url = source_url(passage.source, settings.source_url_template)
    if url:
        st.link_button("Open in the Git web UI", url, icon=":material/open_in_new:")
    try:
        sections = document_sections(retriever.document(source_key=passage.source_key))
    except Exception as error:
        st.error(f"The document cannot be read from the knowledge base: {error}")
        return
    if not sections:
        st.warning("The document is no longer in the knowledge base (the file was changed or removed).")
        return
    for section in sections:
        title = heading(section.name)
        if title:
            st.markdown(title)
        if section.name != passage.section:
            st.markdown(section.text)
            continue
        shown, found = render.highlight(section.text, quotes)
        if not found:  # the quote is in code or a table: mark the cited passage as a whole instead
            shown, found = render.highlight(section.text, [passage.text])
        with st.container(key="reader-cited"):
            st.markdown(shown, unsafe_allow_html=True)
    st.html(SCROLL_TO_MARK, unsafe_allow_javascript=True)


def open_reader(retriever, passage: Passage, quotes: list[str], settings) -> None:
    """Opens the reader dialog on ``passage``'s document (call it from a button's run)."""
    title = passage.title or passage.path or "Document"

    def body() -> None:
        show_document(retriever, passage, quotes, settings)

    st.dialog(title, width="large")(body)()
