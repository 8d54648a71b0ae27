"""A real headless Chromium (Debian's, driven by Playwright) and helpers to use the try-it page with it.

Playwright's own browser download is not reachable here, so it drives the system Chromium that
``scripts/system_deps.sh`` installs. Each launch gets a fresh temporary profile (Playwright's own
``--user-data-dir``); each test gets a fresh browser context.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # root in a container: the setuid sandbox is unavailable
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 90_000  # a cold model on two shared CPU cores
CARDS_JS = """() => [...document.querySelectorAll('#cards > li.card')].map(c => {
  const error = c.querySelector('.error');
  return {
    name: c.querySelector('.name').textContent,
    state: c.dataset.state,
    status: c.querySelector('.status').textContent,
    error: error.hidden ? null : error.textContent,
    httpStatus: c.dataset.status || null,
    resized: c.dataset.resized === 'true',
    serverMs: c.dataset.serverMs ? Number(c.dataset.serverMs) : null,
    meta: c.querySelector('.meta').textContent,
    rows: [...c.querySelectorAll('.top > li')].map(r => ({
      label: r.querySelector('.label').textContent,
      dataLabel: r.dataset.label,
      score: Number(r.dataset.score),
      pct: r.querySelector('.pct').textContent,
      barPx: r.querySelector('.bar').getBoundingClientRect().width,
      fillPx: r.querySelector('.fill').getBoundingClientRect().width,
    })),
  };
})"""


def chromium_path() -> str:
    """The system Chromium; missing is a failure (scripts/system_deps.sh installs it), never a skip."""
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.fail(f"{CHROMIUM} not found: run `bash scripts/system_deps.sh` (apt-get install chromium)")
    return CHROMIUM


@dataclass
class PageSession:
    """One browser context and page on the try-it page of a server, recording what the page did."""

    page: Any
    base_url: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def open(self) -> None:
        """Load ``/`` and wait until the page has read the model's info."""
        response = self.page.goto(self.base_url + "/")
        assert response is not None and response.status == 200
        self.page.wait_for_selector("body[data-ready=true]", timeout=TIMEOUT_MS)

    def upload(self, paths: list[Path]) -> None:
        """Give files to the page's file input, as the picker would."""
        self.page.set_input_files("#files", [str(p) for p in paths])

    def wait_finished(self, n: int) -> list[dict[str, Any]]:
        """Wait until ``n`` cards are no longer pending; return every card, newest first."""
        self.page.wait_for_function(
            "n => document.querySelectorAll('#cards > li.card:not([data-state=pending])').length >= n",
            arg=n,
            timeout=TIMEOUT_MS,
        )
        return self.cards()

    def cards(self) -> list[dict[str, Any]]:
        return self.page.evaluate(CARDS_JS)

    def card(self, name: str) -> dict[str, Any]:
        found = [c for c in self.cards() if c["name"] == name]
        assert len(found) == 1, f"expected one card named {name!r}: {self.cards()}"
        return found[0]

    def foreign_requests(self) -> list[str]:
        """Requests the page made to anything but its own origin."""
        return [u for u in self.requests if not (u.startswith(self.base_url + "/") or u.startswith("blob:"))]


def new_session(browser: Any, base_url: str, viewport: dict[str, int] | None = None) -> PageSession:
    """A fresh context and page that record requests, uncaught errors and console errors."""
    context = browser.new_context(viewport=viewport or {"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    session = PageSession(page, base_url)
    page.on("request", lambda r: session.requests.append(r.url))
    page.on("pageerror", lambda e: session.errors.append(str(e)))
    page.on("console", lambda m: session.console_errors.append(m.text) if m.type == "error" else None)
    return session
