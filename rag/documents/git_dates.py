"""Git dates: the last commit (id and committer date) of files that live in a Git working copy.

One ``git log`` per repository walks the history once, newest first, naming the files each commit
touched; the first commit that names a file is its last one, and the walk stops as soon as every file
asked about has been seen. Files outside a repository, untracked files, a missing ``git`` or a repository
git refuses to read simply get no entry: the date is a nicety, never a reason to fail an ingest.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

PATHSPECS_PER_CALL = 1000  # keeps the command line well under the system's argument limit
GIT_TIMEOUT_SECONDS = 60
_HEADER = "\x01"  # starts each commit's line in the log, so it cannot be mistaken for a file name


@dataclass(frozen=True)
class Commit:
    id: str
    date: str  # committer date, ISO 8601 with its offset


def last_commits(paths: list[Path]) -> dict[Path, Commit]:
    """The last commit of each path that Git tracks; other paths are left out."""
    by_repo: dict[str, dict[str, Path]] = {}
    toplevels: dict[str, str | None] = {}
    for path in paths:
        real = os.path.realpath(path)
        folder = os.path.dirname(real)
        if folder not in toplevels:
            toplevels[folder] = _toplevel(folder)
        top = toplevels[folder]
        if top is not None and real.startswith(top.rstrip("/") + "/"):
            by_repo.setdefault(top, {})[os.path.relpath(real, top)] = path
    found: dict[Path, Commit] = {}
    for top, wanted in by_repo.items():
        names = sorted(wanted)
        for start in range(0, len(names), PATHSPECS_PER_CALL):
            for name, commit in _walk_log(top, names[start : start + PATHSPECS_PER_CALL]).items():
                found[wanted[name]] = commit
    return found


def _git(folder: str, *args: str) -> list[str]:
    return ["git", "-C", folder, "--literal-pathspecs", "-c", "core.quotepath=off", *args]


def _toplevel(folder: str) -> str | None:
    try:
        done = subprocess.run(
            _git(folder, "rev-parse", "--show-toplevel"), capture_output=True, timeout=GIT_TIMEOUT_SECONDS
        )
    except (OSError, subprocess.SubprocessError):  # no git installed, or it hung
        return None
    if done.returncode != 0:
        return None  # not a working copy (or one git refuses to read)
    return os.path.realpath(os.fsdecode(done.stdout.rstrip(b"\n")))


def _walk_log(top: str, names: list[str]) -> dict[str, Commit]:
    """Reads ``git log`` as it streams and stops it once every name has its newest commit."""
    command = _git(top, "log", "-z", "--name-only", f"--format={_HEADER}%H %cI", "--", *names)
    wanted = set(names)
    found: dict[str, Commit] = {}
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except OSError:
        return found
    assert process.stdout is not None
    current: Commit | None = None
    pending = b""
    try:
        while wanted - found.keys():
            block = process.stdout.read1(65536)
            if not block:
                break
            tokens = (pending + block).split(b"\0")
            pending = tokens.pop()  # an unfinished token waits for the next block
            for token in tokens:
                text = os.fsdecode(token.lstrip(b"\n"))
                if text.startswith(_HEADER):
                    commit_id, _, date = text[1:].partition(" ")
                    current = Commit(commit_id, date)
                elif text and current is not None and text in wanted and text not in found:
                    found[text] = current
    finally:
        process.stdout.close()
        if process.poll() is None:
            process.kill()
        process.wait(timeout=GIT_TIMEOUT_SECONDS)
    return found
