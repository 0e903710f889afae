"""Collection metadata: a chunk collection's model, backend, dimension and revision, and the model-mismatch check."""

from __future__ import annotations

import uuid
from typing import Any

from rag.index.store_files import StoreError


class ModelMismatchError(StoreError):
    pass


def new_collection_metadata(model: str, backend: str, dimension: int) -> dict[str, Any]:
    """A new collection's record: its vectors' model, backend and dimension, a first revision, and
    ``ingest_pending`` (the collection is created by the first chunk write of an ingest)."""
    return {
        "embedding_model": model,
        "embedding_backend": backend,
        "dimension": dimension,
        "revision": uuid.uuid4().hex,
        "ingest_pending": True,
    }


def updated_metadata(metadata: dict[str, Any] | None, **changes: Any) -> dict[str, Any]:
    """``metadata`` with ``changes``, for ``collection.modify``: Chroma refuses a modify that names ``hnsw:space``."""
    result = dict(metadata or {})
    result.pop("hnsw:space", None)
    result.update(changes)
    return result


def revision_of(metadata: dict[str, Any] | None) -> str:
    return str((metadata or {}).get("revision", ""))


def recorded_backend(metadata: dict[str, Any]) -> str:
    """The backend a collection's vectors were made with; a store from before backends were recorded is torch's."""
    return str(metadata.get("embedding_backend") or "torch")


def check_compatible(
    metadata: dict[str, Any], model: str, collection: str, dimension: int | None = None, backend: str | None = None
) -> None:
    """Raises ``ModelMismatchError`` when vectors of ``model`` (``dimension`` long, made by ``backend``; either
    unchecked when None) do not belong in the collection that ``metadata`` describes. ``collection`` names the
    collection and where it is, for the message."""
    recorded = metadata.get("embedding_model")
    if recorded and recorded != model:
        raise ModelMismatchError(
            f"{collection} was built with the embedding model '{recorded}' ({metadata.get('dimension')} "
            f"dimensions), but '{model}' is configured. Mixing models gives meaningless results. Re-index with "
            "`python -m rag ingest --reindex`, or use another --collection."
        )
    expected = metadata.get("dimension")
    if dimension is not None and expected and int(expected) != dimension:
        raise ModelMismatchError(
            f"the embedding model '{model}' now gives {dimension}-dimension vectors, but {collection} was built "
            f"with {expected}: the model files changed behind the same name. Re-index with "
            "`python -m rag ingest --reindex`, or restore the earlier model."
        )
    built_with = recorded_backend(metadata)
    if backend is not None and built_with != backend:
        raise ModelMismatchError(
            f"{collection} was built with the '{built_with}' embedding backend, but this process embeds with "
            f"'{backend}'. Vectors of two backends are not mixed: set RAG_EMBEDDING_BACKEND={built_with}, or "
            "re-index with `python -m rag ingest --reindex`."
        )
