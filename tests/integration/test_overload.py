"""Overload without collapse, through a real server: a full queue refuses before the body is read (503,
Retry-After, Connection: close), a body on its way holds no place, reservations never leak, and a flood of
rejections is a few log lines, not one per request."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.rawhttp import RawRequest, v2_binary
from tests.support.servers import ServerProcess, jpeg_bytes, start_server

HOLD_MS = 4000
"""How long the first image of a batch waits for company: the holding request keeps the queue full so long."""


@pytest.fixture(scope="module")
def small_jpeg(photos) -> bytes:
    return jpeg_bytes(photos["chelsea"], size=(160, 120))


def _wait_for(pred, timeout_s: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _classify(url: str, image: bytes) -> httpx.Response:
    with httpx.Client(timeout=60) as c:
        return c.post(f"{url}/classify", files={"image": ("x.jpg", image, "image/jpeg")})


class Holder:
    """One request admitted and waiting for its batch: the queue (of one image) is full until it ends."""

    def __init__(self, server: ServerProcess, image: bytes) -> None:
        self.result: list[httpx.Response] = []
        self.thread = threading.Thread(target=lambda: self.result.append(_classify(server.url, image)))
        self.thread.start()
        _wait_for(lambda: server.metric("classifier_queue_depth") == 1, what="the holding request to be queued")

    def join(self) -> httpx.Response:
        self.thread.join(60)
        return self.result[0]


@pytest.fixture(scope="module")
def one_slot(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(
        tiny_model_dir,
        tmp_path_factory.mktemp("one-slot"),
        max_queue_images=1,
        max_batch_size=64,
        max_batch_delay_ms=HOLD_MS,
        rejection_log_interval_seconds=3,
    )
    yield server
    server.stop()


def _bodyless(server: ServerProcess, small_jpeg: bytes) -> dict[str, RawRequest]:
    """One request per door whose body is never sent (v2 binary: only its JSON header), each declaring a
    body of 5 MB that is not valid for its route."""
    five_mb = 5 * 1024 * 1024
    port, name = server.port, server.model_name
    head, _, v2_headers = v2_binary([small_jpeg])
    gz = {"Accept-Encoding": "gzip"}  # an error answer is not worth compressing: it must come plain
    return {
        "classify multipart": RawRequest(
            port, "/classify", {"Content-Type": "multipart/form-data; boundary=b", **gz}, five_mb
        ),
        "classify raw": RawRequest(port, "/classify", {"Content-Type": "image/jpeg", **gz}, five_mb),
        "v1": RawRequest(port, f"/v1/models/{name}:predict", {"Content-Type": "application/json", **gz}, five_mb),
        "v2 json": RawRequest(port, f"/v2/models/{name}/infer", {"Content-Type": "application/json", **gz}, five_mb),
        "v2 binary": RawRequest(port, f"/v2/models/{name}/infer", {**v2_headers, **gz}, len(head) + five_mb),
    }


def test_a_full_queue_refuses_before_the_body_is_sent(one_slot: ServerProcess, small_jpeg: bytes):
    before = one_slot.metric("classifier_rejections_total", reason="queue_full")
    answered_503 = one_slot.metric("classifier_requests_total", code="503")
    holder = Holder(one_slot, small_jpeg)
    head, _, _ = v2_binary([small_jpeg])
    answers = {}
    for door, req in _bodyless(one_slot, small_jpeg).items():
        # Nothing of the body (v2 binary: its JSON header only) has been sent: a server that read or parsed
        # the body before deciding would still be waiting for it, or would answer 400 for garbage.
        req.send(head if door == "v2 binary" else b"--b\r\nnot a multipart body, nor JSON")
        answers[door] = req.answer(timeout_s=HOLD_MS / 1000 / 2)
        req.close()
    assert holder.join().status_code == 200, "the admitted request is served"
    for door, a in answers.items():
        assert a.status == 503, (door, a)
        assert "inference queue is full (1 of 1 images waiting, 1 more asked for)" in a.json()["error"], door
        assert int(a.headers["retry-after"]) >= 1, door
        assert a.headers["connection"] == "close" and a.closed_by_server, f"{door}: the connection stays open"
        assert a.seconds < HOLD_MS / 1000 / 2, door
        assert "content-encoding" not in a.headers, door
        assert len(a.headers["x-request-id"]) == 32 and a.headers["server-timing"].startswith("total;dur="), door
    # Counted once each, by reason and by status, whichever layer answered (the protocol, on the head).
    assert one_slot.metric("classifier_rejections_total", reason="queue_full") == before + len(answers)
    assert one_slot.metric("classifier_requests_total", code="503") == answered_503 + len(answers)
    assert one_slot.metric("classifier_queue_depth") == 0
    one_slot.assert_healthy(small_jpeg)


def test_a_refusal_on_the_head_is_logged_under_the_request_id_its_answer_carries(
    tiny_model_dir: Path, tmp_path: Path, small_jpeg: bytes
):
    """The first refusal of an interval is logged in full, and a refusal decided on the request's head (the
    queue has no room even for one image) is logged under the id it answers with in ``X-Request-Id``: the
    one the client sent, or the one the server made."""
    server = start_server(
        tiny_model_dir, tmp_path, max_queue_images=1, max_batch_size=64, max_batch_delay_ms=HOLD_MS,
        log_format="json", rejection_log_interval_seconds=1,
    )  # fmt: skip
    try:
        holder = Holder(server, small_jpeg)
        sent = "client-chosen-" + str(time.monotonic_ns())
        ids = []
        for extra in ({}, {"X-Request-Id": sent}):
            req = RawRequest(server.port, "/classify", {"Content-Type": "image/jpeg", **extra}, 5 * 1024 * 1024)
            a = req.send(b"\xff\xd8").answer(timeout_s=HOLD_MS / 1000 / 2)  # the body never comes
            req.close()
            assert a.status == 503 and a.closed_by_server, a
            ids.append(a.headers["x-request-id"])
            time.sleep(1.2)  # a new interval: the next refusal is the first of its kind again
        assert ids[1] == sent and len(ids[0]) == 32
        assert holder.join().status_code == 200

        _wait_for(lambda: len(server.log_records("POST /classify -> 503:")) >= 2, 10, "the two refusals' log lines")
        assert [d["request_id"] for d in server.log_records("POST /classify -> 503:")] == ids
    finally:
        server.stop()


def test_a_flood_of_refusals_is_answered_in_turn_at_the_paced_rate(
    tiny_model_dir: Path, tmp_path: Path, small_jpeg: bytes
):
    """Clients that resend at once are answered at ``paced_refusals_per_s`` after a second's burst: each
    refusal is held (its body unread) until its turn, while other requests are served."""
    server = start_server(
        tiny_model_dir, tmp_path, max_queue_images=1, max_batch_size=64, max_batch_delay_ms=HOLD_MS,
        paced_refusals_per_s=4,
    )  # fmt: skip
    try:
        before = server.metric("classifier_rejections_total", reason="queue_full")
        holder = Holder(server, small_jpeg)
        flood = [
            RawRequest(server.port, "/classify", {"Content-Type": "image/jpeg"}, 5 * 1024 * 1024) for _ in range(13)
        ]
        for req in flood:
            req.send(b"\xff\xd8")  # the head and two bytes of a 5 MB body that never comes
        with httpx.Client(timeout=10) as c:  # others are served meanwhile
            started = time.monotonic()
            assert c.get(f"{server.url}/v2/health/ready").status_code == 200
            assert time.monotonic() - started < 1.0
        answers = [req.answer(timeout_s=HOLD_MS / 1000) for req in flood]
        for req in flood:
            req.close()
        assert [a.status for a in answers] == [503] * 13, answers
        assert all("inference queue is full" in a.json()["error"] and a.closed_by_server for a in answers)
        times = sorted(a.seconds for a in answers)
        # 4 a second after a burst of 4 (plus the current turn): the first 5 at once, then one each 0.25 s.
        assert times[4] < 0.8, times
        assert times[-1] > 1.5, f"the last of 13 answered by {times[-1]:.2f} s: not paced"
        assert server.metric("classifier_rejections_total", reason="queue_full") == before + 13
        assert holder.join().status_code == 200, "the admitted request is served"
        server.assert_healthy(small_jpeg)
    finally:
        server.stop()


def test_a_v2_request_declaring_more_than_the_queue_holds_is_refused_from_its_header(one_slot, small_jpeg):
    head, tail, headers = v2_binary([small_jpeg, small_jpeg])  # two images; the queue never holds more than one
    req = RawRequest(one_slot.port, f"/v2/models/{one_slot.model_name}/infer", headers, len(head) + len(tail))
    a = req.send(head).answer(timeout_s=5)  # the tail is never sent
    req.close()
    assert a.status == 400, a
    assert "2 images in one request, more than this server ever queues (1, max_queue_images)" in a.json()["error"]
    assert a.closed_by_server and "retry-after" not in a.headers, "retrying cannot help: no Retry-After"


def test_a_body_on_its_way_holds_no_place(tiny_model_dir: Path, tmp_path: Path, small_jpeg: bytes):
    """The images a request declares count in the queue from the moment its body has come: a slow upload
    (or a stalled one) does not keep the queue from others, and is served when its body is complete."""
    server = start_server(tiny_model_dir, tmp_path, max_queue_images=2)
    try:
        head, tail, headers = v2_binary([small_jpeg, small_jpeg])
        slow = RawRequest(server.port, f"/v2/models/{server.model_name}/infer", headers, len(head) + len(tail))
        slow.send(head)  # it declares two images, the whole queue; the tail is still on its way
        _wait_for(lambda: server.metric("classifier_inflight_requests") == 1, what="the slow request to start")
        assert server.metric("classifier_queue_depth") == 0, "a body on its way holds no capacity"
        late = _classify(server.url, small_jpeg)  # arrives while the first one's body is being sent
        assert late.status_code == 200, late.text
        slow.send(tail, with_head=False)
        a = slow.answer()
        slow.close()
        assert a.status == 200, a.body[:300]
        assert [o["shape"][0] for o in a.json()["outputs"]] == [2, 2, 2], "both images classified"
        _wait_for(lambda: server.metric("classifier_queue_depth") == 0, what="the queue to empty")
    finally:
        server.stop()


def test_every_door_hands_its_reservation_to_the_pipeline(tiny_model_dir: Path, tmp_path: Path, small_jpeg: bytes):
    """With room for one image, each door's request is served: its image, reserved before the body was
    read, is the one the pipeline admits (counted twice, it would not fit and be refused)."""
    server = start_server(tiny_model_dir, tmp_path, max_queue_images=1)
    b64 = base64.b64encode(small_jpeg).decode()
    head, tail, headers = v2_binary([small_jpeg])
    infer = f"/v2/models/{server.model_name}/infer"
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            answers = {
                "classify multipart": c.post("/classify", files={"image": ("x.jpg", small_jpeg)}),
                "classify raw": c.post("/classify", content=small_jpeg, headers={"Content-Type": "image/jpeg"}),
                "v1": c.post(f"/v1/models/{server.model_name}:predict", json={"instances": [{"image": {"b64": b64}}]}),
                "v2 json": c.post(infer, json={"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                                          "data": [b64]}]}),
                "v2 binary": c.post(infer, content=head + tail, headers=headers),
            }  # fmt: skip
        assert {door: r.status_code for door, r in answers.items()} == dict.fromkeys(answers, 200), {
            door: r.text[:200] for door, r in answers.items()
        }
        assert server.metric("classifier_queue_depth") == 0
        assert server.metric("classifier_rejections_total") == 0
    finally:
        server.stop()


def test_reservations_are_given_back_when_a_request_fails_or_its_client_leaves(
    tiny_model_dir: Path, tmp_path: Path, small_jpeg: bytes
):
    server = start_server(tiny_model_dir, tmp_path, max_queue_images=2)
    try:
        gone = RawRequest(server.port, "/classify", {"Content-Type": "image/jpeg"}, 100_000).send(small_jpeg[:500])
        _wait_for(lambda: server.metric("classifier_inflight_requests") == 1, what="the upload to start")
        assert server.metric("classifier_queue_depth") == 0, "its image counts in only when its body has come"
        gone.close()  # the client leaves in the middle of its body
        _wait_for(lambda: server.metric("classifier_queue_depth") == 0, what="the reservation given back")
        _wait_for(lambda: server.metric("classifier_requests_total", code="499") == 1, what="the request counted")
        head, tail, headers = v2_binary([small_jpeg, small_jpeg])
        r = httpx.post(
            f"{server.url}/v2/models/{server.model_name}/infer", content=head + tail[:-10], headers=headers, timeout=30
        )
        assert r.status_code == 400 and "exceeds the binary data sent" in r.json()["error"], r.text
        assert server.metric("classifier_queue_depth") == 0
        r = httpx.post(
            f"{server.url}/v2/models/{server.model_name}/infer",
            json={"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                              "data": [base64.b64encode(small_jpeg).decode()]}]},
            timeout=30,
        )  # fmt: skip
        assert r.status_code == 200, r.text
        assert server.metric("classifier_queue_depth") == 0
        assert "Traceback" not in server.log(), "a client that leaves is not a server fault"
    finally:
        server.stop()


def _rejection_lines(server: ServerProcess) -> list[str]:
    return [line for line in server.log().splitlines() if " predictor.rejections " in line]


def _counted(lines: list[str], status: int, reason: str) -> int:
    """Rejections of one kind the log accounts for: full lines plus the counts in summary lines."""
    full = sum(f"-> {status}:" in line for line in lines)
    summed = sum(int(n) for line in lines for n in re.findall(rf"(\d+) x {status} {reason}\b", line))
    return full + summed


def test_a_flood_of_rejections_is_a_few_log_lines(tiny_model_dir: Path, tmp_path: Path, small_jpeg: bytes):
    one_slot = start_server(
        tiny_model_dir, tmp_path, max_queue_images=1, max_batch_size=64, max_batch_delay_ms=HOLD_MS,
        rejection_log_interval_seconds=3,
    )  # fmt: skip
    try:
        _flood(one_slot, small_jpeg)
    finally:
        one_slot.stop()


def _flood(one_slot: ServerProcess, small_jpeg: bytes) -> None:
    already = _rejection_lines(one_slot)
    with httpx.Client(base_url=one_slot.url, timeout=30) as c:
        for _ in range(20):  # undecodable images: 400 each
            assert c.post("/classify", files={"image": ("x.jpg", b"not a jpeg")}).status_code == 400
    holder = Holder(one_slot, small_jpeg)
    with httpx.Client(base_url=one_slot.url, timeout=30) as c:
        for _ in range(30):
            assert c.post("/classify", files={"image": ("x.jpg", small_jpeg)}).status_code == 503
    assert holder.join().status_code == 200

    def new_lines() -> list[str]:
        return _rejection_lines(one_slot)[len(already) :]

    # Every rejection is in the log once its interval has ended: the first of each kind in full, the rest
    # in the interval's summary line (written when the interval ends, 3 s after its first rejection).
    _wait_for(
        lambda: _counted(new_lines(), 400, "invalid_input") == 20 and _counted(new_lines(), 503, "queue_full") == 30,
        timeout_s=20,
        what="the summary lines",
    )
    lines = new_lines()
    assert any("more requests in the last" in line for line in lines), lines
    assert len(lines) <= 6, f"{len(lines)} lines for 50 rejections:\n" + "\n".join(lines)
    assert sum("-> 503:" in line for line in lines) <= 2 and sum("-> 400:" in line for line in lines) <= 2
    records = [json.dumps(line) for line in lines]  # every line names what the rejections were
    assert all("503" in r or "400" in r for r in records)


# ---------------------------------------------------------------- latency-bounded admission (issue 23)


def _classify_n(url: str, image: bytes, n: int) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    with httpx.Client(timeout=120) as c:
        r = c.post(f"{url}/classify", files=[("image", (f"{i}.jpg", image, "image/jpeg")) for i in range(n)])
    return r, time.monotonic() - started


class Sent:
    """A request on its own thread; :meth:`join` gives its answer and how long it took."""

    def __init__(self, server: ServerProcess, image: bytes, n: int, depth_after: int | None = None) -> None:
        self.out: list[tuple[httpx.Response, float]] = []
        self.thread = threading.Thread(target=lambda: self.out.append(_classify_n(server.url, image, n)))
        self.thread.start()
        if depth_after is not None:
            _wait_for(lambda: server.metric("classifier_queue_depth") == depth_after, what=f"queue depth {depth_after}")

    def join(self) -> tuple[httpx.Response, float]:
        self.thread.join(120)
        return self.out[0]


def test_admission_is_bounded_by_the_expected_wait_not_only_by_the_image_count(
    tiny_model_dir: Path, tmp_path: Path, small_jpeg: bytes
):
    """Batches wait 2 s for company (max_batch_size 16), so the pod drains at most 8 images per 2 s here;
    the queue holds 256 images, the queue-wait budget is 3 s."""
    server = start_server(
        tiny_model_dir, tmp_path, max_batch_size=16, max_batch_delay_ms=2000, max_queue_wait_ms=3000,
        max_queue_images=256,
    )  # fmt: skip
    try:
        # Cold start: nothing drained yet, so the rate is the start's estimate: a batch of 16 per 2 s of
        # batch delay plus 16 warm passes' time per image (about 8 images/s): 8 + 20 images is over 3 s.
        a, b = Sent(server, small_jpeg, 4, depth_after=4), Sent(server, small_jpeg, 4, depth_after=8)
        refused, took = _classify_n(server.url, small_jpeg, 20)
        assert refused.status_code == 503 and took < 1.5, (refused.text, took)
        error = refused.json()["error"]
        assert re.search(
            r"8 images ahead of its 20 would take about \d+ ms at the estimated \(nothing has drained", error
        )
        assert int(refused.headers["retry-after"]) >= 1
        assert [s.join()[0].status_code for s in (a, b)] == [200, 200]
        # Measured now: 8 images drained in a little over 2 busy seconds (under 4 images/s).
        a, b = Sent(server, small_jpeg, 2, depth_after=2), Sent(server, small_jpeg, 2, depth_after=4)  # 4 images: ~1 s
        refused, took = _classify_n(server.url, small_jpeg, 10)  # 14 images: over 3 s, though 256 would fit
        assert refused.status_code == 503 and took < 1.5, (refused.text, took)
        error = refused.json()["error"]
        assert re.search(r"4 images ahead of its 10 would take about \d+ ms at the measured", error), error
        assert "over the queue-wait budget of 3000 ms (max_queue_wait_ms)" in error, error
        assert int(refused.headers["retry-after"]) >= 1
        answers = [s.join() for s in (a, b)]
        assert [r.status_code for r, _ in answers] == [200, 200], "what fits the budget is admitted and served"
        assert all(t < 3 + 2 for _, t in answers), answers  # within the budget (+ margin for a shared machine)
        _wait_for(lambda: server.metric("classifier_queue_depth") == 0, what="the queue to empty")
    finally:
        server.stop()


# ---------------------------------------------------------------- fair decoding (issue 23)


@pytest.fixture(scope="module")
def huge_png() -> bytes:
    """A 6300x6300 PNG (39.7 M pixels, under the 40 M limit) of ~0.1 MB: cheap to send, slow to decode."""
    import io

    import numpy as np
    from PIL import Image

    arr = np.zeros((6300, 6300, 3), np.uint8)
    arr[::64, :, 0] = 255  # some structure, still compressible
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


def test_a_pod_that_has_just_started_admits_what_it_can_drain_not_one_batch(
    tiny_model_dir: Path, tmp_path: Path, small_jpeg: bytes
):
    """A wake: the requests held while no pod ran arrive together at a pod that has drained nothing yet. The
    pod admits them by the rate of its warm pass (here a batch of 8 per 1 s of batch delay), not by one
    batch of 8 images: 6 + 4 images are expected to take about 1.3 s, within the 5-s budget."""
    server = start_server(
        tiny_model_dir, tmp_path, max_batch_size=8, max_batch_delay_ms=1000, max_queue_wait_ms=5000,
        max_queue_images=256,
    )  # fmt: skip
    try:
        first = Sent(server, small_jpeg, 6, depth_after=6)  # waits up to 1 s for company
        second, _ = _classify_n(server.url, small_jpeg, 4)
        assert second.status_code == 200, second.text
        assert first.join()[0].status_code == 200
        assert "until measured: batches of at most 8, a drain rate of" in server.log()
    finally:
        server.stop()


def test_a_huge_request_does_not_delay_a_small_one(tiny_model_dir: Path, tmp_path: Path, small_jpeg: bytes, huge_png):
    server = start_server(
        tiny_model_dir, tmp_path, request_timeout_ms=300_000, max_queue_pixels=4_000_000_000, decode_threads=2
    )
    try:
        alone = sorted(_classify_n(server.url, small_jpeg, 1)[1] for _ in range(5))[2]
        huge = Sent(server, huge_png, 32, depth_after=32)  # 32 x 39.7 M pixels of decoding, admitted
        huge_started = time.monotonic()
        small: list[float] = []
        while len(small) < 3:  # one after another, while the huge request decodes
            r, took = _classify_n(server.url, small_jpeg, 1)
            assert r.status_code == 200, r.text
            small.append(took)
        small_done = time.monotonic() - huge_started
        answer, huge_took = huge.join()
        assert answer.status_code == 200, answer.text[:300]
        # In first-in-first-out decoding the first small request would wait for all 32 huge decodes (about
        # huge_took) and the three together at least that; here each waits for the decodes in progress when it
        # arrives (2 of the 32, about huge_took / 16) and shares the cores with the rest. The bound leaves 4x
        # room over that for a loaded machine (CI measured 2.9 rounds for the first one) and still fails
        # for first-in-first-out by 4x.
        assert small_done < huge_took / 2, (small, huge_took)
        assert max(small) < alone + huge_took / 4, (small, alone, huge_took)
        assert server.metric("classifier_queue_depth") == 0
    finally:
        server.stop()


def test_a_request_decoding_to_more_pixels_than_the_queue_holds_is_refused_at_once(
    tiny_model_dir: Path, tmp_path: Path, small_jpeg: bytes, huge_png
):
    server = start_server(tiny_model_dir, tmp_path, max_queue_pixels=100_000_000)
    try:
        r, took = _classify_n(server.url, huge_png, 4)  # 159 M pixels
        assert r.status_code == 413 and took < 5, (r.text, took)
        assert (
            "decode to 158760000 pixels, more than this server ever queues (100000000, max_queue_pixels)"
            in (r.json()["error"])
        )
        server.assert_healthy(small_jpeg)
    finally:
        server.stop()
