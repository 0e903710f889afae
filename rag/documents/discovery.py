"""Discovery: finds the supported files under the folders and files an ingest is given, as ``SourceFile``s.

It stays inside the folders it is given: links that lead outside them are skipped unless ``follow_symlinks``,
names that are not UTF-8 are reported, and the empty path and ``/`` are refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

TEXT_SUFFIXES = {".md", ".markdown", ".txt", ".rst", ".html", ".htm"}
BINARY_SUFFIXES = {".pdf", ".docx"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | BINARY_SUFFIXES


@dataclass(frozen=True)
class SourceFile:
    """A file found under an ingested root."""

    path: Path  # absolute
    root: str  # the root as first named (relative to the working directory of that run when inside it)
    relpath: str  # posix path relative to the root
    root_path: str = ""  # the root folder, resolved: what makes two names of one folder the same root

    @property
    def identity(self) -> str:
        """The file whatever path named it: its resolved root folder and its path inside it."""
        return f"{self.root_path}/{self.relpath}" if self.root_path else os.path.realpath(self.path)

    @property
    def key(self) -> str:
        """Unique across roots: two roots that both hold README.md never collide, and neither do
        ``x/y::z.md`` and ``x::y/z.md`` (a root with a colon or a percent sign is percent-encoded, so
        the first ``::`` always ends the root; other keys are as they always were)."""
        root = quote(self.root, safe="/") if (":" in self.root or "%" in self.root) else self.root
        return f"{root}::{self.relpath}"

    @property
    def display_path(self) -> str:
        return self.relpath if self.root in ("", ".") else f"{self.root}/{self.relpath}"


@dataclass(frozen=True)
class Failure:
    path: str
    error: str


@dataclass
class Discovery:
    files: list[SourceFile]
    failures: list[Failure]
    roots: list[str]  # roots that exist and were walked (pruning is scoped to these)
    single_files: set[str]  # keys of files named directly (their parent is not pruned)
    folders: list[str] = field(default_factory=list)  # the walked roots' folders, resolved


def root_label(path: Path) -> str:
    """The name a root is stored under: relative to the working directory when inside it."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(Path.cwd().resolve()).as_posix() or "."
    except ValueError:
        return resolved.as_posix()


class UnsafePathError(ValueError):
    """A path no ingest should walk (the whole filesystem, a kernel folder, an empty name)."""


SYSTEM_FOLDERS = ("/proc", "/sys", "/dev")


def refuse_unsafe_paths(paths: list[Path | str]) -> None:
    """An empty path would ingest the working directory, ``/`` the whole machine (with /proc and /dev)."""
    for given in paths:
        if str(given).strip() == "":
            raise UnsafePathError("an empty path would ingest the working directory; name the folder (e.g. '.')")
        resolved = os.path.realpath(given)
        if resolved == "/" or any(resolved == f or resolved.startswith(f + "/") for f in SYSTEM_FOLDERS):
            raise UnsafePathError(f"refusing to ingest '{given}' ({resolved}): name a folder of documents")


def printable(text: str) -> str:
    """A path as text that can always be printed: undecodable bytes of a file name become U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


OUTSIDE = "a link to {what} outside the ingested folder; skipped (--follow-symlinks to ingest it)"


def discover(paths: list[Path], follow_symlinks: bool = False) -> Discovery:
    """Walks the given files and folders; loops, missing paths, unreadable folders, undecodable names and
    links that lead outside the folder (unless ``follow_symlinks``) become failures."""
    refuse_unsafe_paths(paths)
    files: list[SourceFile] = []
    failures: list[Failure] = []
    roots: list[str] = []
    single: set[str] = set()
    folders: list[str] = []
    for given in map(Path, paths):
        if not given.exists() and not given.is_symlink():
            failures.append(Failure(printable(str(given)), "path does not exist"))
            continue
        if given.is_file():
            label = root_label(given.parent)
            ref = SourceFile(given.resolve(), label, given.name, given.parent.resolve().as_posix())
            if given.suffix.lower() not in SUPPORTED_SUFFIXES:
                failures.append(Failure(printable(str(given)), f"unsupported file type '{given.suffix}'"))
            elif not _valid_name(given.name):
                failures.append(Failure(printable(str(given)), BAD_NAME))
            elif not follow_symlinks and not _inside(os.path.realpath(given), os.path.realpath(given.parent)):
                failures.append(Failure(printable(str(given)), OUTSIDE.format(what="a file")))
            else:
                files.append(ref)
                single.add(ref.key)
            continue
        if not given.is_dir():
            failures.append(Failure(printable(str(given)), "not a regular file or folder (broken link?)"))
            continue
        label = root_label(given)
        roots.append(label)
        folders.append(given.resolve().as_posix())
        files.extend(_walk(given, label, failures, follow_symlinks))
    return Discovery(_unique(files), failures, roots, single, folders)


BAD_NAME = "the file name is not valid UTF-8; rename the file to ingest it"


def _valid_name(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.walk hands undecodable bytes over as lone surrogates
        return False
    return True


def _unique(files: list[SourceFile]) -> list[SourceFile]:
    """Each file once, the first way it was reached: a root given twice, or a folder inside another
    root given in the same run, must not ingest the same file twice (duplicate ids, duplicate chunks)."""
    seen: set[str] = set()
    unique = []
    for ref in files:
        identities = {ref.key, os.path.realpath(ref.path)}
        if identities & seen:
            continue
        seen |= identities
        unique.append(ref)
    return unique


def _walk(root: Path, label: str, failures: list[Failure], follow_symlinks: bool = False) -> list[SourceFile]:
    found: list[SourceFile] = []
    seen_dirs: set[str] = set()
    real_root = os.path.realpath(root)
    root_path = Path(real_root).as_posix()

    def on_error(error: OSError) -> None:
        failures.append(Failure(printable(str(error.filename)), f"cannot read folder: {error.strerror}"))

    def shown(path: Path) -> str:
        return printable(f"{label}/{path.relative_to(root).as_posix()}" if label not in ("", ".") else str(path))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=on_error):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:
            failures.append(Failure(printable(dirpath), f"folder symlink loop (already visited as {real}); skipped"))
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        kept = []
        for name in sorted(d for d in dirnames if not d.startswith(".")):
            folder = Path(dirpath) / name
            if not follow_symlinks and not _inside(os.path.realpath(folder), real_root):
                failures.append(Failure(shown(folder), OUTSIDE.format(what="a folder")))
            else:
                kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            if name.startswith(".") or Path(name).suffix.lower() not in SUPPORTED_SUFFIXES:
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if not _valid_name(rel):
                failures.append(Failure(shown(path), BAD_NAME))
            elif not follow_symlinks and not _inside(os.path.realpath(path), real_root):
                failures.append(Failure(shown(path), OUTSIDE.format(what="a file")))
            else:
                found.append(SourceFile(path.absolute(), label, rel, root_path))
    return found
