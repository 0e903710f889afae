"""Stats: what the knowledge base holds (documents and chunks per doc type, per file)."""

from __future__ import annotations

from rag.config import Settings
from rag.index.store import Store


def collect_stats(settings: Settings, store: Store | None = None) -> dict:
    store = store or Store(settings)
    records = store.file_records() if store.exists() else {}
    by_type: dict[str, dict[str, int]] = {}
    for record in records.values():
        row = by_type.setdefault(record.doc_type or "unknown", {"documents": 0, "chunks": 0})
        row["documents"] += 1
        row["chunks"] += record.chunk_count
    metadata = (store.chunks().metadata or {}) if store.exists() else {}
    return {
        "store": store.location,
        "collection": settings.collection,
        "embedding_model": metadata.get("embedding_model", settings.embedding_model),
        "dimension": metadata.get("dimension"),
        "documents": len(records),
        "chunks": store.count(),
        "by_doc_type": by_type,
        "files": [
            {
                "path": f"{r.root}/{r.relpath}" if r.root not in ("", ".") else r.relpath,
                "title": r.title,
                "doc_type": r.doc_type,
                "chunks": r.chunk_count,
                "ingested_at": r.ingested_at,
                "complete": r.complete,
            }
            for r in sorted(records.values(), key=lambda r: (r.doc_type, r.root, r.relpath))
        ],
    }
