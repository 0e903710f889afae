"""Answer layout: how an offline answer's chosen units are written out.

Owns the shape a reader sees: each quote with its ``[n]`` marker (a lead-in or header row shown once), the
points grouped under the section they come from, the "See also" line with each document's sections, the
names a near-miss sentence lists, and how many characters a set of units will take once laid out (so that
selection can stay within the answer budget).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from rag.events import Citation, CitationEvent, TextDelta
from rag.intent import HEADS
from rag.quotes import Unit
from rag.retrieval import Passage


def layout_length(units: list[Unit], passages: list[Passage]) -> int:
    """About how long an answer quoting ``units`` runs, so that a unit from one more section pays for the label
    and the "See also" entry it adds: each quote with its marker, each section's name twice (label and "See
    also") and each document's title once. An answer from one section has room for more quotes."""
    sections = {passages[u.passage_index].heading for u in units}
    titles = {passages[u.passage_index].title for u in units}
    return (
        sum(len(u.text) + 5 for u in units)
        + sum(2 * len(section.split(" > ")[-1]) + 8 for section in sections)
        + sum(len(title) for title in titles)
    )


def quoted(
    units: list[Unit], passages: list[Passage], separator: str, shown: set[str]
) -> Iterator[TextDelta | CitationEvent]:
    """The units with their markers; a lead-in or header row already shown in this answer is not repeated."""
    for position, unit in enumerate(units):
        n = unit.passage_index + 1
        quotes = [q for q in unit.quotes[:-1] if q not in shown] + unit.quotes[-1:]
        shown.update(quotes)
        for quote in quotes:
            yield CitationEvent(Citation(n, passages[unit.passage_index], quote))
        if unit.kind == "row":  # a table row is shown under its header row, as a table of its own
            text = unit.text if len(quotes) == len(unit.quotes) else unit.quotes[-1]
            yield TextDelta(f"{text}\n\n[{n}]\n\n")
        else:
            text = unit.text if len(quotes) == len(unit.quotes) else " ".join(quotes)
            yield TextDelta(("" if position == 0 else separator) + f"{text} [{n}]")


def by_aspect(points: list[Unit], passages: list[Passage]) -> list[tuple[str, list[Unit]]]:
    """Points grouped under the section they come from, groups in the order of their best point."""
    groups: dict[str, list[Unit]] = {}
    for unit in points:
        groups.setdefault(aspect_of(passages[unit.passage_index]), []).append(unit)
    return list(groups.items())


def aspect_of(passage: Passage) -> str:
    """The aspect a passage speaks to: the last part of its section path ("Cache-aside")."""
    return (passage.section or passage.title).split(" > ")[-1].strip()


def see_also(passages: list[Passage]) -> str:
    """Each document once, with the sections used: "Title (Section, Section)"."""
    sections: dict[str, list[str]] = {}
    for passage in passages:
        names = sections.setdefault(passage.title, [])
        last = passage.section.split(" > ")[-1].strip()
        if last and last not in names:
            names.append(last)
    return "; ".join(f"{title} ({', '.join(names)})" if names else title for title, names in sections.items())


def join_names(names: list[str]) -> str:
    """ "the returns API, ADR-0015 or max_poll_records": a thing named by its kind takes "the"."""
    named = [f"the {name}" if re.search(rf"\b(?:{HEADS})$", name, re.IGNORECASE) else name for name in names]
    return named[0] if len(named) == 1 else ", ".join(named[:-1]) + " or " + named[-1]
