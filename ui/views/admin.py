"""Admin page (admins only): everyone's feedback, the audit log, and a rebuild of the knowledge base.

Each comes from a library call that checks the role itself (``FeedbackStore.for_reader``, ``AuditLog.entries``,
``rag.app.rebuild.rebuild``), so the page shows nothing more to anyone who reaches its address without the role.
"""

from __future__ import annotations

import logging

import streamlit as st

from rag.app.audit import AuditLog
from rag.app.feedback import FeedbackError, FeedbackStore
from rag.app.rebuild import RebuildRefused, ingested_folders, rebuild
from rag.index.store import StoreError
from rag.search.access import PermissionDenied
from ui.identity import current_reader
from ui.resources import get_retriever, get_settings

log = logging.getLogger(__name__)


def show_feedback(settings, reader) -> None:
    st.subheader("Feedback")
    try:
        entries = FeedbackStore.for_settings(settings).for_reader(reader)
    except FeedbackError as error:
        st.error(str(error))
        return
    if not entries:
        st.caption("No answer has been rated yet.")
        return
    st.dataframe(
        [
            {
                "when": entry.created_at,
                "who": entry.user,
                "rating": "👍" if entry.rating == 1 else "👎",
                "question": entry.question,
                "comment": entry.comment,
                "sources": ", ".join(entry.sources),
            }
            for entry in reversed(entries)
        ],
        hide_index=True,
        key="admin_feedback",
    )


def show_audit_log(settings, reader) -> None:
    st.subheader("Audit log")
    st.caption("Who added, replaced or removed which team document, and who rebuilt the knowledge base, when (UTC).")
    entries = AuditLog.for_settings(settings).entries(reader)
    if not entries:
        st.caption("Nothing yet.")
        return
    st.dataframe(
        [{"when": e.at, "who": e.user, "action": e.action, "what": e.target, "detail": e.detail} for e in entries],
        hide_index=True,
        key="admin_audit",
    )


def show_rebuild(settings, reader) -> None:
    st.subheader("Rebuild the knowledge base")
    retriever = get_retriever(settings)
    try:
        folders = ingested_folders(retriever.store) if retriever.store.exists() else []
    except StoreError as error:
        st.error(f"The knowledge base cannot be read: {error}")
        return
    st.caption(
        "Reads every ingested folder again into a new index and swaps it in (answers keep coming from the current "
        "one meanwhile); each file keeps its doc type and who may read it. Folders: "
        + (", ".join(f"`{folder}`" for folder in folders) or "none")
    )
    if not st.button("Rebuild", icon=":material/autorenew:", key="rebuild", disabled=not folders):
        return
    with st.status("Rebuilding the knowledge base...", expanded=True) as status:
        try:
            report = rebuild(settings, reader=reader, store=retriever.store, embedder=retriever.embedder)
        except (RebuildRefused, PermissionDenied, StoreError) as error:
            status.update(label="The rebuild did not run", state="error")
            st.error(str(error))
            return
        except Exception as error:
            log.exception("rebuild failed")
            status.update(label="The rebuild failed; the knowledge base is unchanged", state="error")
            st.error(f"{type(error).__name__}: {error}")
            return
        failed = len(report.files_failed)
        label = f"Rebuilt: {report.files_seen} files, {report.chunks_total} chunks, {failed} failed"
        status.update(label=label, state="error" if failed else "complete", expanded=bool(failed))
        for failure in report.files_failed:
            st.error(f"{failure.path}: {failure.error}")


def main() -> None:
    settings = get_settings()
    reader = current_reader()
    st.title("Admin")
    try:
        reader.require("see_all_feedback")
    except PermissionDenied as error:
        st.error(str(error), icon=":material/lock:")
        st.stop()
    show_rebuild(settings, reader)
    show_feedback(settings, reader)
    show_audit_log(settings, reader)


main()
