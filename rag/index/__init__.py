"""Vectors and the store: the embedding model and its int8 encoder (``embedding``, ``onnx_encoder``), the Chroma
store and its files, metadata and single-writer lock (``store``, ``store_files``, ``collection_metadata``,
``write_lock``), and the BM25 keyword index kept beside it: its reader (``keyword``) above its updates
(``keyword_writer``), its database's tables (``keyword_segments``) and its tokens (``keyword_text``).

May import: ``rag.config``, ``rag.text``.
"""
