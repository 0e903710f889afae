"""The library behind the MCP server and the HTTP API, in process on the shared mini store: the request limits,
the documents as a reader sees them (read back by section, in part when long), the filter checks, the one place
that decides what a reader may read, the tokens file, the Claude Code agent file and the embedder's memo under
concurrent requests. The servers themselves are tested with real clients in ``test_api.py``."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from pathlib import Path

import frontmatter
import pytest
from conftest import make_settings, write_tree

from rag.answer.personas import claude_code_agent, load_persona, parse_persona
from rag.app.knowledge import MAX_HISTORY_TURNS, MAX_K, KnowledgeService, RequestError, Turn
from rag.cli import main as cli
from rag.documents.doc_status import status_summary
from rag.index import embedding
from rag.ingest.pipeline import ingest
from rag.search.access import Reader, TokenFileError, TokenTable
from rag.search.catalog import CatalogError, read_document
from rag.search.retrieval import Retriever

REPO = Path(__file__).resolve().parents[2]
TOKEN = "alice-0123456789abcdef"


@pytest.fixture(scope="module")
def service(mini_corpus_store, embedder) -> KnowledgeService:
    settings, _ = mini_corpus_store
    settings = settings.with_overrides(agents_dir=REPO / "agents")
    return KnowledgeService(settings, Retriever(settings, embedder=embedder), provider="extractive")


def caching_path(service: KnowledgeService) -> str:
    return next(d.path for d in service.documents().documents if d.path.endswith("references/caching.md"))


def test_search_limits_name_the_limit(service):
    for query, k, message in [
        ("", 8, "the query is empty"),
        ("   ", 8, "the query is empty"),
        ("x" * 2001, 8, "at most 2,000"),
        ("cache", 0, f"between 1 and {MAX_K}"),
        ("cache", MAX_K + 1, f"between 1 and {MAX_K}, not {MAX_K + 1}"),
    ]:
        with pytest.raises(RequestError, match=message):
            service.search(query, k)
    with pytest.raises(RequestError, match="unknown mode 'fuzzy': use one of hybrid, dense, keyword"):
        service.search("cache", mode="fuzzy")


def test_unknown_filters_name_the_valid_values_and_known_ones_narrow_the_search(service):
    with pytest.raises(CatalogError, match="unknown doc_type 'adr': use one of reference, team"):
        service.search("cache", doc_type="adr")
    closest = r"no document 'references/cachng.md'.*closest are: \S*references/caching.md"
    with pytest.raises(CatalogError, match=closest):
        service.search("cache", source="references/cachng.md")
    for source in ("references/caching.md", caching_path(service)):  # inside its folder, or whole
        found = service.search("eviction policy", source=source)
        assert found.passages and {hit.path for hit in found.passages} == {caching_path(service)}
    team = service.search("cache invalidation", doc_type="team")
    assert {hit.doc_type for hit in team.passages} == {"team"}


def test_ask_limits(service):
    with pytest.raises(RequestError, match="the question is empty"):
        service.answer_events("  ")
    with pytest.raises(RequestError, match=f"at most the last {MAX_HISTORY_TURNS}"):
        service.answer_events("why?", [Turn("user", "q")] * (MAX_HISTORY_TURNS + 1))
    with pytest.raises(RequestError, match="history turn 2 is 10,001 characters"):
        service.answer_events("why?", [Turn("user", "q"), Turn("assistant", "a" * 10_001)])
    with pytest.raises(CatalogError, match="unknown doc_type"):
        service.answer_events("why?", doc_type="adrs")


def test_a_follow_up_with_history_is_answered_from_the_topic_of_the_last_turn(service):
    history = [
        Turn("user", "How are order events published to Kafka reliably?"),
        Turn("assistant", "Through an outbox [1].", sources=["ADR 0002: Transactional outbox for order events"]),
    ]
    final = service.ask("and who marks them sent?", history)
    assert final.standalone_query != "and who marks them sent?"
    assert final.citations and final.citations[0].passage.path.endswith("team/adr-0002-outbox-for-events.md")


def test_documents_carry_their_status_and_read_back_by_section(service):
    listed = service.documents()
    assert listed.count == 8 == len(listed.documents)
    assert [d.doc_type for d in listed.documents] == ["reference"] * 4 + ["team"] * 4
    caching = next(d for d in listed.documents if d.path == caching_path(service))
    assert (caching.title, caching.chunks, caching.updated) == ("Caching strategies", 3, "2024-03-01")
    assert datetime.fromisoformat(caching.ingested_at).tzinfo is not None
    assert service.documents("team").count == 4
    whole = service.document(caching.path)
    assert [s.name for s in whole.sections] == ["", "Invalidation", "Eviction"] and not whole.truncated
    assert whole.sections[0].text == "A cache keeps hot data close to the service so that reads avoid the database."
    assert "cache.set(f\"user:{user.id}\", user, ttl=300)" in whole.sections[1].text
    assert service.document("references/caching.md", "  eviction ").sections == whole.sections[2:]
    with pytest.raises(CatalogError, match="has no section 'Pricing'; its sections are: 'Invalidation', 'Eviction'"):
        service.document(caching.path, "Pricing")
    with pytest.raises(CatalogError, match="no document 'references/nothing.md'"):
        service.document("references/nothing.md")


def test_a_long_document_comes_back_in_part_naming_what_was_left_out(service):
    path = caching_path(service)
    whole = service.document(path)
    first = len(whole.sections[0].name) + len(whole.sections[0].text)
    part = read_document(service.retriever, path, max_chars=first + 10)
    assert part.truncated and part.sections == whole.sections[:1]
    assert part.omitted_sections == ["Invalidation", "Eviction"]
    alone = read_document(service.retriever, path, max_chars=5)  # never nothing: the first section at least
    assert alone.sections == whole.sections[:1]


def test_every_read_leaves_out_what_the_reader_may_not_read(tmp_path, embedder):
    """Issue 27 behind the servers: a document restricted to a group is left out of search, the document list,
    the document reader and ask for a reader outside the group (a token's groups), and found by one inside it."""
    write_tree(tmp_path, {
        "docs/buckets.md": "# Token buckets\n\n## Bursts\n\nA token bucket lets a burst through up to its "
                           "capacity, then refills at a fixed rate per second.\n",
        "orders/refunds.md": "# Refund limits\n\n## Limits\n\nA support agent may refund at most 180 euros per "
                             "order without a second approval from the Kestrel desk.\n",
    })
    settings = make_settings(tmp_path / "data", agents_dir=REPO / "agents")
    ingest([tmp_path / "docs"], settings, embedder=embedder)
    ingest([tmp_path / "orders"], settings, embedder=embedder, access=("orders",))
    service = KnowledgeService(settings, Retriever(settings, embedder=embedder), provider="extractive")
    ana, bob = Reader("ana", groups=("orders",)), Reader("bob")
    query, question = "refund limit Kestrel desk", "How much may a support agent refund without a second approval?"
    assert service.search(query, reader=ana).passages[0].title == "Refund limits"
    assert service.search(query).passages[0].title == "Refund limits"  # the local user reads everything
    assert "Refund limits" not in {hit.title for hit in service.search(query, reader=bob).passages}
    assert [d.title for d in service.documents(reader=bob).documents] == ["Token buckets"]
    [refunds] = [d.path for d in service.documents(reader=ana).documents if d.title == "Refund limits"]
    assert service.document(refunds, reader=ana).sections
    with pytest.raises(CatalogError, match="no document") as refused:
        service.document(refunds, reader=bob)
    assert "buckets.md" in str(refused.value)  # the closest names are only what Bob may read
    with pytest.raises(CatalogError, match="no document"):
        service.search(query, source=refunds, reader=bob)
    assert "180 euros" in service.ask(question, reader=ana).answer
    final = service.ask(question, reader=bob)
    assert "180 euros" not in final.answer and "Kestrel" not in final.answer
    assert all(passage.title != "Refund limits" for passage in final.passages)


def test_a_reader_view_shares_the_model_and_the_keyword_index(service):
    view = service.retriever.for_reader(Reader("carol"))
    assert view.reader == Reader("carol") and service.retriever.reader is None
    assert view.embedder is service.retriever.embedder and view.store is service.retriever.store
    assert view.keyword is service.retriever.keyword  # loaded once for the process, not once per request


def test_status_summary():
    today = date(2026, 1, 10)
    assert status_summary("superseded", "ADR-0011", "2025-05-12", "2023-01-01", 365, today) == (
        "superseded by ADR-0011 on 2025-05-12"
    )
    assert status_summary("deprecated", "", "", "2025-12-01", 365, today) == "deprecated"
    assert status_summary("accepted", "", "", "2024-03-01", 365, today) == ""  # a decision in force
    assert status_summary("", "", "", "2024-03-01", 365, today) == "stale since 2025-03-01 (last updated 2024-03-01)"
    assert status_summary("accepted", "", "", "2025-06-01", 365, today) == ""
    assert status_summary("", "", "", "", 365, today) == ""


def write_tokens(path: Path, data) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_tokens_file_names_readers_and_follows_its_edits(tmp_path):
    path = write_tokens(tmp_path / "tokens.json", {TOKEN: {"user": "alice", "role": "admin", "groups": ["sre"]}})
    tokens = TokenTable(path)
    assert tokens.reader_for(TOKEN) == Reader("alice", "admin", ("sre",))
    assert tokens.reader_for("someone-else-0123456789") is None and tokens.reader_for("") is None
    write_tokens(path, {"bob-0123456789abcdef0": {"user": "bob"}})  # alice revoked, bob added
    os.utime(path, ns=(1, 1))  # another stamp even within the file system's time resolution
    assert tokens.reader_for(TOKEN) is None
    assert tokens.reader_for("bob-0123456789abcdef0") == Reader("bob", "reader", ())
    write_tokens(path, "{not json")
    os.utime(path, ns=(2, 2))
    with pytest.raises(TokenFileError, match="is not valid JSON"):  # fails closed until it is fixed
        tokens.reader_for("bob-0123456789abcdef0")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("[1, 2]", "expected a JSON object of token"),
        ({}, "with at least one token"),
        ({"short-token": {"user": "x"}}, "entry 1: the token is shorter than 16 characters"),
        ({TOKEN: {"user": "a"}, TOKEN + "-2": {"role": "reader"}}, 'entry 2: expected {"user"'),
        ({TOKEN: {"user": "a", "groups": "sre"}}, "entry 1: groups must be a list of strings"),
        ({TOKEN: {"user": "a", "role": ""}}, "entry 1: role must be one of reader, editor, admin, not ''"),
        ({TOKEN: {"user": "a", "role": "owner"}}, "entry 1: role must be one of reader, editor, admin"),
        ({TOKEN: {"user": "a", "groups": ["pay ments"]}}, "entry 1: 'pay ments' is not a group name"),
    ],
)
def test_a_broken_tokens_file_is_named_with_the_reason_never_the_token(tmp_path, data, message):
    path = write_tokens(tmp_path / "tokens.json", data)
    with pytest.raises(TokenFileError, match=message) as raised:
        TokenTable(path)
    assert str(path) in str(raised.value)
    assert TOKEN not in str(raised.value) and "short-token" not in str(raised.value)


def test_serve_refuses_to_start_without_usable_tokens(mini_corpus_store, tmp_path, capsys):
    settings, _ = mini_corpus_store
    store = ["--data-dir", str(settings.data_dir)]
    assert cli.main(["serve", *store]) == 2
    assert "give --tokens-file or set RAG_API_TOKENS_FILE" in capsys.readouterr().err
    path = write_tokens(tmp_path / "tokens.json", {"abc": {"user": "x"}})
    assert cli.main(["serve", *store, "--tokens-file", str(path)]) == 2
    error = capsys.readouterr().err
    assert f"tokens file {path}, entry 1" in error and "abc" not in error.replace(str(path), "")


def test_the_persona_as_a_claude_code_agent_with_the_mcp_tools(tmp_path):
    persona = load_persona("backend-architecture-expert", REPO / "agents")
    text = claude_code_agent(persona, server="kb")
    agent = frontmatter.loads(text)
    assert agent["name"] == persona.name and agent["description"] == persona.description
    tools = [tool.strip() for tool in agent["tools"].split(",")]
    names = ["search_knowledge", "read_document", "list_documents", "ask"]
    assert tools == [f"mcp__kb__{name}" for name in names] + ["Read", "Grep", "Glob"]
    assert agent.content.startswith(persona.prompt)
    assert "Before you answer, search the knowledge base with `search_knowledge`" in agent.content
    assert "Cite the file of every claim" in agent.content
    (tmp_path / "agent.md").write_text(text)
    assert parse_persona(tmp_path / "agent.md").name == persona.name  # still a persona the chat can use


def test_the_shipped_claude_code_agent_is_the_persona_of_agents(capsys):
    shipped = REPO / ".claude" / "agents" / "backend-architecture-expert.md"
    assert cli.main(["claude-agent", "--agents-dir", str(REPO / "agents")]) == 0
    assert shipped.read_text(encoding="utf-8") == capsys.readouterr().out, (
        "regenerate it: python -m rag claude-agent > .claude/agents/backend-architecture-expert.md"
    )


def test_the_embedders_memo_holds_under_concurrent_requests(embedder, monkeypatch):
    monkeypatch.setattr(embedding, "CACHE_SIZE", 8)  # every call evicts what another thread is reading
    texts = [f"search number {i} about cache invalidation" for i in range(64)]
    expected = [embedder.embed_query(text) for text in texts]
    with ThreadPoolExecutor(max_workers=16) as pool:
        got = list(pool.map(embedder.embed_query, texts * 3))
    assert got == expected * 3
