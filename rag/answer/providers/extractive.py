"""Extractive answerer: the offline, deterministic provider used when no language model is configured.

It answers in the shape a reader expects: a lead of one or two quoted sentences that answer the question
directly, then the supporting points as a short list grouped by aspect (the section each comes from),
then a code or config example when one is asked for, then "See also" with the sections used. Every quote
is a unit of ``rag.answer.quotes`` (it reads correctly out of context) and carries its ``[n]``.

Selection reads the question's intent (``rag.search.intent``): a comparison covers each side from passages about
that side, a "why" prefers reasons, a number question the sentence carrying the number, a "how" the
steps. Anything the question names that no passage mentions is said plainly first. How the chosen units
are written out (markers, aspect groups, "See also") is ``rag.answer.layout``'s.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

import numpy as np

from rag.answer.events import Citation, CitationEvent, TextDelta
from rag.answer.layout import aspect_of, by_aspect, join_names, layout_length, quoted, see_also
from rag.answer.personas import Persona
from rag.answer.quotes import Unit, units_of
from rag.documents.doc_status import DECISION_SECTION, RETIRED, document_names
from rag.index.embedding import Embedder
from rag.search.followups import rewrite_follow_up
from rag.search.intent import Intent, read_intent
from rag.search.passages import Passage
from rag.text.words import content_words

# what the reader is told about an offline answer: by the CLI after it, by the UI on the answer's caption; kept
# out of the answer text, as a written answer carries no such line either
OFFLINE_NOTE = "offline answer: quoted from the knowledge base, no language model"
# about how long an answer's quotes, labels and "See also" may run (see rag.answer.layout.layout_length)
ANSWER_BUDGET = 1080
MAX_UNITS = 7
LEAD_PAIR = 220  # a lead shorter than this takes the next sentence of its passage along
DUPLICATE = 0.9  # a unit this similar to one already chosen says the same thing
RELEVANCE_WINDOW = 0.35  # a unit scores within this much of the best one
OVERLAP_WEIGHT = 0.3
RANK_PRIOR = 0.3  # the retrieval rank of a unit's passage (the first passage is most often the right one)...
RANK_DECAY = 0.5  # ...halved with each rank further down
REASON_BONUS = 0.06  # a "why" question: a sentence that gives a reason...
REASON_SECTION_BONUS = 0.06  # ...or one under a "Reasons"/"Decision"/"Trade-offs" heading
HOW_BONUS = 0.05  # a "how" or "what should we do" question: a step, a list item or a recommendation
NUMBER_BONUS = 0.1  # a number question: a sentence carrying a quantity with its unit
FENCED = re.compile(r"```[^\n]*\n.*?```", re.DOTALL)
REASON = re.compile(
    r"\b(because|so that|since|reason|avoid|prevents?|otherwise|means|without|cannot|must|lets|allows?|"
    r"trade-?offs?|instead of|rather than|risk|cost|safer|simpler|guarantee\w*|causes?|caused|leads? to|"
    r"results? in|so (?:any|the|that|a|an|it|they|every|each|no)|after an?|whenever|each time)\b",
    re.IGNORECASE,
)
REASON_SECTION = re.compile(r"\b(reasons?|why|decision|rationale|motivation|trade-?offs?)\b", re.I)
HOW_LEAD_WINDOW = 0.1  # a "how" leads with advice (a recommendation or a step) within this much of the best
WHY_LEAD_WINDOW = 0.2  # a "why" leads with a unit of a reasons section scoring within this much of the best
QUANTITY = re.compile(
    r"\d[\d,.]*\s*(%|percent|ms|milliseconds?|s\b|seconds?|minutes?|hours?|days?|weeks?|months?|years?|"
    r"[kmgt]i?b\b|bytes?|requests?|rps|per\b|times|x\b|nines|connections?|pods?|replicas?|keys?|calls?|attempts?)",
    re.IGNORECASE,
)
RECOMMEND = re.compile(
    r"\b(should|prefer|recommended|the (?:right|better|safe|usual) (?:default|fix|choice|way)|is the fix|"
    r"the fix is|instead|rather than|the answer is)\b",
    re.IGNORECASE,
)
# a section written to be the answer ("Summary", "TL;DR"): its sentences say what the document decides or advises
SUMMARY_SECTION = re.compile(r"^(summary|tl;?dr|in short|at a glance|key (?:points|takeaways)|recommendations?)$", re.I)
SUMMARY_BONUS = 0.05
STEP = re.compile(r"^(use|set|add|run|configure|enable|disable|create|make|keep|put|give|call|check|move|split|"
                  r"limit|cap|retry|send|return|store|prefer|avoid|do not|don't|never|always)\b", re.IGNORECASE)


class ExtractiveProvider:
    name = "extractive"
    model = "offline extract"

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def rewrite(self, question: str, history: list[str]) -> str:
        return rewrite_follow_up(question, history)

    def generate(
        self,
        question: str,
        query: str,
        history: list[dict],
        persona: Persona,
        passages: list[Passage],
        missing: list[str] | None = None,
    ) -> Iterator[TextDelta | CitationEvent]:
        intent = read_intent(question)
        lead, points = self.select(query, intent, passages, asked=question)
        shown: set[str] = set()
        if missing:
            closest = "; the closest the knowledge base has is below" if lead else ""
            yield TextDelta(f"The knowledge base says nothing about {join_names(missing)}{closest}.\n\n")
        rows = [u for u in points if u.kind == "row"]
        if lead and lead[-1].kind == "row":  # the other rows of the lead's table join it, under one header row
            table = (lead[-1].passage_index, lead[-1].quotes[0])
            joining = [u for u in rows if (u.passage_index, u.quotes[0]) == table]
            lead, rows = lead + joining, [u for u in rows if u not in joining]
        if lead:
            yield from quoted(lead, passages, " ", shown)
            if lead[-1].kind != "row":  # a table ends its own paragraph
                yield TextDelta("\n\n")
        for aspect, group in by_aspect([u for u in points if u.kind != "row"], passages):
            yield TextDelta(f"- **{aspect}**: " if aspect else "- ")
            yield from quoted(group, passages, " ", shown)
            yield TextDelta("\n")
        if rows:
            yield TextDelta("\n")
            yield from quoted(rows, passages, "", shown)
        code = self._code_block(intent, [u.passage_index for u in lead + points], passages)
        if code:
            index, block = code
            yield CitationEvent(Citation(index + 1, passages[index], block))
            yield TextDelta(f"\nExample ({passages[index].heading}):\n\n{block}\n[{index + 1}]\n")
        used = list(dict.fromkeys(u.passage_index for u in lead + points))
        if used:
            yield TextDelta(f"\nSee also: {see_also([passages[i] for i in used])}.")

    def select(
        self, query: str, intent: Intent, passages: list[Passage], asked: str | None = None
    ) -> tuple[list[Unit], list[Unit]]:
        """The lead (one or two units) and the supporting points.

        Units are taken best first, each followed by the next unit of its passage (a point and the sentence
        that completes it sit side by side more often than not), until the character budget is spent.
        ``asked`` is the question as asked when ``query`` is its standalone rewrite (a follow-up): the rewrite
        found the topic, but the answer is to what the follow-up asks, so units are weighed against both and
        its own words are the ones a unit must share."""
        units = self._units(passages)
        if not units:
            return [], []
        follow_up = asked is not None and asked != query
        queries = [query, asked] if follow_up else [query]
        vectors = np.array(self.embedder.embed(queries + [u.matched for u in units]))
        unit_vectors = vectors[len(queries):]
        similarity = (unit_vectors @ vectors[: len(queries)].T).mean(axis=1)
        asked_query = asked if follow_up else query
        relevance = self._relevance(asked_query, intent, units, similarity, passages)
        # how each unit would score were no document superseded: whether the question is about an old decision
        unretired = self._relevance(asked_query, intent, units, similarity, passages, keep_retired=False)
        lead = [units.index(u) for u in self._lead(intent, units, relevance, passages, unretired)]
        chosen = list(lead)
        if len(lead) == 1 and self._follows(units, lead[0]) and len(units[lead[0]].text) < LEAD_PAIR:
            chosen.append(lead[0] + 1)  # the lead's next sentence completes it
            lead.append(lead[0] + 1)
        best = max(relevance)
        answers_each_ask = self._best_for_each_ask(intent, units, unit_vectors, passages)
        by_relevance = sorted(range(len(units)), key=lambda i: relevance[i], reverse=True)
        for i in answers_each_ask + by_relevance:
            if relevance[i] < best - RELEVANCE_WINDOW and i not in answers_each_ask:
                break
            for j in [i] + ([i + 1] if self._follows(units, i) else []):
                if self._fits(units, chosen, j, unit_vectors, passages):
                    chosen.append(j)
        chosen = [i for i in chosen if not any(
            i != j and units[i].text in units[j].text for j in chosen)]  # a sentence a leaning one repeats
        lead = [i for i in lead if i in chosen]
        points = sorted((i for i in chosen if i not in lead), key=lambda i: (units[i].passage_index, units[i].order))
        return [units[i] for i in lead], [units[i] for i in points]

    def _best_for_each_ask(
        self, intent: Intent, units: list[Unit], unit_vectors: np.ndarray, passages: list[Passage]
    ) -> list[int]:
        """For a question that asks several things, the unit that best answers each, taken before the rest: the
        best units for the whole question tend to answer only its first part."""
        if not intent.asks:
            return []
        best = []
        for ask, vector in zip(intent.asks, self.embedder.embed(intent.asks)):
            relevance = self._relevance(ask, intent, units, unit_vectors @ np.array(vector), passages)
            best.append(max(range(len(units)), key=lambda i: relevance[i]))
        return list(dict.fromkeys(best))

    @staticmethod
    def _follows(units: list[Unit], i: int) -> bool:
        return i + 1 < len(units) and units[i + 1].passage_index == units[i].passage_index

    @staticmethod
    def _fits(units: list[Unit], chosen: list[int], j: int, vectors: np.ndarray, passages: list[Passage]) -> bool:
        if j in chosen or len(chosen) >= MAX_UNITS:
            return False
        if layout_length([units[i] for i in chosen + [j]], passages) > ANSWER_BUDGET:
            return False
        return all(float(vectors[i] @ vectors[j]) < DUPLICATE and not _overlap(units[i], units[j]) for i in chosen)

    def _units(self, passages: list[Passage]) -> list[Unit]:
        units: list[Unit] = []
        seen: set[str] = set()
        for index, passage in enumerate(passages):
            for unit in units_of(passage.full_text):
                key = " ".join(unit.text.split()).lower()
                if key in seen:  # widened passages of neighbouring chunks overlap: quote a unit once
                    continue
                seen.add(key)
                unit.passage_index = index
                units.append(unit)
        return units

    def _relevance(
        self,
        query: str,
        intent: Intent,
        units: list[Unit],
        similarity: np.ndarray,
        passages: list[Passage],
        keep_retired: bool = True,
    ) -> list[float]:
        query_words = set(content_words(query))
        unit_words = [set(content_words(u.matched)) for u in units]
        # rarer words weigh more: "static membership" says more than "consumers"
        weight = {w: math.log(1 + len(units) / (1 + sum(w in words for words in unit_words))) for w in query_words}
        total = sum(weight.values()) or 1.0
        scores = []
        rank = _own_rank(passages, intent, keep_retired)
        for unit, words, sim in zip(units, unit_words, similarity):
            overlap = sum(weight[w] for w in query_words & words) / total
            prior = RANK_PRIOR * RANK_DECAY ** rank[unit.passage_index]
            summary = SUMMARY_BONUS * bool(SUMMARY_SECTION.match(aspect_of(passages[unit.passage_index])))
            scores.append(float(sim) + OVERLAP_WEIGHT * overlap + prior + _form_bonus(intent, unit, passages) + summary)
        return scores

    def _lead(
        self,
        intent: Intent,
        units: list[Unit],
        relevance: list[float],
        passages: list[Passage],
        unretired: list[float] | None = None,
    ) -> list[Unit]:
        """The best unit; for a comparison, the best unit about each side (one about both when there is one).
        A superseded or deprecated document does not lead unless the question asks how things were: what it
        says is no longer the answer (it may still follow, to say what changed)."""
        order = sorted(range(len(units)), key=lambda i: relevance[i], reverse=True)
        if not intent.about_past:
            current = _current_decision(units, unretired or relevance, passages, order)
            if current is not None:
                return [units[current]]
            order.sort(key=lambda i: passages[units[i].passage_index].status in RETIRED)
        if intent.form == "compare" and len(intent.sides) == 2:
            mentions = [[i for i in order if _mentions(_about(units[i], passages), side)] for side in intent.sides]
            both = [i for i in mentions[0] if i in mentions[1]]
            if both and relevance[both[0]] >= relevance[order[0]] - 0.1:
                return [units[both[0]]]
            picked = [side[0] for side in mentions if side]
            if picked:
                return [units[i] for i in dict.fromkeys(picked)]
        preferred, window = [], 0.0
        if intent.form == "why":  # a reason, from a Reasons/Decision section
            preferred = [i for i in order if REASON_SECTION.search(passages[units[i].passage_index].section)]
            window = WHY_LEAD_WINDOW
        elif intent.form == "how":  # advice: a recommendation or a step
            preferred = [i for i in order if RECOMMEND.search(units[i].matched) or STEP.match(units[i].matched)]
            window = HOW_LEAD_WINDOW
        if preferred and relevance[preferred[0]] >= relevance[order[0]] - window:
            return [units[preferred[0]]]
        return [units[order[0]]]

    def _code_block(self, intent: Intent, used: list[int], passages: list[Passage]) -> tuple[int, str] | None:
        if not intent.wants_code:
            return None
        for index in list(dict.fromkeys(used)) + list(range(len(passages))):
            for block in FENCED.findall(passages[index].full_text):
                if block.count("\n") <= 30:
                    return index, block
        return None


def _current_decision(
    units: list[Unit], unretired: list[float], passages: list[Passage], order: list[int]
) -> int | None:
    """The unit to lead with when a superseded or deprecated document would be quoted were it current (one of its
    units scores within RELEVANCE_WINDOW of the best by ``unretired``, the relevance with the old document ranked
    by its own similarity instead of the place the search demoted it to) and its successor is among the
    passages: the successor's best unit (by ``order``) from a section that states its decision ("Decision",
    "Summary"), else its best unit. What the question asked about is the old decision's subject, and the answer
    to it today is the new decision."""
    ranked = sorted(range(len(units)), key=lambda i: unretired[i], reverse=True)
    best = unretired[ranked[0]]
    for i in ranked:
        if unretired[i] < best - RELEVANCE_WINDOW:
            return None
        old = passages[units[i].passage_index]
        if old.status not in RETIRED or not old.superseded_by:
            continue
        successors = {j for j, p in enumerate(passages) if old.superseded_by in document_names(p.title, p.source)}
        candidates = [j for j in order if units[j].passage_index in successors]
        if not candidates:
            continue
        decisions = [j for j in candidates if DECISION_SECTION.search(passages[units[j].passage_index].section)]
        return (decisions or candidates)[0]
    return None


def _own_rank(passages: list[Passage], intent: Intent | None = None, keep_retired: bool = True) -> list[int]:
    """Each passage's rank by its own similarity to the question: the search's order also lifts a file that
    matches in several places, which says which document to read, not which passage answers best. A superseded
    or deprecated document keeps the place the search gave it (it is moved for what the question asks about the
    past, see ``rag.search.retrieval.demote_superseded``), unless ``keep_retired`` is false."""
    kept = {i for i, p in enumerate(passages) if keep_retired and p.status in RETIRED}
    reasons = {  # a "why": the top document's reasons come before its other sections
        i
        for i, p in enumerate(passages)
        if intent and intent.form == "why" and p.path == passages[0].path and REASON_SECTION.search(p.section)
    }
    free = sorted(
        (i for i in range(len(passages)) if i not in kept),
        key=lambda i: (i not in reasons, -(passages[i].dense_score or 0.0)),
    )
    rank = [0] * len(passages)
    for position in range(len(passages)):
        rank[position if position in kept else free.pop(0)] = position
    return rank


def _overlap(a: Unit, b: Unit) -> bool:
    """Two sentence units sharing a sentence, neither holding the other: quoting both repeats it."""
    if a.kind != "sentence" or b.kind != "sentence":
        return False
    shared, first, second = set(a.quotes) & set(b.quotes), set(a.quotes), set(b.quotes)
    return bool(shared) and not (first <= second or second <= first)


def _form_bonus(intent: Intent, unit: Unit, passages: list[Passage]) -> float:
    text = unit.matched
    section = passages[unit.passage_index].section
    if intent.form == "why":
        return REASON_BONUS * bool(REASON.search(text)) + REASON_SECTION_BONUS * bool(REASON_SECTION.search(section))
    if intent.form == "number":
        return NUMBER_BONUS if QUANTITY.search(text) else (-0.05 if not re.search(r"\d", text) else 0.0)
    if intent.form == "how":
        return HOW_BONUS * (unit.kind == "item" or bool(STEP.match(text)) or bool(RECOMMEND.search(text)))
    if intent.form == "compare" and intent.sides:
        return 0.05 * sum(_mentions(_about(unit, passages), side) for side in intent.sides)
    return 0.0


def _about(unit: Unit, passages: list[Passage]) -> str:
    """What a unit is about: its words and the section heading it sits under ("Cache-aside")."""
    return f"{passages[unit.passage_index].section}\n{unit.matched}"


def _mentions(text: str, side: str) -> bool:
    words = content_words(side)
    text_words = set(content_words(text))
    return bool(words) and all(w in text_words or w.rstrip("s") in text_words for w in words)
