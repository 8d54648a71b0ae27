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
With ``--jsonl`` every cold start and measured run is also appended to a JSON-lines file as soon as it
is measured, so a run cut off by a time limit keeps what it measured. Each server's own account of what
it runs (backend, device, dtype from ``classifier_model_info``) is recorded at start and at the end;
with ``--expect_device cuda`` a server that is not on the GPU is reported loudly and the exit status is 3.

Usage::

    python -m bench.serve_bench --out bench/results/serve_bench.json --md bench/results/serve_bench.md
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.loadgen import run_load
from bench.payloads import parse_size, sample_jpegs
from bench.procs import (
    ServerProcess,
    free_port,
    host_busy_s,
    machine_info,
    naive_argv,
    ours_argv,
    served_info,
    timed_post,
)
from bench.protocols import build_request
from bench.report import append_jsonl, device_warnings, load_ceiling, render_markdown
from bench.rounds import RAMP, combine, failed_runs, paired_ratio, saturating_concurrency, summarize_ramp

DEFAULT_MODEL_DIR = Path("bench/results/models/resnet50-random")


def ensure_model(model_dir: Path | None) -> tuple[Path, bool]:
    """The model to serve: ``model_dir`` as given, else a full-size random ResNet-50 built once."""
    if model_dir is not None:
        return model_dir, False
    if not (DEFAULT_MODEL_DIR / "config.json").exists():
        from models.random_resnet import build_random_resnet

        build_random_resnet(DEFAULT_MODEL_DIR, size="full")
    return DEFAULT_MODEL_DIR, True


def describe_model(model_dir: Path, built: bool) -> str:
    """What the report says the model is: the benchmark's own random ResNet-50, or what the given
    directory's ``config.json`` names (its architecture and the input it is fed)."""
    if built:
        return "random-weight ResNet-50 (ResNetConfig defaults), 224x224"
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as e:
        return f"{model_dir.name} (config.json unreadable: {e})"
    arch = ", ".join(config.get("architectures") or []) or config.get("model_type") or "unknown architecture"
    try:
        from predictor.preprocess import PreprocessSpec

        h, w = PreprocessSpec.from_model_dir(model_dir).crop_hw
        return f"{model_dir.name}: {arch}, {h}x{w}"
    except Exception as e:  # a report line must not fail the run
        return f"{model_dir.name}: {arch} (input size unknown: {e})"


def measure(
    server: ServerProcess, name: str, bench_servers: list[ServerProcess], jsonl: Path | None = None, **load: Any
) -> dict[str, Any]:
    """One load run against ``server``, with the server's CPU and the rest of the host's load (appended to
    ``jsonl`` at once when given)."""
    cpu0 = {id(b): b.cpu_s() for b in bench_servers}
    host0, me0, t0 = host_busy_s(), time.process_time(), time.perf_counter()
    r = run_load(server.url, **load)
    wall = time.perf_counter() - t0
    ours_cpu = {id(b): b.cpu_s() - cpu0[id(b)] for b in bench_servers}
    server_cpu = ours_cpu[id(server)]
    mine = time.process_time() - me0
    r["run"] = name
    cores = server_cpu / wall  # warm-up included: steady load, so cores x time / images holds
    r["server_cpu"] = {
        "cores_used": round(cores, 3),
        "cpu_ms_per_image": round(1000.0 * cores / r["img_per_s"], 2) if r["img_per_s"] else None,
    }
    # Busy CPU of the host that no benchmark process used: the other tenants of the machine.
    others = host_busy_s() - host0 - sum(ours_cpu.values()) - mine
    r["others_cores_busy"] = round(max(0.0, others) / wall, 2)
    r["server_info"] = served_info(server.port)
    print(
        f"  {name}: {r['img_per_s']} img/s, p50 {r['latency_ms']['p50']} ms, p99 {r['latency_ms']['p99']} ms,"
        f" errors {r['errors']}, 503 {r['rejected_503']['count']}, others busy {r['others_cores_busy']} cores,"
        f" on {r['server_info']}",
        file=sys.stderr,
        flush=True,
    )
    append_jsonl(jsonl, {"stage": "serve_bench", "kind": "run", **r})
    return r


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """``"bf16:precision=bf16,max_batch_size=16"`` → ``("bf16", {"precision": "bf16", ...})``."""
    name, _, rest = text.partition(":")
    try:
        settings = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
    except ValueError:
        raise argparse.ArgumentTypeError(f"variant {text!r} is not NAME:KEY=VALUE[,KEY=VALUE]") from None
    if not name.isidentifier() or not settings:
        raise argparse.ArgumentTypeError(f"variant {text!r} is not NAME:KEY=VALUE[,KEY=VALUE]")
    return name, settings


def start_timed(
    server: ServerProcess, res: dict[str, Any], key: str, size: tuple[int, int], jsonl: Path | None = None
) -> None:
    """Start ``server``; record seconds to ready, the latency of the first request after ready, and what
    the server says it runs."""
    server.start()
    record_started(server, res, key, size, jsonl)


def record_started(
    server: ServerProcess, res: dict[str, Any], key: str, size: tuple[int, int], jsonl: Path | None
) -> None:
    """After ``server`` is ready: the first request's latency and the server's info, recorded at once."""
    res["cold_start_s"][key] = round(server.ready_s or 0.0, 2)
    req = build_request("classify", [sample_jpegs(size)[0]])
    status, seconds = timed_post(server.port, req.path, req.body, dict(req.headers))
    res["first_request_s"][key] = round(seconds, 3) if status == 200 else f"status {status}"
    info = served_info(server.port)
    res.setdefault("servers", {}).setdefault(key, {})["at_start"] = info
    append_jsonl(
        jsonl,
        {"stage": "serve_bench", "kind": "cold_start", "server": key, "ready_s": res["cold_start_s"][key],
         "first_request_s": res["first_request_s"][key], "server_info": info},
    )  # fmt: skip


def _start_all(
    a: argparse.Namespace, model_dir: Path, extra: dict[str, str], res: dict[str, Any], stack: ExitStack
) -> dict[str, ServerProcess]:
    """Start every server of the comparison, one after the other (each start timed on a quiet host)."""
    logs = a.out.parent / "logs"
    plan = [("ours", ours_argv, {**extra}, "ours_first")]
    if not a.skip_batch1:
        plan.append(("ours_batch1", ours_argv, {**extra, "max_batch_size": 1}, "ours_batch1"))
    for name, settings in a.variant:
        plan.append((f"ours_{name}", ours_argv, {**extra, **settings}, f"ours_{name}"))
    if not a.skip_naive:
        plan.append(("naive", lambda m, p, **_: naive_argv(m, p), {}, "naive"))
    servers, keys = {}, {}
    for name, argv_fn, settings, key in plan:
        port = free_port()
        servers[name] = stack.enter_context(
            ServerProcess(argv_fn(model_dir, port, **settings), port, logs / f"{name}.log")
        )
        keys[name] = key
        res.setdefault("servers", {})[key] = {"settings": settings}
    if a.parallel_start:  # all processes at once, then wait for each: cold starts overlap (said in the report)
        for server in servers.values():
            server.launch()
        for name, server in servers.items():
            server.wait_ready()
            record_started(server, res, keys[name], a.size, a.jsonl)
    else:
        for name, server in servers.items():
            start_timed(server, res, keys[name], a.size, a.jsonl)
    return servers


def run_suite(a: argparse.Namespace) -> dict[str, Any]:
    """Run every step; returns the whole result (also written by :func:`main`)."""
    model_dir, built = ensure_model(a.model_dir)
    if a.fresh_cache:
        shutil.rmtree(model_dir / ".cache", ignore_errors=True)
    run_s = a.duration / a.rounds
    common = {"size": a.size, "duration_s": run_s, "warmup_s": a.warmup, "timeout_s": a.timeout}
    extra = dict(kv.split("=", 1) for kv in a.server_setting)
    res: dict[str, Any] = {
        "machine": machine_info(),
        "model": {"dir": str(model_dir), "what": describe_model(model_dir, built)},
        "load": {
            "concurrency": a.concurrency,
            "size": f"{a.size[0]}x{a.size[1]}",
            "duration_s": a.duration,
            "rounds": a.rounds,
        },
        "server_settings": extra,
        "cold_start_s": {},
        "first_request_s": {},
        "runs": [],
        "ceiling": load_ceiling(a.raw_probe_json),
    }
    configs = [(f"ours/{p}", "ours", p) for p in a.protocols]
    configs += [("ours_batch1/classify", "ours_batch1", "classify")]
    configs += [(f"ours_{name}/classify", f"ours_{name}", "classify") for name, _ in a.variant]
    configs += [("naive/classify", "naive", "classify")]
    rounds: dict[str, list[dict[str, Any]]] = {}
    with ExitStack() as stack:
        servers = _start_all(a, model_dir, extra, res, stack)
        every = list(servers.values())
        for r in range(a.rounds):
            print(f"round {r + 1}/{a.rounds}", file=sys.stderr, flush=True)
            for name, server, proto in configs:
                if server in servers:
                    rounds.setdefault(name, []).append(
                        measure(servers[server], name, every, a.jsonl, protocol=proto, concurrency=a.concurrency,
                                **common)
                    )  # fmt: skip
        ramp = [] if a.skip_ramp else _ramp(a, servers["ours"], every, common)
        res["multi_image"] = _multi_image(a, servers, every, common)
        for name, server in servers.items():
            key = "ours_first" if name == "ours" else name
            res["servers"].setdefault(key, {})["at_end"] = served_info(server.port)
    res["runs"] = [combine(name, rs) for name, rs in rounds.items()] + res["multi_image"]
    res["paired_ratios"] = {
        "ours_vs_naive": paired_ratio(rounds, "ours/classify", "naive/classify"),
        "batching_gain": paired_ratio(rounds, "ours/classify", "ours_batch1/classify"),
        **{f"ours_vs_{name}": paired_ratio(rounds, "ours/classify", f"ours_{name}/classify") for name, _ in a.variant},
    }
    ours = next(r for r in res["runs"] if r["run"].startswith("ours/"))  # the first protocol measured
    if ramp:
        res["ramp"] = summarize_ramp(ramp)
        # The ramp's short steps are at the mercy of the neighbours; the saturated rate for the overload
        # comes from the interleaved rounds at the benchmark concurrency (which saturates when the ramp
        # says so: img/s flat from there on), and is the larger of the two.
        c_ramp = saturating_concurrency(res["ramp"])
        sat_req_s = max(ours["req_per_s"], max(r["img_per_s"] for r in res["ramp"]))  # one image per request
    else:
        c_ramp, sat_req_s = a.concurrency, ours["req_per_s"]
    c_sat = max(c_ramp, a.concurrency)
    res["saturation"] = {"ramp_concurrency": c_ramp, "concurrency": c_sat, "req_per_s": sat_req_s}
    if a.overload_duration > 0:
        run_overload(a, model_dir, extra, res, common, c_sat, sat_req_s)
    return res


def _ramp(a: argparse.Namespace, ours: ServerProcess, every: list[ServerProcess], common: dict[str, Any]) -> list:
    print("concurrency ramp (up and down)", file=sys.stderr, flush=True)
    ramp_load = {**common, "duration_s": a.ramp_duration}
    return [measure(ours, f"ramp/c{c}", every, a.jsonl, concurrency=c, **ramp_load) for c in [*RAMP, *RAMP[::-1]]]


def _multi_image(
    a: argparse.Namespace, servers: dict[str, ServerProcess], every: list[ServerProcess], common: dict[str, Any]
) -> list[dict[str, Any]]:
    """``--multi_image N``: ``/classify`` with N images per request against one server (per-request HTTP
    cost vs the device), beside the same server's single-image run of the rounds."""
    if not a.multi_image:
        return []
    name = a.multi_image_server
    if name not in servers:
        raise SystemExit(f"--multi_image_server {name!r} is not one of the servers: {', '.join(servers)}")
    c = a.multi_image_concurrency or max(1, a.concurrency // a.multi_image)
    print(f"{name}: {a.multi_image} images per request, concurrency {c}", file=sys.stderr, flush=True)
    r = measure(
        servers[name], f"{name}/classify x{a.multi_image}", every, a.jsonl, concurrency=c,
        images_per_request=a.multi_image, **common,
    )  # fmt: skip
    return [combine(r["run"], [r])]


def run_overload(
    a: argparse.Namespace, model_dir: Path, extra: dict[str, str], res: dict[str, Any],
    common: dict[str, Any], c_sat: int, sat_req_s: float,
) -> None:  # fmt: skip
    """Twice the saturating load against a small queue: closed loop, then open loop."""
    print("overload", file=sys.stderr, flush=True)
    queue = a.overload_queue_images or c_sat
    load = {**common, "duration_s": a.overload_duration}
    res["overload"] = {"max_queue_images": queue, "closed_concurrency": 2 * c_sat,
                       "open_rate_per_s": round(2 * sat_req_s, 1)}  # fmt: skip
    port = free_port()
    argv = ours_argv(model_dir, port, **{**extra, "max_queue_images": queue})
    with ServerProcess(argv, port, a.out.parent / "logs" / "ours_overload.log") as s:
        start_timed(s, res, "ours_cached", a.size, a.jsonl)
        res["runs"].append(measure(s, "overload/closed", [s], a.jsonl, concurrency=2 * c_sat, **load))
        res["runs"].append(
            measure(s, "overload/open", [s], a.jsonl, concurrency=a.open_loop_max_outstanding,
                    rate_per_s=2 * sat_req_s, **load)
        )  # fmt: skip
        res["servers"]["ours_cached"]["at_end"] = served_info(s.port)


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
    p.add_argument("--duration", type=float, default=30.0, help="measured seconds per configuration (all rounds)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds the duration is split into")
    p.add_argument("--ramp_duration", type=float, default=5.0, help="seconds per ramp step (each step twice)")
    p.add_argument("--skip_ramp", action="store_true", help="no concurrency ramp (the saturation is then the rounds')")
    p.add_argument("--overload_duration", type=float, default=20.0, help="seconds per overload run; 0 = none")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of load before each measurement")
    p.add_argument("--timeout", type=float, default=30.0, help="client timeout per request, seconds")
    p.add_argument("--protocols", type=lambda s: s.split(","), default=["classify", "v2-binary", "v2-json", "v1"])
    p.add_argument(
        "--overload_queue_images",
        type=int,
        default=0,
        help="0 = the saturating concurrency (the ramp's, at least --concurrency)",
    )
    p.add_argument("--open_loop_max_outstanding", type=int, default=256)
    p.add_argument(
        "--server_setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra setting for our server (repeatable), e.g. backend=torch",
    )
    p.add_argument("--skip_naive", action="store_true")
    p.add_argument("--parallel_start", action="store_true", help="start every server at once (cold starts overlap)")
    p.add_argument("--multi_image", type=int, default=0, help="also measure N images per request (0 = no)")
    p.add_argument("--multi_image_server", default="ours", help="the server for --multi_image (e.g. ours_fp16)")
    p.add_argument("--multi_image_concurrency", type=int, default=0, help="0 = --concurrency / N")
    p.add_argument("--expect_device", default="", help="e.g. cuda: warn loudly and exit 3 if a server is elsewhere")
    p.add_argument("--jsonl", type=Path, default=None, help="append every measured row here as it is measured")
    p.add_argument("--skip_batch1", action="store_true")
    p.add_argument(
        "--variant", type=parse_variant, action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]",
        help="another configuration of our server measured on /classify in the same rounds (repeatable), "
        "e.g. bf16:precision=bf16",
    )  # fmt: skip
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
    res["expect_device"] = a.expect_device or None
    md = render_markdown(res)
    a.out.write_text(json.dumps(res, indent=2) + "\n")
    a.md.parent.mkdir(parents=True, exist_ok=True)
    a.md.write_text(md)
    print(md)
    wrong = device_warnings(res)
    for line in wrong:
        print(line, file=sys.stderr)
    broken = failed_runs(res)
    for line in broken:
        print(line, file=sys.stderr)
    return 3 if wrong else (4 if broken else 0)


if __name__ == "__main__":
    sys.exit(main())
