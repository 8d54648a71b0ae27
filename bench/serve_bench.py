"""Same-run comparison: our server vs the naive baseline vs the raw ceiling, plus overload and cold start.

Steps (one process drives everything, servers run as child processes on free loopback ports):

1. our server with default settings: cold start (process start to ``/v2/health/ready`` 200, warm-up
   and any export included; the export cache is wiped first), then load per protocol, then a
   concurrency ramp on ``/classify`` to find the saturating concurrency;
2. our server with ``max_batch_size=1`` (what dynamic batching buys);
3. the naive server (:mod:`bench.naive_server`) on the same model, same load;
4. our server with a small ``max_queue_images``: closed loop at twice the saturating concurrency,
   then open loop at twice the saturated request rate; the restart's time to ready is the cached
   cold start.

Every number is reported with the baselines of the same run, so ratios survive a noisy shared host.

Usage::

    python -m bench.serve_bench --out bench/results/serve_bench.json --md bench/results/serve_bench.md
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench.loadgen import run_load
from bench.payloads import parse_size, sample_jpegs
from bench.procs import ServerProcess, free_port, host_busy_s, machine_info, naive_argv, ours_argv, timed_post
from bench.protocols import build_request
from bench.report import load_ceiling, render_markdown

DEFAULT_MODEL_DIR = Path("bench/results/models/resnet50-random")
RAMP = (1, 2, 4, 8, 16, 32)


def ensure_model(model_dir: Path | None) -> tuple[Path, bool]:
    """The model to serve: ``model_dir`` as given, else a full-size random ResNet-50 built once."""
    if model_dir is not None:
        return model_dir, False
    if not (DEFAULT_MODEL_DIR / "config.json").exists():
        from models.random_resnet import build_random_resnet

        build_random_resnet(DEFAULT_MODEL_DIR, size="full")
    return DEFAULT_MODEL_DIR, True


def measure(server: ServerProcess, name: str, **load: Any) -> dict[str, Any]:
    """One load run against ``server``, with the server's CPU and the rest of the host's load."""
    cpu0, host0, me0, t0 = server.cpu_s(), host_busy_s(), time.process_time(), time.perf_counter()
    r = run_load(server.url, **load)
    wall = time.perf_counter() - t0
    server_cpu = server.cpu_s() - cpu0
    mine = time.process_time() - me0
    r["run"] = name
    r["server_cpu"] = {
        "cores_used": round(server_cpu / wall, 3),
        "cpu_ms_per_image": round(1000.0 * server_cpu / max(1, r["images"]), 2),
    }
    # Busy CPU of the host that neither the server nor the load generator used: the other tenants.
    r["others_cores_busy"] = round(max(0.0, host_busy_s() - host0 - server_cpu - mine) / wall, 2)
    print(
        f"  {name}: {r['img_per_s']} img/s, p50 {r['latency_ms']['p50']} ms, p99 {r['latency_ms']['p99']} ms,"
        f" errors {r['errors']}, 503 {r['rejected_503']['count']}, others busy {r['others_cores_busy']} cores",
        file=sys.stderr,
        flush=True,
    )
    return r


def saturating_concurrency(ramp: list[dict[str, Any]], share: float = 0.9) -> int:
    """Smallest ramp concurrency whose throughput reaches ``share`` of the ramp's best."""
    best = max(r["img_per_s"] for r in ramp)
    return min(r["config"]["concurrency"] for r in ramp if r["img_per_s"] >= share * best)


def start_timed(server: ServerProcess, res: dict[str, Any], key: str, size: tuple[int, int]) -> None:
    """Start ``server``; record seconds to ready and the latency of the first request after ready."""
    res["cold_start_s"][key] = round(server.start(), 2)
    req = build_request("classify", [sample_jpegs(size)[0]])
    status, seconds = timed_post(server.port, req.path, req.body, dict(req.headers))
    res["first_request_s"][key] = round(seconds, 3) if status == 200 else f"status {status}"


def _server(argv: list[str], port: int, logs: Path, name: str) -> ServerProcess:
    return ServerProcess(argv, port, logs / f"{name}.log")


def run_suite(a: argparse.Namespace) -> dict[str, Any]:
    """Run every step; returns the whole result (also written by :func:`main`)."""
    model_dir, _ = ensure_model(a.model_dir)
    if a.fresh_cache:
        shutil.rmtree(model_dir / ".cache", ignore_errors=True)
    logs = a.out.parent / "logs"
    common = {"size": a.size, "duration_s": a.duration, "warmup_s": a.warmup, "timeout_s": a.timeout}
    extra = dict(kv.split("=", 1) for kv in a.server_setting)
    res: dict[str, Any] = {
        "machine": machine_info(),
        "model": {"dir": str(model_dir), "what": "random-weight ResNet-50 (ResNetConfig defaults), 224x224"},
        "load": {"concurrency": a.concurrency, "size": f"{a.size[0]}x{a.size[1]}", "duration_s": a.duration},
        "server_settings": extra,
        "cold_start_s": {},
        "first_request_s": {},
        "runs": [],
        "ceiling": load_ceiling(a.raw_probe_json),
    }
    runs = res["runs"]

    print("ours (default settings)", file=sys.stderr, flush=True)
    port = free_port()
    with _server(ours_argv(model_dir, port, **extra), port, logs, "ours") as s:
        start_timed(s, res, "ours_first", a.size)
        for proto in a.protocols:
            runs.append(measure(s, f"ours/{proto}", protocol=proto, concurrency=a.concurrency, **common))
        ramp = [measure(s, f"ramp/c{c}", concurrency=c, **{**common, "duration_s": a.ramp_duration}) for c in RAMP]
    res["ramp"] = [
        {"concurrency": r["config"]["concurrency"], "img_per_s": r["img_per_s"], "p99_ms": r["latency_ms"]["p99"]}
        for r in ramp
    ]
    c_sat = saturating_concurrency(ramp)
    sat = max(ramp, key=lambda r: r["img_per_s"])
    res["saturation"] = {"concurrency": c_sat, "req_per_s": sat["req_per_s"]}

    if not a.skip_batch1:
        print("ours (max_batch_size=1)", file=sys.stderr, flush=True)
        port = free_port()
        with _server(ours_argv(model_dir, port, **{**extra, "max_batch_size": 1}), port, logs, "ours_b1") as s:
            start_timed(s, res, "ours_batch1", a.size)
            runs.append(measure(s, "ours_batch1/classify", concurrency=a.concurrency, **common))

    if not a.skip_naive:
        print("naive baseline", file=sys.stderr, flush=True)
        port = free_port()
        with _server(naive_argv(model_dir, port), port, logs, "naive") as s:
            start_timed(s, res, "naive", a.size)
            runs.append(measure(s, "naive/classify", concurrency=a.concurrency, **common))

    print("overload", file=sys.stderr, flush=True)
    queue = a.overload_queue_images or c_sat
    res["overload"] = {
        "max_queue_images": queue,
        "closed_concurrency": 2 * c_sat,
        "open_rate_per_s": round(2 * sat["req_per_s"], 1),
    }
    port = free_port()
    argv = ours_argv(model_dir, port, **{**extra, "max_queue_images": queue})
    with _server(argv, port, logs, "ours_overload") as s:
        start_timed(s, res, "ours_cached", a.size)
        runs.append(measure(s, "overload/closed", concurrency=2 * c_sat, **common))
        runs.append(
            measure(
                s, "overload/open", concurrency=a.open_loop_max_outstanding, rate_per_s=2 * sat["req_per_s"], **common
            )
        )
    return res


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.serve_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--model_dir", type=Path, default=None, help="default: build a random full ResNet-50")
    p.add_argument(
        "--fresh_cache",
        action="store_true",
        help="wipe <model_dir>/.cache first, so the first start pays any export",
    )
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--size", type=parse_size, default=(640, 480))
    p.add_argument("--duration", type=float, default=30.0, help="seconds per measured run")
    p.add_argument("--ramp_duration", type=float, default=8.0, help="seconds per ramp step")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of load before each measurement")
    p.add_argument("--timeout", type=float, default=30.0, help="client timeout per request, seconds")
    p.add_argument("--protocols", type=lambda s: s.split(","), default=["classify", "v2-binary", "v2-json", "v1"])
    p.add_argument("--overload_queue_images", type=int, default=0, help="0 = the saturating concurrency")
    p.add_argument("--open_loop_max_outstanding", type=int, default=256)
    p.add_argument(
        "--server_setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra setting for our server (repeatable), e.g. backend=torch",
    )
    p.add_argument("--skip_naive", action="store_true")
    p.add_argument("--skip_batch1", action="store_true")
    p.add_argument("--raw_probe_json", type=Path, default=Path("bench/results/raw_probe.json"))
    p.add_argument("--preprocess_json", type=Path, default=Path("bench/results/preprocess_probe.json"))
    p.add_argument("--out", type=Path, default=Path("bench/results/serve_bench.json"))
    p.add_argument("--md", type=Path, default=Path("bench/results/serve_bench.md"))
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI: run the suite, write the JSON and the markdown report, print the markdown."""
    a = _parser().parse_args(argv)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    res = run_suite(a)
    res["started_utc"] = started
    res["command"] = "python -m bench.serve_bench " + " ".join(argv if argv is not None else sys.argv[1:])
    if a.preprocess_json.exists():
        res["preprocess"] = json.loads(a.preprocess_json.read_text())
    md = render_markdown(res)
    a.out.write_text(json.dumps(res, indent=2) + "\n")
    a.md.parent.mkdir(parents=True, exist_ok=True)
    a.md.write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
