"""Extractive answerer: the offline, deterministic provider used when no Claude key is set.

It quotes the sentences of the retrieved passages most relevant to the question (maximal marginal
relevance: relevance to the question plus diversity), groups them by passage in reading order, and
cites each one. A code or config block from a top passage is added when the question asks for one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from rag.embedding import Embedder
from rag.events import Citation, CitationEvent, TextDelta
from rag.personas import Persona
from rag.retrieval import Passage, content_words, rewrite_follow_up

LABEL = (
    "*Offline extract: quoted from the knowledge base, no language model. Set ANTHROPIC_API_KEY for a written answer.*"
)
MAX_SENTENCES = 5
MMR_LAMBDA = 0.7
CODE_WORDS = re.compile(
    r"\b(config|configure|configuration|example|code|snippet|yaml|sql|script|command|show me|set up)\b", re.I
)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
FENCE = re.compile(r"```[^\n]*\n.*?```", re.DOTALL)
LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+\.)\s+")


@dataclass
class Candidate:
    text: str
    passage_index: int  # 0-based into the passages
    order: int  # position inside the passage, for reading order


def prose_of(text: str) -> str:
    """The text with its code lines blanked out, including a code block the chunker cut in two.

    A chunk can start inside a code block (only its closing fence is there) or end inside one (only the
    opening fence). An opening fence carries a language tag, so a passage whose first fence is bare and
    that leaves a block open (an odd number of fences, or a tagged last one) began inside code.
    """
    lines = text.splitlines()
    fences = [line.strip() for line in lines if line.strip().startswith(("```", "~~~"))]
    bare = ("```", "~~~")
    in_code = bool(fences) and fences[0] in bare and (len(fences) % 2 == 1 or fences[-1] not in bare)
    kept = []
    for line in lines:
        if line.strip().startswith(("```", "~~~")):
            in_code = not in_code
            kept.append("")
        else:
            kept.append("" if in_code else line)
    return "\n".join(kept)


def sentences_of(text: str) -> list[str]:
    """Prose sentences of a passage: code, tables and headings are left out, and each list item is a unit of
    its own (joined with the next item, its words would be quoted as one sentence the passage never wrote)."""
    prose = prose_of(text)
    found = []
    for block in re.split(r"\n\s*\n", prose):
        units: list[list[str]] = [[]]
        for line in block.splitlines():
            if line.lstrip().startswith(("|", "#")):
                continue
            if LIST_ITEM.match(line):
                units.append([LIST_ITEM.sub("", line)])
            else:
                units[-1].append(line)  # a paragraph line, or the continuation of a list item
        for unit in units:
            joined = " ".join(line.strip() for line in unit if line.strip())
            for sentence in SENTENCE_END.split(joined):
                sentence = sentence.strip()
                if 5 <= len(sentence.split()) <= 70 and not sentence.endswith(":"):
                    found.append(sentence)
    return found


class ExtractiveProvider:
    name = "extractive"
    model = "offline extract"

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def rewrite(self, question: str, history: list[str]) -> str:
        return rewrite_follow_up(question, history)

    def generate(
        self, question: str, query: str, history: list[dict], persona: Persona, passages: list[Passage]
    ) -> Iterator[TextDelta | CitationEvent]:
        chosen = self.select(query, passages)
        yield TextDelta(LABEL + "\n\n")
        by_passage: dict[int, list[Candidate]] = {}
        for candidate in chosen:
            by_passage.setdefault(candidate.passage_index, []).append(candidate)
        first = True
        for index in sorted(by_passage):
            passage = passages[index]
            n = index + 1
            group = sorted(by_passage[index], key=lambda c: c.order)
            if not first:
                yield TextDelta("\n\n")
            first = False
            for position, candidate in enumerate(group):
                yield CitationEvent(Citation(n, passage, candidate.text))
                yield TextDelta(("" if position == 0 else " ") + f"{candidate.text} [{n}]")
        code = self._code_block(query, passages)
        if code:
            index, block = code
            yield CitationEvent(Citation(index + 1, passages[index], block))
            yield TextDelta(f"\n\nExample from {passages[index].heading}:\n\n{block}\n[{index + 1}]")

    def select(self, query: str, passages: list[Passage]) -> list[Candidate]:
        candidates: list[Candidate] = []
        seen: set[str] = set()
        for index, passage in enumerate(passages):
            for order, sentence in enumerate(sentences_of(passage.full_text)):
                key = " ".join(sentence.split())
                if key in seen:  # widened passages of neighbouring chunks overlap: quote a sentence once
                    continue
                seen.add(key)
                candidates.append(Candidate(sentence, index, order))
        if not candidates:
            return []
        vectors = np.array(self.embedder.embed([query] + [c.text for c in candidates]))
        query_vector, sentence_vectors = vectors[0], vectors[1:]
        query_words = set(content_words(query))
        relevance = []
        for candidate, vector in zip(candidates, sentence_vectors):
            overlap = len(query_words & set(content_words(candidate.text))) / max(1, len(query_words))
            rank_prior = 0.02 * (len(passages) - candidate.passage_index) / len(passages)
            relevance.append(float(np.dot(query_vector, vector)) + 0.25 * overlap + rank_prior)
        best = max(relevance)
        chosen: list[int] = []
        while len(chosen) < MAX_SENTENCES:
            scores = []
            for i, rel in enumerate(relevance):
                if i in chosen or rel < best - 0.25:
                    continue
                redundancy = max((float(np.dot(sentence_vectors[i], sentence_vectors[j])) for j in chosen), default=0)
                scores.append((MMR_LAMBDA * rel - (1 - MMR_LAMBDA) * redundancy, i))
            if not scores:
                break
            chosen.append(max(scores)[1])
        return [candidates[i] for i in chosen]

    def _code_block(self, query: str, passages: list[Passage]) -> tuple[int, str] | None:
        if not CODE_WORDS.search(query):
            return None
        for index, passage in enumerate(passages):
            for block in FENCE.findall(passage.full_text):
                if block.count("\n") <= 30:
                    return index, block
        return None
