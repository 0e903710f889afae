"""Catalog: the documents of the knowledge base as a reader sees them, one document read back from its chunks
(whole or one section), and the check of a search's filters against what is there.

An unknown doc type, file or section is a ``CatalogError`` that names the valid values (or the closest ones,
when there are too many to list), never a silently empty or wider search. Everything is read through the
retriever, so it reads as the retriever's reader (``rag.search.access``).
"""

from __future__ import annotations

import difflib
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rag.documents.doc_status import status_summary
from rag.documents.loading import DOC_TYPES
from rag.index.store import FileRecord
from rag.search.passages import Passage, join_chunks
from rag.search.retrieval import Retriever

SUGGESTIONS = 5  # closest paths named when a path is unknown
LISTED_SECTIONS = 40  # sections named when a section is unknown


class CatalogError(ValueError):
    """A document, section or filter that is not in the knowledge base; the message names what is."""


@dataclass
class DocumentInfo:
    path: str  # the file as search results name it (folder as ingested / path inside it)
    title: str
    doc_type: str
    chunks: int
    ingested_at: str  # ISO 8601, UTC; "" when the manifest has no record of it
    status: str  # as the document declares it: superseded, deprecated, accepted... ("" when it says nothing)
    superseded_by: str
    superseded_on: str
    updated: str  # the document's date (front matter, last commit or file time), YYYY-MM-DD
    status_note: str  # "superseded by ADR-0011 on 2025-05-12", "stale since ...", "" when current


@dataclass
class Section:
    name: str  # the heading path inside the document, "A > B"; "" for the text before the first heading
    text: str


@dataclass
class DocumentText:
    document: DocumentInfo
    sections: list[Section]
    truncated: bool = False  # the document was longer than asked for: ``omitted_sections`` were left out
    omitted_sections: list[str] = field(default_factory=list)


@dataclass
class _Entry:
    info: DocumentInfo
    source: str  # the path inside its ingested folder, which the source filter also takes
    source_key: str


def document_sections(chunks: list[Passage]) -> list[Section]:
    """The chunks of one document (in reading order) put back together, one text per section."""
    sections: list[Section] = []
    pieces: list[str] = []
    for chunk in chunks:
        if not sections or sections[-1].name != chunk.section:
            if sections:
                sections[-1].text = join_chunks(pieces)
            sections.append(Section(chunk.section, ""))
            pieces = []
        pieces.append(chunk.text)
    if sections:
        sections[-1].text = join_chunks(pieces)
    return sections


def check_doc_type(doc_type: str | None) -> None:
    if doc_type is not None and doc_type not in DOC_TYPES:
        raise CatalogError(
            f"unknown doc_type {doc_type!r}: use one of {', '.join(DOC_TYPES)}, or leave it out for every document"
        )


def list_documents(retriever: Retriever, doc_type: str | None = None) -> list[DocumentInfo]:
    """Every document the reader may read (of ``doc_type``), ordered by doc type and path."""
    return [entry.info for entry in _entries(retriever, doc_type)]


def check_filters(retriever: Retriever, doc_type: str | None, source: str | None) -> None:
    """Raises ``CatalogError`` for a doc type that does not exist or a source no document has."""
    check_doc_type(doc_type)
    if source is not None and not retriever.first_chunks(path=source):
        raise CatalogError(f"no document {source!r} in the knowledge base{_closest(source, _entries(retriever))}")


def read_document(
    retriever: Retriever, path: str, section: str | None = None, max_chars: int | None = None
) -> DocumentText:
    """One document (or one ``section`` of it: its heading path, or its last heading alone) as the store holds
    it. Past ``max_chars`` the remaining sections are left out and named, to be read one at a time."""
    entry = _find(retriever, path)
    sections = document_sections(retriever.document(source_key=entry.source_key))
    if section is not None:
        sections = _pick(sections, section, entry.info.path)
    kept: list[Section] = []
    size = 0
    for index, part in enumerate(sections):
        size += len(part.name) + len(part.text)
        if max_chars is not None and size > max_chars and kept:
            omitted = [s.name for s in sections[index:]]
            return DocumentText(entry.info, kept, truncated=True, omitted_sections=omitted)
        kept.append(part)
    return DocumentText(entry.info, kept)


# the document list per store, revision and reader's filter: reading it takes a scan of every chunk's metadata
# (0.4-0.8 s at 20,000 chunks), and it changes only when an ingest changes the revision
_LISTINGS: dict[tuple[str, str, str, str], list[_Entry]] = {}
_LISTINGS_LOCK = threading.Lock()
LISTINGS_KEPT = 16


def _entries(retriever: Retriever, doc_type: str | None = None) -> list[_Entry]:
    check_doc_type(doc_type)
    store = retriever.store
    key = (store.location, store.name, store.revision(), json.dumps(retriever.reader_where(), sort_keys=True))
    with _LISTINGS_LOCK:
        entries = _LISTINGS.get(key)
    if entries is None:
        records: dict[str, FileRecord] = store.file_records() if store.exists() else {}
        entries = sorted(
            (_entry(first, records.get(first.source_key), retriever) for first in retriever.first_chunks()),
            key=lambda entry: (entry.info.doc_type, entry.info.path),
        )
        with _LISTINGS_LOCK:
            while len(_LISTINGS) >= LISTINGS_KEPT:
                _LISTINGS.pop(next(iter(_LISTINGS)))
            _LISTINGS[key] = entries
    return [entry for entry in entries if doc_type is None or entry.info.doc_type == doc_type]


def _entry(first: Passage, record: FileRecord | None, retriever: Retriever) -> _Entry:
    """A document as listed, from its first chunk (title, status) and its manifest record (chunks, when)."""
    ingested = datetime.fromtimestamp(record.ingested_at, UTC).isoformat(timespec="seconds") if record else ""
    info = DocumentInfo(
        path=first.path or first.source,
        title=first.title,
        doc_type=first.doc_type,
        chunks=record.chunk_count if record else 0,
        ingested_at=ingested,
        status=first.status,
        superseded_by=first.superseded_by,
        superseded_on=first.superseded_on,
        updated=first.updated,
        status_note=status_summary(
            first.status, first.superseded_by, first.superseded_on, first.updated, retriever.settings.stale_days
        ),
    )
    return _Entry(info, first.source, first.source_key)


def _find(retriever: Retriever, path: str) -> _Entry:
    """The document at ``path`` (as listed, or its path inside its ingested folder when that is unambiguous); only
    a path that is not there costs reading the whole list (for the closest names)."""
    firsts = retriever.first_chunks(path=path)
    exact = [first for first in firsts if first.path == path]
    inside = [first for first in firsts if first.source == path]
    if exact or len(inside) == 1:
        first = (exact or inside)[0]
        return _entry(first, retriever.store.file_record(first.source_key), retriever)
    if inside:
        names = ", ".join(sorted(first.path for first in inside))
        raise CatalogError(f"{path!r} is in more than one ingested folder: {names}; give the whole path")
    raise CatalogError(f"no document {path!r} in the knowledge base{_closest(path, _entries(retriever))}")


def _closest(path: str, entries: list[_Entry]) -> str:
    """"; the closest are: a, b (list_documents lists all N)", or all of them when there are only a few."""
    if not entries:
        return " (it holds no documents)"
    paths = [entry.info.path for entry in entries]
    if len(paths) <= SUGGESTIONS:
        return f"; the documents are: {', '.join(paths)}"
    # a path may be given inside its folder or whole: compare it with both forms of every document's path
    forms = {entry.source: entry.info.path for entry in entries} | {p: p for p in paths}
    name = path.rsplit("/", 1)[-1]
    same_name = [p for p in paths if p.rsplit("/", 1)[-1] == name]
    close = [forms[form] for form in difflib.get_close_matches(path, list(forms), n=2 * SUGGESTIONS, cutoff=0.5)]
    found = list(dict.fromkeys(same_name + close))[:SUGGESTIONS]
    if not found:
        return f"; none is close (list_documents lists all {len(paths)})"
    return f"; the closest are: {', '.join(found)} (list_documents lists all {len(paths)})"


def _pick(sections: list[Section], wanted: str, path: str) -> list[Section]:
    """The sections named ``wanted``: its whole heading path, else its last heading, case and spaces ignored.
    A section's subsections come with it ("Invalidation" also gives "Invalidation > Write-through")."""

    def normal(text: str) -> str:
        return " > ".join(" ".join(part.split()).lower() for part in text.split(">"))

    target = normal(wanted)
    whole = [s for s in sections if normal(s.name) == target or normal(s.name).startswith(target + " > ")]
    if whole:
        return whole
    last = [s for s in sections if normal(s.name).rsplit(" > ", 1)[-1] == target]
    if last:
        return last
    names = list(dict.fromkeys(s.name for s in sections if s.name))
    listed = ", ".join(repr(n) for n in names[:LISTED_SECTIONS]) + (" ..." if len(names) > LISTED_SECTIONS else "")
    raise CatalogError(f"{path} has no section {wanted!r}; its sections are: {listed or '(none: one block of text)'}")
