"""Keyword search: a BM25 index (bm25s) over every chunk, persisted beside the store.

Local Chroma has no sparse search, so this index is derived from the chunk collection and rebuilt
whenever the collection's revision changes (every ingest that changed something bumps it). A
rebuild tokenizes a few thousand chunks in about a second, which keeps it simpler and safer than
patching the index in place.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from rag.store import Store

INDEX_DIR = "keyword"
META_FILE = "chunks.json"


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def tokenize(texts: list[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", stemmer=_stemmer(), return_ids=False, show_progress=False)


def keyword_text(title: str, section: str, text: str) -> str:
    return f"{title}\n{section}\n{text}"


@dataclass
class KeywordIndex:
    retriever: object | None
    ids: list[str]
    doc_types: list[str]
    sources: list[str]  # relpath and display path of each chunk's file, for the source filter
    revision: str

    @staticmethod
    def directory(data_dir: Path) -> Path:
        return Path(data_dir) / INDEX_DIR

    @classmethod
    def stored_revision(cls, data_dir: Path) -> str | None:
        meta = cls.directory(data_dir) / META_FILE
        if not meta.is_file():
            return None
        try:
            return json.loads(meta.read_text())["revision"]
        except (ValueError, KeyError):
            return None

    @classmethod
    def rebuild(cls, store: Store, data_dir: Path) -> KeywordIndex:
        import bm25s

        ids: list[str] = []
        texts: list[str] = []
        doc_types: list[str] = []
        sources: list[str] = []
        revision = store.revision()
        if store.exists():
            for page_ids, documents, metadatas in store.iter_all():
                for chunk_id, text, meta in zip(page_ids, documents, metadatas):
                    ids.append(chunk_id)
                    texts.append(keyword_text(str(meta.get("title", "")), str(meta.get("section", "")), text or ""))
                    doc_types.append(str(meta.get("doc_type", "")))
                    sources.append(f"{meta.get('source', '')}\n{meta.get('path', '')}")
        retriever = None
        target = cls.directory(data_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".keyword-", dir=target.parent))
        if ids:
            retriever = bm25s.BM25()
            retriever.index(tokenize(texts), show_progress=False)
            retriever.save(str(staging))
        meta = {"revision": revision, "ids": ids, "doc_types": doc_types, "sources": sources}
        (staging / META_FILE).write_text(json.dumps(meta))
        # swap in whole, so a reader never sees half an index
        old = target.with_name(INDEX_DIR + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
        return cls(retriever, ids, doc_types, sources, revision)

    @classmethod
    def load(cls, data_dir: Path) -> KeywordIndex | None:
        import bm25s

        directory = cls.directory(data_dir)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            return None
        meta = json.loads(meta_path.read_text())
        retriever = bm25s.BM25.load(str(directory)) if meta["ids"] else None
        return cls(retriever, meta["ids"], meta["doc_types"], meta["sources"], meta["revision"])

    @classmethod
    def open(cls, store: Store, data_dir: Path) -> KeywordIndex:
        """The persisted index when it matches the store, otherwise a fresh rebuild."""
        index = cls.load(data_dir)
        if index is None or index.revision != store.revision():
            index = cls.rebuild(store, data_dir)
        return index

    def search(
        self, query: str, k: int, doc_type: str | None = None, source: str | None = None
    ) -> list[tuple[str, float]]:
        if self.retriever is None or not self.ids:
            return []
        vocab = self.retriever.vocab_dict
        tokens = [token for token in tokenize([query])[0] if token in vocab]
        if not tokens:
            return []
        mask = None
        if doc_type or source:
            mask = np.array(
                [
                    (doc_type is None or dt == doc_type) and (source is None or source in src.split("\n"))
                    for dt, src in zip(self.doc_types, self.sources)
                ],
                dtype=np.float32,
            )
        k = min(k, len(self.ids))
        documents, scores = self.retriever.retrieve([tokens], k=k, show_progress=False, weight_mask=mask)
        return [(self.ids[int(i)], float(s)) for i, s in zip(documents[0], scores[0]) if s > 0]
