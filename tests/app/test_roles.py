"""Roles, enforced in the library calls the interfaces make: the roles file, uploads and removals (editors), the
feedback everyone sees (admins), the rebuild and the audit log (admins). Real store, real model."""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

import pytest
from conftest import make_settings, write_tree

from rag.app.audit import AuditLog
from rag.app.feedback import FILE_NAME as FEEDBACK_FILE
from rag.app.feedback import FeedbackEntry, FeedbackStore
from rag.app.rebuild import RebuildRefused, rebuild
from rag.app.roles import RolesFile, RolesFileError, parse_roles, reader_for
from rag.app.uploads import add_uploads, remove_upload, uploads_dir
from rag.index.store import Store
from rag.ingest.pipeline import ingest
from rag.search.access import PermissionDenied, Reader
from rag.search.retrieval import Retriever

ROLES = """
admin = ["Ada@Example.com"]
editor = ["group:platform", "ed@example.com"]
reader = ["*"]

[groups]
payments = ["ada@example.com", "alice@example.com"]
platform = ["pat@example.com"]
"""

ADA = Reader("ada@example.com", "admin", ("payments",))
ED = Reader("ed@example.com", "editor", ())
PAT = Reader("pat@example.com", "editor", ("payments", "platform"))
BOB = Reader("bob@example.com", "reader", ())
SECRET = "# Card settlement\n\nThe Quokka ledger job settles cards at 02:40 every night.\n"


def test_the_roles_file_gives_each_person_their_highest_role_and_groups(tmp_path):
    path = tmp_path / "roles.toml"
    path.write_text(ROLES)
    roles = RolesFile(path)
    assert reader_for("ADA@example.com ", [], roles) == (Reader("ada@example.com", "admin", ("payments",)), None)
    assert reader_for("pat@example.com", ["Oncall", "not a group!"], roles)[0] == Reader(
        "pat@example.com", "editor", ("oncall", "platform")
    )  # group:platform makes an editor; a claimed group that is no group name is left out
    assert reader_for("alice@example.com", [], roles)[0] == Reader("alice@example.com", "reader", ("payments",))
    assert reader_for("eve@example.com", ["payments"], roles)[0].groups == ("payments",)  # the provider's groups
    assert reader_for("eve@example.com", [], None) == (Reader("eve@example.com", "reader", ()), None)

    # changed on disk: read again; broken: everyone is a reader with only the groups their sign-in sent
    path.write_text('editor = ["eve@example.com"]\n')
    assert reader_for("eve@example.com", [], roles)[0].role == "editor"
    path.write_text('admin = "ada@example.com"\n')
    reader, problem = reader_for("ada@example.com", ["risk"], roles)
    assert reader == Reader("ada@example.com", "reader", ("risk",))
    assert f"roles file {path}, admin: expected a list of texts" in problem and "everyone is a reader" in problem


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("admin = [", "is not valid TOML"),
        ('owner = ["a@example.com"]', "unknown key 'owner' (use reader, editor, admin and [groups])"),
        ('editor = ["group:pay ments"]', "editor: 'pay ments' is not a group name"),
        ('groups = ["payments"]', "[groups] must be a table"),
        ('[groups]\npayments = "alice@example.com"', "[groups] payments: expected a list of texts"),
    ],
)
def test_a_bad_roles_file_is_named_with_the_reason(tmp_path, text, reason):
    with pytest.raises(RolesFileError, match="roles file .*roles.toml") as error:
        parse_roles(text, tmp_path / "roles.toml")
    assert reason in str(error.value)
    with pytest.raises(RolesFileError, match="No such file"):
        RolesFile(tmp_path / "missing.toml").roles()


@pytest.fixture
def team(tmp_path, embedder):
    write_tree(tmp_path, {"docs/caching.md": "# Caching\n\nCache-aside reads the cache first.\n"})
    settings = make_settings(tmp_path / "data")
    ingest([tmp_path / "docs"], settings, embedder=embedder)
    return settings, Store(settings), Retriever(settings, embedder=embedder)


def test_uploads_and_removals_are_for_editors_and_go_to_the_audit_log(team, embedder, monkeypatch):
    settings, store, retriever = team
    with pytest.raises(PermissionDenied, match="bob@example.com is a reader: only editors and admins may add"):
        add_uploads([("settlement.md", SECRET.encode())], settings, reader=BOB, store=store, embedder=embedder)
    assert not uploads_dir(settings).exists()
    with pytest.raises(PermissionDenied, match="not in the group"):  # only groups the uploader is in
        add_uploads([("settlement.md", SECRET.encode())], settings, reader=ED, access=("payments",), store=store,
                     embedder=embedder)

    [added] = add_uploads([("settlement.md", SECRET.encode())], settings, reader=PAT, access=("Payments",),
                          store=store, embedder=embedder)
    assert added.status == "added"
    assert "settlement.md" not in {p.source for p in retriever.for_reader(BOB).search("Quokka ledger").passages}
    assert retriever.for_reader(PAT).search("Quokka ledger").passages[0].source == "settlement.md"

    # an editor outside the group can neither replace nor remove it (nor learn more than its name)
    [other] = add_uploads([("settlement.md", b"# Mine\n\nSomething else entirely.\n")], settings, reader=ED,
                          replace=True, store=store, embedder=embedder)
    assert other.name == "settlement-2.md"
    assert (uploads_dir(settings) / "settlement.md").read_text() == SECRET
    assert not remove_upload("settlement.md", settings, reader=ED, store=store)
    assert (uploads_dir(settings) / "settlement.md").is_file()
    with pytest.raises(PermissionDenied):
        remove_upload("settlement-2.md", settings, reader=BOB, store=store)
    assert remove_upload("settlement.md", settings, reader=PAT, store=store)

    log = AuditLog.for_settings(settings)
    with pytest.raises(PermissionDenied, match="only admins may read the audit log"):
        log.entries(PAT)
    entries = [(e.user, e.action, e.target, e.detail) for e in reversed(log.entries(ADA))]
    assert entries == [
        ("pat@example.com", "upload", "settlement.md", "added; readable by payments"),
        ("ed@example.com", "upload", "settlement-2.md", "added"),
        ("pat@example.com", "remove", "settlement.md", ""),
    ]
    assert all(e.at.endswith("+00:00") for e in log.entries(ADA))


def test_only_admins_rebuild_and_a_rebuild_keeps_who_may_read_what(team, embedder, monkeypatch, tmp_path):
    settings, store, retriever = team
    monkeypatch.chdir(tmp_path)  # the manifest's folders are named as ingested
    add_uploads([("settlement.md", SECRET.encode())], settings, reader=PAT, access=("payments",), store=store,
                embedder=embedder)
    with pytest.raises(PermissionDenied, match="only admins may rebuild"):
        rebuild(settings, reader=PAT, store=store, embedder=embedder)
    report = rebuild(settings, reader=ADA, store=store, embedder=embedder)
    assert report.files_seen == 2 and not report.files_failed
    bob = retriever.for_reader(BOB)
    assert "settlement.md" not in {p.source for p in bob.search("Quokka ledger settles cards").passages}
    assert retriever.for_reader(PAT).search("Quokka ledger settles cards").passages[0].source == "settlement.md"
    [entry] = [e for e in AuditLog.for_settings(settings).entries(ADA) if e.action == "reindex"]
    assert entry.user == "ada@example.com" and "2 files" in entry.detail

    (tmp_path / "docs" / "caching.md").unlink()
    (tmp_path / "docs").rmdir()
    with pytest.raises(RebuildRefused, match="not reachable"):
        rebuild(settings, reader=ADA, store=store, embedder=embedder)


def test_feedback_is_each_persons_own_except_for_admins(tmp_path):
    path = tmp_path / FEEDBACK_FILE
    with sqlite3.connect(path) as db:  # a file from before feedback had users
        db.executescript(textwrap.dedent("""
            CREATE TABLE feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, created_at TEXT NOT NULL,
              updated_at TEXT NOT NULL, question TEXT NOT NULL, standalone_query TEXT NOT NULL DEFAULT '',
              history TEXT NOT NULL DEFAULT '[]', answer TEXT NOT NULL, citations TEXT NOT NULL DEFAULT '[]',
              persona TEXT NOT NULL DEFAULT '', provider TEXT NOT NULL DEFAULT '', model TEXT NOT NULL DEFAULT '',
              abstained INTEGER NOT NULL DEFAULT 0, rating INTEGER NOT NULL, comment TEXT NOT NULL DEFAULT '');
            INSERT INTO feedback (created_at, updated_at, question, answer, rating)
              VALUES ('2026-01-01', '2026-01-01', 'old question', 'old answer', 1);
        """))
    store = FeedbackStore(path)
    store.add(FeedbackEntry("bob's question", "an answer", -1, user=BOB.user))
    store.add(FeedbackEntry("pat's question", "an answer", 1, user=PAT.user))
    assert [e.user for e in store.all()] == ["local", BOB.user, PAT.user]
    assert [e.question for e in store.for_reader(BOB)] == ["bob's question"]
    assert [e.question for e in store.for_reader(ADA)] == ["old question", "bob's question", "pat's question"]
    assert [e.question for e in store.for_reader(ADA, rating=-1)] == ["bob's question"]


def test_rebuild_of_an_empty_knowledge_base_is_refused(tmp_path):
    settings = make_settings(tmp_path / "data")
    with pytest.raises(RebuildRefused, match="empty"):
        rebuild(settings, reader=ADA)
    assert not Path(settings.data_dir, "audit.sqlite3").exists()
