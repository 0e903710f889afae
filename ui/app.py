"""The Streamlit app: ``streamlit run ui/app.py`` (see scripts/run.sh).

Who is using it is decided first, on every run (``ui.identity``: sign-in, a trusted proxy header, or single-user
mode); nobody signed in sees only the sign-in page. Then the pages: the chat (``ui/views/chat.py``), the knowledge
base (``ui/views/knowledge_base.py``) and, for admins, feedback, audit log and rebuild (``ui/views/admin.py``).
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

from ui.identity import identify, sidebar_account, sign_in_page  # noqa: E402
from ui.resources import get_settings  # noqa: E402

st.set_page_config(page_title="Architecture knowledge assistant", page_icon="🏛️", layout="wide")
identity = identify(get_settings())
if identity.reader is None:
    st.session_state.pop("reader", None)
    sign_in_page(identity)
    st.stop()
previous = st.session_state.get("reader")
if previous is not None and previous.user != identity.reader.user:  # another person: nothing of theirs carries over
    for key in list(st.session_state):
        del st.session_state[key]
st.session_state["reader"] = identity.reader
sidebar_account(identity)
pages = [
    st.Page("views/chat.py", title="Chat", icon=":material/forum:", default=True),
    st.Page("views/knowledge_base.py", title="Knowledge base", icon=":material/library_books:",
            url_path="knowledge-base"),
]
if identity.reader.may("see_all_feedback"):
    pages.append(st.Page("views/admin.py", title="Admin", icon=":material/admin_panel_settings:", url_path="admin"))
st.navigation(pages).run()
