"""A real browser: Playwright drives Debian's chromium (no browser download)
against pytest-django's live server, on the real local stack."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
# Headless, and no calls home: this machine's network is closed.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Screenshots kept after the run (var/<profile>/artifacts)."""
    path = Path(os.environ.get("SLIPWAY_STATE_DIR", "var/pytest")) / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium", pytrace=False)
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs an event loop
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


# Run in every document before its own scripts (after axe-core's source): it owes one audit per
# portal page, runs it once the page has loaded, again after each htmx swap, and reports each
# through the bindings the fixture exposes.
AUDIT_IN_PAGE = """
(() => {
  if (window.top !== window || !location.protocol.startsWith('http')) return;
  window.slipwayAxeOwed();  // the page's own audit, owed from its first script on
  let running = null, again = false, first = true;
  const brief = (v) => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' '))});
  window.slipwayAudit = () => {
    if (running) { again = true; return running; }
    if (!first) window.slipwayAxeOwed();
    first = false;
    running = axe.run(document, {resultTypes: ['violations']})
      .then(r => r.violations.map(brief), e => [{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}])
      .then(v => window.slipwayAxeDone(location.href, v))
      .finally(() => { running = null; if (again) { again = false; window.slipwayAudit(); } });
    return running;
  };
  window.addEventListener('load', () => window.slipwayAudit());
  document.addEventListener('htmx:afterSettle', () => window.slipwayAudit());
})();
"""
BLOCKING = {"critical", "serious"}


class Accessibility:
    """axe-core's findings on every portal page a browser test visits.

    Each document owes an audit from its first script on (and one more per htmx swap); a
    navigation away is held in the route handler until every audit owed so far has reported,
    so no page is left unchecked."""

    def __init__(self, deadline: float = 30):
        self.page, self.deadline = None, deadline
        self.owed = 0
        self.reports: list[tuple[str, list[dict]]] = []

    def owe(self, source) -> None:
        self.owed += 1

    def done(self, source, url: str, violations: list[dict]) -> None:
        self.reports.append((url, violations))

    def settle(self) -> None:
        """Wait on Playwright's clock (its events keep flowing) until every owed audit has reported."""
        started = time.monotonic()
        while len(self.reports) < self.owed:
            if time.monotonic() - started > self.deadline:
                pytest.fail(f"axe-core did not finish within {self.deadline:.0f} s on {self.page.url}")
            self.page.wait_for_timeout(25)

    def hold_navigation(self, route) -> None:
        request = route.request
        if request.is_navigation_request() and request.frame == self.page.main_frame:
            self.settle()
        route.fallback()

    def blocking(self) -> list[tuple[str, dict]]:
        return [(url, v) for url, found in self.reports for v in found if v["impact"] in BLOCKING]


@pytest.fixture(scope="session")
def axe_source() -> str:
    from tests.conftest import stack_env

    path = Path(stack_env("SLIPWAY_AXE_JS"))
    if not path.exists():
        pytest.fail(f"{path} is missing: the test stack installs axe-core with npm", pytrace=False)
    return path.read_text()


@pytest.fixture
def page(browser, live_server, axe_source):
    """A fresh page whose every portal document axe-core audits; the test fails on a critical or
    serious violation in any of them."""
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    audits = Accessibility()
    context.expose_binding("slipwayAxeOwed", audits.owe)
    context.expose_binding("slipwayAxeDone", audits.done)
    context.add_init_script(script=axe_source + AUDIT_IN_PAGE)
    tab = audits.page = context.new_page()
    tab.route("**/*", audits.hold_navigation)
    yield tab
    audits.settle()
    tab.evaluate("window.slipwayAudit && window.slipwayAudit()")  # the last page as the test left it
    audits.settle()
    context.close()
    pages = sorted({url for url, _ in audits.reports})
    print(f"axe-core audited {len(audits.reports)} states of {len(pages)} pages: {pages}")
    found = sorted({f"{url}: {json.dumps(v)}" for url, v in audits.blocking()})  # once each, not once per swap
    assert not found, "axe-core found critical or serious violations:\n" + "\n".join(found)


def sign_in(page, username: str, password: str) -> None:
    """Sign in through the login form; lands on the function list."""
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/functions/")
