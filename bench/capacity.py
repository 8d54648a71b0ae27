"""Capacity of one pod on this machine, for the planner (``python -m predictor plan --capacity ...``).

Measures one real server (``python -m predictor serve``, the model being planned for) and writes
``capacity.json``: the machine, the model and engine the server chose, its settings, and

* cold start: process start to ready with an empty cache (as a fresh pod: export and precision check
  included, both before ready) and with the cache of the first start;
* closed-loop sweep (concurrency 1..64): throughput, latency, and from the server's own metrics the mean
  batch size, the mean forward time of a batch and the time images waited in the batcher, and the server's
  CPU per image: what the planner's pod model is fitted on (:func:`classifier_plan.capacity.fit_pod_model`);
* open-loop points at 50/80/100/130 % of the saturated throughput: p50/p95 and the 503 share;
* the raw forward time per batch size of the same backend and precision, in-process (no HTTP, no decode).

Usage::

    make bench-capacity                               # = python -m bench.capacity
    python -m bench.capacity --model_dir models/efficientnet-lite0 --out bench/results/capacity.json
    python -m bench.capacity --duration 4 --concurrency 1,4,16 --rates 0.5,1.3   # a quick look

On a GPU machine the same command measures the GPU pod (device ``auto`` picks CUDA); ``bench/gpu_suite.sh``
can call it with ``--out $OUT/capacity.json``. Numbers on a shared machine are noisy: the result records
the load average and how many cores other tenants used during each point (``serve_bench.measure``). A
point disturbed (others above ``--max_others_busy`` cores) in every one of its tries stops the run with exit
code 3 and writes nothing; with ``--allow_busy`` the profile is written marked ``"trusted": false``, which
``python -m predictor plan`` refuses unless given ``--allow-untrusted-capacity``.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.payloads import parse_size
from bench.procs import REPO_ROOT, ServerProcess, free_port, machine_info, ours_argv

DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "efficientnet-lite0"
DEFAULT_CONCURRENCY = (1, 4, 16, 64)
DEFAULT_RATES = (0.1, 0.3, 0.5, 0.7, 0.85, 1.0, 1.15, 1.3)
SERVER_METRICS = ("batch_size", "inference_seconds", "queue_wait_seconds", "preprocess_seconds")
_LOADED = re.compile(r"loaded model .* backend=(\S+) device=(\S+) dtype=(\S+) input=(\d+)x(\d+)")


def scrape(url: str) -> dict[str, float]:
    """``_sum`` and ``_count`` of the server's batch, forward, batcher-wait and decode histograms."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=10).text
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            for m in SERVER_METRICS:
                if s.name in (f"classifier_{m}_sum", f"classifier_{m}_count"):
                    out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def _mean(after: dict[str, float], before: dict[str, float], metric: str) -> float | None:
    n = after.get(f"classifier_{metric}_count", 0.0) - before.get(f"classifier_{metric}_count", 0.0)
    if n <= 0:
        return None
    return (after[f"classifier_{metric}_sum"] - before.get(f"classifier_{metric}_sum", 0.0)) / n


class BusyMachine(Exception):
    """Other tenants kept the machine busy through every try of a point: its numbers would be theirs."""

    def __init__(self, point: str, others: float, max_others: float, attempts: int) -> None:
        self.reason = f"{point}: other tenants used {others:g} cores (limit {max_others:g}) in each of {attempts} tries"
        super().__init__(self.reason)


def quiet_point(
    server: ServerProcess, name: str, retries: int, max_others: float, allow_busy: bool, **load: Any
) -> dict[str, Any]:
    """:func:`load_point`, repeated (up to ``retries`` more times) while other tenants used more than
    ``max_others`` cores during it; the least disturbed run is kept and says how many runs it took.

    Raises:
        BusyMachine: every try was disturbed (unless ``allow_busy``: the point is then kept and marked).
    """
    best: dict[str, Any] | None = None
    for attempt in range(retries + 1):
        r = load_point(server, name if not attempt else f"{name} (again: others were busy)", **load)
        r["attempts"] = attempt + 1
        if best is None or r["others_cores_busy"] < best["others_cores_busy"]:
            best = r
        if r["others_cores_busy"] <= max_others:
            return best
    assert best is not None
    busy = BusyMachine(name, best["others_cores_busy"], max_others, retries + 1)
    if not allow_busy:
        raise busy
    best["disturbed"] = busy.reason
    return best


def load_point(server: ServerProcess, name: str, **load: Any) -> dict[str, Any]:
    """One load run with the server's own view of it: mean batch, forward ms, batcher wait, decode ms."""
    from bench.serve_bench import measure

    before = scrape(server.url)
    r = measure(server, name, [server], **load)
    after = scrape(server.url)
    ms = {k: _mean(after, before, k) for k in SERVER_METRICS}
    r["server"] = {
        "mean_batch_size": None if ms["batch_size"] is None else round(ms["batch_size"], 3),
        "mean_forward_ms": None if ms["inference_seconds"] is None else round(1000 * ms["inference_seconds"], 3),
        "mean_batcher_wait_ms": None if ms["queue_wait_seconds"] is None else round(1000 * ms["queue_wait_seconds"], 3),
        "mean_decode_ms": None if ms["preprocess_seconds"] is None else round(1000 * ms["preprocess_seconds"], 3),
    }
    return r


def _compact(r: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "img_per_s",
        "req_per_s",
        "requests",
        "latency_ms",
        "errors",
        "timeouts",
        "server",
        "duration_s",
        "attempts",
    )
    out = {k: r[k] for k in keep}
    out["rejected_503_share"] = r["rejected_503"]["share"]
    out["server_cpu_ms_per_image"] = r["server_cpu"]["cpu_ms_per_image"]
    out["others_cores_busy"] = r["others_cores_busy"]
    out["mean_latency_ms"] = r["latency_ms"]["mean"]
    if "disturbed" in r:
        out["disturbed"] = r["disturbed"]
    return out


def start_server(model_dir: Path, cache: Path, log: Path, settings: dict[str, str]) -> ServerProcess:
    """Our server on a free port, ready (model loaded and warmed up)."""
    port = free_port()
    srv = ServerProcess(ours_argv(model_dir, port, cache_dir=cache, **settings), port, log)
    srv.start(ready_path="/v2/models/classifier/ready", timeout_s=600)
    return srv


def engine_of(log: Path) -> dict[str, Any]:
    """Backend, device, dtype and input size the server logged at load (decided before ready, never switched)."""
    text = log.read_text(errors="replace")
    m = _LOADED.search(text)
    if m is None:
        raise RuntimeError(f"no 'loaded model' line in {log}")
    backend, device, dtype = m.group(1), m.group(2), m.group(3)
    return {"backend": backend, "device": device, "dtype": dtype, "input_hw": [int(m.group(4)), int(m.group(5))]}


def raw_forward_ms(model_dir: Path, engine: dict[str, Any], batch_sizes: list[int], seconds: float) -> dict[str, float]:
    """Forward ms per batch size of the server's backend/precision, in-process (``bench.raw_probe``)."""
    import numpy as np

    from bench.raw_probe import ProbeConfig, make_engine, measure
    from predictor.config import Settings

    precision = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(engine["dtype"], engine["dtype"])
    cfg = ProbeConfig(engine["backend"], precision, engine["device"])
    threads = Settings().usable_cores()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="capacity-raw-") as cache:
        eng = make_engine(cfg, model_dir, Path(cache), threads, max(batch_sizes))
        try:
            return {str(n): round(1000.0 * n / measure(eng, n, seconds, rng), 3) for n in batch_sizes}
        finally:
            eng.close()


def measure_pod(a: argparse.Namespace) -> dict[str, Any]:
    """Cold starts, the closed-loop sweep, the open-loop points and the raw forward times."""
    settings = dict(kv.split("=", 1) for kv in a.setting)
    load = {"size": a.size, "duration_s": a.duration, "warmup_s": a.warmup, "protocol": "classify"}
    res: dict[str, Any] = {"closed_loop": [], "open_loop": []}
    with tempfile.TemporaryDirectory(prefix="capacity-") as tmp:
        work = Path(tmp)
        log = work / "first.log"
        srv = start_server(a.model_dir, work / "cache", log, settings)
        first = srv.ready_s
        try:
            res["engine"] = engine_of(log)
            quiet = {"retries": a.retries, "max_others": a.max_others_busy, "allow_busy": a.allow_busy}
            for c in a.concurrency:
                r = quiet_point(srv, f"closed c={c}", concurrency=c, **quiet, **load)
                res["closed_loop"].append({"concurrency": c, **_compact(r)})
            saturated = max(p["req_per_s"] for p in res["closed_loop"])
            for f in a.rates:
                rate = round(f * saturated, 2)
                r = quiet_point(srv, f"open {f:.0%}", concurrency=4096, rate_per_s=rate, **quiet, **load)
                res["open_loop"].append({"fraction": f, "rate_per_s": rate, **_compact(r)})
        finally:
            srv.stop()
        second = start_server(a.model_dir, work / "cache", work / "cached.log", settings)
        second.stop()
        res["cold_start_s"] = {
            "first": round(first or 0.0, 2),
            "cached": round(second.ready_s or 0.0, 2),
        }
        res["saturated_req_per_s"] = saturated
    res["raw_forward_ms"] = raw_forward_ms(a.model_dir, res["engine"], a.batch_sizes, a.raw_seconds)
    return res


def gpu_of(engine: dict[str, Any]) -> dict[str, Any] | None:
    """The GPU the server ran on (name as CUDA reports it), or None on a CPU."""
    if engine["device"] != "cuda":
        return None
    import torch

    return {"name": torch.cuda.get_device_name(0), "count": 1}


def model_bytes(model_dir: Path) -> int:
    """Size of the model directory's files (what a storage initializer downloads)."""
    return sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file() and ".cache" not in p.parts)


def build_result(a: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """Run the measurement and assemble ``capacity.json`` with the fitted pod model."""
    from classifier_plan.capacity import fit_pod_model
    from predictor.config import Settings

    machine = machine_info()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    measured = measure_pod(a)
    defaults = Settings(**dict(kv.split("=", 1) for kv in a.setting))
    settings = {
        k: getattr(defaults, k)
        for k in ("max_batch_size", "max_batch_delay_ms", "max_queue_images", "request_timeout_ms", "decode_threads")
    }
    settings["cpu_threads"] = defaults.cpu_threads
    result: dict[str, Any] = {
        "schema": 1,
        "kind": "measured",
        "source": "bench/capacity.py on this machine",
        "date": started,
        "command": " ".join(["python -m bench.capacity", *argv]),
        "machine": {**machine, "load_average_1m_end": round(__import__("os").getloadavg()[0], 2)},
        "model": {
            "dir": str(a.model_dir),
            "name": a.model_dir.name,
            "bytes": model_bytes(a.model_dir),
            **measured["engine"],
        },
        "gpu": gpu_of(measured["engine"]),
        "settings": settings,
        "payload": {"size": f"{a.size[0]}x{a.size[1]}", "images_per_request": 1, "protocol": "classify"},
        "measurements": {k: v for k, v in measured.items() if k != "engine"},
    }
    disturbed = [p["disturbed"] for k in ("closed_loop", "open_loop") for p in measured[k] if "disturbed" in p]
    if disturbed:
        result["trusted"] = False
        result["untrusted_reasons"] = disturbed
    result["pod_model"] = fit_pod_model(result).model_dump()
    from classifier_plan.capacity import CapacityProfile
    from classifier_plan.podcurve import calibrate_jitter

    calibrated = calibrate_jitter(CapacityProfile.model_validate(result))
    result["pod_model"] = calibrated.pod_model.model_dump()
    return result


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__.split("\n\n")[0])
    p.add_argument("--model_dir", type=Path, default=DEFAULT_MODEL_DIR, help="model to measure (default: embedded)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "capacity.json")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per load point")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each measurement")
    p.add_argument("--size", type=parse_size, default=(640, 480), help="JPEG size WIDTHxHEIGHT")
    p.add_argument("--concurrency", type=_ints, default=list(DEFAULT_CONCURRENCY), help="closed-loop sweep")
    p.add_argument("--rates", type=_floats, default=list(DEFAULT_RATES), help="open-loop fractions of saturation")
    p.add_argument("--batch_sizes", type=_ints, default=[1, 2, 4, 8, 16, 32, 64], help="raw forward sizes")
    p.add_argument("--raw_seconds", type=float, default=1.5, help="seconds per raw forward point")
    p.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE", help="server setting (repeatable)")
    p.add_argument("--retries", type=int, default=3, help="repeat a point while other tenants were busy")
    p.add_argument("--max_others_busy", type=float, default=0.25, help="cores others may use during a kept point")
    p.add_argument(
        "--allow_busy",
        action="store_true",
        help="keep points disturbed in every try and write the profile marked untrusted (plan then refuses it "
        "unless --allow-untrusted-capacity) instead of stopping",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Measure and write the capacity profile; prints a one-line summary per point to stderr."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # SIGTERM unwinds like Ctrl-C, so the server this started is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    a = _parser().parse_args(argv)
    if not (a.model_dir / "config.json").exists():
        print(f"--model_dir {a.model_dir}: no config.json (run `make model`)", file=sys.stderr)
        return 2
    bad = [s for s in a.setting if "=" not in s]
    if bad or not a.concurrency or not a.rates:
        print(f"--setting takes KEY=VALUE (got {bad}); --concurrency and --rates must not be empty", file=sys.stderr)
        return 2
    try:
        result = build_result(a, argv)
    except BusyMachine as e:
        print(
            f"capacity: REFUSED, the machine is busy: {e.reason}. A pod measured while others take the CPU is "
            f"slower than it is, and a plan built on it buys too many pods. Nothing written to {a.out}. "
            "Measure on a quiet machine, or raise --retries / --max_others_busy, or pass --allow_busy to write "
            "a profile marked untrusted.",
            file=sys.stderr,
        )
        return 3
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(a.out)
    pm = result["pod_model"]
    print(f"capacity: {pm['capacity_img_per_s']:.1f} img/s per pod; wrote {a.out}", file=sys.stderr)
    if not result.get("trusted", True):
        print(
            "capacity: WARNING: profile marked UNTRUSTED (other tenants were busy): "
            + "; ".join(result["untrusted_reasons"]),
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
