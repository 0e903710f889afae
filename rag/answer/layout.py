"""Answer layout: how an offline answer's chosen units are written out.

Owns the shape a reader sees: each quote with its ``[n]`` marker (a lead-in shown once, table rows as one table), the
points grouped under the section they come from, the "See also" line with each document's sections, the
names a near-miss sentence lists, and how many characters a set of units will take once laid out (so that
selection can stay within the answer budget).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from rag.answer.events import Citation, CitationEvent, TextDelta
from rag.answer.quotes import Unit
from rag.search.intent import HEADS
from rag.search.passages import Passage


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
    """The units with their markers; a lead-in already shown in this answer is not repeated. Table rows are written
    as a table: the rows of one table that follow each other share its header row, and a table starts on a line of
    its own (Markdown renders a row without its header, or after text on the same line, as plain text)."""
    position = 0
    while position < len(units):
        unit = units[position]
        n = unit.passage_index + 1
        if unit.kind == "row":
            table = _same_table(units, position)
            for row in table:
                for quote in row.quotes:
                    if quote not in shown or quote == row.quotes[-1]:
                        yield CitationEvent(Citation(n, passages[row.passage_index], quote))
                shown.update(row.quotes)
            header, rule = unit.text.split("\n")[:2]
            lines = "\n".join([header, rule] + [row.quotes[-1] for row in table])
            yield TextDelta(("\n\n" if position else "") + f"{lines}\n\n[{n}]\n\n")
            position += len(table)
            continue
        quotes = [q for q in unit.quotes[:-1] if q not in shown] + unit.quotes[-1:]
        shown.update(quotes)
        for quote in quotes:
            yield CitationEvent(Citation(n, passages[unit.passage_index], quote))
        text = unit.text if len(quotes) == len(unit.quotes) else " ".join(quotes)
        yield TextDelta(("" if position == 0 else separator) + f"{text} [{n}]")
        position += 1


def _same_table(units: list[Unit], start: int) -> list[Unit]:
    """The row at ``start`` and the rows right after it from the same table (same passage, same header row)."""
    first = units[start]
    table = [first]
    for unit in units[start + 1 :]:
        if unit.kind != "row" or unit.passage_index != first.passage_index or unit.quotes[0] != first.quotes[0]:
            break
        table.append(unit)
    return table


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
