"""Documents -> chunks -> store: cutting documents along headings into model-token-sized chunks (``chunking``,
``block_cutting``), deciding what a run must do (``sync_plan``), doing it (``pipeline``), rebuilding a store
in place (``reindex``) and keeping it in sync as files change (``watch``).

May import: ``rag.index``, ``rag.documents``, ``rag.text``, ``rag.config``.
"""
