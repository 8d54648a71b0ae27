"""Overload sweep: what one pod serves, and how it refuses, from a normal load to ten times its capacity.

Servers (``--server NAME=DIR``, repeatable: each a source tree, e.g. the merge base exported to a folder,
and this tree) run at once as child processes with ``make run``'s settings (the embedded model, defaults:
``max_queue_images=256``), and every step runs against each server in turn, so that the versions are
compared minutes apart on the same machine. Per protocol (``/classify``, v2 binary, v2 JSON; 640x480
JPEGs):

* closed loop, c = 16 ... 400 clients that send their next request as soon as an answer comes (503s
  included: clients that ignore ``Retry-After``, the worst case);
* open loop at 0.5x ... 10x of capacity (requests started on a fixed schedule, latency counted from the
  scheduled time); capacity = the first server's closed-loop req/s at the smallest c;
* ``--polite`` protocols: the closed loop again with clients that wait ``Retry-After`` plus jitter after
  a 503, as ``python -m predictor.client`` does.

Each step reports goodput (images answered 200 per second), accepted p50/p99 (as the client saw them, and
the server's own part of them: its ``Server-Timing``, from the app's start to the answer's, and of that the time
its images were counted in the queue, admitted to inferred: what the queue-wait budget bounds), the 503 share and its
p50/p99, the median ``Retry-After``, timeouts and other errors, the server's cores, an estimate of its CPU
per rejection (its CPU beyond what the step's answered images cost at the smallest c, per 503), and the
lines its log got per second. A probe measures the CPU of one rejection directly: a server whose one-image
queue is held full by a request waiting for its batch, sent nothing but requests it must refuse.

Pinned mode (``--pin_server 0 --pin_client 1``): each server runs under ``taskset`` on its cores and the
load generator on the others, so that the client cannot take the server's CPU (the server sees one core:
one decode thread, one inference thread). A targets table follows: goodput at the largest c against the
smallest, accepted p99 against the queue-wait budget, 503 p99, timeouts (issue 23).

Usage::

    python -m bench.overload --server before=/tmp/before --server after=. --out bench/results/overload.json
    python -m bench.overload --pin_server 0 --pin_client 1 --protocols classify --open "" --polite "" \
        --probe_duration 0 --duration 10
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.loadgen import run_load
from bench.payloads import parse_size, sample_jpegs
from bench.procs import (
    REPO_ROOT,
    ServerProcess,
    free_port,
    host_busy_s,
    machine_info,
    ours_argv,
    renice_thread,
    timed_post,
)
from bench.protocols import build_request
from bench.report import append_jsonl

DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "efficientnet-lite0"
CLOSED = (16, 64, 256, 400)
OPEN = (0.5, 1.0, 2.0, 5.0, 10.0)
PROTOCOLS = ("classify", "v2-binary", "v2-json")


class Target:
    """One server under test: a name, its source tree, its process and its log."""

    def __init__(self, name: str, tree: Path, server: ServerProcess) -> None:
        self.name, self.tree, self.server = name, tree, server

    def log_lines(self) -> int:
        """Lines the server's log has so far."""
        path = self.server.log_path
        return path.read_bytes().count(b"\n") if path and path.exists() else 0


def parse_server(text: str) -> tuple[str, Path]:
    """``"before=/tmp/before"`` → ``("before", Path("/tmp/before"))``; the tree must hold ``predictor/``."""
    name, sep, tree = text.partition("=")
    path = Path(tree).resolve()
    if not sep or not name.isidentifier() or not (path / "predictor" / "__main__.py").exists():
        raise argparse.ArgumentTypeError(f"--server {text!r}: want NAME=DIR, DIR a source tree with predictor/")
    return name, path


def step(target: Target, jsonl: Path | None, label: dict[str, Any], **load: Any) -> dict[str, Any]:
    """One load run against ``target``: the load generator's result plus server CPU and log lines."""
    server = target.server
    cpu0, lines0, t0 = server.cpu_s(), target.log_lines(), time.perf_counter()
    host0, me0 = host_busy_s(), time.process_time()
    r = run_load(server.url, **load)
    wall = time.perf_counter() - t0
    server_cpu = server.cpu_s() - cpu0
    r.update(label, server=target.name, server_cores=round(server_cpu / wall, 3))
    r["server_cpu_s"] = round(server_cpu, 3)
    r["log_lines_per_s"] = round((target.log_lines() - lines0) / wall, 2)
    # Busy CPU of the host that neither the server nor this load generator used: the machine's other tenants.
    others = host_busy_s() - host0 - server_cpu - (time.process_time() - me0)
    r["others_cores_busy"] = round(max(0.0, others) / wall, 2)
    rej = r["rejected_503"]
    print(
        f"  {target.name} {label['protocol']} {label['loop']} {label['load']}: {r['img_per_s']} img/s, "
        f"p99 {r['latency_ms']['p99']} ms, 503 {rej['share']:.0%} p99 {rej['p99_ms']} ms, "
        f"timeouts {r['timeouts']}, errors {r['error_count'] - rej['count']}, cores {r['server_cores']}, "
        f"log {r['log_lines_per_s']}/s, others busy {r['others_cores_busy']} cores",
        file=sys.stderr,
        flush=True,
    )
    append_jsonl(jsonl, {"stage": "overload", **r})
    time.sleep(1.0)  # the last answers' work is done; the next step starts on a quiet server
    return r


def sweep(a: argparse.Namespace, targets: list[Target]) -> list[dict[str, Any]]:
    """Every step of every protocol, each against every server in turn."""
    common = {"size": a.size, "duration_s": a.duration, "warmup_s": a.warmup, "timeout_s": a.timeout}
    rows: list[dict[str, Any]] = []
    for proto in a.protocols:
        closed: list[dict[str, Any]] = []
        for c in a.closed:
            for t in targets:
                label = {"protocol": proto, "loop": "closed", "load": f"c={c}"}
                closed.append(step(t, a.jsonl, label, protocol=proto, concurrency=c, **common))
        rows += closed
        capacity = closed[0]["req_per_s"]  # the first server, smallest c
        for m in a.open:
            rate = round(m * capacity, 1)
            for t in targets:
                label = {"protocol": proto, "loop": "open", "load": f"{m:g}x ({rate:g} req/s)"}
                rows.append(
                    step(t, a.jsonl, label, protocol=proto, concurrency=a.open_max_outstanding, rate_per_s=rate,
                         **common)
                )  # fmt: skip
        if proto in a.polite:
            for c in a.closed:
                for t in targets:
                    label = {"protocol": proto, "loop": "closed, honours Retry-After", "load": f"c={c}"}
                    rows.append(
                        step(t, a.jsonl, label, protocol=proto, concurrency=c, honor_retry_after=True, **common)
                    )
    add_estimates(rows)
    return rows


def add_estimates(rows: list[dict[str, Any]]) -> None:
    """Goodput against the smallest closed-loop step, and the server's CPU per rejection beyond the CPU
    the step's answered images cost there (an estimate: it charges the rejections with all extra CPU)."""
    base: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        if r["loop"] == "closed":
            base.setdefault((r["server"], r["protocol"]), r)
    for r in rows:
        b = base[(r["server"], r["protocol"])]
        r["goodput_vs_base"] = round(r["img_per_s"] / b["img_per_s"], 3) if b["img_per_s"] else None
        per_image = b["server_cpu_s"] / b["images"] if b["images"] else 0.0
        rejected = r["rejected_503"]["count"]
        extra = r["server_cpu_s"] - r["images"] * per_image
        r["cpu_ms_per_rejection_est"] = round(1000 * max(0.0, extra) / rejected, 3) if rejected else None


def probe(a: argparse.Namespace, name: str, tree: Path, logs: Path) -> dict[str, Any]:
    """Server CPU of one rejection, measured alone: a one-image queue held full, then only refusals."""
    port = free_port()
    argv = ours_argv(a.model_dir, port, max_queue_images=1, max_batch_size=64, max_batch_delay_ms=10_000)
    with ServerProcess(argv, port, logs / f"probe-{name}.log", cwd=tree) as server:
        server.start()
        req = build_request("classify", [sample_jpegs(a.size)[0]])
        holder = threading.Thread(target=timed_post, args=(port, req.path, req.body, dict(req.headers)), daemon=True)
        holder.start()
        _wait_depth(port, 1)
        out = {}
        for proto in a.protocols:
            cpu0 = server.cpu_s()
            r = run_load(server.url, protocol=proto, concurrency=8, duration_s=a.probe_duration, size=a.size)
            rej = r["rejected_503"]
            cpu = server.cpu_s() - cpu0
            out[proto] = {
                "rejections": rej["count"],
                "other": {k: v for k, v in r["errors"].items() if k != "503"},
                "server_cpu_ms_per_rejection": round(1000 * cpu / rej["count"], 3) if rej["count"] else None,
                "client_cpu_ms_per_request": r["client_cpu"]["cpu_ms_per_request"],
                "p50_ms": rej["p50_ms"],
                "p99_ms": rej["p99_ms"],
            }
            print(f"  probe {name} {proto}: {out[proto]}", file=sys.stderr, flush=True)
    return out


def _wait_depth(port: int, depth: int, timeout_s: float = 30.0) -> None:
    import http.client

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        if any(line.startswith("classifier_queue_depth{") and float(line.split()[-1]) >= depth
               for line in text.splitlines()):  # fmt: skip
            return
        time.sleep(0.05)
    raise RuntimeError(f"the probe's queue did not reach {depth} within {timeout_s} s")


def cpu_list(text: str) -> set[int]:
    """``"0"``, ``"0,2"`` or ``"0-3"`` → the set of CPU numbers (as ``taskset -c`` reads them)."""
    out: set[int] = set()
    for part in (p for p in text.split(",") if p):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    if not out:
        raise argparse.ArgumentTypeError(f"no CPUs in {text!r}")
    return out


def server_argv(a: argparse.Namespace, port: int) -> list[str]:
    """The server's command line, under ``taskset`` in pinned mode."""
    argv = ours_argv(a.model_dir, port)
    if a.pin_server:
        argv = ["taskset", "-c", ",".join(map(str, sorted(a.pin_server))), *argv]
    return argv


def target_checks(res: dict[str, Any], budget_ms: float) -> list[dict[str, Any]]:
    """Per server and protocol, the closed loop's largest c against issue 23's targets."""
    out = []
    for (server, proto), rows in _closed_by(res["steps"]).items():
        base, top = rows[0], rows[-1]
        out.append({
            "server": server, "protocol": proto, "from": base["load"], "to": top["load"],
            "goodput_ratio": round(top["img_per_s"] / base["img_per_s"], 3) if base["img_per_s"] else None,
            "accepted_p99_ms": top["latency_ms"]["p99"], "rejected_p99_ms": top["rejected_503"]["p99_ms"],
            "timeouts": sum(r["timeouts"] for r in rows), "budget_ms": budget_ms,
        })  # fmt: skip
    return out


def _closed_by(steps: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in steps:
        if r["loop"] == "closed":
            by.setdefault((r["server"], r["protocol"]), []).append(r)
    return by


def _render_targets(res: dict[str, Any]) -> list[str]:
    out = ["## Targets (issue 23: goodput >= 0.85 of the smallest c, accepted p99 within the budget, 503 p99 "
           "<= 100 ms, no timeouts)", "",
           "| server | protocol | steps | goodput ratio | accepted p99 ms | 503 p99 ms | timeouts | met |",
           "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for t in res.get("targets", []):
        met = (
            (t["goodput_ratio"] or 0) >= 0.85 and (t["accepted_p99_ms"] or 0) <= t["budget_ms"]
            and (t["rejected_p99_ms"] or 0) <= 100 and t["timeouts"] == 0
        )  # fmt: skip
        out.append(
            f"| {t['server']} | {t['protocol']} | {t['from']} → {t['to']} | {t['goodput_ratio']} | "
            f"{t['accepted_p99_ms']} | {t['rejected_p99_ms']} | {t['timeouts']} | {'yes' if met else 'no'} |"
        )
    return [*out, ""]


def render(res: dict[str, Any]) -> str:
    """The sweep as markdown tables, one per protocol."""
    out = [
        f"# Overload sweep ({res['started_utc']})",
        "",
        f"`{res['command']}`",
        "",
        f"Machine: {res['machine']['cpu_model']}, {res['machine']['usable_cores']} usable cores, load "
        f"{res['load_before']} before / {res['load_after']} after (1-min average); load generator at "
        f"niceness {res.get('client_nice', 0)}.",
        "",
    ]
    if res.get("pinned"):
        out += [f"Pinned: servers on CPUs {res['pinned']['server']}, load generator on CPUs "
                f"{res['pinned']['client']} (taskset).", ""]  # fmt: skip
    out += _render_targets(res)
    head = (
        "| server | loop | load | goodput img/s | vs c16 | accepted p50 / p99 ms | server's own p50 / p99 ms "
        "| in its queue p50 / p99 ms | 503 share | 503 p50 / p99 ms "
        "| Retry-After p50 s | timeouts | other errors | server cores | CPU ms / 503 (est.) | log lines/s "
        "| others' cores |"
    )
    for proto in dict.fromkeys(r["protocol"] for r in res["steps"]):
        out += [f"## {proto}", "", head, "|" + "---|" * 17]
        for r in (r for r in res["steps"] if r["protocol"] == proto):
            rej, lat = r["rejected_503"], r["latency_ms"]
            own = r.get("server_timing_ms") or {"p50": None, "p99": None}
            queued = r.get("server_queue_ms") or {"p50": None, "p99": None}
            other = {k: v for k, v in r["errors"].items() if k not in ("503", "timeout")}
            out.append(
                f"| {r['server']} | {r['loop']} | {r['load']} | {r['img_per_s']} | {r['goodput_vs_base']} | "
                f"{lat['p50']} / {lat['p99']} | {own['p50']} / {own['p99']} | {queued['p50']} / {queued['p99']} | "
                f"{rej['share']:.2f} | "
                f"{rej['p50_ms']} / {rej['p99_ms']} | "
                f"{rej['retry_after_s']['p50']} | {r['timeouts']} | {other or '-'} | {r['server_cores']} | "
                f"{r['cpu_ms_per_rejection_est']} | {r['log_lines_per_s']} | {r['others_cores_busy']} |"
            )
        out.append("")
    if res.get("probe"):
        out += ["## CPU of one rejection (probe: queue held full, only refusals)", "",
                "| server | protocol | rejections | server CPU ms / rejection | client CPU ms / request "
                "| 503 p50 / p99 ms | other answers |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, by_proto in res["probe"].items():
            for proto, p in by_proto.items():
                out.append(
                    f"| {name} | {proto} | {p['rejections']} | {p['server_cpu_ms_per_rejection']} | "
                    f"{p['client_cpu_ms_per_request']} | {p['p50_ms']} / {p['p99_ms']} | {p['other'] or '-'} |"
                )
        out.append("")
    return "\n".join(out)


def run(a: argparse.Namespace) -> dict[str, Any]:
    """Start the servers, sweep, probe; the whole result."""
    logs = a.out.parent / "logs"
    res: dict[str, Any] = {"machine": machine_info(), "load_before": round(os.getloadavg()[0], 2)}
    res["servers"] = {name: str(tree) for name, tree in a.server}
    if a.pin_client:  # this process and the threads it starts (the load generator) run on these CPUs
        os.sched_setaffinity(0, a.pin_client)
    if a.pin_server or a.pin_client:
        res["pinned"] = {"server": sorted(a.pin_server or []), "client": sorted(a.pin_client or [])}
    with ExitStack() as stack:
        targets = []
        for name, tree in a.server:
            port = free_port()
            server = ServerProcess(server_argv(a, port), port, logs / f"overload-{name}.log", cwd=tree)
            targets.append(Target(name, tree, stack.enter_context(server)))
        for t in targets:
            t.server.start()
        res["client_nice"] = a.client_nice
        # The load runs on a thread of its own, at the niceness asked for (Linux sets it per thread; servers
        # started later, by the probe, keep the default).
        with ThreadPoolExecutor(1, initializer=renice_thread, initargs=(a.client_nice,)) as pool:
            res["steps"] = pool.submit(sweep, a, targets).result()
    res["probe"] = {name: probe(a, name, tree, logs) for name, tree in a.server} if a.probe_duration > 0 else {}
    res["load_after"] = round(os.getloadavg()[0], 2)
    res["targets"] = target_checks(res, a.budget_ms)
    return res


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__.split("\n\n")[0])
    p.add_argument("--server", type=parse_server, action="append", default=[], metavar="NAME=DIR",
                   help="a source tree to serve from (repeatable); default: this tree as 'after'")  # fmt: skip
    p.add_argument("--model_dir", type=Path, default=DEFAULT_MODEL_DIR)
    p.add_argument("--protocols", type=lambda s: s.split(","), default=list(PROTOCOLS))
    p.add_argument("--closed", type=lambda s: [int(x) for x in _floats(s)], default=list(CLOSED))
    p.add_argument("--open", type=_floats, default=list(OPEN), help="multiples of capacity")
    p.add_argument("--polite", type=lambda s: [x for x in s.split(",") if x], default=["classify"],
                   help="protocols also swept with clients that honour Retry-After (empty: none)")  # fmt: skip
    p.add_argument("--duration", type=float, default=15.0, help="measured seconds per step")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of load before each step's measurement")
    p.add_argument("--timeout", type=float, default=30.0, help="client timeout per request, seconds")
    p.add_argument("--size", type=parse_size, default=(640, 480))
    p.add_argument("--open_max_outstanding", type=int, default=2048)
    p.add_argument("--client_nice", type=int, default=0, choices=range(20), metavar="0..19",
                   help="niceness of the load generator: above 0 it takes the CPU the servers leave, roughly "
                   "as clients on other machines would (0 = it competes with the servers)")  # fmt: skip
    p.add_argument("--probe_duration", type=float, default=5.0, help="seconds per protocol of the probe; 0 = none")
    p.add_argument("--pin_server", type=cpu_list, default=None, metavar="CPUS",
                   help="pinned mode: run each server under taskset on these CPUs (e.g. 0)")  # fmt: skip
    p.add_argument("--pin_client", type=cpu_list, default=None, metavar="CPUS",
                   help="pinned mode: run the load generator on these CPUs (e.g. 1)")  # fmt: skip
    p.add_argument("--budget_ms", type=float, default=1000.0,
                   help="the queue-wait budget the targets table checks accepted p99 against")  # fmt: skip
    p.add_argument("--jsonl", type=Path, default=None, help="append every step here as it is measured")
    p.add_argument("--out", type=Path, default=Path("bench/results/overload.json"))
    p.add_argument("--md", type=Path, default=Path("bench/results/overload.md"))
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI: run the sweep, write JSON and markdown, print the markdown."""
    a = _parser().parse_args(argv)
    a.server = a.server or [("after", REPO_ROOT)]
    a.model_dir = a.model_dir.resolve()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    # SIGTERM (a time limit, a kill) unwinds like Ctrl-C, so that the servers started here are stopped.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        res = run(a)
    finally:
        signal.signal(signal.SIGTERM, previous)
    res["started_utc"] = started
    res["command"] = "python -m bench.overload " + " ".join(argv if argv is not None else sys.argv[1:])
    md = render(res)
    a.out.write_text(json.dumps(res, indent=2) + "\n")
    a.md.parent.mkdir(parents=True, exist_ok=True)
    a.md.write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
