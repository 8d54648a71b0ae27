"""A real server whose "GPU" runs out of memory or breaks: split-and-cap, a lone misfit, and a restart.

The server is the real one (``python -m tests.support.faulty_engine serve``: ``python -m predictor`` with
the torch backend building :class:`~tests.support.faulty_engine.MemoryLimitedEngine`, the real model on
the CPU raising the real ``torch.cuda.OutOfMemoryError`` above the batch size a control file sets, and
``torch.AcceleratorError`` once told the context is broken). Answers are checked against the photos'
true classes, the batch cap against ``/metrics``.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support.faulty_engine import CONTROL_ENV, HUGE_RGB
from tests.support.servers import ServerProcess, jpeg_bytes, start_server
from tests.support.v2 import CAT_CLASSES

MAX_BATCH = 16
RECOVERY_S = 5
"""The quiet period of the server whose cap must grow back within a test."""
STEADY_RECOVERY_S = 600
"""The quiet period of the server whose cap must hold between requests, however slow a loaded machine is."""


def _control(path: Path, **state: object) -> None:
    """Change the "GPU" (atomically: the server reads the file before every forward pass)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(path)


def _huge_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (300, 300), HUGE_RGB).save(buf, format="PNG")
    return buf.getvalue()


def _start(
    model_dir: Path, tmp_path: Path, recovery_s: float = RECOVERY_S, **state: object
) -> tuple[ServerProcess, Path]:
    control = tmp_path / "gpu.json"
    _control(control, **state)
    server = start_server(
        model_dir,
        tmp_path,
        module="tests.support.faulty_engine",
        env={CONTROL_ENV: str(control)},
        backend="torch",
        device="cpu",
        precision="fp32",
        max_batch_size=MAX_BATCH,
        max_batch_delay_ms=20,
        oom_recovery_seconds=recovery_s,
    )
    return server, control


@pytest.fixture(scope="module")
def photos_jpeg(photos: dict[str, np.ndarray]) -> dict[str, bytes]:
    return {n: jpeg_bytes(photos[n], size=(320, 240)) for n in ("chelsea", "coffee")}


@pytest.fixture(scope="module")
def oom_server(
    default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, Path]]:
    server, control = _start(default_model_dir, tmp_path_factory.mktemp("oom-server"), STEADY_RECOVERY_S, fits=3)
    yield server, control
    server.stop()


def _classify(server: ServerProcess, images: list[bytes]) -> httpx.Response:
    files = [("image", (f"{i}.img", img)) for i, img in enumerate(images)]
    return server.client.post("/classify", files=files)


def _labels(response: httpx.Response) -> list[str]:
    return [p[0]["label"] for p in response.json()["predictions"]]


def _batches_up_to(server: ServerProcess, size: int) -> float:
    return server.metric("classifier_batch_size_bucket", le=f"{float(size)}")


def test_a_batch_too_big_for_memory_is_split_answered_and_caps_later_batches(oom_server, photos_jpeg) -> None:
    server, _ = oom_server
    cat, coffee = photos_jpeg["chelsea"], photos_jpeg["coffee"]
    assert server.metric("classifier_batch_cap") == MAX_BATCH
    batches_at_start = server.metric("classifier_batch_size_count")
    r = _classify(server, [cat, coffee] * 4)  # one request of 8 images: one batch of 8
    assert r.status_code == 200, r.text
    labels = _labels(r)
    assert all(label in CAT_CLASSES for label in labels[::2]) and labels[1::2] == ["espresso"] * 4, labels
    # 8 ran out of memory, then each half of 4; the quarters of 2 fitted
    assert server.wait_metric("classifier_out_of_memory_total", 3) == 3
    assert server.wait_metric("classifier_batch_cap", 2) == 2
    log = server.log()
    assert log.count("batches capped at 2 images (was 16, max_batch_size=16)") == 1, log[-3000:]
    # the first request's batch (one of 8, split inside the engine) is recorded before counting anew
    all_before = server.wait_metric("classifier_batch_size_count", batches_at_start + 1)
    assert all_before == batches_at_start + 1
    small_before = _batches_up_to(server, 2)
    r = _classify(server, [coffee] * 7)
    assert r.status_code == 200 and _labels(r) == ["espresso"] * 7, r.text
    # no new out-of-memory error: the batcher formed batches of at most 2 (2 + 2 + 2 + 1)
    assert server.wait_metric("classifier_batch_size_count", all_before + 4) - all_before == 4
    assert _batches_up_to(server, 2) - small_before == 4
    assert server.metric("classifier_out_of_memory_total") == 3


def test_an_image_that_does_not_fit_alone_gets_507_and_the_others_are_answered(oom_server, photos_jpeg) -> None:
    server, _ = oom_server
    cat, coffee = photos_jpeg["chelsea"], photos_jpeg["coffee"]
    with ThreadPoolExecutor(2) as pool:  # concurrent: the huge image may share a batch with the others
        huge = pool.submit(_classify, server, [_huge_png()])
        good = pool.submit(_classify, server, [cat, coffee])
        huge_r, good_r = huge.result(), good.result()
    assert good_r.status_code == 200, good_r.text
    assert _labels(good_r)[0] in CAT_CLASSES and _labels(good_r)[1] == "espresso"
    assert huge_r.status_code == 507, huge_r.text
    assert huge_r.headers["retry-after"] == "1"
    error = huge_r.json()["error"]
    assert "ran out of memory for this image even in a batch of its own" in error, error
    assert "CUDA out of memory" in error and "gpu_memory_fraction" in error, error
    # in a request of several images, the answer names the one that did not fit
    r = _classify(server, [cat, _huge_png()])
    assert r.status_code == 507 and r.json()["error"].startswith("image 1: the cpu device ran out of memory"), r.text
    assert server.wait_metric("classifier_rejections_total", 2, reason="insufficient_memory") == 2
    server.assert_healthy(cat)


def test_the_cap_grows_back_after_a_quiet_period(default_model_dir: Path, tmp_path: Path, photos_jpeg) -> None:
    server, control = _start(default_model_dir, tmp_path, RECOVERY_S, fits=3)
    try:
        coffee = photos_jpeg["coffee"]
        r = _classify(server, [coffee] * 8)  # 8 and 4 run out of memory: the cap drops to 2
        assert r.status_code == 200, r.text
        cap = server.wait_metric("classifier_batch_cap", 2)
        assert cap == 2
        _control(control, fits=MAX_BATCH)  # the memory is back
        deadline = time.monotonic() + 60
        while server.metric("classifier_batch_cap") <= cap and time.monotonic() < deadline:
            r = _classify(server, [coffee])  # a forward pass after the quiet period raises the cap
            assert r.status_code == 200, r.text
            time.sleep(0.2)
        raised = server.metric("classifier_batch_cap")
        assert raised == cap + 1, (cap, raised)  # one step (a quarter, at least one image) per quiet period
        assert f"batch cap raised to {int(raised)} (was {int(cap)})" in server.log()
    finally:
        server.stop()


def test_a_broken_cuda_context_fails_requests_with_503_and_liveness_so_the_pod_restarts(
    default_model_dir: Path, tmp_path: Path, photos_jpeg: dict[str, bytes]
) -> None:
    server, control = _start(default_model_dir, tmp_path, fits=MAX_BATCH)
    try:
        cat = photos_jpeg["chelsea"]
        c = server.client
        assert c.get("/v2/health/live").json() == {"live": True}
        assert c.get("/v2/health/ready").json() == {"ready": True}
        server.assert_healthy(cat)
        _control(control, fits=MAX_BATCH, broken=True)  # the next forward pass hits an illegal address
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: _classify(server, [cat]), range(4)))
        for r in answers:
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "1"
            assert "inference device is unusable (cpu: CUDA error: an illegal memory access" in r.json()["error"]
        live = c.get("/v2/health/live")
        assert live.status_code == 503 and "is being restarted" in live.json()["error"], live.text
        assert c.get("/v2/health/ready").status_code == 503
        assert c.get(f"/v2/models/{server.model_name}/ready").status_code == 503  # the readiness probe
        _control(control, fits=MAX_BATCH, broken=False)  # a broken context never heals in place
        r = _classify(server, [cat])
        assert r.status_code == 503 and "unusable" in r.json()["error"]
        assert c.get("/v2/health/live").status_code == 503
        assert server.proc.poll() is None  # it keeps answering (503) until the kubelet restarts it
        assert server.metric("classifier_rejections_total", reason="engine_broken") >= 5
        log = server.log()
        assert log.count("CRITICAL") == 1, log[-3000:]  # the cause, logged once; each answer a line of its own
        assert "answering 503, reporting not live and not ready until the container is restarted" in log
        assert "Traceback" not in log, log[-3000:]
    finally:
        server.stop()
