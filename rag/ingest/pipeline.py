"""Ingest: keeps the store in sync with folders of documents, incrementally and crash-safely.

The manifest of files is the commit record. For a new or changed file the manifest entry is first
marked incomplete, then its chunks are upserted (ids are deterministic, so a retry overwrites), its
stale chunks deleted, and only then is the entry marked complete with the new hash. A process
killed at any moment leaves either a complete entry that matches the chunks or an incomplete one
that the next run redoes; files gone from an ingested root are removed the same way.

The store is marked ``ingest_pending`` before a run's first chunk write and the mark is cleared by its
revision bump, so a run killed after its last write is still finished by the next one (revision
bumped, keyword index brought up to date). The keyword index is updated with the files the run changed
(``rag.index.keyword``), not rebuilt, just before the revision bump. A root that lost more than half of its
documents at once (an unmounted share) is not pruned without ``force_prune`` (what a run must do is decided first,
by ``rag.ingest.sync_plan``).
``reindex`` builds aside and swaps in (``rag.ingest.reindex``).

A text is embedded once per run: chunks with the same text to embed (an included snippet, a note repeated
in many pages, the same file under two paths) share one vector (``RunVectors``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rag.config import Settings
from rag.documents.access import normalize_groups
from rag.documents.discovery import Discovery, Failure, SourceFile, discover
from rag.documents.doc_status import status_metadata
from rag.documents.errors import LoadError, SkippedFile
from rag.documents.git_dates import last_commits
from rag.documents.loading import Document, TextLimits, load
from rag.index.embedding import Embedder
from rag.index.keyword import KeywordIndex
from rag.index.keyword_writer import Change
from rag.index.store import FileRecord, Store, StoreDamagedError, new_revision
from rag.index.store_files import move_damaged_aside
from rag.ingest import reindex as reindex_swap
from rag.ingest.chunking import Chunk, chunk_document
from rag.ingest.sync_plan import (
    FileOptions,
    KnownFiles,
    changed_files,
    file_options,
    identify,
    reindex_refusals,
    removable,
    vanished,
)

EMBED_GROUP_CHUNKS = 512


@dataclass
class IngestReport:
    files_seen: int = 0
    files_added: int = 0
    files_updated: int = 0
    files_unchanged: int = 0
    files_removed: int = 0
    files_failed: list[Failure] = field(default_factory=list)
    files_skipped: list[Failure] = field(default_factory=list)  # nothing to index by design (front matter only)
    chunks_embedded: int = 0
    chunks_total: int = 0
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.files_added or self.files_updated or self.files_removed)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        return data


@dataclass
class Progress:
    """Reported after each file is dealt with: ``done`` of ``total`` files that needed work."""

    done: int
    total: int
    path: str
    status: str  # added, updated, removed, failed, skipped


ProgressCallback = Callable[[Progress], None]


class RunVectors:
    """The vectors of one run, by text: a text met again is not embedded again. Keyed by a digest of the text
    and held as float32 rows, so remembering a large run costs about 1.5 KB per distinct text."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self._rows: dict[bytes, np.ndarray] = {}

    def vectors(self, texts: list[str]) -> np.ndarray:
        keys = [hashlib.blake2b(text.encode(), digest_size=16).digest() for text in texts]
        missing: dict[bytes, str] = {}
        for key, text in zip(keys, texts):
            if key not in self._rows:
                missing.setdefault(key, text)
        if missing:
            for key, row in zip(missing, self.embedder.embed_array(list(missing.values()))):
                self._rows[key] = row
        return np.stack([self._rows[key] for key in keys]) if keys else np.empty((0, 0), dtype=np.float32)


@dataclass
class _Pending:
    document: Document
    chunks: list[Chunk]
    is_new: bool
    options: FileOptions = field(default_factory=FileOptions)


def ingest(
    paths: list[Path],
    settings: Settings,
    *,
    doc_type: str | None = None,
    access: tuple[str, ...] | None = None,
    prune: bool = True,
    reindex: bool = False,
    force_prune: bool = False,
    follow_symlinks: bool = False,
    store: Store | None = None,
    embedder: Embedder | None = None,
    progress: ProgressCallback | None = None,
) -> IngestReport:
    """Brings the store in step with ``paths``. ``doc_type`` and ``access`` (the groups that may read the files,
    () for everyone) apply to every file; None keeps what an earlier run was told (``file_options``)."""
    started = time.perf_counter()
    if access is not None:
        access = normalize_groups(access)
    store = store or Store(settings)
    embedder = embedder or Embedder.for_settings(settings)
    found = discover(paths, follow_symlinks)
    report = IngestReport(files_seen=len(found.files), files_failed=list(found.failures))
    with store.writing():
        target = _open_for_writing(store, settings, reindex)
        revision_before = store.revision()
        store.touched_files.clear()
        current = store.file_records()
        known = identify(found, current)
        found.files = known.files
        refusals = reindex_refusals(found, current) if target is not store and not force_prune else []
        if refusals:
            report.files_failed += refusals
            report.files_seen, report.chunks_total = len(found.files), store.count()
            report.seconds = time.perf_counter() - started
            return report  # nothing built, nothing swapped: the store stays as it was
        records = target.file_records()
        remembered = records if target is store else current  # a reindex keeps what files were told
        dropped = False
        if target is store:
            report.files_removed += _merge_copies(known, records, store)
            dropped = bool(known.duplicates)
        work, report.files_unchanged, unreadable = changed_files(
            found, records, doc_type, settings.max_file_bytes, access
        )
        report.files_failed += unreadable
        gone = vanished(found, records) if prune else []
        if not force_prune:
            gone, refusals = removable(gone, records)
            report.files_failed += refusals
        if work and target.exists():
            target.check_backend(embedder.backend)  # refused before any file is touched, as another model is
        dropped |= _drop_half_written(report.files_failed, found, records, target)
        finishing = target.pending()  # a run killed after writing chunks, before its revision bump
        dropped |= finishing
        total = len(work) + len(gone)
        tick = _ticker(progress, total)
        vectors = RunVectors(embedder)
        pending: list[_Pending] = []
        commits = last_commits([ref.path for ref in work])  # one git walk per repository, not one per file
        for ref in work:
            options = file_options(ref, remembered, doc_type, access)
            try:
                limits = TextLimits.for_settings(settings)
                document = load(ref, settings.max_file_bytes, options.doc_type, options.access, limits)
                if ref.path in commits:
                    document.commit_id, document.commit_date = commits[ref.path].id, commits[ref.path].date
                chunks = chunk_document(
                    document,
                    embedder.count_tokens,
                    settings.chunk_tokens,
                    settings.chunk_overlap,
                    embedder.max_seq_length,
                    settings.max_chunks_per_file,
                )
                if not chunks:
                    raise LoadError("nothing to index: the file has headings but no text under them")
            except SkippedFile as skip:
                report.files_skipped.append(Failure(ref.display_path, str(skip)))
                dropped |= _forget(ref, records, target)
                tick(ref.display_path, "skipped")
                continue
            except Exception as error:  # one bad file never costs the others (LoadError is the expected kind)
                reason = str(error) if isinstance(error, LoadError) else f"cannot be ingested: {error!r}"
                report.files_failed.append(Failure(ref.display_path, reason))
                dropped |= _drop_half_written([report.files_failed[-1]], found, records, target)
                tick(ref.display_path, "failed")
                continue
            pending.append(_Pending(document, chunks, _never_stored(ref, records), options))
            if sum(len(p.chunks) for p in pending) >= EMBED_GROUP_CHUNKS:
                _commit(pending, target, vectors, records, report, tick)
                pending = []
        _commit(pending, target, vectors, records, report, tick)
        for record in gone:
            target.delete_chunks(target.chunk_ids_of(record.key))
            target.delete_file_records([record.key])
            report.files_removed += 1
            tick(f"{record.root}/{record.relpath}", "removed")
        if target is not store:
            reindex_swap.mark_complete(target)
            reindex_swap.swap_in(store, target)
        elif report.changed or dropped:
            after = new_revision()
            # the files this run wrote are all that changed, unless it finishes a killed run's unrecorded writes;
            # the keyword index takes them before the store shows its new revision, so a reader finds both at once
            if not finishing:
                change = Change(revision_before, after, frozenset(store.touched_files))
                KeywordIndex.sync(store, settings.data_dir, change)
            store.bump_revision(after)
        report.chunks_total = store.count()
    if target is not store or not _keyword_index_fresh(store, settings):
        KeywordIndex.sync(store, settings.data_dir)
    report.seconds = time.perf_counter() - started
    return report


def _open_for_writing(store: Store, settings: Settings, reindex: bool) -> Store:
    """The store this run writes to, after finishing what a killed reindex left. A reindex writes to a
    collection aside (searches keep the old one until the swap); a damaged store is moved aside first."""
    try:
        reindex_swap.recover(store)
        store.check_health()
        if store.exists() and not reindex:
            store.chunks()  # refuses a collection built with another model before anything is written
    except StoreDamagedError:
        if not reindex or settings.server_mode:
            raise
        move_damaged_aside(settings)
        store.forget_client()
        return store
    return reindex_swap.build_aside(store) if reindex else store


def _keyword_index_fresh(store: Store, settings: Settings) -> bool:
    return not store.exists() or KeywordIndex.stored_revision(settings.data_dir) == store.revision()


def _merge_copies(known: KnownFiles, records: dict[str, FileRecord], store: Store) -> int:
    """A store made before root folders were recorded may hold a folder twice (named from two working
    directories): the extra copies go, and the records kept note their folder. Returns the copies removed."""
    for record in known.duplicates:
        store.delete_chunks(store.chunk_ids_of(record.key))
        store.delete_file_records([record.key])
        records.pop(record.key, None)
    store.save_file_records([r for r in known.migrated if r.key in records])
    for record in known.migrated:
        if record.key in records:
            records[record.key] = record
    return len(known.duplicates)


def _drop_half_written(
    failures: list[Failure], found: Discovery, records: dict[str, FileRecord], store: Store
) -> bool:
    """Removes what a killed ingest left of a file that now fails to load: its entry is incomplete and
    some of its new chunks may be in the store. A complete entry keeps its chunks (the last good version)."""
    failed = {failure.path for failure in failures}
    keys = [
        ref.key
        for ref in found.files
        if ref.display_path in failed and ref.key in records and not records[ref.key].complete
    ]
    for key in keys:
        store.delete_chunks(store.chunk_ids_of(key))
        store.delete_file_records([key])
        del records[key]
    return bool(keys)


def _forget(ref: SourceFile, records: dict[str, FileRecord], store: Store) -> bool:
    """A file that now has nothing to index no longer answers with what it used to say."""
    if ref.key not in records:
        return False
    store.delete_chunks(store.chunk_ids_of(ref.key))
    store.delete_file_records([ref.key])
    del records[ref.key]
    return True


def _never_stored(ref: SourceFile, records: dict[str, FileRecord]) -> bool:
    """A file with no entry, or with one a killed run left before the file was ever complete (no hash yet):
    reported as added, not updated."""
    return ref.key not in records or not records[ref.key].file_hash


def _commit(
    pending: list[_Pending],
    store: Store,
    run_vectors: RunVectors,
    records: dict[str, FileRecord],
    report: IngestReport,
    tick: Callable[[str, str], None],
) -> None:
    if not pending:
        return
    now = time.time()
    store.save_file_records([_record(p, records.get(p.document.source.key), now, complete=False) for p in pending])
    chunks = [chunk for p in pending for chunk in p.chunks]
    vectors = run_vectors.vectors([chunk.embed_text for chunk in chunks])
    status = {id(p.document): status_metadata(p.document) for p in pending}
    if chunks:
        store.upsert_chunks(
            [c.id for c in chunks],
            vectors,
            [c.text for c in chunks],
            [{**c.metadata(), **status[id(c.document)]} for c in chunks],
            backend=run_vectors.embedder.backend,
        )
    report.chunks_embedded += len(chunks)
    for p in pending:
        keep = {c.id for c in p.chunks}
        stale = [i for i in store.chunk_ids_of(p.document.source.key) if i not in keep]
        store.delete_chunks(stale)
    store.save_file_records([_record(p, None, now, complete=True) for p in pending])
    for p in pending:
        if p.is_new:
            report.files_added += 1
        else:
            report.files_updated += 1
        tick(p.document.source.display_path, "added" if p.is_new else "updated")


def _record(p: _Pending, previous: FileRecord | None, now: float, complete: bool) -> FileRecord:
    source = p.document.source
    return FileRecord(
        root_path=source.root_path,
        key=source.key,
        root=source.root,
        relpath=source.relpath,
        # while incomplete, keep the old hash so an interrupted update is never mistaken for done
        file_hash=p.document.content_hash if complete else (previous.file_hash if previous else ""),
        doc_type=p.document.doc_type,
        title=p.document.title,
        chunk_count=len(p.chunks),
        ingested_at=now,
        complete=complete,
        access=",".join(p.document.access),
        doc_type_option=p.options.doc_type or "",
        access_option=",".join(p.options.access),
    )


def _ticker(progress: ProgressCallback | None, total: int) -> Callable[[str, str], None]:
    done = 0

    def tick(path: str, status: str) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(Progress(done, total, path, status))

    return tick
