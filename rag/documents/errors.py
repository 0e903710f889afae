"""Why a file cannot be ingested: the errors loading and the converters raise, and sizes written the way the
limits count them."""

from __future__ import annotations

MIB = 1024 * 1024


class LoadError(Exception):
    """A file that cannot be ingested; the message is the reason shown to the user."""


class SkippedFile(LoadError):
    """A file with nothing to index by design (a site's section page holding only front matter): counted
    as skipped, never reported as a failure."""


def megabytes(size: int, decimals: int = 1) -> str:
    """Sizes as RAG_MAX_FILE_MB counts them (MiB), so a 20 MB setting reads "20.0 MB"."""
    return f"{size / MIB:.{decimals}f} MB"


def over_limit(size: int, limit: int) -> tuple[str, str]:
    """A size and the limit it passed, with as many decimals as it takes for them to differ ("20.03 MB, over the
    20.00 MB limit", never "20.0 MB, over the 20.0 MB limit"); in bytes when even three do not tell them apart."""
    for decimals in (1, 2, 3):
        if megabytes(size, decimals) != megabytes(limit, decimals):
            return megabytes(size, decimals), megabytes(limit, decimals)
    return f"{size:,} bytes", f"{limit:,}-byte"
