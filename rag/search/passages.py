"""Passages: a retrieved chunk as the answer stage sees it, and the text operations on passages.

Owns the ``Passage`` record (text, source, section path, scores, status, the neighbouring text it was widened
with), joining consecutive chunks of a section back into the document's text, and collapsing passages that are
near-copies of a better-ranked one. It sits below retrieval and the answerers, which both speak in passages.
"""

from __future__ import annotations

from dataclasses import dataclass

from rag.documents.doc_status import retired_label
from rag.index.chunk_access import groups_of
from rag.text.words import words


@dataclass
class Passage:
    id: str
    text: str
    source: str  # path relative to its root, e.g. references/caching-strategies.md
    path: str  # root/relpath, the file a reader can open
    title: str
    section: str
    doc_type: str
    position: int
    start_offset: int
    score: float = 0.0  # fused score that ranks the passage
    dense_score: float | None = None  # cosine similarity to the query
    keyword_score: float | None = None  # BM25
    context: str = ""  # text widened with neighbouring chunks (empty = same as text)
    source_key: str = ""
    status: str = ""  # superseded, deprecated, accepted... as the document declares it (rag.documents.doc_status)
    superseded_by: str = ""  # e.g. ADR-0011
    superseded_on: str = ""
    updated: str = ""  # the document's date, YYYY-MM-DD
    tokens: int | None = None  # the chunk's length in the embedding model's tokens (None: not recorded)
    site: str = ""  # where the file sits in its documentation site: its folders' titles, "A > B"
    access: tuple[str, ...] = ()  # the groups that may read its document; () = everyone (rag.search.access)

    @property
    def full_text(self) -> str:
        return self.context or self.text

    @property
    def document_key(self) -> str:
        """What names the passage's document: its source key, its path when the store recorded none."""
        return self.source_key or self.path

    @property
    def heading(self) -> str:
        return f"{self.title} > {self.section}" if self.section else self.title

    @classmethod
    def from_chunk(cls, chunk_id: str, text: str, meta: dict) -> Passage:
        return cls(
            id=chunk_id,
            text=text or "",
            source=str(meta.get("source", "")),
            path=str(meta.get("path", "")),
            title=str(meta.get("title", "")),
            section=str(meta.get("section", "")),
            doc_type=str(meta.get("doc_type", "")),
            position=int(meta.get("position", 0)),
            start_offset=int(meta.get("start_offset", 0)),
            source_key=str(meta.get("source_key", "")),
            status=str(meta.get("status", "")),
            superseded_by=str(meta.get("superseded_by", "")),
            superseded_on=str(meta.get("superseded_on", "")),
            updated=str(meta.get("updated", "")),
            site=str(meta.get("site", "")),
            tokens=int(meta["tokens"]) if meta.get("tokens") is not None else None,
            access=groups_of(meta),
        )


def marked_heading(passage: Passage) -> str:
    """The passage's heading, with "(superseded by ADR-0011 on 2025-05-12, no longer current)" when its document
    is retired: the model reads the status where it reads what the result is."""
    label = retired_label(passage.status, passage.superseded_by, passage.superseded_on)
    return f"{passage.heading} ({label})" if label else passage.heading


MIN_OVERLAP = 16  # characters: shorter repeats between neighbouring chunks are a coincidence, not an overlap


def join_chunks(texts: list[str]) -> str:
    """Consecutive chunks of a section as the document has them: a paragraph or code block that chunking cut
    into overlapping pieces is joined back without repeating the overlap."""
    joined = texts[0] if texts else ""
    for text in texts[1:]:
        reopened = _refenced_continuation(joined, text)
        if reopened is not None:  # the next piece of a code block that chunking cut and fenced again
            joined, text = joined[: joined.rstrip().rfind("\n")], reopened
            overlap = next(
                (
                    size
                    for size in range(min(len(joined), len(text)), MIN_OVERLAP - 1, -1)
                    if joined.endswith(text[:size])
                ),
                0,
            )
            joined = joined + text[overlap:] if overlap else f"{joined}\n{text}"
            continue
        overlap = next(
            (size for size in range(min(len(joined), len(text)), MIN_OVERLAP - 1, -1) if joined.endswith(text[:size])),
            0,
        )
        joined = joined + text[overlap:] if overlap else f"{joined}\n\n{text}"
    return joined


def _refenced_continuation(joined: str, text: str) -> str | None:
    """When ``joined`` ends with a code block and ``text`` opens one with the same fence line, the
    text without its fence line (the code continues); otherwise None."""
    tail = joined.rstrip()
    if not tail.endswith(("```", "~~~")):
        return None
    opening = text.split("\n", 1)[0]
    if not opening.startswith(("```", "~~~")):
        return None
    fences = [line for line in tail.splitlines() if line.lstrip().startswith(("```", "~~~"))]
    openers = fences[::2]
    if len(fences) % 2 or not openers or openers[-1].strip() != opening.strip():
        return None
    return text.split("\n", 1)[1] if "\n" in text else ""


def collapse_near_duplicates(passages: list[Passage], threshold: float = 0.85) -> list[Passage]:
    """Drops a passage whose word set is nearly the same as a better-ranked one (copies across files)."""
    kept: list[tuple[Passage, set[str]]] = []
    for passage in passages:
        bag = set(words(passage.text))
        if any(_jaccard(bag, other) >= threshold for _, other in kept):
            continue
        kept.append((passage, bag))
    return [p for p, _ in kept]


def _jaccard(a: set[str], b: set[str]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)
