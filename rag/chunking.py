"""Chunking: splits a ``Document`` along its headings, then into pieces measured in model tokens.

Sections come from LangChain's Markdown syntax splitter (which keeps code fences intact and
whitespace as written). Inside a section, paragraphs, tables and code blocks are packed whole into
chunks up to the token budget; only a block that alone exceeds the budget is cut: a code block between
lines and fenced again, a table between rows with its header row repeated, prose by LangChain's
recursive splitter with the same token counter.

Chunks are shaped by the document, not by the accident of its heading count: adjacent sections under one
parent heading that fit one chunk together share it (a section longer than a chunk keeps its own chunks,
and its last one may take the small sections after it). Such a chunk's ``section`` is the path its
sections have in common, and each merged section's heading stays in the text as a Markdown heading line,
so a reader, the keyword index and the answerer still see which subsection a paragraph comes from.
Sections that share only the document are not merged: measured on our question set, such chunks drew
off-topic questions above the abstention threshold. The title and section path are embedded before each
chunk's text; the budget counts the text, and that prefix takes what the model's window has left, so no
text is ever past the model's limit. The file's place in its site (``Document.site``) is metadata only:
in the embedded prefix it lowered retrieval on our question set.

Hostile input keeps time, memory and chunk length bounded: a chunk is measured as the larger of its
tokens and its characters / ``MAX_CHARS_PER_TOKEN`` (a 1 MB run without spaces is one unknown token to
the tokenizer, yet must not become one chunk), and a block longer than ``LONG_BLOCK_CHARS`` is cut by
windows, a few tokenizer calls per chunk, instead of word by word.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from rag.loading import Document

SPECIAL_TOKENS = 2  # [CLS] and [SEP] for BERT-style encoders
MAX_CHARS_PER_TOKEN = 8  # English runs about 4.5; only runs without spaces (base64, minified code) reach it
LONG_BLOCK_CHARS = 20_000
FENCE_LINE = re.compile(r"^\s*(```|~~~)")
SECTION_SEPARATOR = " > "
TABLE_RULE_CHARACTERS = set("|:- \t")


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
        return (self.prefix or embedding_prefix(self.title, self.section)) + self.text

    def metadata(self) -> dict[str, str | int]:
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
        return SECTION_SEPARATOR.join(heading for _, heading in self.path)


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
) -> list[Chunk]:
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
    for section, text, offset, tokens in _section_chunks(document, budget_of, overlap, count_tokens):
        position = len(chunks)
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
    for section in _sections(document):
        budget = budget_of(section.name)
        whole = "\n\n".join(block.text for block in section.blocks)
        tokens = budget + 1 if len(whole) > MAX_CHARS_PER_TOKEN * budget else count_tokens(whole)
        if tokens <= budget:
            part = _Part(section.path, whole, section.blocks[0].offset, tokens)
        else:
            pieces = [piece for block in section.blocks for piece in _fit(block, budget, overlap, count_tokens)]
            packed = list(_pack(pieces, budget, count_tokens))
            yield from _merge(document.text, run, budget_of, count_tokens)
            run = []
            for text, offset, size in packed[:-1]:
                yield section.name, text, offset, size
            text, offset, size = packed[-1]
            part = _Part(section.path, text, offset, size, continued=True)
        if run and _merge_fits(run + [part], budget_of, count_tokens):
            run.append(part)
        else:
            yield from _merge(document.text, run, budget_of, count_tokens)
            run = [part]
    yield from _merge(document.text, run, budget_of, count_tokens)


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
        return SECTION_SEPARATOR.join(heading for _, heading in self.path)


def _merge_fits(run: list[_Part], budget_of: Callable[[str], int], count_tokens: Callable[[str], int]) -> bool:
    if _shared_depth([part.path for part in run]) < 1:  # only under one parent heading, not the document
        return False
    name, text = _merged(run)
    budget = budget_of(name)
    return len(text) <= MAX_CHARS_PER_TOKEN * budget and count_tokens(text) <= budget


def _merge(source: str, run: list[_Part], budget_of: Callable[[str], int], count_tokens: Callable[[str], int]):
    """The run of parts as one chunk. Its section is the path the parts share (their common parent; empty
    when only the document holds them all), and the embedding prefix names that parent. The heading of
    every merged section below the parent stays in the text as a Markdown heading line, so a reader and
    the keyword index still see which subsection each paragraph comes from."""
    if not run:
        return
    if len(run) == 1:
        yield run[0].name, run[0].text, run[0].offset, run[0].tokens
        return
    name, text = _merged(run)
    yield name, text, _merged_offset(source, run[0], _shared_depth([part.path for part in run])), count_tokens(text)


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
    return SECTION_SEPARATOR.join(heading for _, heading in run[0].path[:shared]), "\n\n".join(texts)


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


def _cut_long(text: str, offset: int, budget: int, measure: Callable[[str], int]) -> list[tuple[str, int, int]]:
    """Cuts a very long block into pieces of at most ``budget``, each ended at the last paragraph, line,
    sentence or word break in its second half. The window is sized from the characters per token seen so
    far, so a piece costs one or two tokenizer calls on chunk-sized text. No overlap: this path is for
    pathological input and stays linear in its length."""
    pieces: list[tuple[str, int, int]] = []
    chars_per_token = 4.0
    start = 0
    while start < len(text):
        while start < len(text) and text[start].isspace():
            start += 1
        if start >= len(text):
            break
        end = min(len(text), start + int(budget * min(chars_per_token * 1.1, MAX_CHARS_PER_TOKEN)))
        size = measure(text[start:end])
        while size > budget and end - start > 1:
            end = start + max(1, int((end - start) * budget / size * 0.95))
            size = measure(text[start:end])
        chars_per_token = max(1.0, (end - start) / max(size, 1))
        if end < len(text):
            for separator in ("\n\n", "\n", ". ", " "):
                at = text.rfind(separator, start + (end - start) // 2, end)
                if at > start:
                    end = at + len(separator)
                    break
        piece = text[start:end].rstrip()
        pieces.append((piece, offset + start, measure(piece)))
        start = end
    return pieces


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


def _fit(block: _Block, budget: int, overlap: int, count_tokens: Callable[[str], int]) -> list[tuple[str, int, int]]:
    long = len(block.text) > LONG_BLOCK_CHARS
    tokens = budget + 1 if long else count_tokens(block.text)
    if tokens <= budget:
        return [(block.text, block.offset, tokens)]
    if FENCE_LINE.match(block.text) and not long:
        return _fit_code(block, budget, overlap, count_tokens)
    table = _table_lines(block.text)
    if table is not None:
        return _fit_table(block, table, budget, overlap, count_tokens)
    return _split_text(block.text, block.offset, budget, overlap, count_tokens)


def _split_text(
    text: str, offset: int, budget: int, overlap: int, count_tokens: Callable[[str], int]
) -> list[tuple[str, int, int]]:
    """Prose too long for one chunk, cut at the last paragraph, line, sentence or word break that fits."""
    if len(text) > LONG_BLOCK_CHARS:
        return _cut_long(text, offset, budget, count_tokens)
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(
        chunk_size=budget,
        chunk_overlap=min(overlap, budget // 2),
        length_function=count_tokens,
        separators=["\n\n", "\n", ". ", "; ", ", ", " ", ""],
        keep_separator="end",
    )
    pieces = []
    cursor = 0
    for piece in splitter.split_text(text):
        piece = piece.strip()
        found = text.find(piece, cursor)
        local = found if found >= 0 else cursor
        cursor = local + 1 if found >= 0 else cursor
        pieces.append((piece, offset + local, count_tokens(piece)))
    return pieces


def _fit_code(
    block: _Block, budget: int, overlap: int, count_tokens: Callable[[str], int]
) -> list[tuple[str, int, int]]:
    """A code block too long for one chunk is cut between lines, and every piece is fenced again
    (same language tag) with its indentation intact, so each chunk is still a valid code block."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    lines = block.text.split("\n")
    opening = lines[0]
    closing = lines[-1] if len(lines) > 1 and FENCE_LINE.match(lines[-1]) else opening[:3]
    body = "\n".join(lines[1:-1] if closing == lines[-1] else lines[1:])
    body_start = len(opening) + 1
    room = max(8, budget - count_tokens(f"{opening}\n{closing}"))
    splitter = RecursiveCharacterTextSplitter(
        chunk_size=room,
        chunk_overlap=min(overlap, room // 2),
        length_function=count_tokens,
        separators=["\n\n", "\n", " ", ""],
        keep_separator="end",
        strip_whitespace=False,
    )
    pieces: list[tuple[str, int, int]] = []
    previous = ""
    cursor = 0
    for piece in splitter.split_text(body):
        piece = piece.strip("\n")
        if not piece.strip() or (pieces and piece in previous):  # a tail that the overlap already holds
            continue
        previous = piece
        found = body.find(piece, cursor)
        local = found if found >= 0 else cursor
        cursor = local + 1 if found >= 0 else cursor
        fenced = f"{opening}\n{piece}\n{closing}"
        offset = block.offset if not pieces else block.offset + body_start + local  # the first keeps its fence
        pieces.append((fenced, offset, count_tokens(fenced)))
    return pieces


def _table_lines(text: str) -> tuple[int, int] | None:
    """The first and past-the-last line of the first Markdown pipe table in ``text`` (header, rule, rows)."""
    lines = text.split("\n")
    for index in range(len(lines) - 1):
        if "|" in lines[index] and _is_table_rule(lines[index + 1]):
            end = index + 2
            while end < len(lines) and "|" in lines[end]:
                end += 1
            return index, end
    return None


def _is_table_rule(line: str) -> bool:
    """``| --- | :--: |``: the line under a table's header (checked without a regex: lines can be huge)."""
    return "|" in line and "---" in line and not set(line) - TABLE_RULE_CHARACTERS


def _fit_table(
    block: _Block, table: tuple[int, int], budget: int, overlap: int, count_tokens: Callable[[str], int]
) -> list[tuple[str, int, int]]:
    """A table too long for one chunk is cut between rows, and every piece starts with the header row and
    its rule, so each chunk is still a table a reader (and the answerer) can read column by column. A
    single row longer than a chunk is the only thing cut inside a row; its pieces keep the header too."""
    lines = block.text.split("\n")
    starts = [block.offset]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    first, end = table
    header = "\n".join(lines[first : first + 2])
    room = budget - count_tokens(header)
    pieces: list[tuple[str, int, int]] = []
    before = "\n".join(lines[:first]).strip()
    if before:
        pieces += _fit(_Block(before, block.offset), budget, overlap, count_tokens)
    if room < budget // 3:  # a header as long as a chunk: rows cannot carry it, cut the table as text
        pieces += _split_text("\n".join(lines[first:end]), starts[first], budget, overlap, count_tokens)
    else:
        rows: list[int] = []  # line indexes of the rows gathered for the next piece
        used = 0
        for index in range(first + 2, end):
            size = count_tokens(lines[index])
            if rows and used + size > room:
                pieces.append(_table_piece(header, lines, rows, starts, first, count_tokens))
                rows, used = [], 0
            if size > room:
                for text, offset, _ in _split_text(lines[index], starts[index], room, overlap, count_tokens):
                    pieces.append((f"{header}\n{text}", offset, count_tokens(f"{header}\n{text}")))
                continue
            rows.append(index)
            used += size
        if rows:
            pieces.append(_table_piece(header, lines, rows, starts, first, count_tokens))
    after = "\n".join(lines[end:]).strip()
    if after:
        pieces += _fit(_Block(after, starts[end]), budget, overlap, count_tokens)
    return pieces


def _table_piece(
    header: str, lines: list[str], rows: list[int], starts: list[int], first: int, count_tokens: Callable[[str], int]
) -> tuple[str, int, int]:
    """The header and the given rows; it starts where its first row is, or at the header for the first piece."""
    text = header + "\n" + "\n".join(lines[index] for index in rows)
    offset = starts[first] if rows[0] == first + 2 else starts[rows[0]]
    return text, offset, count_tokens(text)


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
