"""Confidence calibrated per store: where the abstention bar sits for this knowledge base, found without labels.

The best cosine similarity a question reaches depends on the store as much as on the question: beside three long
documents an answerable question's best similarity runs about 0.1 lower than beside a docs site. So the bar is set
from the store itself. Probe queries are made of the store's own words in no order (``PROBE_WORDS`` content words
drawn from chunks spread over the store): they share its vocabulary and ask nothing, and their best similarities
show how high a "question" that is merely in the store's words scores here. The bar is their mean plus
``BAR_SPREAD`` of their standard deviation, but never above ``DEFAULT_BAR`` (the fixed bar of before, which
declines our out-of-scope questions: raising it refused answerable questions on every large store, see the
README). The band just under it, where the closest material is quoted under a notice, stays ``CLOSE_MARGIN`` wide
(a band of 0.5 to 1.5 probe deviations declined and refused the same questions on every corpus).

The probes are seeded, so a store gets the same bar on every run; the result is kept in the data directory by
the store's revision and measured again after an ingest changed the store. ``RAG_ABSTAIN_THRESHOLD`` pins the bar.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from rag.index.embedding import Embedder
from rag.index.keyword import KeywordIndex
from rag.index.store import Store
from rag.text.words import content_words

PROBES = 48  # probe queries per store
PROBE_WORDS = 8  # words per probe
PROBE_CHUNKS = 96  # chunks, spread over the store, whose words the probes are drawn from
# chosen leave-one-corpus-out on the six development corpora (scripts/bench_generalization.py --grid; README)
BAR_SPREAD = 0.5
# where a store is too small to draw probes from: the fixed bar of before; and the close band under any bar (a wider
# band quotes noise for questions the knowledge base has nothing on)
DEFAULT_BAR = 0.46
CLOSE_MARGIN = 0.08
BAR_CEILING = DEFAULT_BAR  # the calibration may lower the bar, never raise it above the fixed one
CACHE_FILE = "confidence.json"
VERSION = 1  # bump when the probes change: a cached calibration of another version is recomputed


@dataclass(frozen=True)
class Calibration:
    revision: str
    probe_mean: float
    probe_std: float
    version: int = VERSION

    @property
    def bar(self) -> float:
        return min(BAR_CEILING, self.probe_mean + BAR_SPREAD * self.probe_std)


def probe_queries(texts: list[str], count: int = PROBES, words: int = PROBE_WORDS) -> list[str]:
    """``count`` queries of ``words`` content words each, drawn (seeded) from ``texts``: the store's vocabulary
    with no question in it. Words of four letters or more and no digits, so that markup and numbers do not
    make up a probe."""
    pool = [w for text in texts for w in content_words(text) if len(w) > 3 and w.isalpha()]
    if len(pool) < words:
        return []
    rng = random.Random(0)
    return [" ".join(rng.sample(pool, words)) for _ in range(count)]


def measure(store: Store, index: KeywordIndex, embedder: Embedder) -> Calibration | None:
    """The probes' best similarities in this store (None when the store is too small to draw probes from)."""
    if not index.ids:
        return None
    step = max(1, len(index.ids) // PROBE_CHUNKS)
    sample = index.ids[::step][:PROBE_CHUNKS]
    texts = [text or "" for text in store.get(ids=sample)["documents"]]
    probes = probe_queries(texts)
    if len(probes) < 2:
        return None
    best = []
    for vector in embedder.embed(probes):
        result = store.query(vector, 1, None, embedder.backend)
        best.extend(1.0 - float(d) for d in result["distances"][0])
    if len(best) < 2:
        return None
    return Calibration(index.revision, statistics.fmean(best), statistics.pstdev(best))


def load_cached(data_dir: Path, revision: str) -> Calibration | None:
    path = Path(data_dir) / CACHE_FILE
    try:
        data = json.loads(path.read_text())
        calibration = Calibration(str(data["revision"]), float(data["probe_mean"]), float(data["probe_std"]),
                                  int(data["version"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return calibration if calibration.revision == revision and calibration.version == VERSION else None


def save(data_dir: Path, calibration: Calibration) -> None:
    """Written whole or not at all; a read-only data directory keeps it in memory only."""
    path = Path(data_dir) / CACHE_FILE
    staging = path.with_name(f".{CACHE_FILE}.{os.getpid()}")
    with contextlib.suppress(OSError):
        staging.write_text(json.dumps(asdict(calibration)))
        os.replace(staging, path)


class Calibrated(Protocol):
    def calibration(self) -> Calibration | None: ...


def abstain_bar(threshold: float | None, retriever: Calibrated) -> float:
    """The abstention bar: ``threshold`` (RAG_ABSTAIN_THRESHOLD) when it is set, else the store's own calibration,
    else the fixed default."""
    if threshold is not None:
        return threshold
    calibration = retriever.calibration()
    return DEFAULT_BAR if calibration is None else calibration.bar
