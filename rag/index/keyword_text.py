"""Keyword text: what the keyword index indexes of a chunk (``keyword_text``) and the tokens it and a query are
cut into (``tokenize``: bm25s's splitting, English stop words, Snowball stems), and which tokens are identifiers.

May import: the standard library, bm25s and PyStemmer; nothing from ``rag``.
"""

from __future__ import annotations

import re
from functools import lru_cache

# A token with a digit or an underscore (ERR-7731 gives "7731", KIP-848 "848", UV_THREADPOOL_SIZE) names something
# exactly: an error code, a ticket, a config key (a query's rare ones, ``rag.index.keyword.RARE_CHUNKS``).
IDENTIFIER = re.compile(r"[0-9_]")


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def tokenize(texts: list[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", stemmer=_stemmer(), return_ids=False, show_progress=False)


def keyword_text(title: str, section: str, text: str) -> str:
    return f"{title}\n{section}\n{text}"
