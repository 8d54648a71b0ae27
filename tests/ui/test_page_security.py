"""The try-it page runs nothing it did not ship: labels are text, and the browser enforces the CSP."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.browser import PageSession
from tests.support.servers import ServerProcess
from tests.ui.conftest import start_ui_server

Opener = Callable[..., PageSession]
IMG_PAYLOAD = "<img src=x onerror=\"window.__injected=1;document.title='pwned'\">"
SCRIPT_PAYLOAD = "<script>window.__injected=2</script>"


def hostile_label(class_id: int, label: str) -> str:
    return f"{IMG_PAYLOAD if class_id % 2 == 0 else SCRIPT_PAYLOAD} {label}"


@pytest.fixture(scope="module")
def hostile_model_dir(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model with markup in every label (``id2label`` wins over ``label_names``)."""
    out = tmp_path_factory.mktemp("hostile-model")
    for f in default_model_dir.iterdir():
        if f.is_file() and f.name != "config.json":
            shutil.copy(f, out / f.name)
    cfg = json.loads((default_model_dir / "config.json").read_text())
    cfg["id2label"] = {str(i): hostile_label(i, name) for i, name in enumerate(cfg["label_names"])}
    (out / "config.json").write_text(json.dumps(cfg))
    return out


@pytest.fixture(scope="module")
def hostile_server(hostile_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_ui_server(hostile_model_dir, tmp_path_factory.mktemp("ui-hostile"))
    yield server
    server.stop()


def test_markup_in_labels_is_shown_as_text_and_runs_nothing(
    hostile_server: ServerProcess, open_page: Opener, photo_files: dict[str, Path]
):
    expected = hostile_server.client.post(
        "/classify", files={"image": ("cat.jpg", photo_files["cat"].read_bytes(), "image/jpeg")}
    ).json()["predictions"][0]
    labels = [p["label"] for p in expected]
    assert any(IMG_PAYLOAD in label for label in labels) and any(SCRIPT_PAYLOAD in label for label in labels)
    page = open_page(hostile_server)
    title = page.page.title()
    page.upload([photo_files["cat"]])
    (card,) = page.wait_finished(1)
    assert card["state"] == "done"
    assert [r["label"] for r in card["rows"]] == labels  # literally, markup and all
    p = page.page
    assert p.locator("#cards img:not(.thumb)").count() == 0  # no element was made from a label
    assert p.locator("#cards script").count() == 0
    assert p.evaluate("window.__injected") is None
    assert p.title() == title == "Try the image classifier"


def test_the_browser_blocks_inline_handlers_and_foreign_origins(ui_server: ServerProcess, open_page: Opener):
    """Even markup that reached the DOM could not run or call out: the CSP is in force in Chromium."""
    page = open_page(ui_server)
    violations = page.page.evaluate(
        """async () => {
      const seen = [];
      document.addEventListener('securitypolicyviolation', e => seen.push(e.effectiveDirective));
      const div = document.createElement('div');
      div.innerHTML = '<img id="probe" src="ui/favicon.svg" onload="window.__inline=1">';
      document.body.append(div);
      await document.getElementById('probe').decode();
      let fetched = 'no';
      try { await fetch('http://example.invalid/x'); fetched = 'yes'; } catch { fetched = 'blocked'; }
      const img = new Image();
      img.src = 'http://example.invalid/pixel.png';
      await img.decode().catch(() => null);
      const deadline = Date.now() + 10000;  // violation events are delivered as tasks: poll for them
      while (new Set(seen).size < 3 && Date.now() < deadline) await new Promise(r => setTimeout(r, 20));
      return {seen, inline: window.__inline ?? null, fetched};
    }"""
    )
    assert violations["inline"] is None
    assert violations["fetched"] == "blocked"
    assert {"script-src-attr", "connect-src", "img-src"} <= set(violations["seen"]), violations


def test_the_page_cannot_be_framed(ui_server: ServerProcess, open_page: Opener):
    """Framed even by a page of its own origin, Chromium refuses it (frame-ancestors 'none'); a route
    without the header, framed by the same parent, loads (the control)."""
    p = open_page(ui_server).page
    parent = f"{ui_server.url}/parent.html"  # answered by the browser itself, on the server's origin
    frames = f'<iframe id="page" src="{ui_server.url}/"></iframe><iframe id="control" src="/v2/health/live"></iframe>'
    p.route(parent, lambda route: route.fulfill(status=200, content_type="text/html", body=frames))
    with p.expect_console_message(lambda m: "frame-ancestors 'none'" in m.text):
        p.goto(parent)  # waits for the load event, which waits for both frames
    assert p.query_selector("#control").content_frame().url == f"{ui_server.url}/v2/health/live"
    assert p.query_selector("#page").content_frame().url.startswith("chrome-error://")
