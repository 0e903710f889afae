"""Vectors and the store: the embedding model and its int8 encoder (``embedding``, ``onnx_encoder``), the Chroma
store and its files, metadata and single-writer lock (``store``, ``store_files``, ``collection_metadata``,
``write_lock``), and the BM25 keyword index kept beside it (``keyword``).

May import: ``rag.config``, ``rag.text``.
"""
