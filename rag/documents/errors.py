"""Why a file cannot be ingested: the errors loading and the converters raise, and sizes written the way the
limits count them."""

from __future__ import annotations

MIB = 1024 * 1024


class LoadError(Exception):
    """A file that cannot be ingested; the message is the reason shown to the user."""


class SkippedFile(LoadError):
    """A file with nothing to index by design (a site's section page holding only front matter): counted
    as skipped, never reported as a failure."""


def megabytes(size: int) -> str:
    """Sizes as RAG_MAX_FILE_MB counts them (MiB), so a 20 MB setting reads "20.0 MB"."""
    return f"{size / MIB:.1f} MB"
