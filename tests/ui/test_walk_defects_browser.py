"""The defects a new user's walk through the chat found, each checked in a real browser (Debian's Chromium).

One ``streamlit run ui/app.py`` serves the whole module, over the UI corpus plus two documents with dates: a
reference last updated in 2019 whose stampede section has sub-headings ("Locking"), and ADR-0011, accepted
and last updated in 2023, whose consumers section has one per consumer ("notify-sender"). A module fixture
asks three questions in one conversation (two cite the old reference, one the ADR); the tests open it in
new pages. Like tests/ui/test_e2e_browser.py, the tests are skipped without ``/usr/bin/chromium`` (failed
under CI) and never download a browser.
"""

from __future__ import annotations

import re
import socket
import textwrap
from pathlib import Path

import pytest
from test_e2e_browser import ARTIFACTS, CHROMIUM_ARGS, ask, start_app
from ui_support import write_corpus

from rag.app.conversations import ConversationStore, Message
from rag.app.feedback import FeedbackStore
from rag.config import Settings
from rag.ingest.pipeline import ingest

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
DATED_DOCS = {
    "references/stampede-protection.md": """
        ---
        title: Stampede protection
        doc_type: reference
        updated: 2019-03-01
        ---
        # Stampede protection

        ## Techniques

        When a popular key expires, every concurrent request misses and goes to the database at once. Two
        techniques protect the database, and they combine well.

        ### Locking

        With a recompute lock, the first request that misses takes a short-lived lock in Redis and rebuilds the
        value; the other requests wait briefly and read the cache again. The lock needs an expiry so that a
        crashed holder cannot block the key forever.

        ### Request coalescing

        Request coalescing lets one caller inside a process load the value while every other caller for the
        same key waits on that one load.
        """,
    "team/adr-0011-tracking-events-kafka.md": """
        ---
        title: "ADR-0011: Move tracking events from RabbitMQ to Kafka"
        doc_type: team
        updated: 2023-06-01
        ---
        # ADR-0011: Move tracking events from RabbitMQ to Kafka

        ## Status

        Accepted. Date: 2023-06-01. Supersedes ADR-0003.

        ## Decision

        Tracking events are published to the Kafka topic tracking-events with 48 partitions, keyed by parcel
        id, so that consumers can replay a week of history.

        ## Consumers

        ### notify-sender

        notify-sender sends SMS and email notifications to recipients. It keeps the event ids it has acted on in
        Redis for 8 days, so replaying the topic never sends a recipient the same SMS twice.

        ### eta-estimator

        eta-estimator predicts delivery windows from route progress and bootstraps by reading the last 5 days
        of the topic.
        """,
}
LOCK_QUESTION = "How does a recompute lock protect the database from a cache stampede?"
LOCK_FOLLOW_UP = "Why does the stampede lock need an expiry?"
ADR_QUESTION = "How does notify-sender avoid sending the same SMS twice on a replay?"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1400, "height": 1000}
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def walk_site(tmp_path_factory, embedder) -> Path:
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    base = tmp_path_factory.mktemp("walk")
    write_corpus(base / "corpus")
    for relpath, text in DATED_DOCS.items():
        (base / "corpus" / relpath).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(base)
        report = ingest([Path("corpus")], Settings(_env_file=None, data_dir=base / "data"), embedder=embedder)
    assert report.files_added == 6 and not report.files_failed
    return base


@pytest.fixture(scope="module")
def app_url(walk_site):
    url, server = start_app(walk_site)
    with server:
        yield url


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def open_page(chromium, app_url):
    """``open_page(path, viewport)``: a page in a new browser context (clipboard allowed), closed after the test;
    a screenshot goes to test-artifacts/ when the test fails."""
    contexts = []

    def open_(path: str = "/", viewport: dict | None = None):
        context = chromium.new_context(viewport=viewport or DESKTOP)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=app_url)
        contexts.append(context)
        page = context.new_page()
        page.goto(app_url + path)
        page.get_by_test_id("stChatInputTextArea").wait_for(timeout=90_000)
        return page

    yield open_
    for context in contexts:
        for page in context.pages:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "walk-last.png"), full_page=True)
        context.close()


@pytest.fixture(scope="module")
def walk(chromium, app_url) -> str:
    """The id of a conversation of three answers: the old reference cited twice, then the accepted ADR."""
    page = chromium.new_page(viewport=DESKTOP)
    try:
        page.goto(app_url)
        page.get_by_test_id("stChatInputTextArea").wait_for(timeout=90_000)
        for turn, question in enumerate([LOCK_QUESTION, LOCK_FOLLOW_UP, ADR_QUESTION]):
            ask(page, question, 2 * turn)
        return re.search(r"[?&]c=(\w+)", page.url).group(1)
    finally:
        page.close()


def settings_of(site: Path) -> Settings:
    return Settings(_env_file=None, data_dir=site / "data")


def replies(page):
    return page.locator("[data-testid='stChatMessage']:has([data-testid='stChatMessageAvatarAssistant'])")


def open_walk(open_page, walk: str, viewport: dict | None = None):
    from playwright.sync_api import expect

    page = open_page(f"/?c={walk}", viewport)
    expect(replies(page)).to_have_count(3, timeout=TIMEOUT_MS)
    expect(replies(page).last.get_by_text("How this answer was produced")).to_be_visible(timeout=TIMEOUT_MS)
    return page


# -- 1. headings inside source cards ------------------------------------------------------------------


def font_px(page, locator) -> float:
    return page.evaluate("e => parseFloat(getComputedStyle(e).fontSize)", locator.element_handle())


def test_headings_inside_source_cards_read_at_body_size(open_page, walk):
    page = open_walk(open_page, walk)
    cards = page.locator("[class*='st-key-source-']")
    body = font_px(page, replies(page).first.get_by_test_id("stMarkdownContainer").first.locator("p").first)
    title = font_px(page, page.locator("h1").first)
    for heading in ("Locking", "notify-sender"):
        shown = cards.get_by_text(heading, exact=True).first
        shown.scroll_into_view_if_needed()
        assert shown.is_visible(), heading
        size = font_px(page, shown)
        assert size <= body < title, (heading, size, body, title)
    # no heading element at all inside a card: a card is one unit of the page, not a document outline
    assert cards.locator("h1, h2, h3, h4, h5, h6").count() == 0


# -- 2. the "may be out of date" box ------------------------------------------------------------------


def test_an_old_document_is_noted_once_per_conversation_in_plain_words(open_page, walk):
    page = open_walk(open_page, walk)
    notes = [replies(page).nth(i).get_by_test_id("stAlert").all_inner_texts() for i in range(3)]
    shown = [note for answer in notes for note in answer]
    dated = [note for note in shown if "out of date" in note]
    # the 2019 reference is cited by the first two answers and noted once, on the first
    assert len(dated) == 1 and "Stampede protection" in dated[0] and dated[0] in notes[0], notes
    assert "2019-03-01" in dated[0]
    assert not any("RAG_" in note or "STALE" in note for note in shown), shown  # no setting names for users
    # ADR-0011 is accepted, the decision in force: its age alone is no reason to doubt it
    assert not any("ADR-0011" in note for note in shown), notes[2]
    assert "ADR-0011" in replies(page).nth(2).locator("[class*='st-key-source-']").first.inner_text()


# -- 3. Edit retitles the conversation ----------------------------------------------------------------


def test_editing_the_first_question_retitles_the_conversation(open_page):
    from playwright.sync_api import expect

    page = open_page()
    ask(page, "What is a cache stampede?", 0)
    expect(page.locator("h1")).to_have_text("What is a cache stampede?")
    page.get_by_role("button", name="Edit").click()
    page.get_by_label("Edit your question").fill("How do circuit breakers fail fast?")
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.get_by_test_id("stChatMessage").first).to_contain_text("circuit breakers", timeout=TIMEOUT_MS)
    expect(replies(page).first.get_by_text("How this answer was produced")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator("h1")).to_have_text("How do circuit breakers fail fast?")
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar.get_by_role("button", name="How do circuit breakers fail fast?")).to_be_visible()
    expect(sidebar.get_by_role("button", name="What is a cache stampede?")).to_have_count(0)


# -- 4. the conversation list -------------------------------------------------------------------------


def test_the_open_conversation_is_in_view_and_marked_in_the_list(open_page, walk_site):
    from playwright.sync_api import expect

    store = ConversationStore.for_settings(settings_of(walk_site))
    made = []
    for n in range(10):  # the first made is the oldest: below nine newer ones (and whatever the module asked)
        conversation = store.create(f"Capacity question {n}")
        store.save_message(conversation.id, Message("user", f"Capacity question {n}"))
        made.append(conversation)
    oldest = made[0]
    page = open_page(f"/?c={oldest.id}")
    expect(page.locator("h1")).to_have_text(oldest.title, timeout=TIMEOUT_MS)
    sidebar = page.get_by_test_id("stSidebar")
    listed = sidebar.locator("[class*='st-key-open-'] button")
    current = sidebar.locator(f".st-key-open-{oldest.id} button")
    expect(current).to_be_in_viewport()
    # marked: the only button of its kind in the list, drawn unlike the others
    assert [b.get_attribute("data-testid") for b in listed.all()].count("stBaseButton-primary") == 1
    assert current.get_attribute("data-testid") == "stBaseButton-primary"
    other = sidebar.locator(f".st-key-open-{made[5].id} button")
    background = "e => getComputedStyle(e).backgroundColor"
    assert page.evaluate(background, current.element_handle()) != page.evaluate(background, other.element_handle())
    # the list scrolls with the sidebar, not in a box of its own
    boxed = page.evaluate(
        """e => { const out = []; const sidebar = e.closest("[data-testid='stSidebarContent']");
        for (let a = e.parentElement; a && a !== sidebar; a = a.parentElement) {
            const s = getComputedStyle(a);
            if (['auto', 'scroll'].includes(s.overflowY) && a.scrollHeight > a.clientHeight) out.push(a.className);
        } return out; }""",
        current.element_handle(),
    )
    assert boxed == []
    # another one opened from the list becomes the marked one
    other.click()
    expect(page.locator("h1")).to_have_text(made[5].title, timeout=TIMEOUT_MS)
    expect(sidebar.locator(f".st-key-open-{made[5].id} button")).to_have_attribute("data-testid",
                                                                                  "stBaseButton-primary")
    expect(sidebar.locator(f".st-key-open-{made[5].id} button")).to_be_in_viewport()
    expect(listed.and_(page.get_by_test_id("stBaseButton-primary"))).to_have_count(1)


# -- 5. the passages on a phone -----------------------------------------------------------------------


SHOWN_WHOLE = """([details, wanted]) => wanted.map(text => {
    // where the text is drawn, and whether the screen or a clipping box around it cuts any of it off
    const walker = document.createTreeWalker(details, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const at = node.data.indexOf(text);
        if (at < 0) continue;
        const range = document.createRange();
        range.setStart(node, at);
        range.setEnd(node, at + text.length);
        const r = range.getBoundingClientRect();
        let whole = r.left >= 0 && r.right <= document.documentElement.clientWidth;
        for (let a = node.parentElement; a; a = a.parentElement) {
            if (getComputedStyle(a).overflowX === 'visible') continue;
            const box = a.getBoundingClientRect();
            whole = whole && r.left >= box.left - 1 && r.right <= box.right + 1;
        }
        return [text, whole];
    }
    return [text, null];
})"""


def test_the_retrieved_passages_and_their_scores_fit_a_phone_screen(open_page, walk, walk_site):
    page = open_walk(open_page, walk, PHONE)
    message = ConversationStore.for_settings(settings_of(walk_site)).get(walk).messages[1]
    final = message.final
    expander = page.locator(f".st-key-details-{message.id}")
    expander.get_by_text("How this answer was produced").click()
    details = expander.get_by_test_id("stExpanderDetails")
    details.get_by_text("Retrieved passages").wait_for(timeout=TIMEOUT_MS)
    wanted = [p.path for p in final.passages]
    for p in final.passages:  # every score of every passage, as the page writes them
        wanted.append(f"{p.score:.4f}")
        wanted += [f"{score:.3f}" for score in (p.dense_score, p.keyword_score) if score is not None]
    shown = page.evaluate(SHOWN_WHOLE, [details.element_handle(), wanted])
    ARTIFACTS.mkdir(exist_ok=True)
    details.get_by_text("Retrieved passages").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "walk-phone-passages.png"))
    assert [text for text, whole in shown if not whole] == [], shown
    # nothing on the page is wider than the screen (no sideways scrolling to reach a column)
    overflow = page.evaluate(
        "() => [...document.querySelectorAll('[data-testid=stMain], [data-testid=stMain] *')]"
        ".filter(e => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible')"
        ".map(e => e.dataset.testid || e.className || e.tagName)"
    )
    assert overflow == [], overflow


# -- 6. Copy, Rename and Regenerate -------------------------------------------------------------------


def rename(page, title: str) -> None:
    """Renames the conversation as a reader does: back to the top, Rename, the title, Save. A loaded machine may
    scroll the chat back to its bottom after the popover opened, taking Save out of view: then again."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    for attempt in range(3):
        page.mouse.move(DESKTOP["width"] // 2, DESKTOP["height"] // 2)
        page.mouse.wheel(0, -20_000)  # back to the top as a reader scrolls (the chat keeps to the bottom otherwise)
        expect(page.get_by_role("button", name="Rename", exact=True)).to_be_in_viewport()
        if not page.get_by_label("Title").is_visible():
            page.get_by_role("button", name="Rename", exact=True).click()
        page.get_by_label("Title").fill(title)
        try:
            page.get_by_role("button", name="Save title").click(timeout=10_000)
            return
        except PlaywrightTimeout:
            if attempt == 2:
                raise


def test_copy_rename_and_regenerate_each_do_their_job_in_one_step(open_page, walk, walk_site):
    from playwright.sync_api import expect

    page = open_walk(open_page, walk)
    last = replies(page).last
    answer = last.get_by_test_id("stMarkdownContainer").first.inner_text()

    # Copy: one click puts the answer with its sources on the clipboard
    last.get_by_role("button", name="Copy").click()
    expect(last.get_by_role("button", name="Copied")).to_be_visible(timeout=10_000)
    copied = page.evaluate("() => navigator.clipboard.readText()")
    assert copied.startswith(answer[:40]) and "**Sources**" in copied
    assert "corpus/team/adr-0011-tracking-events-kafka.md" in copied

    # Rename: Save closes the popover and the new title shows
    rename(page, "Stampedes and notify-sender")
    expect(page.locator("h1")).to_have_text("Stampedes and notify-sender", timeout=TIMEOUT_MS)
    expect(page.get_by_role("button", name="Save title")).to_be_hidden(timeout=10_000)

    # Regenerate: a rated answer that comes back the same keeps its rating
    feedback = FeedbackStore.for_settings(settings_of(walk_site))
    before = len(feedback.all())
    last.get_by_role("radio", name="Thumbs down").click()
    expect(last.get_by_text("Thank you: feedback saved.")).to_be_visible(timeout=TIMEOUT_MS)
    first_card = last.locator("[class*='st-key-source-']").first
    old_card = re.search(r"st-key-source-\w+-\d+", first_card.get_attribute("class")).group(0)
    last.get_by_role("button", name="Regenerate").click()
    expect(page.locator(f".{old_card}")).to_have_count(0, timeout=TIMEOUT_MS)  # the answer was made again
    expect(last.locator("[class*='st-key-source-']").first).to_be_visible(timeout=TIMEOUT_MS)
    # until the run ends, the last run's elements may still show beside the new ones
    expect(last.get_by_role("button", name="Regenerate")).to_have_count(1, timeout=TIMEOUT_MS)
    expect(last.get_by_role("radio", name="Thumbs down")).to_have_count(1, timeout=TIMEOUT_MS)
    expect(last.get_by_role("radio", name="Thumbs down")).to_have_attribute("aria-checked", "true", timeout=TIMEOUT_MS)
    assert last.get_by_test_id("stMarkdownContainer").first.inner_text() == answer
    page.reload()
    last = replies(page).last
    expect(last.get_by_role("radio", name="Thumbs down")).to_have_attribute("aria-checked", "true",
                                                                            timeout=TIMEOUT_MS)
    assert [entry.rating for entry in feedback.all()][before:] == [-1]  # one rating, not one per version


def network_address() -> str | None:
    """This machine's address on its network (not loopback), as a teammate's browser would reach the app."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_copy_works_on_a_team_server_over_plain_http(chromium, app_url, walk):
    """Over http on a network address the page is not a secure context and has no navigator.clipboard."""
    from playwright.sync_api import expect

    address = network_address()
    if address is None:
        pytest.skip("this machine has no network address other than loopback")
    context = chromium.new_context(viewport=DESKTOP)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=app_url)
    try:
        page = context.new_page()
        page.goto(app_url.replace("127.0.0.1", address) + f"/?c={walk}")
        expect(replies(page)).to_have_count(3, timeout=TIMEOUT_MS)
        assert page.evaluate("() => [window.isSecureContext, 'clipboard' in navigator]") == [False, False]
        last = replies(page).last
        last.get_by_role("button", name="Copy").click()
        expect(last.get_by_role("button", name="Copied")).to_be_visible(timeout=10_000)
        reader = context.new_page()  # the clipboard is read from a secure page of the same browser
        reader.goto(f"{app_url}/_stcore/health")
        copied = reader.evaluate("() => navigator.clipboard.readText()")
        assert copied.startswith(last.get_by_test_id("stMarkdownContainer").first.inner_text()[:40])
        assert "corpus/team/adr-0011-tracking-events-kafka.md" in copied
    finally:
        context.close()
