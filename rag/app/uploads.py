"""Uploads: team docs added through the UI: safe file names, size and type limits, then ingest as doc type "team".

No Streamlit here, so the rules are tested directly. Files are saved under ``<data_dir>/uploads/``
and ingested one by one by path (never the whole folder, so nothing else is pruned). A file name
is reduced to its last path part and to ``[A-Za-z0-9._-]``, never starts with a dot, and an upload
never silently overwrites a different file: it gets a free name (``design-2.md``) unless replacing
was asked for. A file that fails to ingest is taken out again (a replaced file gets its earlier
version back), so the uploads folder only holds what the knowledge base holds.

Adding and removing are for editors and admins (``rag.search.access``): both take the ``Reader`` they act for,
refuse anyone else with ``PermissionDenied``, and write what they did to the audit log (``rag.app.audit``). An
upload can be restricted to groups (only groups its uploader is in, unless an admin); a document the person may
not read is never replaced or removed on their behalf.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from rag.app.audit import AuditLog
from rag.config import Settings
from rag.documents.access import normalize_groups
from rag.documents.errors import over_limit
from rag.index.store import FileRecord
from rag.ingest.pipeline import Progress, ProgressCallback, ingest
from rag.search.access import PermissionDenied, Reader, may_read

ALLOWED_SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm", ".pdf", ".docx")
UPLOADS_DIR = "uploads"
MAX_STEM = 100
DOC_TYPE = "team"


class UploadRejected(ValueError):
    """A file refused before it is saved; the message says why."""


@dataclass
class UploadResult:
    original: str  # the name the browser sent
    name: str = ""  # the name it was saved under ("" when refused)
    status: str = "pending"  # added, updated, unchanged, skipped (nothing to index), failed, rejected
    message: str = ""
    path: Path | None = None
    _created: bool = False  # a new file (removed again if its ingest fails)
    _backup: Path | None = None  # the replaced file's earlier version (restored if the ingest fails)

    @property
    def ok(self) -> bool:
        return self.status in ("added", "updated", "unchanged", "skipped")


def uploads_dir(settings: Settings) -> Path:
    return Path(settings.data_dir) / UPLOADS_DIR


WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{n}" for n in range(1, 10)), *(f"lpt{n}" for n in range(1, 10))}


def safe_filename(name: str) -> str:
    """The last path part of ``name``, reduced to ``[A-Za-z0-9._-]`` with no leading dot; the type must be allowed.

    The extension is taken before the reduction, so a name in another script (``文档.md``) keeps its type and
    gets a stable name of its own (``upload-<hash>.md``); a device name of Windows (``CON.md``) gets ``-file``."""
    base = re.split(r"[\\/]", name or "")[-1]
    stem, suffix = os.path.splitext(base)
    suffix = suffix.lower()
    if suffix not in ALLOWED_SUFFIXES:
        allowed = ", ".join(ALLOWED_SUFFIXES)
        raise UploadRejected(f"'{name}': file type '{suffix or 'none'}' is not accepted (allowed: {allowed})")
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    ascii_stem = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_stem)
    ascii_stem = re.sub(r"_{2,}", "_", ascii_stem).strip("._-")[:MAX_STEM].rstrip("._-")
    if not ascii_stem and any(character.isalnum() for character in stem):
        ascii_stem = "upload-" + hashlib.sha256(stem.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    if ascii_stem.split(".")[0].lower() in WINDOWS_RESERVED:
        ascii_stem += "-file"
    return (ascii_stem or "upload") + suffix


def save_upload(name: str, data: bytes, directory: Path, max_bytes: int, replace: bool = False) -> UploadResult:
    """Saves one upload under ``directory``; a refusal comes back as a result with status ``rejected``."""
    result = UploadResult(original=name)
    try:
        safe = safe_filename(name)
        if not data:
            raise UploadRejected(f"'{name}' is empty")
        if len(data) > max_bytes:
            size, limit = over_limit(len(data), max_bytes)
            raise UploadRejected(f"'{name}' is {size}, over the {limit} limit (RAG_MAX_FILE_MB)")
    except UploadRejected as error:
        result.status, result.message = "rejected", str(error)
        return result
    try:
        _save(result, safe, data, directory, replace)
    except (UploadRejected, OSError) as error:
        _undo(result)
        result.status, result.path = "rejected", None
        result.message = str(error) if isinstance(error, UploadRejected) else f"cannot save '{name}': {error}"
    return result


def _save(result: UploadResult, safe: str, data: bytes, directory: Path, replace: bool) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / safe
    result.path = target
    notes = []
    if target.is_file() and not target.is_symlink() and target.read_bytes() == data:
        notes.append("identical to the file already uploaded under that name")
    elif target.exists() or target.is_symlink():
        if replace and target.is_file() and not target.is_symlink():
            result._backup = _backup(target)
            _write_replacing(target, data)
            notes.append(f"replaced the earlier {safe}")
        else:
            target = result.path = _claim_free_name(directory, safe, data)
            result._created = True
            notes.append(f"a different {safe} exists, so it was saved as {target.name}")
    else:
        try:
            _write_new(target, data)
        except FileExistsError:  # another upload took the name a moment ago
            target = result.path = _claim_free_name(directory, safe, data)
        result._created = True
    result.name, result.message = target.name, "; ".join(notes)


def check_upload_groups(reader: Reader, access: tuple[str, ...]) -> tuple[str, ...]:
    """The groups an upload is restricted to, normalised; only groups the uploader is in (admins: any)."""
    groups = normalize_groups(access)
    outside = sorted(set(groups) - set(reader.groups))
    if outside and not reader.reads_everything:
        raise PermissionDenied(
            f"{reader.user} is not in the group(s) {', '.join(outside)}: an upload can only be restricted to "
            "groups its uploader is in"
        )
    return groups


def add_uploads(
    files: list[tuple[str, bytes]],
    settings: Settings,
    *,
    reader: Reader,
    access: tuple[str, ...] = (),
    replace: bool = False,
    store=None,
    embedder=None,
    progress: ProgressCallback | None = None,
) -> list[UploadResult]:
    """Saves and ingests uploads (doc type "team") for ``reader`` (an editor or admin), readable only by
    ``access`` (groups; () for everyone); one result per file, in the order given.

    A store error (busy, unreachable) propagates after every file saved by this call is taken back.
    """
    reader.require("edit_documents")
    access = check_upload_groups(reader, access)
    directory = uploads_dir(settings)
    hidden = _unreadable_uploads(settings, reader, store) if replace else set()
    results = [
        save_upload(name, data, directory, settings.max_file_bytes, replace and _target_name(name) not in hidden)
        for name, data in files
    ]
    saved = [r for r in results if r.path is not None]
    if not saved:
        return results
    statuses: dict[str, str] = {}

    def track(event: Progress) -> None:
        statuses[event.path] = event.status
        if progress:
            progress(event)

    try:
        report = ingest([r.path for r in saved], settings, doc_type=DOC_TYPE, access=access, prune=False,
                        store=store, embedder=embedder, progress=track)
    except BaseException:
        for result in saved:
            _undo(result)
        raise
    failures = {failure.path: failure.error for failure in report.files_failed}
    skips = {skip.path: skip.error for skip in report.files_skipped}
    for result in saved:
        error = _lookup(failures, result.name)
        status = _lookup(statuses, result.name)
        skipped = _lookup(skips, result.name)
        if skipped is not None:  # not in the knowledge base, so not kept in the uploads folder either
            _discard(result)
            result.status, result.message, result.path = "skipped", skipped, None
        elif error is not None:
            kept = "; the earlier version is kept" if result._backup is not None else ""
            _undo(result)
            result.status, result.message, result.path = "failed", f"{error}{kept}", None
        else:
            result.status = status if status in ("added", "updated") else "unchanged"
            if result._backup is not None:
                result._backup.unlink(missing_ok=True)
    audit = AuditLog.for_settings(settings)
    readable_by = f"; readable by {', '.join(access)}" if access else ""
    for result in results:
        if result.status in ("added", "updated"):
            audit.record(reader.user, "upload", result.name, f"{result.status}{readable_by}")
    return results


def _target_name(name: str) -> str:
    try:
        return safe_filename(name)
    except UploadRejected:
        return ""


def _upload_records(settings: Settings, store) -> list[FileRecord]:
    from rag.index.store import Store

    store = store or Store(settings)
    folder = uploads_dir(settings).resolve()
    if not store.exists():
        return []
    return [record for record in store.file_records().values() if Path(record.root).resolve() == folder]


def _unreadable_uploads(settings: Settings, reader: Reader, store) -> set[str]:
    """The names of uploads ``reader`` may not read: never replaced on their behalf (a new name is used)."""
    return {
        record.relpath
        for record in _upload_records(settings, store)
        if not may_read(reader, [group for group in record.access.split(",") if group])
    }


def _lookup(by_path: dict[str, str], name: str) -> str | None:
    for path, value in by_path.items():
        if path == name or path.endswith("/" + name):
            return value
    return None


def _write_new(target: Path, data: bytes) -> None:
    """Creates ``target`` (never an existing file); nothing is left behind if the write fails."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def _write_replacing(target: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(prefix=".upload-", dir=target.parent)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(temp, 0o644)
    os.replace(temp, target)


def _backup(target: Path) -> Path:
    """A hidden copy (ingest skips dot files) of the file about to be replaced."""
    fd, temp = tempfile.mkstemp(prefix=f".previous-{target.name}-", dir=target.parent)
    with os.fdopen(fd, "wb") as handle:
        handle.write(target.read_bytes())
    return Path(temp)


def _claim_free_name(directory: Path, safe: str, data: bytes) -> Path:
    stem, suffix = os.path.splitext(safe)
    for number in range(2, 10_000):
        candidate = directory / f"{stem}-{number}{suffix}"
        try:
            _write_new(candidate, data)
            return candidate
        except FileExistsError:
            continue
    raise UploadRejected(f"no free file name left for {safe} in {directory}")


def _discard(result: UploadResult) -> None:
    """Removes the saved file and any earlier version: ingest has taken both out of the knowledge base."""
    for path in (result.path, result._backup):
        if path is not None:
            path.unlink(missing_ok=True)
    result._backup = None


def _undo(result: UploadResult) -> None:
    if result.path is None:
        return
    if result._backup is not None:
        os.replace(result._backup, result.path)
        result._backup = None
    elif result._created:
        with contextlib.suppress(FileNotFoundError):
            result.path.unlink()


def remove_upload(name: str, settings: Settings, *, reader: Reader, store=None) -> bool:
    """Takes an uploaded team doc out of the knowledge base (its chunks and manifest entry) and deletes its file
    from the uploads folder, for ``reader`` (an editor or admin); False when there was no such upload, or none
    ``reader`` may read. Files under an ingested folder are not uploads: they leave the knowledge base when the
    file is deleted and the folder is ingested again."""
    from rag.index.keyword import KeywordIndex
    from rag.index.keyword_writer import Change
    from rag.index.store import Store

    reader.require("edit_documents")
    if not name or name != Path(name).name or name.startswith("."):
        raise UploadRejected(f"'{name}' is not the name of an uploaded file")
    if name in _unreadable_uploads(settings, reader, store):
        return False  # as if it were not there: its name is all they could learn
    store = store or Store(settings)
    folder = uploads_dir(settings).resolve()
    change = None
    with store.writing():
        before = store.revision()
        records = [
            record
            for record in store.file_records().values()
            if record.relpath == name and Path(record.root_folder) == folder
        ]
        for record in records:
            store.delete_chunks(store.chunk_ids_of(record.key))
            store.delete_file_records([record.key])
        if records:
            change = Change(before, store.bump_revision(), frozenset(record.key for record in records))
        path = folder / name
        existed = path.is_file()
        path.unlink(missing_ok=True)
    if records:
        KeywordIndex.sync(store, settings.data_dir, change)
    if records or existed:
        AuditLog.for_settings(settings).record(reader.user, "remove", name)
    return bool(records) or existed
