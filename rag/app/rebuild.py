"""Rebuild: an admin's reindex of the whole knowledge base from the app, over every folder it was ingested from.

The folders are the roots the manifest records (the uploads folder among them), and every file keeps the doc type
and groups it was given (``rag.ingest.sync_plan.file_options``), so a rebuild changes how chunks are made, never
who may read them. A folder that is gone stops the rebuild before anything is built. It runs as
``ingest --reindex`` does: built aside and swapped in, searches answering from the old store meanwhile.
"""

from __future__ import annotations

from pathlib import Path

from rag.app.audit import AuditLog
from rag.config import Settings
from rag.index.store import Store
from rag.ingest.pipeline import IngestReport, ProgressCallback, ingest
from rag.search.access import Reader


class RebuildRefused(RuntimeError):
    """The knowledge base cannot be rebuilt from here; the message says why and what to do."""


def ingested_folders(store: Store) -> list[Path]:
    """The folders the knowledge base was ingested from, as the manifest records them (resolved, so the app
    finds them whatever folder it was started from; a store made before that names them relative to it)."""
    return [Path(folder) for folder in sorted({record.root_folder for record in store.file_records().values()})]


def rebuild(
    settings: Settings,
    *,
    reader: Reader,
    store: Store | None = None,
    embedder=None,
    progress: ProgressCallback | None = None,
) -> IngestReport:
    """Reindexes every ingested folder for ``reader`` (an admin); the run goes to the audit log."""
    reader.require("reindex")
    store = store or Store(settings)
    folders = ingested_folders(store) if store.exists() else []
    if not folders:
        raise RebuildRefused("the knowledge base is empty: there is nothing to rebuild")
    gone = [str(folder) for folder in folders if not folder.is_dir()]
    if gone:
        raise RebuildRefused(
            f"these ingested folders are not reachable from {Path.cwd()}: {', '.join(gone)}; run "
            "`python -m rag ingest --reindex FOLDER ...` where they are"
        )
    report = ingest(folders, settings, reindex=True, store=store, embedder=embedder, progress=progress)
    summary = (
        f"{report.files_seen} files, {report.chunks_total} chunks, {len(report.files_failed)} failed"
        + (" (nothing swapped in)" if report.files_failed and not report.chunks_total else "")
    )
    AuditLog.for_settings(settings).record(reader.user, "reindex", ", ".join(map(str, folders)), summary)
    return report
