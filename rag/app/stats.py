"""Stats: what the knowledge base holds (documents and chunks per doc type, per file), as one reader may see it:
the documents restricted to groups they are not in are not counted, listed or named."""

from __future__ import annotations

from rag.config import Settings
from rag.index.store import Store
from rag.search.access import Reader, may_read


def collect_stats(settings: Settings, store: Store | None = None, reader: Reader | None = None) -> dict:
    """``reader`` None: everything (the command line)."""
    store = store or Store(settings)
    records = store.file_records() if store.exists() else {}
    everything = reader is None or reader.reads_everything
    if not everything:
        records = {
            key: record
            for key, record in records.items()
            if may_read(reader, [group for group in record.access.split(",") if group])
        }
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
        "chunks": store.count() if everything else sum(record.chunk_count for record in records.values()),
        "by_doc_type": by_type,
        "files": [
            {
                "path": f"{r.root}/{r.relpath}" if r.root not in ("", ".") else r.relpath,
                "title": r.title,
                "doc_type": r.doc_type,
                "chunks": r.chunk_count,
                "ingested_at": r.ingested_at,
                "complete": r.complete,
                "access": [group for group in r.access.split(",") if group],
            }
            for r in sorted(records.values(), key=lambda r: (r.doc_type, r.root, r.relpath))
        ],
    }
