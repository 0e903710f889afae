"""Store -> passages: hybrid dense + keyword retrieval (``retrieval``), how the rankings fuse (``ranking``), the
``Passage`` record handed to answerers (``passages``), what a question asks for (``intent``) and how a
follow-up becomes a standalone search (``followups``).

May import: ``rag.index``, ``rag.documents``, ``rag.text``, ``rag.config``.
"""
