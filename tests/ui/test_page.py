"""The try-it page in a real headless Chromium against a real server: results, errors, input paths."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support.browser import PageSession
from tests.support.servers import ServerProcess, jpeg_bytes
from tests.ui.conftest import start_ui_server

Opener = Callable[..., PageSession]
CAT_LABELS = {"tabby, tabby cat", "tiger cat", "Egyptian cat"}


def reference(server: ServerProcess, path: Path, top_k: int | None = None):
    """What /classify answers for the file, called directly (not through the page)."""
    params = {} if top_k is None else {"top_k": top_k}
    return server.client.post("/classify", files={"image": (path.name, path.read_bytes(), "image/jpeg")}, params=params)


def without_address(message: str) -> str:
    return re.sub(r" at 0x[0-9a-f]+", " at 0x…", message)


def assert_same_as_classify(card: dict, predictions: list[dict]) -> None:
    """Labels in order, exact scores, percentages as shown, and bars as wide as the scores."""
    assert card["state"] == "done", card
    assert [r["label"] for r in card["rows"]] == [p["label"] for p in predictions]
    for row, p in zip(card["rows"], predictions, strict=True):
        assert row["dataLabel"] == p["label"]
        assert row["score"] == p["score"]
        assert row["pct"] == f"{p['score'] * 100:.1f} %"
        assert abs(row["fillPx"] / row["barPx"] - p["score"]) <= 1.5 / row["barPx"], row


def test_cat_and_coffee_show_what_classify_returns(
    ui_server: ServerProcess, open_page: Opener, photo_files: dict[str, Path], tmp_path: Path
):
    page = open_page(ui_server)
    for n, key in enumerate(("cat", "coffee"), start=1):  # one at a time: each is a batch of one, as below
        page.upload([photo_files[key]])
        page.wait_finished(n)
    for key, top1 in (("cat", CAT_LABELS), ("coffee", {"espresso"})):
        expected = reference(ui_server, photo_files[key]).json()
        card = page.card(photo_files[key].name)
        assert_same_as_classify(card, expected["predictions"][0])
        assert card["rows"][0]["label"] in top1
        round_trip = float(re.search(r"round trip ([\d.]+) ms", card["meta"]).group(1))
        assert 0 < card["serverMs"] <= round_trip, card["meta"]  # from the Server-Timing header
        assert f"{expected['model']} {expected['model_version']}" in card["meta"]
    shot = tmp_path / "try-it.png"
    page.page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")  # the one in docs/img/try-it.png was taken so
    assert page.foreign_requests() == []


def test_header_shows_the_model_as_metrics_report_it(ui_server: ServerProcess, open_page: Opener):
    from prometheus_client.parser import text_string_to_metric_families

    page = open_page(ui_server)
    families = {f.name: f for f in text_string_to_metric_families(ui_server.metrics())}
    (sample,) = families["classifier_model_info"].samples
    shown = {k: page.page.inner_text(f"#info-{k}") for k in ("model", "version", "backend", "device", "dtype")}
    assert shown == {k: sample.labels[k] for k in ("model", "version", "backend", "device", "dtype")}


def test_not_an_image_shows_the_servers_message_and_the_page_goes_on(
    ui_server: ServerProcess, open_page: Opener, photo_files: dict[str, Path]
):
    page = open_page(ui_server)
    page.upload([photo_files["text"]])
    (card,) = page.wait_finished(1)
    expected = reference(ui_server, photo_files["text"])
    assert expected.status_code == 400
    assert card["state"] == "error" and card["httpStatus"] == "400"
    # PIL's message names the BytesIO it read, address included: equal but for the address.
    assert without_address(card["error"]) == without_address(f"{expected.json()['error']} (HTTP 400)")
    assert card["rows"] == []
    assert page.page.is_enabled("#pick")
    page.upload([photo_files["coffee"]])
    page.wait_finished(2)
    assert_same_as_classify(
        page.card("coffee.jpg"), reference(ui_server, photo_files["coffee"]).json()["predictions"][0]
    )
    assert page.card("notes.jpg")["error"] == card["error"]  # the error stays beside its image


def test_keyboard_only_picks_images_and_sets_the_class_count(
    ui_server: ServerProcess, open_page: Opener, photo_files: dict[str, Path]
):
    page = open_page(ui_server)
    p = page.page
    assert p.get_by_role("button", name="Choose images…").count() == 1
    assert p.get_by_label("Classes per image").get_attribute("id") == "top-k"
    assert p.get_by_role("button", name="Clear results").count() == 1
    unnamed = p.evaluate(
        """() => [...document.querySelectorAll('button, input, select, textarea')]
             .filter(e => !e.hidden && e.type !== 'file')
             .filter(e => !((e.labels && e.labels.length) || e.getAttribute('aria-label') || e.textContent.trim()))
             .map(e => e.outerHTML)"""
    )
    assert unnamed == []
    assert p.locator("#files").get_attribute("hidden") is not None  # reached through its button

    # Intercept file choosers from now on: enabled only inside expect_file_chooser, the interception can
    # lag the key press, and Chromium then opens its own (headless, invisible) dialog instead.
    p.on("filechooser", lambda chooser: None)
    p.keyboard.press("Tab")
    assert p.evaluate("document.activeElement.id") == "pick"
    with p.expect_file_chooser() as chooser:
        p.keyboard.press("Enter")
    assert chooser.value.is_multiple()
    chooser.value.set_files(str(photo_files["cat"]))
    page.wait_finished(1)
    assert len(page.card(photo_files["cat"].name)["rows"]) == 5

    p.keyboard.press("Tab")
    assert p.evaluate("document.activeElement.id") == "top-k"
    p.keyboard.press("Control+A")
    p.keyboard.type("3")
    p.keyboard.press("Shift+Tab")
    with p.expect_file_chooser() as chooser:
        p.keyboard.press("Space")
    chooser.value.set_files(str(photo_files["coffee"]))
    page.wait_finished(2)
    expected = reference(ui_server, photo_files["coffee"], top_k=3).json()["predictions"][0]
    assert_same_as_classify(page.card("coffee.jpg"), expected)

    p.keyboard.press("Tab")
    p.keyboard.press("Tab")
    assert p.evaluate("document.activeElement.id") == "clear"
    p.keyboard.press("Enter")
    assert page.cards() == [] and p.is_visible("#empty")


def test_phone_width_nothing_overflows(
    ui_server: ServerProcess, open_page: Opener, photo_files: dict[str, Path], tmp_path: Path
):
    page = open_page(ui_server, viewport={"width": 375, "height": 812})
    files = [photo_files["cat"], photo_files["coffee"], photo_files["text"]]
    page.upload(files)  # several at once
    cards = page.wait_finished(3)
    assert [c["name"] for c in cards] == [f.name for f in files]  # in the order given
    assert [c["state"] for c in cards] == ["done", "done", "error"]
    assert page.page.evaluate("document.documentElement.scrollWidth") <= 375
    overflowing = page.page.evaluate(
        """() => [...document.querySelectorAll('body *')]
             .filter(e => e.getClientRects().length && e.getBoundingClientRect().right > 375.5)
             .map(e => e.tagName + '.' + e.className)"""
    )
    assert overflowing == []
    page.page.screenshot(path=str(tmp_path / "try-it-phone.png"), full_page=True)


DROP_AND_PASTE_JS = """async ({b64, kind}) => {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const dt = new DataTransfer();
  dt.items.add(new File([bytes], kind === 'drop' ? 'dropped.jpg' : '', {type: 'image/jpeg'}));
  if (kind === 'drop') {
    const zone = document.getElementById('dropzone');
    zone.dispatchEvent(new DragEvent('dragenter', {dataTransfer: dt, bubbles: true}));
    const dragging = zone.classList.contains('dragging');
    zone.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
    return dragging;
  }
  document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt, bubbles: true, cancelable: true}));
  return true;
}"""


def test_dropped_and_pasted_images_are_classified(
    ui_server: ServerProcess, open_page: Opener, photo_files: dict[str, Path]
):
    page = open_page(ui_server)
    b64 = base64.b64encode(photo_files["coffee"].read_bytes()).decode()
    assert page.page.evaluate(DROP_AND_PASTE_JS, {"b64": b64, "kind": "drop"}) is True  # highlighted while dragging
    page.wait_finished(1)
    page.page.evaluate(DROP_AND_PASTE_JS, {"b64": b64, "kind": "paste"})
    page.wait_finished(2)
    expected = reference(ui_server, photo_files["coffee"]).json()["predictions"][0]
    assert_same_as_classify(page.card("dropped.jpg"), expected)
    assert_same_as_classify(page.card("pasted image.jpeg"), expected)
    assert not page.page.locator("#dropzone").evaluate("z => z.classList.contains('dragging')")


# ---------------------------------------------------------------- a constrained server: small body limit, busy

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def small_limit_server(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """64 KiB per request; one image may wait, and it waits 1.5 s for company before its forward pass, so
    images sent while it waits are refused with 503 (deterministically, not by a race)."""
    server = start_ui_server(
        default_model_dir,
        tmp_path_factory.mktemp("ui-small"),
        max_request_bytes=LIMIT,
        max_queue_images=1,
        max_batch_delay_ms=1500,
    )
    yield server
    server.stop()


def test_busy_server_says_so_beside_the_image_and_retry_works(
    small_limit_server: ServerProcess, open_page: Opener, photo_files: dict[str, Path], tmp_path: Path
):
    files = []
    for i in range(3):
        files.append(tmp_path / f"cat-{i}.jpg")
        files[-1].write_bytes(photo_files["cat"].read_bytes())
    page = open_page(small_limit_server)
    page.upload(files)  # sent together: the first holds the only queue slot while the others arrive
    cards = page.wait_finished(3)
    refused = [c for c in cards if c["state"] == "error"]
    assert [c["state"] for c in cards].count("done") == 1 and len(refused) == 2, cards
    for card in refused:
        assert card["httpStatus"] == "503"
        assert card["error"].startswith("inference queue is full (1 of 1 images waiting, 1 more asked for)"), card[
            "error"
        ]
    # Retry is offered, enabled after Retry-After (1 s); one at a time, each is then alone and admitted.
    for card in refused:
        button = page.page.locator("#cards > li.card", has_text=card["name"]).locator("button.retry")
        button.click()  # waits for it to be enabled
        page.page.wait_for_function(
            "name => [...document.querySelectorAll('#cards > li.card')].some(c =>"
            " c.querySelector('.name').textContent === name && c.dataset.state === 'done')",
            arg=card["name"],
        )
    assert [c["state"] for c in page.cards()] == ["done"] * 3
    assert len({tuple((r["label"], r["score"]) for r in c["rows"]) for c in page.cards()}) == 1  # same photo


def test_image_over_the_limit_is_scaled_down_in_the_browser_and_classified(
    small_limit_server: ServerProcess, open_page: Opener, photos: dict[str, np.ndarray], tmp_path: Path
):
    big = tmp_path / "big-cat.jpg"
    big.write_bytes(jpeg_bytes(photos["chelsea"], quality=97, size=(1353, 900)))
    assert big.stat().st_size > 3 * LIMIT
    assert reference(small_limit_server, big).status_code == 413  # as sent, the server refuses it
    before = small_limit_server.metric("classifier_requests_total", protocol="classify", code="200")
    page = open_page(small_limit_server)
    assert page.page.inner_text("#limit") == "64.0 KiB"
    page.upload([big])
    (card,) = page.wait_finished(1)
    assert card["state"] == "done" and card["resized"], card
    times = "\N{MULTIPLICATION SIGN}"
    assert re.search(rf"Scaled down in the browser from 1353{times}900 \(.+\) to \d+{times}\d+ \(.+\)", card["status"])
    assert card["rows"][0]["label"] in CAT_LABELS
    assert small_limit_server.metric("classifier_requests_total", protocol="classify", code="200") == before + 1
    assert small_limit_server.metric("classifier_requests_total", protocol="classify", code="413") == 1  # ours


def test_undecodable_file_over_the_limit_says_the_limit_and_sends_nothing(
    small_limit_server: ServerProcess, open_page: Opener, tmp_path: Path
):
    big = tmp_path / "huge-notes.jpg"
    big.write_text("not an image at all\n" * 5000)
    assert big.stat().st_size > LIMIT
    page = open_page(small_limit_server)
    sent = small_limit_server.metric("classifier_requests_total", protocol="classify")
    page.upload([big])
    (card,) = page.wait_finished(1)
    assert card["state"] == "error" and card["httpStatus"] is None
    assert "64.0 KiB per request (max_request_bytes)" in card["error"]
    assert "cannot decode this file" in card["error"]
    assert not [u for u in page.requests if u.endswith("/classify?top_k=5")]
    assert small_limit_server.metric("classifier_requests_total", protocol="classify") == sent
