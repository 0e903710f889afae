"""The servers other tools talk to: the MCP server for agents (``mcp``, over stdio or mounted in the HTTP app) and
the HTTP API (``http``: FastAPI under uvicorn, bearer tokens). Thin callers of ``rag.app.knowledge``.

May import: ``rag.app`` and everything below it; never ``rag.cli`` or ``ui``.
"""
