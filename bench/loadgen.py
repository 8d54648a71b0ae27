"""Load generator: real JPEGs, closed-loop concurrency (or a fixed open-loop rate), loopback only.

One process, one event loop, keep-alive connections and request bodies built before the clock starts,
so that the client takes as little as possible of the cores it shares with the server; its own CPU
time is measured and reported.

Usage::

    python -m bench.loadgen --url http://127.0.0.1:8080 --protocol classify --concurrency 16 --duration 30

    from bench.loadgen import run_load
    result = run_load("http://127.0.0.1:8080", protocol="v2-binary", concurrency=8, duration_s=5)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bench.payloads import BAD_IMAGE, parse_size, sample_jpegs
from bench.protocols import PROTOCOLS, PreparedRequest, build_request, check_response
from predictor.client import retry_after_seconds, retry_delay

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class LoadConfig:
    """One load run. Bounded by ``duration_s`` and by ``requests`` (whichever comes first)."""

    url: str = "http://127.0.0.1:8080"
    protocol: str = "classify"
    concurrency: int = 16
    duration_s: float = 30.0
    requests: int | None = None
    images_per_request: int = 1
    size: tuple[int, int] = (640, 480)
    model: str = "classifier"
    bad_ratio: float = 0.0
    timeout_s: float = 30.0
    warmup_s: float = 0.0
    rate_per_s: float | None = None
    """Open loop: start this many requests per second (at most ``concurrency`` outstanding)."""
    binary_output: bool = False
    validate: bool = False
    seed: int = 0
    honor_retry_after: bool = False
    """Closed loop: after a 503, a client waits as ``python -m predictor.client`` does (``Retry-After``
    plus jitter) before its next request; off, it sends the next one at once (a client that ignores it)."""

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol {self.protocol!r} is not one of {', '.join(PROTOCOLS)}")
        host = urlsplit(self.url).hostname
        if host not in LOOPBACK_HOSTS:
            raise ValueError(f"url host {host!r} is not loopback ({', '.join(LOOPBACK_HOSTS)})")
        if self.concurrency < 1 or self.images_per_request < 1:
            raise ValueError("concurrency and images_per_request must be >= 1")
        if self.duration_s <= 0 or self.timeout_s <= 0 or self.warmup_s < 0:
            raise ValueError("duration_s and timeout_s must be > 0, warmup_s >= 0")
        if self.requests is not None and self.requests < 1:
            raise ValueError("requests must be >= 1 when given")
        if not 0.0 <= self.bad_ratio <= 1.0:
            raise ValueError(f"bad_ratio {self.bad_ratio} is not within [0, 1]")
        if self.rate_per_s is not None and self.rate_per_s <= 0:
            raise ValueError("rate_per_s must be > 0 when given")
        if self.honor_retry_after and self.rate_per_s is not None:
            raise ValueError("honor_retry_after applies to the closed loop only (an open loop's arrivals do not wait)")


@dataclass
class _Stats:
    ok_latencies_s: list[float] = field(default_factory=list)
    ok_server_s: list[float] = field(default_factory=list)  # the server's own time (Server-Timing), where sent
    ok_queue_s: list[float] = field(default_factory=list)  # of which in the server's queue (Server-Timing), where sent
    rejected_latencies_s: list[float] = field(default_factory=list)
    retry_after_s: list[float] = field(default_factory=list)
    status_counts: dict[str, int] = field(default_factory=dict)
    bad_status_counts: dict[str, int] = field(default_factory=dict)
    bad_sent: int = 0
    ok_images: int = 0
    timeouts: int = 0
    connection_errors: int = 0
    invalid_responses: int = 0
    sample_error: str = ""


def server_timing_s(header: str | None, metric_name: str = "total") -> float | None:
    """Seconds of the ``metric_name`` entry of a ``Server-Timing`` header (``total;dur=<ms>``: the server's own
    time; ``queue``: the time the request's images were counted in its queue), or None."""
    if not header:
        return None
    for metric in header.split(","):
        name, _, params = metric.strip().partition(";")
        if name == metric_name:
            for param in params.split(";"):
                key, _, value = param.strip().partition("=")
                if key == "dur":
                    try:
                        return float(value) / 1000
                    except ValueError:
                        return None
    return None


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated ``q``-th percentile (0..100) of ``values``; ``None`` when empty."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000.0, 2)


def prepare(cfg: LoadConfig) -> tuple[list[PreparedRequest], list[PreparedRequest]]:
    """Build every request body (good ones, and undecodable ones for ``bad_ratio``) up front."""
    photos = sample_jpegs(cfg.size)
    good, bad = [], []
    for i in range(len(photos)):  # one body per rotation of the photo list, so payloads vary
        images = [photos[(i + k) % len(photos)] for k in range(cfg.images_per_request)]
        good.append(build_request(cfg.protocol, images, cfg.model, cfg.binary_output))
        bad.append(build_request(cfg.protocol, [BAD_IMAGE, *images[1:]], cfg.model, cfg.binary_output))
    return good, bad


class _Runner:
    def __init__(self, cfg: LoadConfig, good: list[PreparedRequest], bad: list[PreparedRequest]) -> None:
        self.cfg = cfg
        self.good, self.bad = good, bad
        self.stats = _Stats()
        self.rng = random.Random(cfg.seed)
        self.base = cfg.url.rstrip("/")
        self.issued = 0
        self.seq = 0
        self.t_measure = 0.0
        self.t_stop = 0.0

    def _next(self) -> tuple[PreparedRequest, bool] | None:
        """The next request to send, or ``None`` once the run is over (time or count)."""
        now = time.perf_counter()
        if now >= self.t_stop:
            return None
        measured = now >= self.t_measure
        if measured:
            if self.cfg.requests is not None and self.issued >= self.cfg.requests:
                return None
            self.issued += 1
        self.seq += 1
        is_bad = self.cfg.bad_ratio > 0 and self.rng.random() < self.cfg.bad_ratio
        pool = self.bad if is_bad else self.good
        return pool[self.seq % len(pool)], is_bad

    async def _send(self, session: Any, req: PreparedRequest, is_bad: bool, t0: float) -> float | None:
        """Send one request and count its outcome; returns the ``Retry-After`` of a 503 (else None)."""
        import aiohttp

        s = self.stats
        status: str | None = None
        retry_after: float | None = None
        server_s: float | None = None
        queue_s: float | None = None
        try:
            async with session.post(self.base + req.path, data=req.body, headers=req.headers) as resp:
                body = await resp.read()
                status = str(resp.status)
                server_s = server_timing_s(resp.headers.get("Server-Timing"))
                queue_s = server_timing_s(resp.headers.get("Server-Timing"), "queue")
                if resp.status == 503:
                    retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
                if resp.status == 200 and self.cfg.validate and not is_bad:
                    err = check_response(req, resp.headers, body)
                    if err:
                        s.invalid_responses += 1
                        s.sample_error = s.sample_error or err
                elif resp.status != 200 and not s.sample_error and not is_bad:
                    s.sample_error = f"{resp.status}: {body[:300].decode(errors='replace')}"
        except TimeoutError:
            status = "timeout"
        except (aiohttp.ClientError, OSError) as e:
            status = "connection_error"
            s.sample_error = s.sample_error or repr(e)
        latency = time.perf_counter() - t0
        if t0 < self.t_measure:
            return retry_after  # warm-up: not counted
        if is_bad:
            s.bad_sent += 1
            s.bad_status_counts[status] = s.bad_status_counts.get(status, 0) + 1
            return retry_after
        s.status_counts[status] = s.status_counts.get(status, 0) + 1
        if status == "200":
            s.ok_latencies_s.append(latency)
            if server_s is not None:
                s.ok_server_s.append(server_s)
            if queue_s is not None:
                s.ok_queue_s.append(queue_s)
            s.ok_images += req.n_images
        elif status == "503":
            s.rejected_latencies_s.append(latency)
            if retry_after is not None:
                s.retry_after_s.append(retry_after)
        elif status == "timeout":
            s.timeouts += 1
        elif status == "connection_error":
            s.connection_errors += 1
        return retry_after

    async def _closed_worker(self, session: Any) -> None:
        while (item := self._next()) is not None:
            retry_after = await self._send(session, item[0], item[1], time.perf_counter())
            if self.cfg.honor_retry_after and retry_after is not None:
                await asyncio.sleep(
                    min(retry_delay(retry_after, 0, self.rng), max(0.0, self.t_stop - time.perf_counter()))
                )

    async def _open_loop(self, session: Any) -> None:
        """Start requests on a fixed schedule; latency counts from the scheduled time (no omission)."""
        sem = asyncio.Semaphore(self.cfg.concurrency)
        interval = 1.0 / float(self.cfg.rate_per_s or 1.0)
        tasks: set[asyncio.Task[None]] = set()
        t_next = time.perf_counter()

        async def one(req: PreparedRequest, is_bad: bool, t_sched: float) -> None:
            async with sem:
                await self._send(session, req, is_bad, t_sched)

        while (item := self._next()) is not None:
            task = asyncio.create_task(one(item[0], item[1], t_next))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            t_next += interval
            await asyncio.sleep(max(0.0, t_next - time.perf_counter()))
        if tasks:
            await asyncio.gather(*tasks)

    async def run(self) -> dict[str, Any]:
        import aiohttp

        cfg = self.cfg
        connector = aiohttp.TCPConnector(limit=cfg.concurrency, force_close=False, use_dns_cache=True)
        timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            t_start = time.perf_counter()
            self.t_measure = t_start + cfg.warmup_s
            self.t_stop = self.t_measure + cfg.duration_s
            cpu0: float | None = None

            async def cpu_mark() -> None:
                nonlocal cpu0
                await asyncio.sleep(cfg.warmup_s)
                cpu0 = time.process_time()

            marker = asyncio.create_task(cpu_mark())
            if cfg.rate_per_s is None:
                await asyncio.gather(*(self._closed_worker(session) for _ in range(cfg.concurrency)))
            else:
                await self._open_loop(session)
            await marker
            t_end = time.perf_counter()
            cpu_s = time.process_time() - (cpu0 if cpu0 is not None else 0.0)
        return self._report(max(1e-9, t_end - self.t_measure), cpu_s)

    def _report(self, elapsed: float, cpu_s: float) -> dict[str, Any]:
        s, cfg = self.stats, self.cfg
        total = sum(s.status_counts.values())
        ok = s.status_counts.get("200", 0)
        rej = s.rejected_latencies_s
        errors = {k: v for k, v in sorted(s.status_counts.items()) if k != "200"}
        config = asdict(cfg)
        config["size"] = f"{cfg.size[0]}x{cfg.size[1]}"
        return {
            "config": config,
            "duration_s": round(elapsed, 3),
            "requests": total,
            "ok_requests": ok,
            "images": s.ok_images,
            "img_per_s": round(s.ok_images / elapsed, 2),
            "req_per_s": round(ok / elapsed, 2),
            "latency_ms": {
                "p50": _ms(percentile(s.ok_latencies_s, 50)),
                "p95": _ms(percentile(s.ok_latencies_s, 95)),
                "p99": _ms(percentile(s.ok_latencies_s, 99)),
                "mean": _ms(sum(s.ok_latencies_s) / ok if ok else None),
                "max": _ms(max(s.ok_latencies_s, default=None)),
            },
            "server_timing_ms": {  # arrival at the server's app to its answer's start, as the server says
                "p50": _ms(percentile(s.ok_server_s, 50)),
                "p99": _ms(percentile(s.ok_server_s, 99)),
            },
            "server_queue_ms": {  # of which its images were counted in the server's queue (admitted to inferred)
                "p50": _ms(percentile(s.ok_queue_s, 50)),
                "p99": _ms(percentile(s.ok_queue_s, 99)),
            },
            "errors": errors,
            "error_count": sum(errors.values()),
            "timeouts": s.timeouts,
            "connection_errors": s.connection_errors,
            "invalid_responses": s.invalid_responses,
            "rejected_503": {
                "count": len(rej),
                "share": round(len(rej) / total, 4) if total else 0.0,
                "p50_ms": _ms(percentile(rej, 50)),
                "p99_ms": _ms(percentile(rej, 99)),
                "retry_after_s": {
                    "p50": percentile(s.retry_after_s, 50),
                    "max": max(s.retry_after_s, default=None),
                },
            },
            "bad_payload": {"sent": s.bad_sent, "status_counts": dict(sorted(s.bad_status_counts.items()))},
            "client_cpu": {
                "cpu_s": round(cpu_s, 3),
                "cores_used": round(cpu_s / elapsed, 3),
                "cpu_ms_per_request": round(1000.0 * cpu_s / max(1, total + s.bad_sent), 3),
            },
            "sample_error": s.sample_error,
        }


def run_load(url: str = "http://127.0.0.1:8080", **kwargs: Any) -> dict[str, Any]:
    """Run one load run (blocking) and return its result.

    Args:
        url: server base URL (loopback only).
        **kwargs: any :class:`LoadConfig` field, e.g. ``protocol="v1"``, ``concurrency=8``,
            ``duration_s=5``, ``requests=100``, ``size=(640, 480)``, ``bad_ratio=0.1``.

    Returns:
        ``img_per_s``, ``req_per_s``, ``latency_ms`` (p50/p95/p99 of accepted requests), ``errors`` by
        status, ``timeouts``, ``rejected_503`` (count, share, p50/p99 latency), ``bad_payload`` and
        ``client_cpu``; the ``config`` it ran with.
    """
    if isinstance(kwargs.get("size"), str):
        kwargs["size"] = parse_size(kwargs["size"])
    cfg = LoadConfig(url=url, **kwargs)
    good, bad = prepare(cfg)  # before the loop and the clock
    runner = _Runner(cfg, good, bad)
    try:
        import uvloop

        return uvloop.run(runner.run())
    except ImportError:  # pragma: no cover - uvloop is a kserve dependency
        return asyncio.run(runner.run())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8080", help="server base URL (loopback only)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="classify")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight (closed loop)")
    p.add_argument("--duration", type=float, default=30.0, help="measured seconds")
    p.add_argument("--requests", type=int, default=None, help="stop after this many measured requests")
    p.add_argument("--images-per-request", type=int, default=1)
    p.add_argument("--size", type=parse_size, default=(640, 480), help="JPEG size WIDTHxHEIGHT")
    p.add_argument("--model", default="classifier", help="model name (v2 and v1 paths)")
    p.add_argument("--bad-ratio", type=float, default=0.0, help="share of requests with an undecodable image")
    p.add_argument("--timeout", type=float, default=30.0, help="client timeout per request, seconds")
    p.add_argument("--warmup", type=float, default=0.0, help="seconds of load before measuring")
    p.add_argument("--rate", type=float, default=None, help="open loop: requests started per second")
    p.add_argument("--binary-output", action="store_true", help="v2-binary: ask for binary outputs")
    p.add_argument("--validate", action="store_true", help="check every 200 answer's shape")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--honor-retry-after", action="store_true", help="closed loop: wait Retry-After (+ jitter) after a 503"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: prints the result as JSON; exit code 1 when no request succeeded or an answer was malformed."""
    a = _parser().parse_args(argv)
    result = run_load(
        a.url,
        protocol=a.protocol,
        concurrency=a.concurrency,
        duration_s=a.duration,
        requests=a.requests,
        images_per_request=a.images_per_request,
        size=a.size,
        model=a.model,
        bad_ratio=a.bad_ratio,
        timeout_s=a.timeout,
        warmup_s=a.warmup,
        rate_per_s=a.rate,
        binary_output=a.binary_output,
        validate=a.validate,
        seed=a.seed,
        honor_retry_after=a.honor_retry_after,
    )
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 1 if result["ok_requests"] == 0 or result["invalid_responses"] else 0


if __name__ == "__main__":
    sys.exit(main())
