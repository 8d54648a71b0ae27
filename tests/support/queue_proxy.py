"""A stand-in for Knative's queue-proxy: a real reverse proxy process in front of a predictor that exports
the per-revision request metrics queue-proxy exports (``revision_request_count`` by ``response_code`` and
``response_code_class``, ``revision_request_latencies`` in milliseconds), and can misbehave: add a delay
and answer 500 itself to every Nth request (a sidecar timeout or crash-loop as clients see it). The
predictor behind it never sees those failures.

``python -m tests.support.queue_proxy --upstream URL --port P [--delay-ms 300] [--fail-every 10]``
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections import Counter

from aiohttp import ClientSession, ClientTimeout, web

# Knative's buckets of revision_request_latencies (milliseconds).
BUCKETS_MS = (5, 10, 20, 40, 60, 80, 100, 150, 200, 250, 300, 350, 400, 450, 500, 600, 700, 800, 900, 1000,
              2000, 5000, 10000, 20000, 50000, 100000)  # fmt: skip


class ProxyMetrics:
    """Counts and latency histogram, written in the text exposition format without ``_total`` suffixes
    (queue-proxy's names come from OpenCensus, not from a Prometheus client library)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.codes: Counter[int] = Counter({200: 0, 500: 0})
        self.buckets = [0] * len(BUCKETS_MS)
        self.count = 0
        self.total_ms = 0.0

    def observe(self, code: int, ms: float) -> None:
        with self.lock:
            self.codes[code] += 1
            self.count += 1
            self.total_ms += ms
            for i, le in enumerate(BUCKETS_MS):
                if ms <= le:
                    self.buckets[i] += 1

    def text(self) -> str:
        with self.lock:
            lines = ["# TYPE revision_request_count counter"]
            for code, n in sorted(self.codes.items()):
                labels = f'response_code="{code}",response_code_class="{code // 100}xx"'
                lines.append(f"revision_request_count{{{labels}}} {n}")
            lines.append("# TYPE revision_request_latencies histogram")
            for le, n in zip(BUCKETS_MS, self.buckets, strict=True):
                lines.append(f'revision_request_latencies_bucket{{le="{le}"}} {n}')
            lines.append(f'revision_request_latencies_bucket{{le="+Inf"}} {self.count}')
            lines.append(f"revision_request_latencies_sum {self.total_ms}")
            lines.append(f"revision_request_latencies_count {self.count}")
        return "\n".join(lines) + "\n"


def make_app(upstream: str, delay_ms: float, fail_every: int) -> web.Application:
    metrics = ProxyMetrics()
    seen = [0]
    app = web.Application(client_max_size=64 * 1024 * 1024)

    async def on_startup(app: web.Application) -> None:
        app["session"] = ClientSession(timeout=ClientTimeout(total=60))

    async def on_cleanup(app: web.Application) -> None:
        await app["session"].close()

    async def metrics_route(_: web.Request) -> web.Response:
        return web.Response(text=metrics.text(), content_type="text/plain")

    async def proxy(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        seen[0] += 1
        body = await request.read()
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        if fail_every and seen[0] % fail_every == 0:
            resp = web.Response(status=500, text="queue-proxy: upstream unavailable")
        else:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
            async with app["session"].request(
                request.method, upstream + request.path_qs, data=body, headers=headers
            ) as r:
                resp = web.Response(status=r.status, body=await r.read(), content_type=r.content_type)
        metrics.observe(resp.status, (time.perf_counter() - started) * 1000)
        return resp

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_get("/metrics", metrics_route)  # queue-proxy serves them on :9091; one port here
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--upstream", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--fail-every", type=int, default=0, help="answer 500 to every Nth request (0: never)")
    a = p.parse_args()
    web.run_app(make_app(a.upstream.rstrip("/"), a.delay_ms, a.fail_every), host="127.0.0.1", port=a.port,
                print=None)  # fmt: skip


if __name__ == "__main__":
    main()
