"""The plain LangChain default pipeline, rebuilt from its parts, as the baseline of the retrieval benchmarks.

Every text file (Markdown, reStructuredText, HTML, plain text) read raw as the tutorials' ``TextLoader`` does,
split by ``RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200)``, embedded by the same local
sentence-transformers model (what ``HuggingFaceEmbeddings`` calls, no extra options) into a Chroma collection
with its default (L2) distance, and queried for the 10 nearest chunks. The store is cached in a folder named by
a hash of the model and the files (path, size, mtime), so reruns are cheap and a changed file rebuilds it.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path

from rag.app.evaluation import CUTOFF
from rag.search.passages import Passage

TEXT_SUFFIXES = (".md", ".markdown", ".rst", ".txt", ".html", ".htm")
COLLECTION = "langchain"


def text_files(roots: list[Path]) -> list[Path]:
    return sorted(f for root in roots for f in root.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES)


def cache_dir(roots: list[Path], model_path: str, parent: Path | None = None) -> Path:
    """Where the store of these files lives: under ``parent`` (default: the temp dir), named by their hash."""
    digest = hashlib.sha256(f"{model_path}\n1000/200".encode())
    for file in text_files(roots):
        stat = file.stat()
        digest.update(f"{file}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return (parent or Path(tempfile.gettempdir())) / f"bench-langchain-{digest.hexdigest()[:16]}"


class LangChainDefault:
    """The default pipeline of the LangChain tutorials, from its parts (see the module docstring)."""

    def __init__(self, roots: list[Path], model_path: str, directory: Path) -> None:
        import chromadb
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(model_path, device="cpu")
        self.client = chromadb.PersistentClient(path=str(directory))
        names = {c.name for c in self.client.list_collections()}
        done = directory / "complete"
        if COLLECTION in names and done.is_file():
            self.collection = self.client.get_collection(COLLECTION)
            return
        if COLLECTION in names:  # an interrupted build
            self.client.delete_collection(COLLECTION)
        self.collection = self.client.create_collection(COLLECTION)
        self._build(roots)
        done.write_text(str(self.collection.count()))

    @staticmethod
    def is_built(directory: Path) -> bool:
        return (directory / "complete").is_file()

    def _build(self, roots: list[Path]) -> None:
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200)
        texts: list[str] = []
        paths: list[str] = []
        for file in text_files(roots):
            for chunk in splitter.split_text(file.read_text(encoding="utf-8", errors="replace")):
                texts.append(chunk)
                paths.append(str(file))
        started = time.perf_counter()
        step = 1000
        for start in range(0, len(texts), step):
            batch = texts[start : start + step]
            vectors = self.model.encode(batch, batch_size=32, show_progress_bar=False)
            self.collection.add(
                ids=[str(i) for i in range(start, start + len(batch))],
                embeddings=vectors.tolist(),
                documents=batch,
                metadatas=[{"path": p} for p in paths[start : start + step]],
            )
        print(f"LangChain default: {len(texts)} chunks embedded in {time.perf_counter() - started:.0f} s", flush=True)

    def search(self, query: str, k: int = CUTOFF) -> list[Passage]:
        vector = self.model.encode([query], show_progress_bar=False)[0].tolist()
        got = self.collection.query(query_embeddings=[vector], n_results=k)
        return [
            Passage(id=i, text=t, source="", path=m["path"], title="", section="", doc_type="", position=0,
                    start_offset=0)
            for i, t, m in zip(got["ids"][0], got["documents"][0], got["metadatas"][0])
        ]
