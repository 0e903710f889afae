"""Chunking: splits a ``Document`` along its headings, then into pieces measured in model tokens.

Sections come from LangChain's Markdown syntax splitter (which keeps code fences intact and
whitespace as written). Inside a section, paragraphs, tables and code blocks are packed whole into
chunks up to the token budget; only a block that alone exceeds the budget is cut (``rag.ingest.block_cutting``:
code between lines, tables between rows with their header, prose at the last break that fits).

Chunks are shaped by the document, not by the accident of its heading count: adjacent sections under one
parent heading that fit one chunk together share it (a section longer than a chunk keeps its own chunks,
and its last one may take the small sections after it). Such a chunk's ``section`` is the path its
sections have in common, and each merged section's heading stays in the text as a Markdown heading line,
so a reader, the keyword index and the answerer still see which subsection a paragraph comes from.
Sections that share only the document are not merged: measured on our question set, such chunks drew
off-topic questions above the abstention threshold. The title and section path are embedded before each
chunk's text (without its markup: ``rag.text.embedded_text``); the budget counts the text, and that prefix takes
what the model's window has left, so no text is ever past the model's limit. The file's place in its site
(``Document.site``) is metadata only: in the embedded prefix it lowered retrieval on our question set.

Repeated text: a chunk whose text the document already has under the same section is left out (under another
heading it reads differently to the encoder and stays). Hundreds of chunks of one text in one section (24 KB
of "{{< a " repeated) share one vector, and such a cluster can trap the vector index's graph search: every
dense search of the store then returned those chunks (in about one build in eight of the fault drill's store).

Hostile input keeps time, memory and chunk length bounded: every text is measured as the larger of its
tokens and its characters / ``MAX_CHARS_PER_TOKEN``, and long blocks are cut by windows
(``rag.ingest.block_cutting``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from rag.documents.errors import LoadError
from rag.documents.loading import Document
from rag.index.chunk_access import access_metadata
from rag.ingest.block_cutting import MAX_CHARS_PER_TOKEN, fit
from rag.text.embedded_text import embedded_text

SPECIAL_TOKENS = 2  # [CLS] and [SEP] for BERT-style encoders
SECTION_SEPARATOR = " > "


@dataclass
class Chunk:
    id: str
    text: str
    title: str
    section: str
    position: int
    start_offset: int
    tokens: int
    document: Document
    prefix: str = ""  # the title and section line embedded before the text (cut when a heading is huge)

    @property
    def embed_text(self) -> str:
        """What the encoder reads: the heading line, then the text without its markup (``rag.text.embedded_text``)."""
        return embedded_text(self.prefix or embedding_prefix(self.title, self.section), self.text)

    def metadata(self) -> dict[str, object]:
        source = self.document.source
        return {
            "source": source.relpath,
            "root": source.root,
            "source_key": source.key,
            "path": source.display_path,
            "title": self.title,
            "doc_type": self.document.doc_type,
            "section": self.section,
            "position": self.position,
            "start_offset": self.start_offset,
            "tokens": self.tokens,
            "file_hash": self.document.content_hash,
            "tags": ", ".join(self.document.tags),
            "updated": self.document.updated,
            "commit_id": self.document.commit_id,
            "commit_date": self.document.commit_date,
            "site": SECTION_SEPARATOR.join(self.document.site),
            **access_metadata(self.document.access),
        }


@dataclass
class _Block:
    text: str
    offset: int


@dataclass
class _Section:
    path: tuple[tuple[int, str], ...]  # (heading level, heading text) from the top of the document, title left out
    blocks: list[_Block]

    @property
    def name(self) -> str:
        return _path_name(self.path)


def embedding_prefix(title: str, section: str) -> str:
    return f"{title}{SECTION_SEPARATOR}{section}\n" if section else f"{title}\n"


def _bounded_prefix(title: str, section: str, count_tokens: Callable[[str], int], limit: int) -> str:
    """The embedding prefix, cut to ``limit`` tokens: a heading as long as a paragraph (a whole DOCX
    paragraph styled as a heading, a PDF's long title) must not push the chunk's text past the model's limit."""
    prefix = embedding_prefix(title, section)
    if count_tokens(prefix) <= limit:
        return prefix
    body = prefix.rstrip("\n")
    low, high = 0, len(body)
    while low < high:
        middle = (low + high + 1) // 2
        if count_tokens(body[:middle]) <= limit:
            low = middle
        else:
            high = middle - 1
    return body[:low].rstrip() + "\n"


def chunk_id(source_key: str, position: int, text: str) -> str:
    return hashlib.sha256(f"{source_key}\x00{position}\x00{text}".encode()).hexdigest()[:32]


def chunk_document(
    document: Document,
    count_tokens: Callable[[str], int],
    chunk_tokens: int,
    overlap: int,
    max_seq_length: int,
    max_chunks: int | None = None,
) -> list[Chunk]:
    """The document's chunks. Raises ``LoadError`` as soon as it would make more than ``max_chunks``
    (``RAG_MAX_CHUNKS_PER_FILE``): the rest of the document is not read."""
    window = max_seq_length - SPECIAL_TOKENS
    count_tokens = _bounded_measure(count_tokens)
    prefixes: dict[str, str] = {}

    def prefix_of(section: str) -> str:
        if section not in prefixes:
            prefixes[section] = _bounded_prefix(document.title, section, count_tokens, min(chunk_tokens, window) // 2)
        return prefixes[section]

    def budget_of(section: str) -> int:
        """The chunk size counts the text; the prefix takes what the model's window has left (measured:
        fuller chunks of the same text ranked as well or better on both question sets)."""
        return max(16, min(chunk_tokens, window - count_tokens(prefix_of(section))))

    chunks: list[Chunk] = []
    seen: set[tuple[str, str]] = set()
    for section, text, offset, tokens in _section_chunks(document, budget_of, overlap, count_tokens):
        if (section, text) in seen:  # see "Repeated text" above
            continue
        seen.add((section, text))
        position = len(chunks)
        if max_chunks is not None and position >= max_chunks:
            raise LoadError(f"makes over {max_chunks:,} chunks, the limit per file (RAG_MAX_CHUNKS_PER_FILE)")
        chunks.append(
            Chunk(
                id=chunk_id(document.source.key, position, text),
                text=text,
                title=document.title,
                section=section,
                position=position,
                start_offset=offset,
                tokens=tokens,
                document=document,
                prefix=prefix_of(section),
            )
        )
    return chunks


def _section_chunks(
    document: Document, budget_of: Callable[[str], int], overlap: int, count_tokens: Callable[[str], int]
):
    """(section, text, offset, tokens) of each chunk in reading order.

    A section that fits one chunk is a whole part; a longer one is packed into chunks of its own, and
    only its last chunk is a part (``continued``). Adjacent parts then share a chunk while they fit
    (``_merge``), so small sections fill chunks instead of each making a tiny one, and a section is
    never cut between two chunks unless it alone is longer than one."""
    run: list[_Part] = []
    merged: _Merged | None = None  # the run as one chunk, once it holds two parts or more
    for section in _sections(document):
        budget = budget_of(section.name)
        whole = "\n\n".join(block.text for block in section.blocks)
        tokens = budget + 1 if len(whole) > MAX_CHARS_PER_TOKEN * budget else count_tokens(whole)
        if tokens <= budget:
            part = _Part(section.path, whole, section.blocks[0].offset, tokens)
        else:
            pieces = [
                piece
                for block in section.blocks
                for piece in fit(block.text, block.offset, budget, overlap, count_tokens)
            ]
            packed = list(_pack(pieces, budget, count_tokens))
            yield from _merge(document.text, run, merged)
            run, merged = [], None
            for text, offset, size in packed[:-1]:
                yield section.name, text, offset, size
            text, offset, size = packed[-1]
            part = _Part(section.path, text, offset, size, continued=True)
        fitting = _merge_fits(run + [part], budget_of, count_tokens) if run else None
        if fitting:
            run.append(part)
            merged = fitting
        else:
            yield from _merge(document.text, run, merged)
            run, merged = [part], None
    yield from _merge(document.text, run, merged)


@dataclass
class _Part:
    """A whole section, or the last chunk of a section cut into several, that may share a chunk."""

    path: tuple[tuple[int, str], ...]
    text: str
    offset: int
    tokens: int
    continued: bool = False

    @property
    def name(self) -> str:
        return _path_name(self.path)


def _path_name(path: tuple[tuple[int, str], ...]) -> str:
    return SECTION_SEPARATOR.join(heading for _, heading in path)


@dataclass
class _Merged:
    """Several parts as one chunk: its section name, text and size, measured once when the run is extended."""

    name: str
    text: str
    tokens: int


def _merge_fits(
    run: list[_Part], budget_of: Callable[[str], int], count_tokens: Callable[[str], int]
) -> _Merged | None:
    """The run as one chunk when it fits one (and its parts share a parent heading), else ``None``."""
    if _shared_depth([part.path for part in run]) < 1:  # only under one parent heading, not the document
        return None
    name, text = _merged(run)
    budget = budget_of(name)
    if len(text) > MAX_CHARS_PER_TOKEN * budget:
        return None
    tokens = count_tokens(text)
    return _Merged(name, text, tokens) if tokens <= budget else None


def _merge(source: str, run: list[_Part], merged: _Merged | None):
    """The run of parts as one chunk (``merged``, measured by ``_merge_fits``, when it holds several). Its
    section is the path the parts share (their common parent heading), and the embedding prefix names that
    parent. The heading of every merged section below the parent stays in the text as a Markdown heading
    line, so a reader and the keyword index still see which subsection each paragraph comes from."""
    if not run:
        return
    if merged is None:  # a run of one part
        yield run[0].name, run[0].text, run[0].offset, run[0].tokens
        return
    offset = _merged_offset(source, run[0], _shared_depth([part.path for part in run]))
    yield merged.name, merged.text, offset, merged.tokens


def _shared_depth(paths: list[tuple[tuple[int, str], ...]]) -> int:
    depth = 0
    while all(len(path) > depth and path[depth] == paths[0][depth] for path in paths):
        depth += 1
    return depth


def _merged(run: list[_Part]) -> tuple[str, str]:
    """The section name and the text of a chunk made of several parts."""
    shared = _shared_depth([part.path for part in run])
    texts: list[str] = []
    shown = run[0].path if run[0].continued else run[0].path[:shared]  # a continuation's heading is above
    for part in run:
        same = _shared_depth([shown, part.path])
        opened = part.path[same:] or (part.path[-1:] if part.path != shown else ())
        texts.extend("#" * level + " " + heading for level, heading in opened)
        texts.append(part.text)
        shown = part.path
    return _path_name(run[0].path[:shared]), "\n\n".join(texts)


def _merged_offset(source: str, first: _Part, shared: int) -> int:
    """Where a merged chunk starts in the source: at the heading line it opens with, when there is one."""
    if first.continued or len(first.path) <= shared:
        return first.offset
    level, heading = first.path[shared]
    window_start = max(0, first.offset - 4 * len(heading) - 2000)
    pattern = rf"^#{{{level}}}[ \t]+{re.escape(heading)}[ \t#]*$"
    starts = [match.start() for match in re.finditer(pattern, source[window_start : first.offset], re.M)]
    return window_start + starts[-1] if starts else first.offset


def _bounded_measure(count_tokens: Callable[[str], int]) -> Callable[[str], int]:
    def measure(text: str) -> int:
        return max(count_tokens(text), -(-len(text) // MAX_CHARS_PER_TOKEN))

    return measure


def _sections(document: Document) -> list[_Section]:
    from langchain_text_splitters import ExperimentalMarkdownSyntaxTextSplitter

    parts = ExperimentalMarkdownSyntaxTextSplitter().split_text(document.text)
    sections: list[_Section] = []
    cursor = 0
    for part in parts:
        path = _heading_path(part.metadata, document.title)
        texts = [part.page_content.strip()] if "Code" in part.metadata else _paragraphs(part.page_content)
        blocks = []
        for text in texts:
            if not text:
                continue
            found = document.text.find(text, cursor)
            offset = found if found >= 0 else cursor
            cursor = offset + len(text) if found >= 0 else cursor
            blocks.append(_Block(text, offset))
        if not blocks:
            continue
        if sections and sections[-1].path == path:
            sections[-1].blocks.extend(blocks)
        else:
            sections.append(_Section(path, blocks))
    return sections


def _heading_path(metadata: dict, title: str) -> tuple[tuple[int, str], ...]:
    headers = [
        (int(key.split()[-1]), str(value).strip())
        for key, value in sorted(metadata.items())
        if key.startswith("Header") and key.split()[-1].isdigit()
    ]
    if headers and headers[0][1] == title:
        headers = headers[1:]
    return tuple(headers)


def _paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks: a table or a list without blank lines stays one block."""
    return [block.strip() for block in re.split(r"\n\s*\n", text) if block.strip()]


def _pack(pieces: list[tuple[str, int, int]], budget: int, count_tokens: Callable[[str], int]):
    """Greedy packing of consecutive pieces of one section into chunks of at most ``budget`` tokens.

    A piece of a cut code block is a chunk of its own: packed next to its overlapping neighbour it
    would repeat code, and two fenced pieces in one chunk read as two programs."""
    current: list[tuple[str, int, int]] = []
    used = 0
    for piece in pieces:
        cut_code = piece[0].startswith(("```", "~~~")) and current and current[-1][0].startswith(piece[0][:3])
        if current and (used + piece[2] > budget or cut_code):
            yield _join(current, count_tokens)
            current, used = [], 0
        current.append(piece)
        used += piece[2]
    if current:
        yield _join(current, count_tokens)


def _join(pieces: list[tuple[str, int, int]], count_tokens: Callable[[str], int]) -> tuple[str, int, int]:
    text = "\n\n".join(piece[0] for piece in pieces)
    return text, pieces[0][1], count_tokens(text) if len(pieces) > 1 else pieces[0][2]
