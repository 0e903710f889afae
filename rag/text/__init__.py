"""Text primitives every stage shares: the word pattern, stop words and content words (``words``), and how
markup, code and tables embedded in prose are recognised (``embedded_text``).

May import: the standard library only, nothing else from ``rag``.
"""
