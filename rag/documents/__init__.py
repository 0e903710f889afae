"""Files -> documents: finding the files under a root (``discovery``), reading and converting each format to
Markdown-shaped text (``loading``, ``converters``, Hugo/Liquid ``shortcodes``), and what a document says about
itself: its place in the site (``site_path``), status and successor (``doc_status``), last commit (``git_dates``).

May import: ``rag.config``, ``rag.text``.
"""
