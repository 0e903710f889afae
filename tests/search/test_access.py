"""Per-document access, for real (model, Chroma, BM25): a document restricted to a group never reaches a reader
outside it, through any read of the library, and stays as findable as before for the readers inside it.

The corpus has one public document and two restricted ones (by front matter, and by ``ingest --access`` on a
folder); each restricted one states a fact no other document states, so a leak would show in any surface.
"""

from __future__ import annotations

import contextlib
import sqlite3

import pytest
from conftest import make_settings, write_tree
from ui_support import REPO

from rag.answer.answering import Answerer
from rag.answer.events import Final
from rag.answer.personas import load_persona
from rag.app.stats import collect_stats
from rag.documents.access import AccessError, normalize_groups, parse_access
from rag.index.keyword import KeywordIndex
from rag.ingest.pipeline import ingest
from rag.search.access import LOCAL, PermissionDenied, Reader, may_read, readable_where
from rag.search.retrieval import Retriever

PAYMENTS_FACT = "the Quokka ledger job reconciles card settlements at 02:40 every night"
RISK_FACT = "the Wombat fraud model blocks any card used in three countries within one hour"
PUBLIC_FACT = "cache-aside reads the cache first and fills it from the database on a miss"

CORPUS = {
    "docs/caching.md": f"""
        ---
        title: Caching guide
        ---
        # Caching guide

        ## Cache-aside

        In our services {PUBLIC_FACT}. Entries expire after ten minutes so stale data does not linger.
        """,
    "docs/ledger-reconciliation.md": f"""
        ---
        title: Ledger reconciliation runbook
        access: [Payments]
        ---
        # Ledger reconciliation runbook

        ## Nightly settlement job

        Operations need to know that {PAYMENTS_FACT}. When the Quokka job fails, settlements are replayed
        from the card network's file before the ledger is closed for the day.
        """,
    "risk/fraud-rules.md": f"""
        # Fraud rules

        ## Velocity checks

        The risk team configured it so that {RISK_FACT}. The Wombat model is retrained every week on
        confirmed chargebacks.
        """,
}
PAYMENTS_QUESTION = "When does the Quokka ledger job reconcile card settlements?"
RISK_QUESTION = "When does the Wombat fraud model block a card?"

ALICE = Reader("alice@example.com", "reader", ("payments",))
BOB = Reader("bob@example.com", "reader", ())
RITA = Reader("rita@example.com", "editor", ("risk",))
ADMIN = Reader("ada@example.com", "admin", ())


@pytest.fixture(scope="module")
def store(tmp_path_factory, embedder):
    base = tmp_path_factory.mktemp("access")
    write_tree(base, CORPUS)
    settings = make_settings(base / "data")
    first = ingest([base / "docs"], settings, embedder=embedder)
    second = ingest([base / "risk"], settings, embedder=embedder, access=("risk",))
    assert first.files_added == 2 and second.files_added == 1 and not first.files_failed
    return settings, base, Retriever(settings, embedder=embedder)


def files_of(passages) -> set[str]:
    return {passage.source for passage in passages}


@pytest.mark.parametrize("mode", ["hybrid", "dense", "keyword"])
def test_search_leaves_out_what_the_reader_may_not_read_in_every_mode(store, mode):
    _, _, retriever = store
    for question, restricted in [(PAYMENTS_QUESTION, "ledger-reconciliation.md"), (RISK_QUESTION, "fraud-rules.md")]:
        everyone = retriever.search(question, k=10, mode=mode)
        assert restricted in files_of(everyone.passages)  # the CLI (no reader) reads everything
        bob = retriever.for_reader(BOB).search(question, k=10, mode=mode)
        assert restricted not in files_of(bob.passages), mode
        assert all(not passage.access for passage in bob.passages)
    alice = retriever.for_reader(ALICE).search(PAYMENTS_QUESTION, k=3, mode=mode)
    assert alice.passages[0].source == "ledger-reconciliation.md"
    assert alice.passages[0].access == ("payments",)  # front matter names are compared in lower case
    assert "fraud-rules.md" not in files_of(retriever.for_reader(ALICE).search(RISK_QUESTION, k=10, mode=mode).passages)
    rita = retriever.for_reader(RITA).search(RISK_QUESTION, k=3, mode=mode)
    assert rita.passages[0].source == "fraud-rules.md" and rita.passages[0].access == ("risk",)
    admin = retriever.for_reader(ADMIN).search(RISK_QUESTION, k=3, mode=mode)
    assert admin.passages[0].source == "fraud-rules.md"


def test_the_confidence_comes_only_from_readable_chunks(store):
    _, _, retriever = store
    inside = retriever.for_reader(ALICE).search(PAYMENTS_QUESTION, k=5)
    outside = retriever.for_reader(BOB).search(PAYMENTS_QUESTION, k=5)
    assert outside.confidence < inside.confidence - 0.2  # the restricted chunk is not even measured


def test_chunk_reads_by_id_section_and_document_are_filtered(store):
    _, _, retriever = store
    [passage] = [p for p in retriever.search(PAYMENTS_QUESTION, k=5).passages if p.source.startswith("ledger")][:1]
    assert retriever.for_reader(ALICE).document(source_key=passage.source_key)
    assert retriever.for_reader(BOB).document(source_key=passage.source_key) == []
    assert retriever.for_reader(BOB).document(path=passage.path) == []
    assert retriever.for_reader(BOB).neighbourhood(passage) == []
    assert retriever.for_reader(BOB).widen([passage])[0].context == passage.text  # no neighbour read
    assert retriever.for_reader(BOB).keyword_passages("Quokka") == []
    assert retriever.for_reader(ALICE).keyword_passages("Quokka")


def test_answers_never_quote_cite_or_name_a_document_the_reader_may_not_read(store):
    settings, _, retriever = store
    answerer = Answerer(settings, retriever)
    persona = load_persona("backend-architecture-expert", REPO / "agents")

    def final(reader, question):
        return next(e for e in answerer.for_reader(reader).answer(question, persona) if isinstance(e, Final))

    alice = final(ALICE, PAYMENTS_QUESTION)
    assert "02:40" in alice.answer and alice.citations[0].passage.source == "ledger-reconciliation.md"
    for reader in (BOB, RITA):
        answer = final(reader, PAYMENTS_QUESTION)
        shown = " ".join([answer.answer, *answer.notes, *(p.heading for p in answer.passages)])
        assert "02:40" not in shown and "Ledger reconciliation" not in shown and "Quokka ledger" not in shown
        assert "ledger-reconciliation.md" not in files_of(answer.passages)
        assert all(c.passage.source != "ledger-reconciliation.md" for c in answer.citations)
    # the abstention names the nearest material: only readable headings
    bob = final(BOB, RISK_QUESTION)
    assert "Fraud rules" not in bob.answer and "Wombat fraud model blocks" not in bob.answer
    assert "fraud-rules.md" not in files_of(bob.passages)


def test_stats_list_and_count_only_readable_documents(store):
    settings, _, retriever = store
    everything = collect_stats(settings, store=retriever.store)
    assert everything["documents"] == 3
    bob = collect_stats(settings, store=retriever.store, reader=BOB)
    assert [f["title"] for f in bob["files"]] == ["Caching guide"]
    assert bob["documents"] == 1 and bob["chunks"] == bob["files"][0]["chunks"]
    alice = collect_stats(settings, store=retriever.store, reader=ALICE)
    assert sorted(f["title"] for f in alice["files"]) == ["Caching guide", "Ledger reconciliation runbook"]
    assert next(f for f in alice["files"] if f["title"].startswith("Ledger"))["access"] == ["payments"]


def test_the_keyword_index_keeps_the_groups_when_persisted(store):
    settings, _, retriever = store
    assert retriever.keyword.chunk_count  # built and saved
    with contextlib.closing(sqlite3.connect(KeywordIndex.directory(settings.data_dir) / "index.sqlite3")) as db:
        saved = sorted(access for (access,) in db.execute("SELECT DISTINCT access FROM files"))
    assert saved == ["", "payments", "risk"]
    loaded = KeywordIndex.load(settings.data_dir)
    assert [chunk for chunk, _ in loaded.search("Quokka ledger", 5, groups=frozenset())] == []
    assert loaded.search("Quokka ledger", 5, groups=frozenset({"payments"}))


def test_a_later_run_without_access_keeps_a_folder_restricted(store, embedder):
    """A cron job that forgets --access must not make the folder readable by everyone, nor a new file in it."""
    settings, base, retriever = store
    write_tree(base, {"risk/chargebacks.md": "# Chargebacks\n\nThe Wombat model learns from every chargeback.\n"})
    (base / "risk" / "fraud-rules.md").write_text(
        (base / "risk" / "fraud-rules.md").read_text() + "\nVelocity limits are reviewed monthly.\n"
    )
    report = ingest([base / "risk"], settings, embedder=embedder)
    assert report.files_added == 1 and report.files_updated == 1
    bob = retriever.for_reader(BOB)
    assert not files_of(bob.search("Wombat model chargeback velocity", k=10).passages) & {"fraud-rules.md",
                                                                                          "chargebacks.md"}
    assert {"fraud-rules.md", "chargebacks.md"} <= files_of(
        retriever.for_reader(RITA).search("Wombat model chargeback velocity", k=10).passages
    )
    # told otherwise, the folder is readable by everyone again: restricted is overwritten, not merged
    opened = ingest([base / "risk"], settings, embedder=embedder, access=())
    assert opened.files_updated == 2
    assert "fraud-rules.md" in files_of(bob.search(RISK_QUESTION, k=10).passages)
    ingest([base / "risk"], settings, embedder=embedder, access=("risk",))
    assert "fraud-rules.md" not in files_of(bob.search(RISK_QUESTION, k=10).passages)


def test_access_values_and_roles():
    assert parse_access(["Payments", "risk", "payments"]) == ("payments", "risk")
    assert parse_access("payments, risk") == ("payments", "risk")
    assert parse_access(None) == () and parse_access([]) == ()
    with pytest.raises(AccessError, match="not a group name"):
        normalize_groups(["pay ments"])
    with pytest.raises(AccessError, match="expected a list"):
        parse_access({"group": "payments"})
    assert readable_where(LOCAL) is None and readable_where(ADMIN) is None
    assert readable_where(BOB) == {"restricted": {"$ne": True}}
    assert may_read(ALICE, ["payments"]) and not may_read(BOB, ["payments"]) and may_read(BOB, [])
    assert BOB.may("ask") and not BOB.may("edit_documents") and RITA.may("edit_documents")
    assert not RITA.may("reindex") and ADMIN.may("read_audit_log") and LOCAL.may("reindex")
    with pytest.raises(PermissionDenied, match="bob@example.com is a reader: only editors and admins may add"):
        BOB.require("edit_documents")
    with pytest.raises(ValueError, match="unknown role"):
        Reader("x@example.com", "owner")


def test_a_bad_access_value_in_front_matter_names_the_file_and_the_reason(tmp_path, embedder):
    write_tree(tmp_path, {"docs/bad.md": "---\naccess: {team: payments}\n---\n# Bad\n\nText.\n",
                          "docs/good.md": "# Good\n\nText that is fine.\n"})
    settings = make_settings(tmp_path / "data")
    report = ingest([tmp_path / "docs"], settings, embedder=embedder)
    assert report.files_added == 1
    [failure] = report.files_failed
    assert failure.path.endswith("bad.md") and "front matter 'access': expected a list" in failure.error


def test_ingest_access_on_the_command_line(tmp_path, monkeypatch, capsys):
    from rag.cli import main as cli
    from rag.index.store import Store

    write_tree(tmp_path, {"team/runbook.md": "# Runbook\n\nRestart the payment worker first.\n"})
    monkeypatch.chdir(tmp_path)
    assert cli.main(["ingest", "team", "--access", "pay ments", "--data-dir", "data"]) == cli.EXIT_USAGE
    assert "--access: 'pay ments' is not a group name" in capsys.readouterr().err
    assert cli.main(["ingest", "team", "--access", "risk", "--public", "--data-dir", "data"]) == cli.EXIT_USAGE
    assert "contradict" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()
    assert cli.main(["ingest", "team", "--access", "Payments,risk", "--json", "--data-dir", "data"]) == cli.EXIT_OK
    [record] = Store(make_settings(tmp_path / "data")).file_records().values()
    assert (record.access, record.access_option) == ("payments,risk", "payments,risk")
