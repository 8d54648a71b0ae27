"""What a pod that has just become ready does with a burst: the requests an activator or the HTTP add-on's
interceptor held while no pod ran, all sent the moment the pod is ready.

For each server tree (``--server NAME=DIR``, as in ``bench.overload``) and each burst size, a fresh server
is started, ``/v2/health/ready`` polled every 50 ms, and at its first 200 the burst goes out at once:
``N`` concurrent ``POST /classify`` of one 640x480 JPEG each. Reported per run: how many were answered 200
and 503, and the p50 / p99 latency of the 200s (from the burst's start).

Usage::

    .venv/bin/python -m bench.wake_burst --server before=/tmp/before --server after=. --burst 64,128 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.loadgen import percentile
from bench.overload import DEFAULT_MODEL_DIR, parse_server
from bench.payloads import sample_jpegs
from bench.procs import ServerProcess, free_port, machine_info, ours_argv


async def burst(url: str, n: int, image: bytes) -> dict[str, Any]:
    """``n`` concurrent one-image ``/classify`` requests sent at once; status counts and 200 latencies."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120.0) as client:
        started = time.perf_counter()

        async def one(i: int) -> tuple[int, float]:
            r = await client.post("/classify", files={"image": (f"{i}.jpg", image, "image/jpeg")})
            return r.status_code, time.perf_counter() - started

        answers = await asyncio.gather(*(one(i) for i in range(n)))
    ok = sorted(t for code, t in answers if code == 200)
    return {
        "burst": n,
        "status": dict(Counter(str(code) for code, _ in answers)),
        "ok_p50_ms": round(1000 * percentile(ok, 50), 1) if ok else None,
        "ok_p99_ms": round(1000 * percentile(ok, 99), 1) if ok else None,
    }


def one_run(name: str, tree: Path, model_dir: Path, n: int, image: bytes, logs: Path) -> dict[str, Any]:
    port = free_port()
    with ServerProcess(ours_argv(model_dir, port), port, logs / f"{name}-{n}.log", cwd=tree) as server:
        server.start(timeout_s=300.0)
        result = asyncio.run(burst(server.url, n, image))
    return {"server": name, **result}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.wake_burst", description=__doc__.split("\n\n")[0])
    p.add_argument("--server", type=parse_server, action="append", required=True, metavar="NAME=DIR")
    p.add_argument("--model_dir", type=Path, default=DEFAULT_MODEL_DIR)
    p.add_argument("--burst", type=lambda s: [int(x) for x in s.split(",") if x], default=[64, 128])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="write the runs as JSON here too")
    a = p.parse_args(argv)
    image = sample_jpegs((640, 480))[0]
    runs = []
    with tempfile.TemporaryDirectory(prefix="wake-burst-") as tmp:
        for rnd in range(a.rounds):
            for n in a.burst:
                for name, tree in a.server:
                    r = {"round": rnd + 1, **one_run(name, tree, a.model_dir, n, image, Path(tmp))}
                    print(json.dumps(r), flush=True)
                    runs.append(r)
    if a.out:
        a.out.write_text(json.dumps({"machine": machine_info(), "argv": sys.argv, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
