"""The Streamlit app: ``streamlit run ui/app.py`` (see scripts/run.sh).

Two pages: the chat (``ui/views/chat.py``) and the knowledge base (``ui/views/knowledge_base.py``).
Everything they show comes from the ``rag`` library; settings come from ``RAG_*`` variables or ``.env``
(``RAG_DATA_DIR`` chooses the store), read relative to the working directory like the command line.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run ui/app.py` puts ui/ on the path, not the repository
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

st.set_page_config(page_title="Architecture knowledge assistant", page_icon="🏛️", layout="wide")
pages = [
    st.Page("views/chat.py", title="Chat", icon=":material/forum:", default=True),
    st.Page("views/knowledge_base.py", title="Knowledge base", icon=":material/library_books:",
            url_path="knowledge-base"),
]
st.navigation(pages).run()
