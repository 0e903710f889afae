"""The command line (``python -m rag``): argument parsing (``main``) and the commands' output (``commands``). A
thin caller of the library.

May import: anything in ``rag``.
"""
