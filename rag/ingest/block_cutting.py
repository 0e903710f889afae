"""Block cutting: a paragraph, code block or table longer than one chunk, cut into pieces that fit.

A code block is cut between lines and every piece fenced again; a Markdown table between rows, every piece
starting with the header row and its rule; prose at the last paragraph, line, sentence or word break, by
LangChain's recursive splitter with the caller's token counter. A block longer than ``LONG_BLOCK_CHARS``
is cut by windows, a few tokenizer calls per piece, instead of word by word, and every text is measured as
at least its characters / ``MAX_CHARS_PER_TOKEN`` (a 1 MB run without spaces is one unknown token to the
tokenizer, yet must not become one chunk).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

MAX_CHARS_PER_TOKEN = 8  # English runs about 4.5; only runs without spaces (base64, minified code) reach it
LONG_BLOCK_CHARS = 20_000
FENCE_LINE = re.compile(r"^\s*(```|~~~)")
TABLE_RULE_CHARACTERS = set("|:- \t")


@dataclass
class _Block:
    text: str
    offset: int


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


def fit(
    text: str, offset: int, budget: int, overlap: int, count_tokens: Callable[[str], int]
) -> list[tuple[str, int, int]]:
    """``text`` (found at ``offset`` in the document) whole when it fits ``budget``, else its pieces:
    (text, offset, tokens) each."""
    return _fit(_Block(text, offset), budget, overlap, count_tokens)


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
