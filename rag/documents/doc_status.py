"""Document status: whether a document is current, superseded or deprecated, what replaced it, and how old it is.

A status comes from front matter (``status:``, optionally ``superseded_by:``) or, in an ADR, from the first
paragraph under its "Status" heading (or a ``Status: ...`` line). A document's date is its ``updated`` front
matter, else its last commit date (when loading recorded one), else the file's modification time. Ingest stores
``status``, ``superseded_by``, ``superseded_on`` and ``updated`` in every chunk's metadata; retrieval demotes
superseded passages unless the question asks about the past; answers note a cited superseded or stale document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Protocol

# the sections that state what a document decides: a superseded document's successor is quoted from them first
DECISION_SECTION = re.compile(r"\b(decision|decisions|decided|summary|outcome)\b", re.IGNORECASE)
KNOWN_STATUSES = ("superseded", "deprecated", "accepted", "proposed", "rejected", "draft", "obsolete")
RETIRED = frozenset({"superseded", "deprecated", "obsolete"})
# a decision record in force: its age alone says nothing about whether it still holds (an accepted ADR is
# current until another supersedes it)
IN_FORCE = frozenset({"accepted"})
ADR_ID = re.compile(r"\badr[-_ ]?0*(\d{1,5})(?!\d)", re.IGNORECASE)
ISO_DATE = re.compile(r"\b(\d{4}-\d{2}-\d{2})\b")
SUPERSEDED_BY = re.compile(r"\bsuperseded\s+by\s+(?:\[)?([A-Za-z]+[-_ ]?\d+|[^\s.,;)\]]+)", re.IGNORECASE)
# Linear in the text: the date is looked for within a sentence's reach of "superseded", and the status
# patterns stay on one line and never give back the spaces they took.
SUPERSEDED_ON = re.compile(r"\bsuperseded\b[^.]{0,200}?\bon\s+(\d{4}-\d{2}-\d{2})", re.IGNORECASE)
STATUS_HEADING = re.compile(r"^#{1,6}[ \t]*+status[ \t]*+#*+[ \t]*+$", re.IGNORECASE | re.MULTILINE)
STATUS_LINE = re.compile(
    r"^[ \t]*+(?:[-*][ \t]*+)?\**+status\**+[ \t]*+:[ \t]*+\**+[ \t]*+(\S(?:[^\n]*\S)?)", re.IGNORECASE | re.MULTILINE
)


@dataclass(frozen=True)
class DocStatus:
    status: str = ""  # one of KNOWN_STATUSES, or "" when the document says nothing
    superseded_by: str = ""  # the successor, e.g. "ADR-0011"
    superseded_on: str = ""  # ISO date the status line gives for the supersession, when it gives one

    @property
    def retired(self) -> bool:
        return self.status in RETIRED


# what an LLM is told when some of its passages are marked retired (rag.claude, rag.openai_compat)
RETIRED_INSTRUCTION = (
    "Passages marked superseded or deprecated record decisions that no longer apply: unless the question asks "
    "how things were, answer with the current decision first and mention the old one only as what it replaced."
)


def retired_label(status: str, superseded_by: str = "", superseded_on: str = "") -> str:
    """How a retired document is marked for an LLM: "superseded by ADR-0011 on 2025-05-12, no longer current";
    "" for a current one."""
    if status not in RETIRED:
        return ""
    successor = f" by {superseded_by}" if superseded_by else ""
    when = f" on {superseded_on}" if superseded_on else ""
    return f"{status}{successor}{when}, no longer current"


def adr_id(text: str) -> str:
    """The first ADR number named in ``text``, written as ``ADR-0011``; "" when none."""
    match = ADR_ID.search(text)
    return f"ADR-{int(match.group(1)):04d}" if match else ""


def adr_ids(text: str) -> set[str]:
    return {f"ADR-{int(number):04d}" for number in ADR_ID.findall(text)}


def document_names(title: str, source: str) -> set[str]:
    """The names a successor may be given by: its ADR number, its path, file name or file stem."""
    names = {source, Path(source).name, Path(source).stem} - {""}
    own = adr_id(title) or adr_id(Path(source).name)
    return names | {own} if own else names


def parse_status(line: str, superseded_by: str = "") -> DocStatus:
    """Reads a status text such as "Superseded by ADR-0011 on 2025-05-12." or "Accepted. Supersedes ADR-0003."
    A "superseded by" anywhere wins, then "deprecated", then the first known status word."""
    successor = superseded_by.strip()
    named = SUPERSEDED_BY.search(line)
    if named and not successor:
        successor = adr_id(named.group(1)) or named.group(1)
    elif successor:
        successor = adr_id(successor) or successor
    words = re.findall(r"[a-z]+", line.lower())
    if successor or "superseded" in words:
        status = "superseded"
    elif "deprecated" in words:
        status = "deprecated"
    else:
        status = next((word for word in words if word in KNOWN_STATUSES), "")
    on = SUPERSEDED_ON.search(line)
    return DocStatus(status, successor, on.group(1) if on and status == "superseded" else "")


def status_text(text: str) -> str:
    """The first paragraph under a "Status" heading, else the value of a ``Status:`` line; "" when neither."""
    heading = STATUS_HEADING.search(text)
    if heading:
        rest = text[heading.end() :].lstrip("\n")
        if not rest.lstrip().startswith("#"):
            return rest.strip().split("\n\n", 1)[0].strip()
    line = STATUS_LINE.search(text)
    return line.group(1) if line else ""


def read_status(front_matter: dict, text: str) -> DocStatus:
    """The status a document declares: front matter first, else its Status section or line."""
    declared = front_matter.get("status")
    successor = front_matter.get("superseded_by") or front_matter.get("superseded-by") or ""
    line = str(declared).strip() if declared not in (None, "") else status_text(text)
    return parse_status(line, str(successor))


def iso_date(value: str) -> str:
    """``value`` as YYYY-MM-DD when it starts with a date (a date, a datetime, a Git ISO date); else ""."""
    match = ISO_DATE.match(value.strip())
    return match.group(1) if match else ""


class _Dated(Protocol):
    updated: str
    commit_date: str


class _WithStatus(_Dated, Protocol):
    status: DocStatus


def document_date(document: _Dated, path: Path | None = None) -> str:
    """``updated`` from front matter, else the last commit date, else the file's modification time."""
    found = iso_date(document.updated or "")
    found = found or iso_date(document.commit_date)  # recorded at ingest for a file in a Git working copy
    if found or path is None:
        return found
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC).date().isoformat()
    except OSError:
        return ""


def status_metadata(document: _WithStatus) -> dict[str, str]:
    """What every chunk of ``document`` carries about its status and date (Chroma takes no None)."""
    status = document.status
    return {
        "status": status.status,
        "superseded_by": status.superseded_by,
        "superseded_on": status.superseded_on,
        "updated": document_date(document, document.source.path),
    }


# A question that asks what came before ("what did we use before Kafka") wants the old decision first; one that
# merely leans on the past ("history", "old") keeps the plain ranking. Either way nothing superseded is demoted.
BEFORE = re.compile(
    r"\b(before|previously|originally|formerly|used to|did we (?:use|have|pick|choose)|in the past|back then|"
    r"at the time)\b",
    re.IGNORECASE,
)
PAST_WORDS = frozenset("history historical historically old older earlier past superseded deprecated legacy".split())


def asks_what_came_before(query: str) -> bool:
    return bool(BEFORE.search(query))


def asks_about_past(query: str) -> bool:
    return asks_what_came_before(query) or bool(PAST_WORDS & set(re.findall(r"[a-z]+", query.lower())))


def age_days(when: str, today: date | None = None) -> int | None:
    found = iso_date(when)
    if not found:
        return None
    return ((today or date.today()) - date.fromisoformat(found)).days


def status_summary(
    status: str, superseded_by: str, superseded_on: str, updated: str, stale_days: int, today: date | None = None
) -> str:
    """A document's status in a few words for a search result: "superseded by ADR-0011 on 2025-05-12",
    "deprecated", "stale since 2025-03-01 (last updated 2024-03-01)"; "" for a current document. A decision record
    in force (accepted) is never called stale by age alone, as in the chat's notes."""
    if status in RETIRED:
        by = f" by {superseded_by}" if superseded_by else ""
        return status + by + (f" on {superseded_on}" if superseded_on else "")
    age = age_days(updated, today)
    if status in IN_FORCE or age is None or age <= stale_days:
        return ""
    since = date.fromisoformat(iso_date(updated)) + timedelta(days=stale_days)
    return f"stale since {since.isoformat()} (last updated {iso_date(updated)})"


def age_in_words(days: int) -> str:
    """How long ago, as a reader would say it: "45 days ago", "13 months ago", "over 7 years ago"."""
    if days < 60:
        return f"{days} days ago"
    if days < 730:
        return f"{days // 30} months ago"
    return f"over {days // 365} years ago"
