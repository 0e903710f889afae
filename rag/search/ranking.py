"""Ranking: how the dense and keyword rankings of a query become one list of chunk scores.

Reciprocal rank fusion of the dense ranking, the keyword ranking and the ``exact`` ranking (keyword hits
holding a rare identifier of the query), then a document-level score: the best chunk of a file whose other
chunks also made the candidate list is lifted by a share of their scores (a file that matches in several
places is more likely the one the question is about than a file with one lucky chunk).
"""

from __future__ import annotations

# Constants chosen on corpus/eval/questions.jsonl and the NGINX development set (scripts/devsets/nginx.jsonl):
# see the README's retrieval section for the figures of every variant tried.
RRF_K = 10
KEYWORD_WEIGHT = 0.75
EXACT_WEIGHT = 1.0
# The best chunk of a file gains half the scores of the file's next two candidates. Counting every other chunk
# instead favours long files for having many chunks (MRR@10 on corpus/eval fell from 0.893 to 0.850).
DOCUMENT_WEIGHT = 0.5
DOCUMENT_OTHERS = 2


def reciprocal_rank_fusion(
    dense: list[str], keyword: list[str], exact: list[str] | None = None, keyword_weight: float | None = None
) -> dict[str, float]:
    """Fused score of every chunk id in the three rankings (best first in each)."""
    weight = KEYWORD_WEIGHT if keyword_weight is None else keyword_weight
    scores: dict[str, float] = {}
    for ranked, share in ((dense, 1.0), (keyword, weight if dense else 1.0), (exact or [], EXACT_WEIGHT)):
        for rank, chunk_id in enumerate(ranked):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + share / (RRF_K + rank + 1)
    return scores


def document_scores(
    scores: dict[str, float], document_of: dict[str, str], store_size: int, weight: float | None = None
) -> dict[str, float]:
    """``scores`` with each file's best chunk lifted by ``weight`` times the scores of its next DOCUMENT_OTHERS
    chunks. Only the best chunk moves, so one file's many chunks do not crowd the others out of the top.

    Several chunks of a file among the candidates are evidence only when the candidates are few among the
    store's chunks: the lift shrinks with the share of the store they are (in a store of 40 chunks, every
    file has all its chunks among the candidates of each search, and the lift would reward length alone)."""
    weight = (DOCUMENT_WEIGHT if weight is None else weight) * max(0.0, 1.0 - len(scores) / max(1, store_size))
    if not weight:
        return scores
    by_document: dict[str, list[str]] = {}
    for chunk_id in sorted(scores, key=lambda c: scores[c], reverse=True):
        by_document.setdefault(document_of.get(chunk_id, chunk_id), []).append(chunk_id)
    lifted = dict(scores)
    for best, *others in by_document.values():
        counted = others[:DOCUMENT_OTHERS] if DOCUMENT_OTHERS else others
        lifted[best] += weight * sum(scores[chunk_id] for chunk_id in counted)
    return lifted
