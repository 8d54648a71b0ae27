"""Fixtures of the try-it page tests: a real server with the page on, a real headless Chromium."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support.browser import CHROMIUM_FLAGS, PageSession, chromium_path, new_session
from tests.support.servers import ServerProcess, jpeg_bytes, start_server


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's Chromium, headless, launched once per module.

    Not per session: Playwright's sync API keeps an event loop running in this thread while it is open,
    and the asyncio tests that run later (pytest-asyncio) cannot start theirs inside it.
    """
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS, headless=True)
        yield b
        b.close()


def start_ui_server(model_dir: Path, log_dir: Path, **flags: object) -> ServerProcess:
    """A server with the page on. fp32 explicitly: with ``precision=auto`` the engine may switch to a
    reduced precision mid-test, and the page's scores are compared with /classify's exactly."""
    return start_server(model_dir, log_dir, enable_ui="true", precision="fp32", **flags)


@pytest.fixture(scope="session")
def ui_server(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The default model served with the try-it page on."""
    server = start_ui_server(default_model_dir, tmp_path_factory.mktemp("ui-server"))
    yield server
    server.stop()


@pytest.fixture
def open_page(browser: object) -> Iterator[Callable[..., PageSession]]:
    """``open_page(server, viewport=None)``: the page loaded in a fresh context; no uncaught JS error allowed."""
    sessions: list[PageSession] = []

    def opener(server: ServerProcess, viewport: dict[str, int] | None = None) -> PageSession:
        session = new_session(browser, server.url, viewport)
        sessions.append(session)
        session.open()
        return session

    yield opener
    for s in sessions:
        s.page.context.close()
    for s in sessions:
        assert not s.errors, f"uncaught errors in the page: {s.errors}"


@pytest.fixture(scope="session")
def photo_files(photos: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The cat and coffee photos as JPEG files, and a text file named like a JPEG."""
    d = tmp_path_factory.mktemp("ui-photos")
    files = {"cat": d / "chelsea-the-cat.jpg", "coffee": d / "coffee.jpg", "text": d / "notes.jpg"}
    files["cat"].write_bytes(jpeg_bytes(photos["chelsea"]))
    files["coffee"].write_bytes(jpeg_bytes(photos["coffee"]))
    files["text"].write_text("these are my notes, not an image\n" * 20)
    return files
