"""Check a development question file against the corpus it was written for.

Usage: check.py QUESTIONS.jsonl CORPUS_ROOT

Every line must parse; every answerable question's sources must exist under the root, and each of
its evidence passages and key facts must be found in one of those sources; every near-miss's
``missing`` names must appear in no file under the root. Prints each problem and exits 1 if any.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rag.app.answer_eval import has_fact  # noqa: E402  (the one rule facts are matched by, answers included)

KINDS = {"single", "multi", "followup", "near-miss"}


def collapse(text: str) -> str:
    return " ".join(text.split()).lower()


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def check_answerable(row: dict, root: Path) -> list[str]:
    problems = []
    sources = row.get("sources") or []
    if not sources:
        problems.append("no sources")
    texts = []
    for source in sources:
        path = root / source
        if path.is_file():
            texts.append(read(path))
        else:
            problems.append(f"source not found under root: {source}")
    evidence = row.get("evidence") or []
    if not evidence:
        problems.append("no evidence")
    for passage in evidence:
        words = len(passage.split())
        if not 8 <= words <= 30:
            problems.append(f"evidence has {words} words (want 8-30): {passage!r}")
        if texts and not any(collapse(passage) in collapse(text) for text in texts):
            problems.append(f"evidence not in sources: {passage!r}")
    facts = row.get("facts") or []
    if not 2 <= len(facts) <= 4:
        problems.append(f"{len(facts)} facts (want 2-4)")
    for fact in facts:
        alternatives = [alt.strip() for alt in fact.split(" | ")]
        if any(len(alt.split()) > 6 for alt in alternatives):
            problems.append(f"fact longer than 6 words: {fact!r}")
        if texts and not any(has_fact(text, fact) for text in texts):
            problems.append(f"fact not in sources: {fact!r}")
    return problems


def check_history(row: dict) -> list[str]:
    history = row.get("history")
    if not isinstance(history, list) or not history:
        return ["follow-up without history"]
    roles = [turn.get("role") if isinstance(turn, dict) else None for turn in history]
    expected = ["user", "assistant"] * (len(history) // 2 + 1)
    if roles != expected[: len(roles)] or roles[-1] != "assistant":
        return [f"history must alternate user/assistant and end with assistant, got {roles}"]
    if not all(isinstance(turn.get("content"), str) and turn["content"].strip() for turn in history):
        return ["history turn without content"]
    return []


def check_near_miss(row: dict, corpus: list[tuple[Path, str]]) -> list[str]:
    problems = []
    if row.get("sources") or row.get("evidence"):
        problems.append("near-miss has sources or evidence")
    missing = row.get("missing") or []
    if not missing:
        problems.append("near-miss without missing names")
    for name in missing:
        if collapse(name) not in collapse(row.get("question", "")):
            problems.append(f"missing name not worded in the question: {name!r}")
        found = [path for path, text in corpus if collapse(name) in text]
        if found:
            problems.append(f"missing name {name!r} occurs in {len(found)} corpus files, e.g. {found[0]}")
    return problems


def check_row(row: dict, root: Path, corpus: list[tuple[Path, str]]) -> list[str]:
    for key in ("id", "question", "kind"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            return [f"missing or empty {key!r}"]
    if row["kind"] not in KINDS:
        return [f"unknown kind {row['kind']!r}"]
    if row["kind"] == "near-miss":
        return check_near_miss(row, corpus)
    problems = check_answerable(row, root)
    if row["kind"] == "followup" or "history" in row:
        problems += check_history(row)
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    questions, root = Path(argv[0]), Path(argv[1])
    if not root.is_dir():
        print(f"{root}: not a directory", file=sys.stderr)
        return 2
    corpus = [(path.relative_to(root), collapse(read(path))) for path in sorted(root.rglob("*")) if path.is_file()]
    problems: list[str] = []
    rows = []
    for number, line in enumerate(read(questions).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:
            problems.append(f"{questions}:{number}: not JSON ({error})")
            continue
        if not isinstance(row, dict):
            problems.append(f"{questions}:{number}: not a JSON object")
            continue
        rows.append(row)
        label = f"{questions}:{number} [{row.get('id')}]"
        problems += [f"{label}: {problem}" for problem in check_row(row, root, corpus)]
    duplicates = [qid for qid, count in Counter(str(row.get("id")) for row in rows).items() if count > 1]
    problems += [f"{questions}: duplicate id {qid}" for qid in duplicates]
    kinds = Counter(row.get("kind") for row in rows)
    sources = Counter(source for row in rows for source in row.get("sources") or [])
    for problem in problems:
        print(problem)
    summary = ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items(), key=lambda item: str(item[0])))
    print(f"{len(rows)} questions ({summary}) over {len(sources)} source files; {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
