#!/usr/bin/env python3
"""Chat UI click latency: with N answers on the page, how long until a click shows its result.

    python scripts/bench_ui.py [--data-dir .rag-data] [--answers 10] [--repeat 5]

Starts ``streamlit run ui/app.py`` over an ingested store (``scripts/run.sh`` makes ``.rag-data``) in
offline extractive mode, asks ``--answers`` questions of ``corpus/eval/questions.jsonl`` in Debian's
Chromium (``/usr/bin/chromium``, driven by playwright; nothing is downloaded), then times, from the
click until the browser shows the result: a thumb on the first answer (feedback saved), opening its
first card's whole section, and opening the reader on it. Target: each under 300 ms (source cards,
sections and feedback are fragments, so a click does not rerun the page's other answers).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIRST = "document.querySelectorAll('[data-testid=stChatMessage]')[1]"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"streamlit exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    sys.exit("streamlit did not start")


def questions(count: int) -> list[str]:
    lines = (REPO / "corpus" / "eval" / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["question"] for line in lines if line.strip()][:count]


def timed(page, click, ready_js: str) -> float:
    """Seconds from the click until ``ready_js`` is true (checked on every animation frame); the page is left
    to settle first, so the click does not wait for the previous step's animations."""
    page.wait_for_timeout(700)
    started = time.perf_counter()
    click()
    page.wait_for_function(ready_js, polling="raf", timeout=30_000)
    return time.perf_counter() - started


def measure(page, url: str, asked: list[str]) -> dict[str, float]:
    from playwright.sync_api import expect

    box = page.get_by_test_id("stChatInputTextArea")
    for i, question in enumerate(asked):
        box.fill(question)
        box.press("Enter")
        reply = page.get_by_test_id("stChatMessage").nth(2 * i + 1)
        expect(reply.get_by_text("How this answer was produced").first).to_be_visible(timeout=60_000)
    page.wait_for_timeout(1500)  # the redraw after the last answer
    first = page.get_by_test_id("stChatMessage").nth(1)
    thumbs = first.get_by_test_id("stFeedback").locator("button")
    card = first.locator("[class*='st-key-source-']").first
    result = {}
    # selectors, not innerText: reading the text of a long page every frame would be the slowest part
    result["thumb up (feedback saved)"] = timed(
        page, lambda: thumbs.first.click(), f"() => {FIRST}.querySelector('input[aria-label^=\"Comment\"]')"
    )
    result["open the whole section"] = timed(
        page, lambda: card.get_by_text("Open the whole section").click(),
        f"() => {FIRST}.querySelector('[data-testid=stExpanderDetails] mark, [data-testid=stExpanderDetails] p')",
    )
    result["open the reader"] = timed(
        page, lambda: card.get_by_role("button", name="Read the whole document").click(),
        "() => document.querySelector('[role=dialog] .st-key-reader-cited')",
    )
    page.keyboard.press("Escape")
    page.wait_for_timeout(500)
    thumbs.first.click()  # take the rating back: the next round starts from no feedback
    page.wait_for_function(f"() => !{FIRST}.querySelector('input[aria-label^=\"Comment\"]')", timeout=30_000)
    card.get_by_text("Open the whole section").click()
    page.wait_for_timeout(500)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=".rag-data", help="an ingested store (default .rag-data)")
    parser.add_argument("--answers", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "RAG_LLM_BASE_URL")}
    env.update(RAG_DATA_DIR=str(Path(args.data_dir).resolve()), HF_HUB_OFFLINE="1")
    with tempfile.TemporaryDirectory() as scratch:
        log = open(Path(scratch) / "streamlit.log", "w")  # noqa: SIM115 (closed with the server)
        command = [sys.executable, "-m", "streamlit", "run", str(REPO / "ui" / "app.py"), "--server.headless",
                   "true", "--server.port", str(port), "--browser.gatherUsageStats", "false"]
        server = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_healthy(url, server)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                                     args=["--headless=new", "--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": 1400, "height": 1600})
                page.goto(url)
                page.get_by_test_id("stChatInputTextArea").wait_for(timeout=120_000)
                rounds = [measure(page, url, questions(args.answers))]
                for _ in range(args.repeat - 1):
                    rounds.append(measure(page, url, []))
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.close()
    print(f"{args.answers} answers on the page, {args.repeat} rounds, load average {os.getloadavg()[0]:.1f}")
    for name in rounds[0]:
        values = [r[name] * 1000 for r in rounds]
        print(f"  {name:<28} median {statistics.median(values):6.0f} ms   max {max(values):6.0f} ms")


if __name__ == "__main__":
    main()
