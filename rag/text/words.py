"""Words: how texts are compared word by word (the word pattern, the stop words, the content words).

Keyword overlap in answers, the names a question singles out, citation checks and follow-up rewrites all
compare texts through these lists, so that they agree on what a word is.
"""

from __future__ import annotations

import re
from functools import lru_cache

WORD = re.compile(r"[a-z0-9]+(?:[-_'][a-z0-9]+)*")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


STOPWORDS = frozenset(
    """a an the and or but if then so of to in on at by for with from as is are was were be been being do does did
    how what why when where which who whom whose would could should can will shall may might must it its this that
    these those they them their there here we our us you your i me my he she his her not no yes about into over
    under than too very just also any some more most such only own same other again further once both each few
    all nor up down out off above below between through during before after while because until against get got
    use using used work works working happen happens instead vs versus like""".split()
)


def content_words(text: str) -> list[str]:
    return [w for w in words(text) if w not in STOPWORDS and len(w) > 1]


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def stem(word: str) -> str:
    """The English Snowball stem of a lower-case word ("shelves" -> "shelv", "handlers" -> "handler")."""
    return _stemmer().stemWord(word)


CAMEL_PIECE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def identifier_parts(text: str) -> list[str]:
    """The lower-case pieces of an identifier or a text: split at anything but letters and digits, then at
    CamelCase humps ("getOrderAsync" -> get, order, async; "HTTPServer_pool" -> http, server, pool)."""
    return [piece.lower() for chunk in re.split(r"[^A-Za-z0-9]+", text) for piece in CAMEL_PIECE.findall(chunk)]
