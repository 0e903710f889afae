"""Site path: where a file sits in its documentation site, as the titles of the folders above it.

A folder's title is the ``title`` in the front matter of its ``_index.md`` (a Hugo section page), else
its name made readable (``load-balancer`` -> "Load balancer"). Only folders inside the ingested root
count: the root is the collection itself, named by the user. An ``_index.md`` page is its own folder's
page, so its path stops at the folder above. Reading a title never fails a file: a missing, unreadable
or malformed ``_index.md`` falls back to the folder's name.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

SECTION_PAGE = "_index.md"
SEPARATOR = " > "


def folder_titles(path: Path, root: Path, max_bytes: int) -> list[str]:
    """Titles of the folders between ``root`` (excluded) and the file at ``path``, outermost first."""
    try:
        folders = path.parent.relative_to(root).parts
    except ValueError:
        return []
    if path.name == SECTION_PAGE and folders:
        folders = folders[:-1]
    return [_folder_title(root.joinpath(*folders[: depth + 1]), max_bytes) for depth in range(len(folders))]


def readable(name: str) -> str:
    words = " ".join(name.replace("_", " ").replace("-", " ").split())
    return words[:1].upper() + words[1:]


def _folder_title(folder: Path, max_bytes: int) -> str:
    page = folder / SECTION_PAGE
    try:
        info = os.stat(page)
    except OSError:
        return readable(folder.name)
    if info.st_size > max_bytes:
        return readable(folder.name)
    return _title_of(str(page), info.st_mtime_ns, info.st_size) or readable(folder.name)


@lru_cache(maxsize=4096)
def _title_of(page: str, mtime_ns: int, size: int) -> str:
    """The page's front matter title (cached per version of the file: an edited title is read again)."""
    from rag.documents.front_matter import split_front_matter

    try:
        with open(page, encoding="utf-8-sig", errors="replace") as handle:
            meta, _ = split_front_matter(handle.read())
    except Exception:  # a broken section page must not cost the files below it their ingest
        return ""
    title = meta.get("title")
    return " ".join(str(title).split()) if isinstance(title, (str, int, float)) else ""
