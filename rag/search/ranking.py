"""Ranking: how the dense and keyword rankings of a query become one list of chunk scores.

Reciprocal rank fusion of the dense ranking, the keyword ranking and the ``exact`` ranking (keyword hits
holding a rare identifier of the query), then a document-level score: the best chunk of a file whose other
chunks also made the candidate list is lifted by a share of their scores (a file that matches in several
places is more likely the one the question is about than a file with one lucky chunk).

Neither list's weight is a constant: each query's lists say how much they know. A list whose best score stands
far above its other candidates has found something specific; one whose scores fall off evenly has not. The
keyword list's weight is the ratio of the two lists' peaks (``peak``), squared: equal peaks weigh equally, a
keyword list twice as peaked weighs four times as much, a flat one next to nothing. Likewise the document lift
counts only what a file has beyond its share: a file of many chunks has many candidates by chance alone.
"""

from __future__ import annotations

import statistics

RRF_K = 10
# the keyword list's weight when it is exactly as peaked as the dense list (not fitted: the neutral point)
KEYWORD_WEIGHT = 1.0
# how steeply the keyword weight follows the ratio of the peaks; chosen leave-one-corpus-out on the six
# development corpora (scripts/bench_generalization.py, README), capped at PEAK_RATIO_CAP
EVIDENCE_POWER = 2.0
PEAK_RATIO_CAP = 3.0
EXACT_WEIGHT = 1.0
# The best chunk of a file gains this share of the scores of the file's next two candidates, for the part of its
# candidates beyond what its size brings by chance (chosen leave-one-corpus-out, like EVIDENCE_POWER). Counting
# every other chunk instead favours long files for having many chunks (MRR@10 on corpus/eval fell 0.893 -> 0.850).
DOCUMENT_WEIGHT = 0.35
DOCUMENT_OTHERS = 2


def peak(scores: list[float]) -> float:
    """How far a list's best score stands above its candidates: (best - mean) / standard deviation; 0 for a
    list of fewer than three or all equal."""
    if len(scores) < 3:
        return 0.0
    spread = statistics.pstdev(scores)
    return (max(scores) - statistics.fmean(scores)) / spread if spread > 0 else 0.0


def keyword_weight(dense_scores: list[float], keyword_scores: list[float]) -> float:
    """The keyword list's weight for one query, from how peaked each list is (see the module docstring)."""
    dense_peak = peak(dense_scores)
    if dense_peak <= 0:
        return KEYWORD_WEIGHT
    ratio = min(PEAK_RATIO_CAP, max(0.0, peak(keyword_scores) / dense_peak))
    return KEYWORD_WEIGHT * ratio**EVIDENCE_POWER


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
    scores: dict[str, float],
    document_of: dict[str, str],
    store_size: int,
    document_sizes: dict[str, int] | None = None,
    weight: float | None = None,
) -> dict[str, float]:
    """``scores`` with each file's best chunk lifted by ``weight`` times the scores of its next DOCUMENT_OTHERS
    chunks. Only the best chunk moves, so one file's many chunks do not crowd the others out of the top.

    Several chunks of a file among the candidates are evidence only beyond what chance brings: of C candidates
    drawn from a store of N chunks, a file of n chunks holds C·n/N by chance. The lift counts the share of the
    file's candidates above that (none in a store of 40 chunks, where every file has all its chunks among the
    candidates of each search). ``document_sizes`` gives n per file; a file missing from it counts its
    candidates only."""
    weight = DOCUMENT_WEIGHT if weight is None else weight
    if not weight or not scores:
        return scores
    by_document: dict[str, list[str]] = {}
    for chunk_id in sorted(scores, key=lambda c: scores[c], reverse=True):
        by_document.setdefault(document_of.get(chunk_id, chunk_id), []).append(chunk_id)
    sizes = document_sizes or {}
    lifted = dict(scores)
    for document, (best, *others) in by_document.items():
        found = 1 + len(others)
        expected = len(scores) * sizes.get(document, found) / max(1, store_size)
        evidence = max(0.0, (found - expected) / found)
        counted = others[:DOCUMENT_OTHERS] if DOCUMENT_OTHERS else others
        lifted[best] += weight * evidence * sum(scores[chunk_id] for chunk_id in counted)
    return lifted
