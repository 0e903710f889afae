"""Pure text helpers of the UI (no Streamlit): highlighted passages, labels, timings.

``highlight`` turns a passage (Markdown) into Markdown that is safe to show with
``unsafe_allow_html=True``: prose is HTML-escaped and the cited words are wrapped in ``<mark>``,
while fenced code blocks (Mermaid included) and inline code spans are kept as they are, so they
still render as code or diagrams (Markdown never interprets HTML inside code).
"""

from __future__ import annotations

import html
import re
from datetime import datetime

FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})[^\n]*$", re.MULTILINE)
CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.DOTALL)
LINE_PREFIX = re.compile(r"[ \t]*(?:(?:[-*+>]|\d{1,9}[.)]|#{1,6})[ \t]+|>)*")
TOKEN = re.compile(r"[^\W_]+")
ATX_HEADING = re.compile(r"^( {0,3}(?:>[ \t]?)*)#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
SETEXT_UNDERLINE = re.compile(r"^ {0,3}(?:=+|-+)[ \t]*$")
NOT_A_PARAGRAPH = re.compile(r"^(?: {4}| {0,3}(?:[-*+>#|]|\d{1,9}[.)])(?:[ \t]|$))")
MAX_QUOTE_TOKENS = 400


def code_segments(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, missing_fence)`` of each fenced code block; an unclosed one runs to the end of the text
    and ``missing_fence`` is the fence that would close it ("" when it is closed)."""
    spans = []
    cursor = 0
    while cursor < len(text):
        opening = FENCE_OPEN.search(text, cursor)
        if not opening:
            break
        fence = opening.group(1)
        closing = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", re.MULTILINE)
        end_match = closing.search(text, opening.end() + 1)
        if end_match:
            spans.append((opening.start(), end_match.end(), ""))
            cursor = end_match.end()
        else:
            spans.append((opening.start(), len(text), fence))
            break
    return spans


def quote_span(text: str, quote: str) -> tuple[int, int] | None:
    """Where the words of ``quote`` occur in ``text``, ignoring case, punctuation and Markdown decoration."""
    tokens = TOKEN.findall(quote)[:MAX_QUOTE_TOKENS]
    if not tokens:
        return None
    pattern = r"(?<![^\W_])" + r"[\W_]*".join(re.escape(token) for token in tokens) + r"(?![^\W_])"
    match = re.search(pattern, text, re.IGNORECASE)
    return (match.start(), match.end()) if match else None


def highlight(text: str, quotes: list[str]) -> tuple[str, bool]:
    """``(markdown, found)``: the passage with every findable quote marked; ``found`` if anything was marked
    (words inside code blocks and table rows are found but cannot be marked)."""
    marked = [False] * len(text)
    for quote in quotes:
        span = quote_span(text, quote or "")
        if span:
            for i in range(*span):
                marked[i] = True
    code = code_segments(text)
    for start, end, _ in code:
        for i in range(start, end):
            marked[i] = False
    out: list[str] = []
    cursor = 0
    for start, end, missing_fence in code:
        out.append(_prose(text, cursor, start, marked))
        block = text[start:end]
        # a fence cut off at the end of a chunk is closed, so the rest of the page is not swallowed
        out.append(block.rstrip("\n") + "\n" + missing_fence if missing_fence else block)
        cursor = end
    out.append(_prose(text, cursor, len(text), marked))
    shown = "".join(out)
    return shown, "<mark>" in shown


def _prose(text: str, start: int, end: int, marked: list[bool]) -> str:
    """Escaped prose with ``<mark>`` runs.

    Line prefixes (list, quote and heading markers) and code spans are kept raw; table rows are never
    marked; a mark runs on over a line break only into a plain continuation line of the same paragraph.
    """
    lines = []  # (line start, body start, content end, line end, plain continuation, table row)
    position = start
    for line in text[start:end].splitlines(keepends=True):
        line_end = position + len(line)
        content_end = line_end - (len(line) - len(line.rstrip("\r\n")))
        prefix = LINE_PREFIX.match(text, position, content_end)
        body_start = prefix.end() if prefix else position
        table_row = text[position:content_end].lstrip().startswith("|")
        plain = body_start == position and content_end > position and not table_row
        lines.append((position, body_start, content_end, line_end, plain, table_row))
        position = line_end
    atoms: list[tuple[int, int, str, bool]] = []  # (start, end, kind: raw|code|text, marked)
    for index, (line_start, body_start, content_end, line_end, _, table_row) in enumerate(lines):
        atoms.append((line_start, body_start, "raw", False))
        cursor = body_start
        for span in CODE_SPAN.finditer(text, body_start, content_end):
            atoms.extend((i, i + 1, "text", marked[i] and not table_row) for i in range(cursor, span.start()))
            atoms.append((span.start(), span.end(), "code", any(marked[span.start() : span.end()]) and not table_row))
            cursor = span.end()
        atoms.extend((i, i + 1, "text", marked[i] and not table_row) for i in range(cursor, content_end))
        following = lines[index + 1] if index + 1 < len(lines) else None
        joins = (
            following is not None
            and following[4]
            and content_end > body_start
            and marked[content_end - 1]
            and marked[following[1]]
        )
        atoms.append((content_end, line_end, "raw", bool(joins)))
    out: list[str] = []
    open_mark = False
    for a_start, a_end, kind, is_marked in atoms:
        if a_start == a_end:
            continue
        if is_marked and not open_mark:
            out.append("<mark>")
        elif not is_marked and open_mark:
            out.append("</mark>")
        open_mark = is_marked
        piece = text[a_start:a_end]
        out.append(html.escape(piece, quote=False) if kind == "text" else piece)
    if open_mark:
        out.append("</mark>")
    return "".join(out)


def passage_view(text: str, full_text: str, quotes: list[str]) -> tuple[str, bool]:
    """The passage itself when the cited words are in it, else its widened context (where they were found), its
    headings demoted."""
    shown, found = highlight(text, quotes)
    if not found and full_text != text:
        wide, wide_found = highlight(full_text, quotes)
        if wide_found:
            shown, found = wide, True
    return demote_headings(shown), found


def demote_headings(markdown: str) -> str:
    """Heading lines (``## Locking``, or a line underlined with ``===``/``---``) outside code blocks as bold lines.

    A passage quoted inside a card or a list keeps the sub-headings of its section as labels: as Markdown
    headings they would be drawn at the size of the page's own title."""
    out: list[str] = []
    cursor = 0
    for start, end, _ in code_segments(markdown):
        out.append(_demote(markdown[cursor:start]))
        out.append(markdown[start:end])
        cursor = end
    out.append(_demote(markdown[cursor:]))
    return "".join(out)


def _demote(prose: str) -> str:
    original = prose.splitlines(keepends=True)
    lines = list(original)
    for i, line in enumerate(original):
        body = line.rstrip("\r\n")
        ending = line[len(body) :]
        atx = ATX_HEADING.match(body)
        if atx:
            title = (atx.group(2) or "").strip()
            lines[i] = (f"{atx.group(1)}**{title}**" if title else atx.group(1)) + ending
        elif i and SETEXT_UNDERLINE.match(body) and _paragraph_text(original[i - 1]):
            above = original[i - 1].rstrip("\r\n")
            indent = above[: len(above) - len(above.lstrip())]
            lines[i - 1] = f"{indent}**{above.strip()}**" + original[i - 1][len(above) :]
            lines[i] = ""
    return "".join(lines)


def _paragraph_text(line: str) -> bool:
    """Whether a line is paragraph text (which a ``===`` or ``---`` line under it makes a heading)."""
    text = line.rstrip("\r\n")
    return bool(text.strip()) and not NOT_A_PARAGRAPH.match(text) and not SETEXT_UNDERLINE.match(text)


def cited_words_note(quotes: list[str], limit: int = 300) -> str:
    """What a source card says when the cited words could not be marked in the passage."""
    if all(quote.lstrip().startswith(("```", "~~~")) for quote in quotes):
        return "Cited: the code example in this passage."
    text = " … ".join(" ".join(quote.split()) for quote in quotes)
    return "Cited words: " + escape_markdown(text if len(text) <= limit else text[: limit - 1] + "…")


def section_label(section: str) -> str:
    return " › ".join(part.strip() for part in section.split(">")) if section else "(top of the document)"


def status_label(status: str, superseded_by: str, updated: str) -> str:
    """A source card's status and date, e.g. "superseded by ADR-0011 · updated 2025-08-04" ("" when neither)."""
    parts = []
    if status in ("superseded", "deprecated", "obsolete"):
        parts.append(f":material/history: {status}" + (f" by {superseded_by}" if superseded_by else ""))
    if updated:
        parts.append(f":material/update: updated {updated}")
    return " · ".join(parts)


def escape_markdown(text: str) -> str:
    """Plain text for a Markdown line: Markdown and HTML specials are escaped."""
    return re.sub(r"([\\`*_{}\[\]()#+!|<>~])", r"\\\1", text)


def format_ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def format_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S") if timestamp else "-"


MARKER = re.compile(r"\[(\d{1,3})\]")
FILTER_LABELS = {None: "all documents", "reference": "references only", "team": "team docs only"}
STOP_REASONS = {
    "max_tokens": "it reached the answer length limit",
    "length": "it reached the answer length limit",
    "content_filter": "the server's content filter stopped it",
    "refusal": "the model declined to continue",
    "pause_turn": "the model paused before finishing",
    "stopped": "you stopped it",
}


def anchor(message_id: str, n: int) -> str:
    """The HTML id of a source card, the target of the answer's ``[n]`` links."""
    return f"cite-{message_id}-{n}"


def link_markers(answer: str, message_id: str, cited: set[int]) -> str:
    """The answer with each ``[n]`` of a cited passage made a link to its source card (never inside code)."""

    def link(match: re.Match) -> str:
        n = int(match.group(1))
        return f"[\\[{n}\\]](#{anchor(message_id, n)})" if n in cited else match.group(0)

    out, cursor = [], 0
    for start, end, _ in code_segments(answer):
        out.append(_link_outside_spans(answer[cursor:start], link))
        out.append(answer[start:end])
        cursor = end
    out.append(_link_outside_spans(answer[cursor:], link))
    return "".join(out)


def _link_outside_spans(text: str, link) -> str:
    out, cursor = [], 0
    for span in CODE_SPAN.finditer(text):
        out.append(MARKER.sub(link, text[cursor : span.start()]))
        out.append(span.group(0))
        cursor = span.end()
    out.append(MARKER.sub(link, text[cursor:]))
    return "".join(out)


def filter_label(doc_type: str | None) -> str:
    return FILTER_LABELS.get(doc_type, f"{doc_type} docs only")


def incomplete_reason(stop_reason: str | None, error: str | None) -> str:
    if error:
        return error
    return STOP_REASONS.get(stop_reason or "", f"the answer stopped early ({stop_reason or 'no reason given'})")


def usage_line(usage: dict) -> str:
    """Tokens, cache reads and writes and the estimated cost, for the parts the provider reported."""
    names = {
        "input_tokens": "input tokens",
        "output_tokens": "output tokens",
        "cache_read_input_tokens": "cache reads",
        "cache_creation_input_tokens": "cache writes",
    }
    parts = [f"{usage[key]:,} {label}" for key, label in names.items() if isinstance(usage.get(key), int)]
    cost = usage.get("cost_usd")
    if isinstance(cost, int | float):
        parts.append(f"about ${cost:.4f}")
    parts += [f"{key} {value}" for key, value in usage.items() if key not in names and key != "cost_usd"]
    return " · ".join(parts)
