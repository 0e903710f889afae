"""What the interfaces share: saved conversations, feedback, uploads, knowledge-base statistics and the
retrieval and answer evaluations.

May import: ``rag.answer`` and everything below it; never an interface (``rag.cli``, ``ui``) or streamlit.
"""
