"""Sign-in and per-person access end to end: Debian's Chromium, ``streamlit run ui/app.py`` and a real OpenID
Connect provider (``oidc-provider-mock``, started by the test on a free port).

Two people sign in through the provider: Alice (an editor in the ``payments`` group, which the provider sends as a
``groups`` claim) and Bob (a reader in no group). The knowledge base holds a decision record restricted to
``payments``. Alice sees it everywhere; Bob sees it nowhere: not in the suggested questions, the answer (its text,
"See also" line, nearest-material headings), the source cards, "How this answer was produced", the knowledge base
search, its document list and chunk picker, an upload Alice restricted to her group, nor in the export of a
conversation Alice shared with him, where her answer is withheld. A link to Alice's conversation says it is not his
until she shares it. Bob signs out through the provider and is back at the sign-in page. A second app, behind a
trusted proxy header, signs in whoever the header names and nobody without it; the sign-in app ignores that header.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
from conftest import free_port, serving
from test_e2e_browser import ANSWER_TIMEOUT_MS, ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, REPO, ask, attach
from ui_support import UPLOAD_DOC, UPLOAD_FACT, UPLOAD_NAME, app_env, write_corpus

from rag.config import Settings
from rag.ingest.pipeline import ingest

pytestmark = pytest.mark.browser

RESTRICTED_PATH = "team/adr-0009-card-settlement.md"
RESTRICTED_TITLE = "ADR 0009: Card settlement in the Quokka ledger"
RESTRICTED_FACT = "02:40"
RESTRICTED_DOC = f"""---
title: "{RESTRICTED_TITLE}"
doc_type: team
access: [payments]
---
# {RESTRICTED_TITLE}

## Nightly settlement

The Quokka ledger job reconciles card settlements at {RESTRICTED_FACT} every night, after the card network has
delivered its settlement file. When the Quokka job fails, the settlement file is replayed before the ledger closes.
"""
QUESTION = "When does the Quokka ledger job reconcile card settlements?"
# what no page Bob sees may contain (his own question names the Quokka job, so that word is not among them)
SECRETS = [RESTRICTED_FACT, "ADR 0009", "Card settlement in the", "adr-0009", "Nightly settlement"]
ALICE = {"sub": "alice@example.com", "email": "alice@example.com", "name": "Alice", "groups": ["payments"]}
BOB = {"sub": "bob@example.com", "email": "bob@example.com", "name": "Bob"}
ROLES = 'editor = ["alice@example.com"]\n'


@pytest.fixture(scope="module")
def chromium_path() -> Path:
    if not CHROMIUM.is_file():
        reason = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium); none is downloaded"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory, embedder) -> Path:
    base = tmp_path_factory.mktemp("e2e-access")
    write_corpus(base / "corpus")
    (base / "corpus" / RESTRICTED_PATH).write_text(RESTRICTED_DOC, encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(base)
        report = ingest([Path("corpus")], Settings(_env_file=None, data_dir=base / "data"), embedder=embedder)
    assert report.files_added == 5 and not report.files_failed
    (base / "roles.toml").write_text(ROLES, encoding="utf-8")
    return base


@pytest.fixture(scope="module")
def provider(site):
    """oidc-provider-mock on a free port, with Alice and Bob as its one-click users."""
    port = free_port()
    command = [sys.executable, "-m", "oidc_provider_mock", "--port", str(port)]
    for claims in (ALICE, BOB):
        command += ["--user-claims", json.dumps(claims)]
    url = f"http://localhost:{port}"
    with serving(command, f"{url}/.well-known/openid-configuration", site / "oidc.log", 60):
        yield url


def start_app(site: Path, port: int, cwd: Path | None = None, **env_vars: str):
    """The app over the site's store; ``cwd`` (default the site) is where it looks for ``.streamlit/secrets.toml``."""
    command = [
        sys.executable, "-m", "streamlit", "run", str(REPO / "ui" / "app.py"), "--server.headless", "true",
        "--server.port", str(port), "--browser.gatherUsageStats", "false",
    ]
    env = {**app_env(site / "data", REPO / "agents"), "RAG_ROLES_FILE": str(site / "roles.toml"), **env_vars}
    return serving(command, f"http://localhost:{port}/_stcore/health", site / f"streamlit-{port}.log", 90,
                   cwd=cwd or site, env=env)


@pytest.fixture(scope="module")
def app_url(site, provider, chromium_path):
    """The app with ``[auth]`` pointing at the provider (``.streamlit/secrets.toml`` in its working folder)."""
    port = free_port()
    secrets = site / ".streamlit" / "secrets.toml"
    secrets.parent.mkdir(exist_ok=True)
    secrets.write_text(
        "[auth]\n"
        f'redirect_uri = "http://localhost:{port}/oauth2callback"\n'
        'cookie_secret = "a-long-random-secret-for-the-test-only"\n'
        'client_id = "architecture-assistant"\n'
        'client_secret = "test-client-secret"\n'
        f'server_metadata_url = "{provider}/.well-known/openid-configuration"\n',
        encoding="utf-8",
    )
    try:
        with start_app(site, port):
            yield f"http://localhost:{port}"
    finally:
        secrets.unlink()


def new_person(browser, **options):
    """A browser context of its own (its own cookies) that loads nothing from outside this machine."""
    context = browser.new_context(viewport={"width": 1400, "height": 1800}, accept_downloads=True, **options)
    context.route(re.compile(r"^https?://(?!localhost|127\.0\.0\.1)"), lambda route: route.abort())
    return context, context.new_page()


def sign_in(page, app_url: str, who: str) -> None:
    from playwright.sync_api import expect

    page.goto(app_url)
    page.get_by_role("button", name="Sign in").click(timeout=90_000)
    page.get_by_role("button", name=who).click(timeout=30_000)  # the provider's one-click user
    expect(page.get_by_text(f"Signed in as {who}")).to_be_visible(timeout=60_000)
    expect(page.get_by_test_id("stChatInputTextArea")).to_be_visible(timeout=60_000)


def page_text(page) -> str:
    return page.locator("body").inner_text()


def assert_nothing_restricted(text: str, where: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"{where} shows {leaked}"


def open_details(reply) -> str:
    """Opens *How this answer was produced* (again if the page's redraw after the answer swallowed the click)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    expander = reply.get_by_test_id("stExpander").filter(has_text="How this answer was produced")
    for attempt in range(3):
        expander.get_by_text("How this answer was produced").click()
        try:
            expander.get_by_text("Retrieved passages").wait_for(timeout=10_000)
            return expander.inner_text()
        except PlaywrightTimeout:
            if attempt == 2:
                raise
    return ""


def open_options(page, label: str) -> list[str]:
    """The options of the select box ``label``, clicking it again if a redraw of the page closed its list."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    picker = page.get_by_role("combobox", name=label)
    for attempt in range(4):
        picker.click()
        try:
            page.get_by_role("option").first.wait_for(state="visible", timeout=10_000)
            return page.get_by_role("option").all_inner_texts()
        except PlaywrightTimeout:
            if attempt == 3:
                raise
    return []


def export_text(page) -> str:
    with page.expect_download(timeout=30_000) as download:
        page.get_by_role("button", name="Export").click()
    return Path(download.value.path()).read_text(encoding="utf-8")


def test_two_people_see_only_what_they_may_read_and_sign_out(app_url, browser, site, tmp_path):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    alice_context, alice = new_person(browser)
    bob_context, bob = new_person(browser, extra_http_headers={"X-Forwarded-Email": "alice@example.com"})
    try:
        # nobody signed in: only the sign-in page (a forged proxy header means nothing here)
        bob.goto(app_url)
        expect(bob.get_by_role("button", name="Sign in")).to_be_visible(timeout=90_000)
        expect(bob.get_by_test_id("stChatInputTextArea")).to_have_count(0)
        assert "Single-user mode" not in page_text(bob)

        # Alice: her group's decision record is suggested, answered, cited and readable
        sign_in(alice, app_url, "alice@example.com")
        expect(alice.get_by_text("Signed in as alice@example.com · editor · groups: payments")).to_be_visible()
        expect(alice.get_by_role("button", name=re.compile(re.escape(RESTRICTED_TITLE)))).to_be_visible()
        ask(alice, QUESTION, 0)
        reply = alice.get_by_test_id("stChatMessage").nth(1)
        assert RESTRICTED_FACT in reply.get_by_test_id("stMarkdownContainer").first.inner_text()
        card = reply.locator("[class*='st-key-source-']").first
        expect(card).to_contain_text(RESTRICTED_TITLE)
        card.get_by_role("button", name="Read the whole document").click()
        expect(alice.get_by_role("dialog").get_by_text("Nightly settlement").first).to_be_visible(timeout=30_000)
        alice.keyboard.press("Escape")
        assert "?c=" in alice.url
        conversation_url = alice.url
        alice.screenshot(path=str(ARTIFACTS / "e2e-access-alice.png"), full_page=True)

        # Alice uploads a team doc that only her group may read
        alice.get_by_role("link", name="Knowledge base").click()
        expect(alice.get_by_text("Add team documents")).to_be_visible(timeout=30_000)
        upload = tmp_path / UPLOAD_NAME
        upload.write_text(UPLOAD_DOC, encoding="utf-8")
        attach(alice, upload)
        alice.get_by_role("combobox", name="Who may read them").click()
        alice.get_by_role("option", name="payments").click()
        alice.get_by_role("button", name="Add to knowledge base").click()
        expect(alice.get_by_text("Upload finished: 1 added")).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
        expect(alice.get_by_text("readable by payments")).to_be_visible()

        # Bob: a reader in no group
        sign_in(bob, app_url, "bob@example.com")
        expect(bob.get_by_text("Signed in as bob@example.com · reader")).to_be_visible()
        assert "alice@example.com" not in bob.locator("[data-testid='stSidebar']").inner_text()  # not her list
        assert_nothing_restricted(page_text(bob), "Bob's empty chat page (suggested questions)")
        ask(bob, QUESTION, 0)
        reply = bob.get_by_test_id("stChatMessage").nth(1)
        assert_nothing_restricted(reply.inner_text(), "Bob's answer, its cards and notices")
        assert_nothing_restricted(open_details(reply), "Bob's 'How this answer was produced'")
        bob.screenshot(path=str(ARTIFACTS / "e2e-access-bob.png"), full_page=True)

        # ...his knowledge base page: search, documents, chunk picker, uploads
        bob.get_by_role("link", name="Knowledge base").click()
        expect(bob.get_by_text("Only editors and admins add team documents; you are a reader")).to_be_visible(
            timeout=30_000
        )
        expect(bob.locator("input[type=file]")).to_have_count(0)
        search = bob.get_by_label("Search the knowledge base")
        for query in ("Quokka ledger card settlement", "Zephyr gateway retries"):
            search.fill(query)
            search.press("Enter")
            expect(bob.get_by_text(re.compile(r"\d+ passages in"))).to_be_visible(timeout=30_000)
            text = page_text(bob)
            assert_nothing_restricted(text, f"Bob's search for {query!r}")
            assert UPLOAD_FACT not in text and UPLOAD_NAME not in text
        options = open_options(bob, "Show the chunks of")
        assert options and not any("adr-0009" in o or UPLOAD_NAME in o for o in options), options
        bob.keyboard.press("Escape")
        assert_nothing_restricted(page_text(bob), "Bob's knowledge base page")

        # Alice's conversation is not his...
        bob.goto(conversation_url)
        expect(bob.get_by_text(re.compile(r"The conversation \w+ is not yours"))).to_be_visible(timeout=60_000)
        expect(bob.get_by_test_id("stChatMessage")).to_have_count(0)  # none of her messages
        # ...until she shares it: then he reads it, her answer withheld, also in the export
        alice.goto(conversation_url)
        share = alice.get_by_text("Share with teammates")
        share.click(timeout=60_000)
        expect(alice.get_by_role("switch", name="Share with teammates")).to_be_checked()
        bob.goto(conversation_url)
        expect(bob.get_by_text("Shared by alice@example.com")).to_be_visible(timeout=60_000)
        expect(bob.get_by_text("This answer drew on documents you may not read")).to_be_visible()
        expect(bob.get_by_test_id("stChatMessage").first).to_contain_text(QUESTION)
        assert_nothing_restricted(page_text(bob), "Alice's shared conversation as Bob sees it")
        expect(bob.get_by_test_id("stChatInputTextArea")).to_be_disabled()
        exported = export_text(bob)
        assert QUESTION in exported and "may not read" in exported
        assert_nothing_restricted(exported, "Bob's export of the shared conversation")
        assert RESTRICTED_FACT in export_text(alice)
        bob.screenshot(path=str(ARTIFACTS / "e2e-access-shared.png"), full_page=True)

        # Bob signs out through the provider and is back at the sign-in page
        bob.get_by_role("button", name="Sign out").click()
        bob.get_by_role("button", name="End session").click(timeout=30_000)
        expect(bob.get_by_role("button", name="Sign in")).to_be_visible(timeout=60_000)
        bob.reload()
        expect(bob.get_by_role("button", name="Sign in")).to_be_visible(timeout=60_000)
        assert "Signed in as" not in page_text(bob)
    except BaseException:
        for name, page in (("alice", alice), ("bob", bob)):
            page.screenshot(path=str(ARTIFACTS / f"e2e-access-failure-{name}.png"), full_page=True)
        raise
    finally:
        alice_context.close()
        bob_context.close()


def test_a_trusted_proxy_header_signs_in_only_when_configured(site, browser, chromium_path):
    from playwright.sync_api import expect

    port = free_port()
    url = f"http://localhost:{port}"
    elsewhere = site / "behind-proxy"  # no .streamlit/secrets.toml there: no [auth]
    elsewhere.mkdir(exist_ok=True)
    with start_app(site, port, cwd=elsewhere, RAG_TRUSTED_USER_HEADER="X-Forwarded-Email",
                   RAG_TRUSTED_GROUPS_HEADER="X-Forwarded-Groups"):
        carol_context, carol = new_person(
            browser, extra_http_headers={"X-Forwarded-Email": "carol@example.com", "X-Forwarded-Groups": "payments"}
        )
        nobody_context, nobody = new_person(browser)
        try:
            carol.goto(url)
            expect(carol.get_by_text("Signed in as carol@example.com · reader · groups: payments")).to_be_visible(
                timeout=90_000
            )
            expect(carol.get_by_role("button", name="Sign out")).to_have_count(0)  # the proxy signs out
            carol.get_by_role("link", name="Knowledge base").click()  # her group's record is hers to find
            search = carol.get_by_label("Search the knowledge base")
            search.fill("Quokka ledger card settlement")
            search.press("Enter")
            expect(carol.locator(".st-key-hit-1")).to_contain_text(RESTRICTED_TITLE, timeout=30_000)
            nobody.goto(url)
            expect(nobody.get_by_text("the request has no X-Forwarded-Email header")).to_be_visible(timeout=90_000)
            expect(nobody.get_by_test_id("stChatInputTextArea")).to_have_count(0)
        finally:
            carol_context.close()
            nobody_context.close()
