"""bench/ready_ramp.py: per-window throughput from ready, the steady rate and the first window's share,
counted from real answers of a real HTTP server (a stub that answers like ours, at a fixed pace)."""

from __future__ import annotations

import argparse
import asyncio
import time

import pytest

from bench.procs import free_port
from bench.protocols import build_request
from bench.ready_ramp import Window, _parser, closed_loop, report


def _args(**over) -> argparse.Namespace:
    return _parser().parse_args([f"--{k}={v}" for k, v in over.items()])


def test_the_first_window_is_compared_with_the_median_of_the_last_ones() -> None:
    a = _args(windows=4, steady_windows=3, window_s=10)
    windows = [Window(images=n, latencies_s=[0.1] * n) for n in (90, 200, 190, 210)]
    marks = [(10.0 * (k + 1) + 1, 10.0 * (k + 1)) for k in range(4)]  # the server: one core busy per window
    res = report(a, windows, marks, (0.0, 0.0), 3.2, None, "m", "log")
    assert [r["img_per_s"] for r in res["windows"]] == [9.0, 20.0, 19.0, 21.0]
    assert res["steady_img_per_s"] == 20.0 and res["first_over_steady"] == pytest.approx(0.45)
    assert res["windows"][0]["server_cores"] == 1.0 and res["windows"][0]["others_cores_busy"] == pytest.approx(0.1)
    assert res["windows"][0]["server_cpu_ms_per_image"] == pytest.approx(111.1)  # 10 s CPU over 90 images
    assert res["first_cpu_per_image_over_steady"] == pytest.approx(111.1 / 50.0, abs=0.01)
    assert res["run_img_per_s"] == pytest.approx(17.25) and res["run_server_cpu_ms_per_image"] == pytest.approx(58.0)


def test_answers_are_counted_in_the_window_they_complete_in() -> None:
    """A stub server answers every request after 0.15 s: a 0.5-s window holds ~3 answers per client."""
    from aiohttp import web

    async def main() -> list[Window]:
        async def infer(request: web.Request) -> web.Response:
            await request.read()
            await asyncio.sleep(0.15)
            return web.json_response({"outputs": []})

        app = web.Application()
        app.router.add_post("/v2/models/classifier/infer", infer)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            windows = [Window() for _ in range(3)]
            req = build_request("v2-binary", [b"\xff\xd8jpeg"], "classifier")
            await closed_loop(f"http://127.0.0.1:{port}", [req], 4, time.perf_counter(), windows, 0.5)
            return windows
        finally:
            await runner.cleanup()

    windows = asyncio.run(main())
    counts = [w.images for w in windows]
    assert all(4 <= c <= 16 for c in counts), counts  # 4 clients x ~3 answers, generous for a busy host
    assert all(not w.errors for w in windows) and all(0.1 < s < 0.5 for w in windows for s in w.latencies_s)
