"""Sync plan: what an ingest run has to do, decided before it touches the store.

Which discovered files are new or changed (their content hash against the manifest), which recorded files have
vanished from the roots this run walks, and which of those may be removed: a root that lost more than half of its
documents at once (an unmounted share, a wrong checkout) keeps them unless the run forces the prune.

A file is one document whatever path names it: a root is known by its resolved folder, not by the name a run
gave it (``docs`` from one working directory, ``/srv/proj/docs`` or a link from another), so a file the store
holds keeps its key, and a file named on its own that lies under a root ingested before takes that root's key.
A store made before root folders were recorded may hold a folder twice; ``identify`` finds the extra copies.

What a run was told about its files (a forced doc type, the groups of ``--access``) is kept in the manifest, and a
later run that is not told again uses it (``file_options``): a cron job that forgets ``--access`` never makes a
restricted folder readable by everyone, and a new file in such a folder gets its groups too.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from rag.documents.discovery import Discovery, Failure, SourceFile
from rag.documents.errors import LoadError
from rag.documents.loading import file_hash
from rag.index.store import FileRecord


@dataclass(frozen=True)
class FileOptions:
    """What an ingest is told about a file: a forced doc type (None: front matter or its path decides) and the
    groups that may read it unless its front matter names its own (() = everyone)."""

    doc_type: str | None = None
    access: tuple[str, ...] = ()

    @classmethod
    def of_record(cls, record: FileRecord) -> FileOptions:
        groups = tuple(group for group in record.access_option.split(",") if group)
        return cls(record.doc_type_option or None, groups)


def file_options(
    ref: SourceFile, records: dict[str, FileRecord], doc_type: str | None, access: tuple[str, ...] | None
) -> FileOptions:
    """The options ``ref`` is ingested with: what this run was told, else what the manifest kept for the file,
    else (a new file) what every file of its root was ingested with."""
    record = records.get(ref.key)
    if record is not None:
        kept = FileOptions.of_record(record)
    else:
        siblings = {FileOptions.of_record(r) for r in records.values() if r.root == ref.root}
        kept = siblings.pop() if len(siblings) == 1 else FileOptions()
    return FileOptions(doc_type or kept.doc_type, kept.access if access is None else tuple(access))


def changed_files(
    found: Discovery,
    records: dict[str, FileRecord],
    doc_type: str | None,
    max_bytes: int,
    access: tuple[str, ...] | None = None,
) -> tuple[list[SourceFile], int, list[Failure]]:
    """The files to (re)ingest, how many are unchanged, and the files that could not be read to tell. A file
    told another doc type or other groups than it has is ingested again."""
    changed: list[SourceFile] = []
    unchanged = 0
    failures: list[Failure] = []
    for ref in found.files:
        record = records.get(ref.key)
        try:
            digest = file_hash(ref.path, max_bytes)
        except LoadError as error:
            failures.append(Failure(ref.display_path, str(error)))
            continue
        same_type = doc_type is None or record is None or record.doc_type == doc_type
        same_access = access is None or record is None or record.access_option == ",".join(access)
        if record and record.complete and record.file_hash == digest and same_type and same_access:
            unchanged += 1
        else:
            changed.append(ref)
    return changed, unchanged, failures


def vanished(found: Discovery, records: dict[str, FileRecord]) -> list[FileRecord]:
    """Records under the roots walked by this run whose file is no longer there."""
    present = {ref.key for ref in found.files}
    roots = set(found.roots)
    return [
        r for key, r in records.items() if key not in present and (r.root in roots or _under(r, found.folders))
    ]


def _under(record: FileRecord, folders: list[str]) -> bool:
    """Whether the record's file lies under one of ``folders`` (only known for a record that holds its folder)."""
    return bool(record.root_path) and any(record.identity.startswith(folder.rstrip("/") + "/") for folder in folders)


def removable(gone: list[FileRecord], records: dict[str, FileRecord]) -> tuple[list[FileRecord], list[Failure]]:
    """The vanished records that may be removed, and a refusal for each root that lost more than half of its
    documents at once (an unmounted share, a wrong checkout): removing those needs ``force_prune``."""
    per_root = Counter(record.root for record in records.values())
    gone_per_root: dict[str, list[FileRecord]] = {}
    for record in gone:
        gone_per_root.setdefault(record.root, []).append(record)
    kept: list[FileRecord] = []
    refusals: list[Failure] = []
    for root, removals in gone_per_root.items():
        if len(removals) > 1 and 2 * len(removals) > per_root[root]:
            refusals.append(
                Failure(
                    root or ".",
                    f"{len(removals)} of its {per_root[root]} documents are gone (an unmounted share or the wrong "
                    "folder?), so none was removed; run again with --force-prune to remove them",
                )
            )
        else:
            kept.extend(removals)
    return kept, refusals


def reindex_refusals(found: Discovery, records: dict[str, FileRecord]) -> list[Failure]:
    """A reindex replaces the whole store, so it is held to the same rule as pruning: a folder that comes back
    more than half empty (an unmounted share) stops it, unless ``force_prune``."""
    return removable(vanished(found, records), records)[1]


@dataclass
class KnownFiles:
    files: list[SourceFile]  # the files found, each under the key the store knows it by
    duplicates: list[FileRecord]  # further records of a file the store holds more than once
    migrated: list[FileRecord]  # records that now carry their root's folder


def identify(found: Discovery, records: dict[str, FileRecord]) -> KnownFiles:
    """The files found, each under the key the store already holds it by (a file named through another path
    than the first time keeps its key); the store's extra copies of a file; old records given their folder.

    Only records whose folder is certain take part: those that hold it, those named by an absolute path, and
    old ones named relative to a working directory that this run names the same way (it walks that name)."""
    walked = set(found.roots)
    by_identity: dict[str, list[FileRecord]] = {}
    for record in records.values():
        if record.root_path or os.path.isabs(record.root) or record.root in walked:
            by_identity.setdefault(record.identity, []).append(record)
    known = KnownFiles([], [], [])
    for ref in found.files:
        same = by_identity.pop(ref.identity, [])
        if same:
            kept = next((r for r in same if r.key == ref.key), same[0])
            known.duplicates += [r for r in same if r is not kept]
            if not kept.root_path:  # a record from before root folders were kept: its folder is now confirmed
                known.migrated.append(replace(kept, root_path=kept.root_folder))
            ref = SourceFile(ref.path, kept.root, kept.relpath, kept.root_folder)
        elif ref.key in records and ref.root_path:  # the same name for another folder: the project moved
            known.migrated.append(replace(records[ref.key], root_path=ref.root_path))
        elif ref.key in found.single_files:
            ref = _under_known_root(ref, records)
        known.files.append(ref)
    for same in by_identity.values():  # files this run did not find (deleted, or under roots not walked)
        if len(same) > 1:
            kept = next((r for r in same if r.root in walked), same[0])
            known.duplicates += [r for r in same if r is not kept]
    return known


def _under_known_root(ref: SourceFile, records: dict[str, FileRecord]) -> SourceFile:
    """A file named on its own that lies under a root ingested before takes that root's key (the deepest such
    root), so that ``ingest corpus/team/adr.md`` and a later ``ingest corpus`` agree."""
    folders = {record.root_folder: record.root for record in records.values()}
    real = os.path.realpath(ref.path)
    inside = [folder for folder in folders if real.startswith(folder.rstrip("/") + "/")]
    if not inside:
        return ref
    folder = max(inside, key=len)
    return SourceFile(ref.path, folders[folder], Path(real).relative_to(folder).as_posix(), folder)
