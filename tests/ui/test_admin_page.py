"""Single-user mode and the Admin page, through Streamlit's AppTest on a real store.

With no sign-in configured the app is what it always was: no sign-in page, the local user may do everything, and
the sidebar says so once. The local user is an admin, so the Admin page lists everyone's feedback and the audit
log, and rebuilds the knowledge base.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from ui_support import REPO, copy_agents, write_corpus

from rag.app.audit import AuditLog
from rag.app.feedback import FeedbackEntry, FeedbackStore
from rag.app.uploads import add_uploads
from rag.config import Settings
from rag.ingest.pipeline import ingest
from rag.search.access import LOCAL
from ui.identity import SINGLE_USER_NOTE

APP = str(REPO / "ui" / "app.py")


@pytest.fixture
def local_app(tmp_path, monkeypatch, embedder) -> Settings:
    write_corpus(tmp_path / "corpus")
    for name in [n for n in os.environ if n.startswith("RAG_")]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAG_AGENTS_DIR", str(copy_agents(tmp_path / "agents")))
    monkeypatch.chdir(tmp_path)
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    assert ingest([Path("corpus")], settings, embedder=embedder).files_added == 4
    return settings


def test_single_user_mode_is_said_once_and_the_local_user_administers(local_app, embedder):
    settings = local_app
    add_uploads([("notes.md", b"# Notes\n\nThe deploy freeze starts every Friday at noon.\n")], settings,
                reader=LOCAL, embedder=embedder)
    FeedbackStore.for_settings(settings).add(FeedbackEntry("What is cache-aside?", "It reads the cache first.", -1,
                                                           comment="too short"))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run(timeout=180)
    assert not at.exception, [e.value for e in at.exception]
    notes = [c.value for c in at.sidebar.caption if SINGLE_USER_NOTE in c.value]
    assert len(notes) == 1
    assert not [b for b in at.button if b.label in ("Sign in", "Sign out")]
    assert at.chat_input[0].disabled is False

    at.switch_page("views/admin.py").run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    feedback, audit = at.dataframe[0].value, at.dataframe[1].value
    assert list(feedback["question"]) == ["What is cache-aside?"] and list(feedback["who"]) == ["local"]
    assert list(feedback["comment"]) == ["too short"]
    assert list(audit["action"]) == ["upload"] and list(audit["what"]) == ["notes.md"]

    at.button(key="rebuild").click().run(timeout=180)
    assert not at.exception, [e.value for e in at.exception]
    assert any(s.label.startswith("Rebuilt: 5 files") for s in at.status), [s.label for s in at.status]
    assert [e.action for e in AuditLog.for_settings(settings).entries(LOCAL)] == ["reindex", "upload"]
