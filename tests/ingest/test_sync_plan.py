"""Sync plan: which files a run re-ingests, which vanished, and which of those it may remove."""

from __future__ import annotations

from pathlib import Path

from conftest import write_tree

from rag.documents.discovery import Discovery, SourceFile
from rag.documents.loading import file_hash
from rag.index.store import FileRecord
from rag.ingest.sync_plan import changed_files, reindex_refusals, removable, vanished


def record(root: str, relpath: str, digest: str = "old", complete: bool = True) -> FileRecord:
    return FileRecord(f"{root}::{relpath}", root, relpath, digest, "reference", relpath, 1, 0.0, complete)


def walked(root: Path, label: str, relpaths: list[str]) -> Discovery:
    files = [SourceFile(root / relpath, label, relpath) for relpath in relpaths]
    return Discovery(files, [], [label], set())


def test_a_file_is_re_ingested_when_its_content_changed_or_its_last_run_did_not_finish(tmp_path):
    root = write_tree(tmp_path / "docs", {"same.md": "# Same\n\nText.", "edited.md": "# Edited\n\nNew text.",
                                          "half.md": "# Half\n\nText.", "new.md": "# New\n\nText."})
    found = walked(root, "docs", ["same.md", "edited.md", "half.md", "new.md"])
    records = {
        r.key: r
        for r in (
            record("docs", "same.md", file_hash(root / "same.md", 10_000)),
            record("docs", "edited.md"),
            record("docs", "half.md", file_hash(root / "half.md", 10_000), complete=False),  # killed mid-write
        )
    }
    work, unchanged, failures = changed_files(found, records, None, 10_000)
    assert [ref.relpath for ref in work] == ["edited.md", "half.md", "new.md"]
    assert unchanged == 1 and not failures


def test_only_files_under_the_roots_walked_have_vanished():
    records = {r.key: r for r in (record("docs", "a.md"), record("docs", "b.md"), record("other", "c.md"))}
    found = walked(Path("/nowhere"), "docs", ["a.md"])
    assert [r.key for r in vanished(found, records)] == ["docs::b.md"]  # other/ was not walked this run


def test_a_root_that_lost_more_than_half_its_documents_keeps_them_and_says_why():
    records = {r.key: r for r in [record("share", f"{n}.md") for n in range(4)] + [record("docs", "x.md")]}
    gone = [records["share::0.md"], records["share::1.md"], records["share::2.md"]]  # 3 of 4: unmounted?
    kept, refusals = removable(gone, records)
    assert kept == [] and len(refusals) == 1
    assert refusals[0].path == "share" and "3 of its 4 documents are gone" in refusals[0].error
    assert removable(gone[:1], records) == (gone[:1], [])  # one file of four deleted: an ordinary removal
    assert reindex_refusals(walked(Path("/nowhere"), "share", ["3.md"]), records) == refusals
