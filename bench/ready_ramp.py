"""Does a pod that reports ready serve at full speed? Throughput per 10-s window from ready, fresh cache.

Starts our server on a model (default: the full-size random ResNet-50 of ``models/random_resnet.py``)
with an empty cache directory, as a new pod of a scale-out would start where no shared cache holds a
verdict, polls ``/v2/health/ready`` every 50 ms, and from the moment it answers 200 runs a closed loop
of ``--concurrency`` clients (v2 binary by default) for ``--windows`` windows of ``--window_s``
seconds. Each answer is counted in the window it completed in. Reported per window: img/s, p50/p99,
errors, the server's CPU (cores, and ms per image answered); and ``first_over_steady``: the first
window's img/s over the steady rate, the median of the last ``--steady_windows`` windows (issue 27 asks
for >= 0.9), with ``first_cpu_per_image_over_steady`` beside it: work the server does besides serving
(a check after ready) shows there even when neighbours on a shared machine blur the throughput.

Usage::

    .venv/bin/python -m bench.ready_ramp --windows 8 --json_out bench/results/ready_ramp.json

The machine is shared: the report carries the cores other tenants kept busy in each window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen import LoadConfig, percentile, prepare
from bench.procs import ServerProcess, free_port, host_busy_s, machine_info, ours_argv, served_info
from bench.protocols import PROTOCOLS, PreparedRequest
from bench.serve_bench import ensure_model


@dataclass
class Window:
    """What completed within one window from ready."""

    images: int = 0
    latencies_s: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)


async def closed_loop(
    url: str, requests: list[PreparedRequest], concurrency: int, t0: float, windows: list[Window], window_s: float
) -> None:
    """``concurrency`` clients send back to back from ``t0`` until the last window ends; every answer is
    counted in the window it completed in (answers after the end are dropped)."""
    import aiohttp

    t_end = t0 + window_s * len(windows)
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=concurrency)

    async def client(i: int, session: aiohttp.ClientSession) -> None:
        n = i
        while (start := time.perf_counter()) < t_end:
            req = requests[n % len(requests)]
            n += concurrency
            try:
                async with session.post(url + req.path, data=req.body, headers=req.headers) as resp:
                    await resp.read()
                    status = str(resp.status)
            except TimeoutError:
                status = "timeout"
            except (aiohttp.ClientError, OSError):
                status = "connection_error"
            done = time.perf_counter()
            k = int((done - t0) // window_s)
            if k >= len(windows):
                return
            w = windows[k]
            if status == "200":
                w.images += req.n_images
                w.latencies_s.append(done - start)
            else:
                w.errors[status] = w.errors.get(status, 0) + 1

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(i, session) for i in range(concurrency)))


def run(a: argparse.Namespace) -> dict[str, Any]:
    """Start a fresh server, load it from ready, and report each window."""
    model_dir, _ = ensure_model(a.model_dir)
    cfg = LoadConfig(protocol=a.protocol, concurrency=a.concurrency, size=a.size, model="classifier")
    requests, _ = prepare(cfg)
    windows = [Window() for _ in range(a.windows)]
    with tempfile.TemporaryDirectory(prefix="ready-ramp-cache-") as cache:
        port = free_port()
        settings = dict(kv.split("=", 1) for kv in a.server_setting)
        argv = ours_argv(model_dir, port, cache_dir=cache, **settings)
        log = a.log or Path(tempfile.gettempdir()) / f"ready-ramp-{port}.log"
        with ServerProcess(argv, port, log_path=log) as server:
            ready_s = server.start(timeout_s=600)
            t0 = time.perf_counter()
            busy0, cpu0 = host_busy_s(), server.cpu_s()
            marks: list[tuple[float, float]] = []

            async def main() -> None:
                async def sample() -> None:  # host and server CPU at each window's end
                    for k in range(1, a.windows + 1):
                        await asyncio.sleep(max(0.0, t0 + k * a.window_s - time.perf_counter()))
                        marks.append((host_busy_s(), server.cpu_s()))

                await asyncio.gather(
                    closed_loop(server.url, requests, a.concurrency, t0, windows, a.window_s), sample()
                )

            asyncio.run(main())
            info = served_info(port)
    return report(a, windows, marks, (busy0, cpu0), ready_s, info, str(model_dir), str(log))


def report(
    a: argparse.Namespace,
    windows: list[Window],
    marks: list[tuple[float, float]],
    start: tuple[float, float],
    ready_s: float,
    info: dict[str, str] | None,
    model: str,
    log: str,
) -> dict[str, Any]:
    """The result: one row per window, the steady rate and the first window's share of it."""
    rows = []
    prev = start
    for k, w in enumerate(windows):
        mark = marks[k] if k < len(marks) else prev
        server_s = mark[1] - prev[1]
        others = (mark[0] - prev[0]) - server_s  # host busy minus the server (the client is small)
        prev = mark
        rows.append(
            {
                "window": f"{k * a.window_s:.0f}-{(k + 1) * a.window_s:.0f} s",
                "img_per_s": round(w.images / a.window_s, 2),
                "p50_ms": _ms(percentile(w.latencies_s, 50)),
                "p99_ms": _ms(percentile(w.latencies_s, 99)),
                "errors": w.errors,
                "server_cores": round(server_s / a.window_s, 2),
                "server_cpu_ms_per_image": round(1000 * server_s / w.images, 1) if w.images else None,
                "others_cores_busy": round(max(0.0, others) / a.window_s, 2),
            }
        )
    last = rows[-a.steady_windows :]
    steady = statistics.median(r["img_per_s"] for r in last)
    steady_cpu = statistics.median(r["server_cpu_ms_per_image"] or 0.0 for r in last)
    first_cpu = rows[0]["server_cpu_ms_per_image"]
    return {
        "model": model,
        "served": info,
        "ready_s": round(ready_s, 2),
        "protocol": a.protocol,
        "concurrency": a.concurrency,
        "window_s": a.window_s,
        "windows": rows,
        "steady_img_per_s": steady,
        "first_over_steady": round(rows[0]["img_per_s"] / steady, 3) if steady else None,
        "steady_cpu_ms_per_image": steady_cpu,
        "run_img_per_s": round(sum(w.images for w in windows) / (a.window_s * len(windows)), 2),
        "run_server_cpu_ms_per_image": _per_image(marks[-1][1] - start[1] if marks else 0.0, windows),
        "first_cpu_per_image_over_steady": round(first_cpu / steady_cpu, 3) if first_cpu and steady_cpu else None,
        "machine": machine_info(),
        "server_log": log,
    }


def _per_image(server_cpu_s: float, windows: list[Window]) -> float | None:
    images = sum(w.images for w in windows)
    return round(1000 * server_cpu_s / images, 1) if images else None


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 1)


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.partition("x")
    return int(w), int(h)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.ready_ramp", description=__doc__.split("\n\n")[0])
    p.add_argument("--model_dir", type=Path, default=None, help="model to serve (default: random ResNet-50)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="v2-binary")
    p.add_argument("--concurrency", type=int, default=16, help="closed-loop clients (default 16)")
    p.add_argument("--size", type=_size, default=(640, 480), help="JPEG size WxH (default 640x480)")
    p.add_argument("--windows", type=int, default=8, help="windows measured from ready (default 8)")
    p.add_argument("--window_s", type=float, default=10.0, help="seconds per window (default 10)")
    p.add_argument("--steady_windows", type=int, default=3, help="last windows whose median is steady (default 3)")
    p.add_argument("--server_setting", action="append", default=[], metavar="KEY=VALUE", help="server setting")
    p.add_argument("--log", type=Path, default=None, help="server log file (default: a temp file)")
    p.add_argument("--json_out", type=Path, default=None, help="write the report here too")
    return p


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    if a.windows < 2 or not 1 <= a.steady_windows < a.windows:
        raise SystemExit("need --windows >= 2 and 1 <= --steady_windows < --windows")
    res = run(a)
    text = json.dumps(res, indent=2)
    if a.json_out:
        a.json_out.parent.mkdir(parents=True, exist_ok=True)
        a.json_out.write_text(text + "\n")
    for r in res["windows"]:
        print(
            f"{r['window']:>9}: {r['img_per_s']:6.2f} img/s  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  "
            f"errors {r['errors']}  server {r['server_cores']} cores, {r['server_cpu_ms_per_image']} ms CPU/img  "
            f"others busy {r['others_cores_busy']} cores",
            file=sys.stderr,
        )
    print(
        f"ready in {res['ready_s']} s on {res['served']}; steady {res['steady_img_per_s']} img/s; "
        f"first window / steady = {res['first_over_steady']}; CPU per image first / steady = "
        f"{res['first_cpu_per_image_over_steady']}",
        file=sys.stderr,
    )
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
