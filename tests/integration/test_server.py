"""Batching under concurrency, overload (503), deadlines (504), disconnects and the SIGTERM drain."""

from __future__ import annotations

import re
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.servers import ServerProcess, jpeg_bytes, start_server


@pytest.fixture(scope="module")
def small_jpeg(photos) -> bytes:
    return jpeg_bytes(photos["chelsea"], size=(160, 120))


def _post(url: str, image: bytes, timeout: float = 60) -> httpx.Response:
    with httpx.Client(timeout=timeout) as c:
        return c.post(f"{url}/classify", files={"image": ("x.jpg", image, "image/jpeg")})


def _wait_for(pred, timeout_s: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_concurrent_requests_form_batches_larger_than_one(default_server: ServerProcess, small_jpeg: bytes):
    count_before = default_server.metric("classifier_batch_size_count")
    sum_before = default_server.metric("classifier_batch_size_sum")
    with ThreadPoolExecutor(16) as pool:
        codes = [r.status_code for r in pool.map(lambda _: _post(default_server.url, small_jpeg), range(64))]
    assert codes == [200] * 64
    batches = default_server.metric("classifier_batch_size_count") - count_before
    images = default_server.metric("classifier_batch_size_sum") - sum_before
    assert images == 64
    assert batches < 64, f"64 images in {batches} forward passes: no batch larger than one formed"
    assert default_server.metric("classifier_queue_depth") == 0


def test_the_server_runs_on_uvloop_with_its_start_up_heap_frozen(default_server: ServerProcess):
    # KServe's start would run asyncio's loop (tests/unit/test_kserve_compat.py); the server says which it got.
    log = default_server.log()
    assert "(event loop: uvloop)" in log
    # After the model loaded: the libraries, the engine and the model (hundreds of thousands of objects) are
    # out of the full collections' way; a count this size can only come after the heavy imports and the load.
    frozen = re.search(r"start-up objects frozen out of garbage collection: (\d+)", log)
    assert frozen and int(frozen.group(1)) > 100_000, log[-2000:]


def test_queue_full_answers_503_with_retry_after_at_once(tiny_model_dir: Path, tmp_path: Path, small_jpeg: bytes):
    server = start_server(tiny_model_dir, tmp_path, max_queue_images=2, max_batch_size=64, max_batch_delay_ms=1500)
    try:
        with ThreadPoolExecutor(2) as pool:
            held = [pool.submit(_post, server.url, small_jpeg) for _ in range(2)]
            _wait_for(lambda: server.metric("classifier_queue_depth") == 2, what="2 images queued")
            t0 = time.monotonic()
            r = _post(server.url, small_jpeg)
            elapsed = time.monotonic() - t0
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "1"
            assert "queue is full" in r.json()["error"]
            assert elapsed < 0.5, f"503 took {elapsed:.3f}s: it must come back at once"
            assert [f.result().status_code for f in held] == [200, 200], "accepted requests must still succeed"
        assert server.metric("classifier_rejections_total", reason="queue_full") == 1
        # The 503 is counted but not timed: fast rejections must not pull the latency quantiles down.
        assert server.metric("classifier_requests_total", protocol="classify", code="503") == 1
        assert server.metric("classifier_request_duration_seconds_count", protocol="classify") == 2
        server.assert_healthy(small_jpeg)
    finally:
        server.stop()


def test_deadline_answers_504_and_frees_the_queue(tiny_model_dir: Path, tmp_path: Path, small_jpeg: bytes):
    server = start_server(tiny_model_dir, tmp_path, request_timeout_ms=300, max_batch_size=64, max_batch_delay_ms=2000)
    try:
        r = _post(server.url, small_jpeg)
        assert r.status_code == 504, r.text
        assert "deadline" in r.json()["error"]
        assert server.metric("classifier_request_duration_seconds_count", protocol="classify") == 1  # timed
        assert server.metric("classifier_request_duration_seconds_sum", protocol="classify") >= 0.3
        _wait_for(lambda: server.metric("classifier_queue_depth") == 0, what="queue to empty")
    finally:
        server.stop()


def test_disconnected_client_gives_back_its_slot(tiny_model_dir: Path, tmp_path: Path, small_jpeg: bytes):
    server = start_server(tiny_model_dir, tmp_path, max_queue_images=1, max_batch_size=64, max_batch_delay_ms=3000)
    try:
        boundary = "b0undary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\n'
                f"Content-Type: image/jpeg\r\n\r\n"
            ).encode()
            + small_jpeg
            + f"\r\n--{boundary}--\r\n".encode()
        )
        head = (
            f"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(head + body)
        _wait_for(lambda: server.metric("classifier_queue_depth") == 1, what="the request to be queued")
        sock.close()
        _wait_for(
            lambda: server.metric("classifier_queue_depth") == 0,
            timeout_s=2.5,
            what="the slot of the disconnected client to be freed before its batch would run",
        )
        with httpx.Client(timeout=30) as c:
            r = c.post(f"{server.url}/classify", files={"image": ("x.jpg", small_jpeg)})
        assert r.status_code == 200, "the freed slot admits the next request"
    finally:
        server.stop()


def test_sigterm_drains_every_accepted_request(tiny_model_dir: Path, tmp_path: Path, small_jpeg: bytes):
    server = start_server(tiny_model_dir, tmp_path, max_batch_size=64, max_batch_delay_ms=1500, grace_period_seconds=20)
    n = 12
    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(_post, server.url, small_jpeg) for _ in range(n)]
        _wait_for(lambda: server.metric("classifier_queue_depth") == n, what=f"{n} requests queued")
        server.proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        codes = [f.result().status_code for f in futures]
    assert codes == [200] * n, codes
    server.proc.wait(30)
    assert time.monotonic() - t0 < 20
    assert server.proc.returncode == 0, server.log()[-3000:]  # a graceful exit, not killed by the signal
    with pytest.raises(httpx.TransportError):
        _post(server.url, small_jpeg, timeout=2)


def test_a_fresh_start_has_decided_its_engine_when_it_reports_ready(
    tiny_model_dir: Path, tmp_path: Path, small_jpeg: bytes
):
    """Ready means ready: with a fresh cache, the precision check (where auto plans one) has run before the
    server answers ready, what the log says it serves is what /metrics says, and nothing changes after."""
    server = start_server(tiny_model_dir, tmp_path)
    at_ready = server.log()
    assert "engine choice: " in at_ready and "serving " in at_ready, at_ready[-3000:]
    if "if it keeps this model's answers" in at_ready:  # native bf16 here: auto planned a check
        assert at_ready.index("precision check (") < at_ready.index("loaded model"), at_ready[-3000:]
    else:
        assert "precision check" not in at_ready, at_ready[-3000:]
    loaded = re.search(r"loaded model .* backend=(\S+) device=(\S+) dtype=(\S+)", at_ready)
    assert loaded is not None, at_ready[-3000:]
    backend, device, dtype = loaded.groups()
    for _ in range(3):
        r = _post(server.url, small_jpeg)
        assert r.status_code == 200, r.text
    assert server.metric("classifier_model_info", backend=backend, device=device, dtype=dtype) == 1
    assert server.stop() == 0, server.log()[-3000:]
    log = server.log()
    assert "Traceback" not in log and log.count("engine choice: ") == 1, log[-3000:]
    assert "precision check" not in log[len(at_ready) :], "no check after ready"
