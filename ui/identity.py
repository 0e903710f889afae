"""Who is using the app: one of three modes, decided by configuration, the same on every page.

- **Sign-in (OpenID Connect)**: ``[auth]`` in ``.streamlit/secrets.toml``; Streamlit's own ``st.login`` /
  ``st.user`` / ``st.logout``. The person's email (``email`` claim, else ``preferred_username``, else ``sub``) and
  the ``groups`` claim, if the provider sends one.
- **Trusted proxy header**: ``RAG_TRUSTED_USER_HEADER`` (e.g. ``X-Forwarded-Email`` from oauth2-proxy) names the
  header a reverse proxy in front of the app puts the signed-in email in; ``RAG_TRUSTED_GROUPS_HEADER`` optionally
  the groups. Honoured only when set: without it, such a header is an ordinary header anyone can send.
- **Single user** (neither configured): the local user, who may do everything, as before sign-in existed.

The signed-in email becomes a ``Reader`` through the roles file (``rag.app.roles``); every library call the pages
make takes that reader, so what a person may see or do is decided there, not by which buttons are drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from rag.app.roles import RolesFile, reader_for
from rag.search.access import LOCAL, Reader
from ui.render import escape_markdown

SINGLE_USER_NOTE = "Single-user mode: no sign-in is configured, so every conversation and document here is yours."


@dataclass
class Identity:
    reader: Reader | None  # None: nobody is signed in yet (sign-in mode)
    mode: str  # "oidc", "proxy" or "local"
    problem: str | None = None  # why the roles file is not used, or why the proxy's header is missing


@st.cache_resource(show_spinner=False)
def roles_file(path: str) -> RolesFile:
    return RolesFile(Path(path))


def oidc_configured() -> bool:
    """Whether ``[auth]`` is in the secrets: then Streamlit puts ``is_logged_in`` in ``st.user``."""
    return "is_logged_in" in st.user.to_dict()


def claimed_groups(value: object) -> list[str]:
    """A groups claim or header: a list, or one comma-separated text."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple)):
        return [str(part) for part in value]
    return []


def identify(settings) -> Identity:
    roles = roles_file(str(settings.roles_file)) if settings.roles_file else None
    if oidc_configured():
        info = st.user.to_dict()
        if not info.get("is_logged_in"):
            return Identity(None, "oidc")
        email = str(info.get("email") or info.get("preferred_username") or info.get("sub") or "")
        reader, problem = reader_for(email, claimed_groups(info.get("groups")), roles)
        return Identity(reader, "oidc", problem)
    if settings.trusted_user_header:
        email = (st.context.headers.get(settings.trusted_user_header) or "").strip()
        if not email:
            return Identity(
                None, "proxy",
                f"This app is served behind a sign-in proxy, but the request has no {settings.trusted_user_header} "
                "header: open it through the proxy's address.",
            )
        groups = st.context.headers.get(settings.trusted_groups_header) if settings.trusted_groups_header else None
        reader, problem = reader_for(email, claimed_groups(groups), roles)
        return Identity(reader, "proxy", problem)
    return Identity(LOCAL, "local")


def current_reader() -> Reader:
    """The reader the app's entry script identified for this run (``ui/app.py``)."""
    return st.session_state["reader"]


def sign_in_page(identity: Identity) -> None:
    st.title("Architecture knowledge assistant")
    if identity.mode == "proxy":
        st.error(identity.problem, icon=":material/lock:")
        return
    st.write("Sign in to ask questions and see your conversations.")
    if st.button("Sign in", type="primary", icon=":material/login:"):
        st.login()


def sidebar_account(identity: Identity) -> None:
    """Who is signed in, with their role and groups (or the single-user note), once, at the top of the sidebar."""
    reader = identity.reader
    with st.sidebar:
        if identity.mode == "local":
            st.caption(f":material/person: {SINGLE_USER_NOTE}")
            return
        groups = f" · groups: {', '.join(reader.groups)}" if reader.groups else ""
        st.caption(f":material/account_circle: Signed in as **{escape_markdown(reader.user)}** · {reader.role}{groups}")
        if identity.problem:
            st.error(identity.problem, icon=":material/error:")
        if identity.mode == "oidc" and st.button("Sign out", icon=":material/logout:", key="sign_out"):
            st.logout()
