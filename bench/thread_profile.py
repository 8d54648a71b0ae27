"""Where the server's CPU goes under load, per thread: forward pass, decode, HTTP and event loop, waits.

Starts our server (or attaches to ``--pid``), runs the benchmark load (bench.loadgen) for ``--duration``
seconds and, over exactly that window:

* reads every OS thread's CPU time from ``/proc/<pid>/task`` before and after, and names each one from
  ``py-spy dump`` (Python threads: ``MainThread`` = the event loop, ``decode_N``, ``inference_0``; the
  others are the backend's native pool, e.g. OpenVINO's TBB workers, counted as the forward pass);
* samples every Python thread's stack with ``py-spy record --idle`` and sorts each sample into a
  category (decode, resize, forward, HTTP, event loop, idle wait) by the functions on its stack.

The report gives CPU ms per image per thread group (what the issue calls the per-image CPU budget), the
share of each category per Python thread, and the forward pass as served (``classifier_inference_seconds``)
per image against the raw probe's at the batch sizes served, which is what other threads running on
the forward pass's cores cost it.

Usage::

    .venv/bin/python -m bench.thread_profile --model_dir bench/results/models/resnet50-random --duration 20
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.loadgen import run_load
from bench.procs import ServerProcess, free_port, host_busy_s, ours_argv

_CLK_TCK = os.sysconf("SC_CLK_TCK")
PY_SPY = str(Path(sys.executable).with_name("py-spy"))

CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # (category, substrings of "function (file)" frames), first match from the leaf up wins
    ("forward", ("openvino", "onnxruntime", "torch/nn", "_run_streams", "checked_infer", "infer (predictor/engine")),
    ("resize", ("resize", "prepare_array", "prepare_pil", "_crop")),
    ("decode", ("simplejpeg", "decode_image", "PIL/", "inspect_jpeg")),
    ("softmax/top-k", ("softmax", "predictions", "postprocess")),
    ("protocol", ("protocol/", "orjson", "multipart", "read_multipart", "encode_rest", "parse_rest")),
    ("http", ("uvicorn", "h11", "httptools", "starlette", "fastapi", "middleware")),
    ("idle wait", ("select (selectors", "_worker (concurrent/futures", "wait (threading", "_wait_for_tstate_lock")),
    ("event loop", ("asyncio", "uvloop", "base_events", "events.py")),
)


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of every thread of ``pid`` so far, by OS thread id."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return out


def python_threads(pid: int) -> dict[int, str]:
    """OS thread id → Python thread name (from ``py-spy dump --json``)."""
    raw = subprocess.run([PY_SPY, "dump", "--pid", str(pid), "--json"], capture_output=True, text=True, check=True)
    return {int(t["os_thread_id"]): str(t["thread_name"]) for t in json.loads(raw.stdout) if t.get("os_thread_id")}


def group_of(name: str | None) -> str:
    """Thread group of a thread name: event loop, decode, inference, other Python, native (backend pool)."""
    if name is None:
        return "native (backend pool: forward pass)"
    if name == "MainThread":
        return "event loop (MainThread)"
    for prefix in ("decode", "inference", "model-checks"):
        if name.startswith(prefix):
            return prefix
    return "other Python threads"


def categorise(stack: str) -> str:
    """The category of one sampled stack (frames leaf last, ``;``-separated)."""
    frames = stack.split(";")[::-1]
    for frame in frames:
        for category, markers in CATEGORIES:
            if any(m in frame for m in markers):
                return category
    return "other"


def parse_raw(path: Path) -> dict[str, collections.Counter[str]]:
    """``py-spy record --format raw --threads`` output → Python thread name → Counter of categories."""
    per_thread: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        head, _, rest = stack.partition(";")
        name = head.partition("): ")[2] or head  # the first frame is the thread: 'thread (1234): decode_0'
        name = name.rsplit("_", 1)[0] if name.startswith(("decode_", "ThreadPoolExecutor")) else name
        per_thread[name][categorise(rest)] += int(count)
    return per_thread


def metric_sum(url: str, name: str) -> float:
    """Sum of one Prometheus metric's samples on ``url``/metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def profile(pid: int, url: str, args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """Load ``url`` for ``args.duration`` seconds and measure ``pid``'s threads over that window."""
    load = {"protocol": args.protocol, "concurrency": args.concurrency, "size": args.size}
    run_load(url, duration_s=args.warmup, **load)  # warm
    names = python_threads(pid)
    raw = out_dir / "py-spy.raw"
    spy = subprocess.Popen(
        [PY_SPY, "record", "--pid", str(pid), "--duration", str(int(args.duration)), "--rate", str(args.rate),
         "--format", "raw", "--threads", "--idle", "--nonblocking", "--output", str(raw)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    infer_s0 = metric_sum(url, "classifier_inference_seconds_sum")
    batched0 = metric_sum(url, "classifier_batch_size_sum")
    batches0 = metric_sum(url, "classifier_batch_size_count")
    cpu0, host0, t0 = thread_cpu(pid), host_busy_s(), time.perf_counter()
    result = run_load(url, duration_s=args.duration, **load)
    wall = time.perf_counter() - t0
    cpu1, host1 = thread_cpu(pid), host_busy_s()
    spy.wait(timeout=args.duration + 60)
    images = result["img_per_s"] * wall
    groups: dict[str, float] = collections.Counter()
    for tid, c in cpu1.items():
        groups[group_of(names.get(tid))] += c - cpu0.get(tid, 0.0)
    server_cpu = sum(groups.values())
    batched = metric_sum(url, "classifier_batch_size_sum") - batched0
    report: dict[str, Any] = {
        "img_per_s": round(result["img_per_s"], 2),
        "latency_ms": result["latency_ms"],
        "errors": result["errors"],
        "wall_s": round(wall, 2),
        "server_cores": round(server_cpu / wall, 3),
        "others_cores": round((host1 - host0 - server_cpu) / wall - result["client_cpu"]["cores_used"], 3),
        "cpu_ms_per_image": {g: round(1000 * s / images, 2) for g, s in sorted(groups.items())},
        "cpu_ms_per_image_total": round(1000 * server_cpu / images, 2),
        "mean_batch": round(batched / max(1.0, metric_sum(url, "classifier_batch_size_count") - batches0), 2),
        "forward_wall_ms_per_image": round(1000 * (metric_sum(url, "classifier_inference_seconds_sum") - infer_s0)
                                           / max(1.0, batched), 2),
    }  # fmt: skip
    if raw.exists():
        samples = parse_raw(raw)
        report["py_spy_shares"] = {
            t: {k: round(v / sum(c.values()), 3) for k, v in c.most_common()} for t, c in sorted(samples.items())
        }
    else:
        report["py_spy_error"] = spy.stderr.read().decode()[-500:] if spy.stderr else "no output"
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.thread_profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--model_dir", type=Path, default=Path("bench/results/models/resnet50-random"))
    p.add_argument("--pid", type=int, default=0, help="profile this running server instead of starting one")
    p.add_argument("--url", default="", help="with --pid: its base URL")
    p.add_argument("--server_setting", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--protocol", default="v2-binary")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--size", default="640x480")
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        pid, url = args.pid, args.url
        if not pid:
            port = free_port()
            settings = dict(kv.split("=", 1) for kv in args.server_setting)
            settings.setdefault("cache_dir", str(Path(tmp) / "cache"))
            server = ServerProcess(ours_argv(args.model_dir, port, **settings), port, Path(tmp) / "server.log")
            server.start()
            assert server.proc is not None
            pid, url = server.proc.pid, server.url
        try:
            report = profile(pid, url, args, Path(tmp))
        finally:
            if server is not None:
                server.stop()
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
