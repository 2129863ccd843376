"""The dashboard in a real browser (Debian's chromium, driven by Playwright) against a real
stack: sign-in (a wrong key first), live queue numbers while slow requests queue, a SIGKILLed
worker leaving the table, a breaker opened by failing requests and reset from the page; no
console errors, and nothing fetched from anywhere but the gateway. Takes a screenshot: into the
test's temporary directory, or over the README's docs/dashboard.png with EDGE_UPDATE_SCREENSHOT=1.

Without chromium it skips, or fails when the CI variable is set (.ci/run installs chromium).
"""

from __future__ import annotations

import os
import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from edge_agent.devstack import MASTER_KEY, DevStack, Front
from tests.integration.conftest import wait_until

CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright's own browser builds are never downloaded
README_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
FAILING = "claude-3-5-haiku-latest"  # its own deployment (and breaker), on an idle provider
FAILING_DEPLOYMENT = f"anthropic:{FAILING}"


def _need_chromium() -> None:
    if os.path.exists(CHROMIUM):
        return
    message = "chromium is not installed (apt-get install chromium); the dashboard's browser test needs it"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    _need_chromium()
    overrides = {
        "EDGE_WORKER_CONCURRENCY": "2",
        "EDGE_MAX_ATTEMPTS": "1",
        "EDGE_BREAKER_FAILURES": "3",
        "EDGE_BREAKER_COOLDOWN": "600",  # it stays open until the page resets it
    }
    dev = DevStack(env_overrides=overrides, log_dir=Path(tmp_path_factory.mktemp("browser-logs")))
    try:
        dev.start_redis()
        dev.start_upstream()
        dev.start_worker("openai")
        dev.start_worker("openai")
        dev.start_worker("anthropic")
        dev.front = dev.start_front()  # type: ignore[attr-defined]
        yield dev
    finally:
        dev.stop()


def ask(front: Front, model: str, text: str) -> int:
    body = {"model": model, "messages": [{"role": "user", "content": f"{text} {uuid.uuid4().hex}"}]}
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    return httpx.post(f"{front.url}/v1/chat/completions", json=body, headers=headers, timeout=60).status_code


def test_the_dashboard_in_a_browser(stack: DevStack, tmp_path: Path) -> None:
    # A test run must not rewrite a tracked file; the README's picture is refreshed on purpose.
    screenshot = README_SCREENSHOT if os.environ.get("EDGE_UPDATE_SCREENSHOT") else tmp_path / "dashboard.png"
    from playwright.sync_api import Page, Request, Route, expect, sync_playwright

    front: Front = stack.front  # type: ignore[attr-defined]
    problems: list[str] = []
    remote: list[str] = []

    def local_only(route: Route, request: Request) -> None:
        if urlsplit(request.url).hostname == "127.0.0.1" or request.url.startswith("data:"):
            route.continue_()
        else:
            remote.append(request.url)
            route.abort()

    def cells(page: Page, table: str, row_text: str) -> list[str]:
        row = page.locator(f"#{table} tbody tr", has_text=row_text).first
        return [t.strip() for t in row.locator("td").all_inner_texts()]

    def provider(page: Page, name: str) -> dict[str, str]:
        header = ["provider", "queued", "running", "oldest", "per_min", "errors", "p50", "p95", "workers"]
        return dict(zip(header, cells(page, "providers", name), strict=True))

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        try:
            context = browser.new_context(viewport={"width": 1360, "height": 1100})
            context.route("**/*", local_only)
            page = context.new_page()
            page.on(
                "console", lambda m: problems.append(f"{m.text} {m.location}") if m.type == "error" else None
            )
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on(
                "request", lambda r: None if urlsplit(r.url).hostname == "127.0.0.1" else remote.append(r.url)
            )

            # Sign in: a wrong key first.
            page.goto(f"{front.url}/dashboard")
            page.fill("#key", "not-the-master-key")
            page.click("button[type=submit]")
            expect(page.locator("#error")).to_contain_text("not the master key")
            page.fill("#key", MASTER_KEY)
            page.click("button[type=submit]")
            expect(page.locator("#providers tbody tr", has_text="openai")).to_be_visible()
            expect(page.locator("#workers tbody tr", has_text="openai")).to_have_count(2)
            expect(page.locator("#workers tbody tr", has_text="anthropic")).to_have_count(1)

            # Slow requests: four run (two workers, two each), the rest queue.
            slow = [
                threading.Thread(target=ask, args=(front, "gpt-4o-mini", "[[fake:delay_ms=5000]]"))
                for _ in range(8)
            ]
            for t in slow:
                t.start()
            wait_until(
                lambda: (
                    int(provider(page, "openai")["queued"]) > 0
                    and int(provider(page, "openai")["running"]) > 0
                ),
                "queued and running jobs on the page",
            )
            assert float(provider(page, "openai")["oldest"].split()[0]) >= 0

            # Failing requests open the idle provider's breaker.
            for _ in range(3):
                assert ask(front, FAILING, "[[fake:status=500]]") >= 500
            breaker = page.locator("#deployments tbody tr", has_text=FAILING_DEPLOYMENT)
            expect(breaker.locator("td.breaker-open")).to_be_visible()
            expect(page.locator("#failures tbody tr", has_text=FAILING_DEPLOYMENT).first).to_be_visible()
            screenshot.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
            assert screenshot.stat().st_size > 10_000

            # A SIGKILLed worker leaves the table once its heartbeat is stale.
            victim = next(w for w in stack.workers if w.provider == "openai")
            os.kill(victim.pid, signal.SIGKILL)
            expect(page.locator("#workers tbody tr", has_text="openai")).to_have_count(1, timeout=15_000)

            # Reset the breaker from the page.
            page.click(f"button[data-action='reset:{FAILING_DEPLOYMENT}']")
            expect(breaker.locator("td.breaker-closed")).to_be_visible()
            expect(page.locator("#actions tbody tr", has_text="breaker_reset").first).to_contain_text(
                "session:"
            )
            # The router reads breakers twice a second.
            wait_until(lambda: ask(front, FAILING, "fine now") == 200, "the reset deployment serving")

            # The queue drains (the killed worker's jobs are run by the other) and the page follows.
            for t in slow:
                t.join(90)
            wait_until(lambda: provider(page, "openai")["queued"] == "0", "the queue drained on the page")
            wait_until(lambda: float(provider(page, "openai")["per_min"]) >= 8, "the throughput on the page")
            assert provider(page, "openai")["p50"].endswith("ms")
        finally:
            browser.close()
    assert problems == []
    assert remote == []
