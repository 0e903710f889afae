"""Knowledge base page: raw search with scores first, then upload of team docs, then what the store holds
(per document its chunk count and last-ingested time, the chunks themselves on request; an uploaded
document can be removed here).

Statistics are ``rag.app.stats.collect_stats``, search is ``Retriever.search``, a document's chunks are
``Retriever.document``, and uploads go through ``rag.app.uploads.add_uploads`` (which calls
``rag.ingest.pipeline.ingest``), removal ``rag.app.uploads.remove_upload``; nothing here reads the store on its own.
All of it reads as the person using the app (``ui.identity``): search, the document list and the chunks show only
what they may read; uploading and removing are for editors, and an upload can be restricted to one of their groups.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import streamlit as st

from rag.app.stats import collect_stats
from rag.app.uploads import ALLOWED_SUFFIXES, UploadRejected, add_uploads, remove_upload, uploads_dir
from rag.index.store import StoreError
from rag.index.write_lock import StoreBusyError
from rag.search.access import PermissionDenied
from rag.search.confidence import abstain_bar
from ui import render
from ui.identity import current_reader
from ui.resources import get_retriever, get_settings

log = logging.getLogger(__name__)

DOC_TYPES = {"All documents": None, "References": "reference", "Team docs": "team"}
STATUS_ICONS = {
    "added": ":material/check_circle:",
    "updated": ":material/update:",
    "unchanged": ":material/check:",
    "failed": ":material/error:",
    "rejected": ":material/block:",
}


def show_documents(settings, retriever) -> None:
    st.subheader("Documents")
    try:
        stats = collect_stats(settings, store=retriever.store, reader=retriever.reader)
    except Exception as error:
        log.exception("cannot read the knowledge base statistics")
        st.error(f"Cannot read what the knowledge base holds: {error}")
        return
    columns = st.columns(3)
    columns[0].metric("Documents", stats["documents"])
    columns[1].metric("Chunks", stats["chunks"])
    columns[2].metric("Embedding model", stats["embedding_model"])
    if not stats["files"]:
        st.info("The knowledge base is empty: run `python -m rag ingest corpus` or upload documents above.")
        return
    uploaded = uploaded_paths(settings, stats["files"])
    for doc_type, row in sorted(stats["by_doc_type"].items()):
        files = [f for f in stats["files"] if (f["doc_type"] or "unknown") == doc_type]
        latest = max((f["ingested_at"] for f in files), default=0)
        st.markdown(
            f"**{render.escape_markdown(doc_type)}**: {row['documents']} documents, {row['chunks']} chunks, "
            f"last ingested {render.format_time(latest)}"
        )
        in_folders = [f for f in files if f["path"] not in uploaded]
        if in_folders:
            st.dataframe(
                [
                    {
                        "file": f["path"],
                        "title": f["title"],
                        "chunks": f["chunks"],
                        "last ingested": render.format_time(f["ingested_at"]),
                        "complete": f["complete"],
                    }
                    for f in in_folders
                ],
                hide_index=True,
                key=f"files-{doc_type}",
                column_config={
                    "file": st.column_config.TextColumn(width="large"),
                    "title": st.column_config.TextColumn(width="medium"),
                    "chunks": st.column_config.NumberColumn(width="small"),
                    "last ingested": st.column_config.TextColumn(width="medium"),
                    "complete": st.column_config.CheckboxColumn(width="small"),
                },
            )
            st.caption(
                ":material/info: These files came from an ingested folder: to remove one, delete the file and run "
                "`python -m rag ingest` on its folder again."
            )
        for f in files:
            if f["path"] in uploaded:
                uploaded_row(f, uploaded[f["path"]], settings, retriever)
    show_chunks(retriever, [f["path"] for f in stats["files"]])


@st.fragment
def show_chunks(retriever, paths: list[str]) -> None:
    """The chunks of one document, as the store holds them (position, section, text)."""
    path = st.selectbox("Show the chunks of", paths, index=None, key="kb_chunks_of",
                        placeholder="Pick a document to see how it was cut into chunks")
    if not path:
        return
    try:
        chunks = retriever.document(path=path)
    except Exception as error:
        st.error(f"Cannot read the chunks of {path}: {error}")
        return
    st.caption(f"{len(chunks)} chunks")
    for chunk in chunks:
        with st.container(border=True, key=f"chunk-{chunk.position}"):
            section = render.escape_markdown(render.section_label(chunk.section))
            tokens = "?" if chunk.tokens is None else chunk.tokens
            st.caption(f"#{chunk.position} · {section} · {tokens} tokens")
            st.markdown(render.demote_headings(chunk.text))


def uploaded_paths(settings, files: list[dict]) -> dict[str, str]:
    """``{path as listed: file name}`` of the documents that were uploaded (they live in the uploads folder)."""
    folder = uploads_dir(settings).resolve()
    found = {}
    for f in files:
        path = Path(f["path"])
        if path.parent.resolve() == folder:
            found[f["path"]] = path.name
    return found


def uploaded_row(file: dict, name: str, settings, retriever) -> None:
    with st.container(border=True, key=f"upload-{name}"):
        info, action = st.columns([5, 1], vertical_alignment="center")
        info.markdown(
            f":material/upload_file: **{render.escape_markdown(file['title'] or name)}** · "
            f"`{file['path']}` · {file['chunks']} chunk{'' if file['chunks'] == 1 else 's'} · "
            f"uploaded {render.format_time(file['ingested_at'])}"
            + (f" · :material/lock: readable by {', '.join(file['access'])}" if file.get("access") else "")
        )
        if not current_reader().may("edit_documents"):
            return
        action.button("Remove", key=f"remove-{name}", icon=":material/delete:",
                      on_click=st.session_state.__setitem__, args=("confirm_remove", name))
        if st.session_state.get("confirm_remove") == name:
            st.warning(f"Remove {name} from the knowledge base and delete the uploaded file?",
                       icon=":material/delete_forever:")
            yes, no, _ = st.columns([1, 1, 3])
            yes.button("Remove for good", type="primary", key=f"remove-confirmed-{name}", on_click=remove,
                       args=(name, settings, retriever))
            no.button("Keep it", key=f"remove-cancelled-{name}", on_click=st.session_state.pop,
                      args=("confirm_remove", None))


def remove(name: str, settings, retriever) -> None:
    st.session_state.pop("confirm_remove", None)
    try:
        removed = remove_upload(name, settings, reader=current_reader(), store=retriever.store)
    except (StoreError, UploadRejected, PermissionDenied) as error:
        st.session_state["remove_result"] = ("error", f"{name} was not removed: {error}")
        return
    if removed:
        st.session_state["remove_result"] = ("success", f"Removed {name} from the knowledge base.")
    else:
        st.session_state["remove_result"] = ("error", f"{name} was not in the knowledge base any more.")


def show_search(settings, retriever) -> None:
    st.subheader("Search")
    st.caption("Raw passages as the answerer receives them, best first, with their scores.")
    query = st.text_input("Search the knowledge base", key="kb_query", placeholder="e.g. cache invalidation")
    columns = st.columns(3)
    mode = columns[0].selectbox("Mode", ["hybrid", "dense", "keyword"], key="kb_mode")
    doc_label = columns[1].selectbox("Documents", list(DOC_TYPES), key="kb_doc_type")
    k = columns[2].number_input("Passages", min_value=1, max_value=50, value=10, key="kb_k")
    if not query.strip():
        return
    try:
        result = retriever.search(query, k=int(k), doc_type=DOC_TYPES[doc_label], mode=mode)
    except Exception as error:
        log.exception("search failed")
        st.error(f"The search failed: {error}")
        return
    st.caption(
        f"{len(result.passages)} passages in {render.format_ms(result.seconds)} · "
        f"confidence {result.confidence:.2f} (answers abstain below "
        f"{abstain_bar(settings.abstain_threshold, retriever):.2f})"
    )
    if not result.passages:
        st.info("Nothing found.")
    for rank, passage in enumerate(result.passages, start=1):
        with st.container(border=True, key=f"hit-{rank}"):
            st.markdown(f"**{rank}. {render.escape_markdown(passage.heading)}**")
            scores = [f"score {passage.score:.4f}"]
            if passage.dense_score is not None:
                scores.append(f"dense {passage.dense_score:.3f}")
            if passage.keyword_score is not None:
                scores.append(f"keyword {passage.keyword_score:.3f}")
            st.caption(
                " · ".join(scores)
                + f" · {render.escape_markdown(passage.doc_type)} · {render.escape_markdown(passage.path)}"
            )
            st.markdown(render.demote_headings(passage.text))


def show_upload(settings, retriever) -> None:
    st.subheader("Add team documents")
    reader = current_reader()
    if not reader.may("edit_documents"):
        st.caption(f":material/lock: Only editors and admins add team documents; you are a {reader.role}.")
        return
    limit_mb = settings.max_file_mb
    st.caption(
        f"Markdown, text, HTML, PDF or DOCX, up to {limit_mb:g} MB each. Files are saved under "
        f"`{uploads_dir(settings)}` and ingested with doc type `team`; they are searchable right after."
    )
    round_ = st.session_state.setdefault("upload_round", 0)
    files = st.file_uploader(
        "Team documents",
        type=[suffix.lstrip(".") for suffix in ALLOWED_SUFFIXES],
        accept_multiple_files=True,
        key=f"uploader-{round_}",
        max_upload_size=max(1, math.ceil(limit_mb)),
    )
    replace = st.checkbox(
        "Replace files with the same name", key="upload_replace",
        help="Otherwise an upload whose name is taken by a different file is saved under a new name.",
    )
    access: tuple[str, ...] = ()
    if reader.groups:
        readable_by = st.selectbox(
            "Who may read them", ["Everyone", *reader.groups], key="upload_access",
            help="A group restricts the documents to its members (and admins), in answers, search and everywhere else.",
        )
        access = () if readable_by == "Everyone" else (readable_by,)
    if st.button("Add to knowledge base", type="primary", disabled=not files, icon=":material/upload:"):
        run_upload([(f.name, f.getvalue()) for f in files], replace, access, settings, retriever)
    results = st.session_state.get("upload_results")
    if results:
        summary, ok = st.session_state.get("upload_summary", ("", True))
        (st.success if ok else st.error)(summary, icon=":material/task_alt:" if ok else ":material/error:")
        for row in results:
            line = upload_line(row["original"], row["name"], row["status"], row["message"])
            (st.markdown if row["status"] in ("added", "updated", "unchanged") else st.error)(line)


def upload_line(original: str, name: str, status: str, message: str) -> str:
    text = f"{STATUS_ICONS.get(status, '')} **{render.escape_markdown(original)}**"
    if name and name != original:
        text += f" → {render.escape_markdown(name)}"
    text += f": {status}"
    return text + (f" ({render.escape_markdown(message)})" if message else "")


def run_upload(files: list[tuple[str, bytes]], replace: bool, access: tuple[str, ...], settings, retriever) -> None:
    with st.status(f"Ingesting {len(files)} file(s)...", expanded=True) as status:

        def progress(event) -> None:
            st.write(f"{event.done}/{event.total} · {event.path}: {event.status}")

        try:
            results = add_uploads(
                files, settings, reader=current_reader(), access=access, replace=replace, store=retriever.store,
                embedder=retriever.embedder, progress=progress,
            )
        except StoreBusyError as error:
            status.update(label="The knowledge base is busy: nothing was added", state="error")
            st.error(str(error))
            return
        except (StoreError, RuntimeError, PermissionDenied) as error:
            status.update(label="The upload failed: nothing was added", state="error")
            st.error(str(error))
            return
        except Exception as error:
            log.exception("upload failed")
            status.update(label="The upload failed: nothing was added", state="error")
            st.error(f"The upload failed ({type(error).__name__}: {error})")
            return
        counts: dict[str, int] = {}
        for result in results:
            counts[result.status] = counts.get(result.status, 0) + 1
            line = upload_line(result.original, result.name, result.status, result.message)
            (st.markdown if result.ok else st.error)(line)
        summary = ", ".join(f"{count} {status_}" for status_, count in counts.items())
        ok = all(result.ok for result in results)
        status.update(label=f"Upload finished: {summary}", state="complete" if ok else "error", expanded=not ok)
    st.session_state["upload_results"] = [
        {"original": r.original, "name": r.name, "status": r.status, "message": r.message} for r in results
    ]
    st.session_state["upload_summary"] = (f"Upload finished: {summary}", ok)
    st.session_state["upload_round"] = st.session_state.get("upload_round", 0) + 1  # a new, empty uploader
    st.rerun()


def main() -> None:
    settings = get_settings()
    try:
        retriever = get_retriever(settings).for_reader(current_reader())
    except Exception as error:
        log.exception("cannot load the knowledge base")
        st.error(f"The knowledge base is not available: {error}")
        st.stop()
    st.title("Knowledge base")
    show_search(settings, retriever)
    show_upload(settings, retriever)
    result = st.session_state.pop("remove_result", None)
    if result:
        (st.success if result[0] == "success" else st.error)(result[1])
    show_documents(settings, retriever)


main()
