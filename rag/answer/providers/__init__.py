"""Answer providers: the offline ``extractive`` answerer, Claude (``claude``) and any OpenAI-compatible
endpoint (``openai_compat``). Each provider stands alone: providers do not import each other.

May import: the rest of ``rag.answer`` but ``answering``, and everything below ``rag.answer``.
"""
