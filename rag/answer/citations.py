"""Citations: the ``[n]`` markers of an answer, the claims they close, and the check of each claim.

Markers pointing at no retrieved passage are stripped (also while streaming, by ``MarkerFilter``);
every cited claim is scored against the passages it cites (embedding similarity per paragraph plus
shared content words) and flagged when the best score is below the support threshold.
"""

from __future__ import annotations

import re

import numpy as np

from rag.answer.events import Citation, SentenceCheck
from rag.search.passages import Passage
from rag.text.words import content_words

MARKERS = re.compile(r"(?:\s*\[\d+\])+")
MARKER = re.compile(r"\[(\d+)\]")


# Code is quoted, never cited: ``ARGV[1]`` or ``items[0]`` in a code block or inline code is not a marker.
# A fence left open (still streaming) runs to the end of the text.
CODE = re.compile(r"```.*?(?:```|\Z)|`[^`\n]*`", re.DOTALL)


def _code_spans(text: str) -> list[tuple[int, int]]:
    return [match.span() for match in CODE.finditer(text)]


def _in_code(position: int, spans: list[tuple[int, int]]) -> bool:
    return any(start <= position < end for start, end in spans)


def _markers(pattern: re.Pattern, answer: str) -> list[re.Match]:
    """The matches of a marker pattern outside code."""
    spans = _code_spans(answer)
    return [match for match in pattern.finditer(answer) if not _in_code(match.start(), spans)]


def strip_invalid_markers(answer: str, passage_count: int) -> str:
    """An [n] that points at no retrieved passage is removed, never shown (code is left as it is)."""
    spans = _code_spans(answer)

    def keep(match: re.Match) -> str:
        valid = 1 <= int(match.group(1)) <= passage_count
        return match.group(0) if valid or _in_code(match.start(), spans) else ""

    return MARKER.sub(keep, answer)


def renumber(answer: str, numbering: dict[int, int]) -> str:
    """The answer with its markers numbered in reading order: the first passage cited is [1], the next new one
    [2]... ``numbering`` (the provider's number -> the reader's) is extended with each marker seen first here,
    so a text renumbered piece by piece as it streams comes out the same as renumbered whole (code left as it is)."""
    spans = _code_spans(answer)

    def number(match: re.Match) -> str:
        if _in_code(match.start(), spans):
            return match.group(0)
        given = int(match.group(1))
        return f"[{numbering.setdefault(given, len(numbering) + 1)}]"

    return MARKER.sub(number, answer)


def in_reading_order(passages: list[Passage], numbering: dict[int, int]) -> list[Passage]:
    """The passages reordered so that ``passages[n - 1]`` is the one cited as [n] after ``renumber``: the cited ones
    in the order they are first cited, then the others in their retrieval order."""
    cited = sorted(numbering, key=numbering.__getitem__)
    return [passages[n - 1] for n in cited] + [p for i, p in enumerate(passages, 1) if i not in numbering]


class MarkerFilter:
    """Strips invalid [n] markers from streamed text and numbers the valid ones in reading order (``numbering``:
    the provider's number -> the one shown). A marker split across deltas ("[", "9]") and an inline code span not
    closed yet are held back until they can be told apart; fences are tracked over the whole text."""

    PARTIAL_MARKER = re.compile(r"\[\d*$")

    def __init__(self, passage_count: int) -> None:
        self.passage_count = passage_count
        self.pending = ""
        self.raw = ""  # everything released so far, as received
        self.sent = 0  # characters of the cleaned text already returned
        self.numbering: dict[int, int] = {}

    def feed(self, text: str) -> str:
        text = self.pending + text
        cut = self._safe_end(text)
        self.pending = text[cut:]
        return self._release(text[:cut])

    def _safe_end(self, text: str) -> int:
        """How much of ``text`` can be released: not a marker that may still grow ("[1" of "[12]"), nor an inline
        code span that is not closed yet (after the last complete one: a closing backtick is not an opening one)."""
        whole = self.raw + text
        end = len(whole)
        partial = self.PARTIAL_MARKER.search(whole)
        if partial:
            end = partial.start()
        after_code = max((match.end() for match in CODE.finditer(whole)), default=0)
        opener = whole.find("`", after_code)
        if opener != -1 and "\n" not in whole[opener:]:
            end = min(end, opener)
        return max(0, end - len(self.raw))

    def flush(self) -> str:
        rest, self.pending = self.pending, ""
        return self._release(rest)

    def _release(self, text: str) -> str:
        self.raw += text
        cleaned = renumber(strip_invalid_markers(self.raw, self.passage_count), self.numbering)
        out, self.sent = cleaned[self.sent :], len(cleaned)
        return out


def citations_in_order(answer: str, cited: dict[int, Citation], passages: list[Passage]) -> list[Citation]:
    result = []
    for n in dict.fromkeys(int(m.group(1)) for m in _markers(MARKER, answer)):
        result.append(cited.get(n) or Citation(n, passages[n - 1], passages[n - 1].text[:300]))
    return result


def cited_claims(answer: str) -> list[tuple[str, list[int]]]:
    """Each stretch of text that ends in citation markers, with the numbers it cites."""
    claims = []
    cursor = 0
    for match in _markers(MARKERS, answer):
        text = answer[cursor : match.start()]
        cursor = match.end()
        numbers = [int(n) for n in MARKER.findall(match.group(0))]
        claim = _last_sentences(text)
        if claim:
            claims.append((claim, numbers))
    return claims


def _last_sentences(text: str) -> str:
    """The claim a marker closes: the last paragraph since the previous marker, without Markdown decoration."""
    fenced = re.search(r"```[^\n]*\n(.*?)```\s*$", text.strip(), flags=re.DOTALL)
    if fenced:  # a code block closed by the marker: the code itself is the claim
        return fenced.group(1).strip()
    text = re.sub(r"```.*?```", " ", text, flags=re.DOTALL)
    text = re.split(r"\n\s*\n", text.strip())[-1]
    text = re.sub(r"^(\s*[-*]\s+)\*\*[^*\n]+\*\*:\s*", r"\1", text, flags=re.MULTILINE)  # "- **Aspect**: " labels
    lines = [re.sub(r"^\s*(?:[-*>]|\d+\.|#+)\s*", "", line) for line in text.strip().splitlines()]
    cleaned = " ".join(line for line in lines if line.strip())
    cleaned = re.sub(r"[*`]+|(?<!\w)_+|_+(?!\w)", "", cleaned).strip(" .;:-")  # emphasis, not snake_case
    return cleaned


def passage_units(text: str, limit: int = 40) -> list[str]:
    """The paragraphs of a passage (a code block whole): a claim is compared with each one, since the
    embedding model reads only its first 256 tokens and a widened passage is longer than that."""
    units: list[str] = []
    current: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        if not line.strip() and not fenced:
            if current:
                units.append("\n".join(current))
            current = []
        else:
            current.append(line)
    if current:
        units.append("\n".join(current))
    return units[:limit] or [text]


def support_scores(embedder, pairs: list[tuple[str, str]]) -> list[float]:
    """For each (claim, passage text): half the best embedding similarity between the claim and one
    paragraph of the passage, half the share of the claim's content words found in the passage."""
    if not pairs:
        return []
    units = [passage_units(passage) for _, passage in pairs]
    texts = list(dict.fromkeys([claim for claim, _ in pairs] + [unit for group in units for unit in group]))
    vectors = dict(zip(texts, np.array(embedder.embed(texts))))
    scores = []
    for (claim, passage), group in zip(pairs, units):
        similarity = max(float(np.dot(vectors[claim], vectors[unit])) for unit in group)
        words = set(content_words(claim))
        overlap = len(words & set(content_words(passage))) / len(words) if words else 0.0
        scores.append(0.5 * similarity + 0.5 * overlap)
    return scores


def verify(answer: str, passages: list[Passage], embedder, threshold: float) -> list[SentenceCheck]:
    """Scores every cited claim against the passages it cites; the best one must reach ``threshold``."""
    claims = [(claim, [n for n in numbers if 1 <= n <= len(passages)]) for claim, numbers in cited_claims(answer)]
    pairs = [(claim, passages[n - 1].full_text) for claim, numbers in claims for n in numbers]
    scores = iter(support_scores(embedder, pairs))
    checks = []
    for claim, numbers in claims:
        best = max((next(scores) for _ in numbers), default=0.0)
        checks.append(SentenceCheck(claim, numbers, best, best >= threshold))
    return checks


def strip_markers(text: str) -> str:
    """The text without any ``[n]`` marker (code left as it is): an earlier answer's markers point at passages
    of another search, so a conversation history sent back to a model must not carry them."""
    spans = _code_spans(text)
    return MARKERS.sub(lambda match: match.group(0) if _in_code(match.start(), spans) else "", text)
