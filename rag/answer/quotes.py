"""Quotable units: the pieces of a passage an offline answer may quote, each one readable out of context.

A unit is a sentence, a list item with its lead-in, or a table row with its header row. A sentence that
leans on the one before it ("It ...", "This means ...", "However, ...") carries that sentence with it, or
is left out when there is none. Code is never a unit (code examples are added whole, elsewhere). A quote
starts at its first word, after any anchor or tag a docs page opens the sentence with; an image with its
caption and a stretch of generated HTML (a reference table pasted into a page) are not units.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rag.text.embedded_text import HTML_TAG

# a sentence ends at . ! or ? before a capital, a digit or a quote, but not at "..." (ALTER ROLE ... SET) or "e.g."
SENTENCE_END = re.compile(r"(?<=[.!?])(?<!\.\.\.)(?<!\be\.g\.)(?<!\bi\.e\.)(?<!\bvs\.)\s+(?=[A-Z0-9\"'(`])")
LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
LEANS_BACK = re.compile(
    r"^(it|its|this|that|these|those|they|them|their|such|however|but|so|thus|hence|therefore|also|instead|"
    r"otherwise|then|both|here|either|neither|in that case|as a result|for example|for instance|the same|"
    r"similarly|likewise|conversely|again|still|yet|meanwhile|even so|in other words|which|alternatively|additionally|"
    r"moreover|furthermore|in addition(?! to)|nevertheless|nonetheless|consequently|accordingly|as such|"
    r"in (?:this|that|the above|the previous|the following) (?:case|example|scenario|configuration|setup)|"
    r"as (?:shown|mentioned|described|noted|explained) (?:above|earlier|before|previously)|"
    # a count of things named before: "All seven have run PostgreSQL ..." after "The Orders team has seven engineers."
    r"(?:all|each|none|neither) (?:of (?:them|these|those)|two|three|four|five|six|seven|eight|nine|ten)|"
    r"the (?:former|latter|rest|others|remainder))\b",
    re.IGNORECASE,
)
# a sentence about the document rather than its subject ("This page explains when to pick which.")
ABOUT_THE_PAGE = re.compile(
    r"^(?:(?:this|the following|these|the next) (?:page|document|doc|guide|section|article|topic|tutorial|chapter|"
    r"sections|pages|topics)s? (?:explains?|describes?|covers?|shows?|walks?|lists?|outlines?|gives?|introduces?|"
    r"summari[sz]es?|provides?|is about|will)\b|in this (?:page|document|guide|section|article|topic|tutorial),|"
    r"learn how to\b|read on\b)",
    re.IGNORECASE,
)
# markup a sentence may open with that says nothing out of its page: a deep-link anchor around an icon
# (<a name="naming-boolean">:no_entry:</a> **DO NOT** ...), or tags before the first word
LEADING_MARKUP = re.compile(r"^(?:<a\b[^<>]*>[^<>]{0,40}</a>|<[a-z/!][^<>]*>|\s)+", re.IGNORECASE)
# a unit of this many HTML tags or more, making more than this share of its characters, is markup, not prose
# (a link or two in a sentence is prose)
MARKUP_TAGS, MARKUP_SHARE = 4, 0.25
FIGURE = re.compile(r"<img\b", re.IGNORECASE)
FENCE = ("```", "~~~")
MIN_WORDS, MAX_WORDS = 4, 70


@dataclass
class Unit:
    text: str  # what the answer shows
    quotes: list[str]  # the verbatim pieces of the passage it is made of (lead-in, item; header, row)
    kind: str  # sentence | item | row
    order: int  # position in the passage
    passage_index: int = 0
    search_text: str = ""  # what is compared with the question (the text unless a table row)

    @property
    def matched(self) -> str:
        return self.search_text or self.text


def units_of(text: str) -> list[Unit]:
    """The quotable units of a passage, in reading order."""
    units: list[Unit] = []
    previous_sentence = ""
    for block in _blocks(text):
        lines = block.splitlines()
        if all(line.lstrip().startswith("|") for line in lines):
            units += _table_units(lines, len(units))
            continue
        paragraph: list[str] = []
        lead_in = ""
        item: list[str] | None = None
        items: list[str] = []
        for line in lines:
            if line.lstrip().startswith("#"):
                continue
            if LIST_ITEM.match(line):
                if item is not None:
                    items.append(" ".join(item))
                item = [LIST_ITEM.sub("", line).strip()]
            elif item is not None:
                item.append(line.strip())
            else:
                paragraph.append(line.strip())
        if item is not None:
            items.append(" ".join(item))
        prose = " ".join(part for part in paragraph if part)
        sentences = [s.strip() for s in SENTENCE_END.split(prose) if s.strip()] if prose else []
        if items:
            # the paragraph before a list ends with its lead-in ("Check these signals:")
            lead_in = sentences.pop() if sentences and sentences[-1].endswith(":") else ""
        for sentence in sentences:
            unit = _sentence_unit(sentence, previous_sentence, len(units))
            if unit:
                units.append(unit)
            previous_sentence = sentence
        if items and not lead_in and previous_sentence.endswith(":"):
            lead_in = previous_sentence
        for entry in (LEADING_MARKUP.sub("", item) for item in items):
            if _quotable(entry):
                quotes = [lead_in, entry] if lead_in else [entry]
                shown = f"{lead_in} {entry}" if lead_in else entry
                units.append(Unit(shown, quotes, "item", len(units)))
        if items:
            previous_sentence = ""
    return units


def _sentence_unit(sentence: str, previous: str, order: int) -> Unit | None:
    if FIGURE.search(sentence):
        return None  # an image with its caption ("Source: ..."), not a sentence
    sentence = LEADING_MARKUP.sub("", sentence)
    if sentence.endswith(":") or not _quotable(sentence):
        return None
    if ABOUT_THE_PAGE.match(sentence):
        return None
    if LEANS_BACK.match(sentence):
        if not previous or previous.endswith(":") or len(previous.split()) > MAX_WORDS:
            return None  # it leans on something this passage does not hold
        return Unit(f"{previous} {sentence}", [previous, sentence], "sentence", order)
    return Unit(sentence, [sentence], "sentence", order)


def _quotable(text: str) -> bool:
    """Prose of a quotable length, in words a reader sees (tags not counted), and not a stretch of generated
    HTML (a reference table pasted into a page)."""
    if not MIN_WORDS <= len(text.split()) <= MAX_WORDS or len(HTML_TAG.sub(" ", text).split()) < MIN_WORDS:
        return False
    tags = [tag.group(0) for tag in HTML_TAG.finditer(text)]
    return not (len(tags) >= MARKUP_TAGS and sum(map(len, tags)) > MARKUP_SHARE * len(text))


def _table_units(lines: list[str], order: int) -> list[Unit]:
    rows = [line.strip() for line in lines if line.strip()]
    if len(rows) < 3 or not re.fullmatch(r"\|?[\s:|-]+\|?", rows[1]):
        return []
    header, separator, body = rows[0], rows[1], rows[2:]
    names = _cells(header)
    units = []
    for offset, row in enumerate(body):
        cells = _cells(row)
        described = "; ".join(f"{name}: {cell}" for name, cell in zip(names, cells) if cell)
        units.append(Unit(f"{header}\n{separator}\n{row}", [header, row], "row", order + offset, search_text=described))
    return units


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def _blocks(text: str) -> list[str]:
    """Blank-line separated blocks, code fences removed (a chunk may begin or end inside code)."""
    lines = text.splitlines()
    fences = [line.strip() for line in lines if line.strip().startswith(FENCE)]
    in_code = bool(fences) and fences[0] in FENCE and (len(fences) % 2 == 1 or fences[-1] not in FENCE)
    kept = []
    for line in lines:
        if line.strip().startswith(FENCE):
            in_code = not in_code
            kept.append("")
        else:
            kept.append("" if in_code else line)
    return [block for block in re.split(r"\n\s*\n", "\n".join(kept)) if block.strip()]
