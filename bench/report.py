"""Turn a serve-bench result into a markdown report: machine, runs, ratios, targets of issue 4."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def append_jsonl(path: Path | None, row: dict[str, Any]) -> None:
    """Append one result row as a JSON line and flush it to disk at once.

    Benchmarks write every measured run as it finishes, so a run cut off by a time limit (the GPU suite
    has a hard budget) keeps every row measured before the cut.
    """
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows written by :func:`append_jsonl`; a last line cut off mid-write is ignored."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _keeps_answers(config: str) -> bool:
    """Whether a raw-probe row (``backend/precision[/hint]@device``) counts towards the ceiling.

    fp32 always keeps the answers. A reduced precision counts only where ``precision=auto`` would serve
    it, i.e. where the load-time precision check (:mod:`predictor.engine.precision_check`) passes for the
    benchmarked model; for the benchmark's random-weight ResNet-50 that check is inconclusive (one class
    for every image), so the ceiling is the fastest fp32 row, as the server's own choice is.
    """
    return config.split("@")[0].split("/")[1] == "fp32"


def load_ceiling(path: Path | None) -> dict[str, Any] | None:
    """The raw probe's ceiling: best img/s of a backend and precision that keeps the answers, best batch.

    Reads :mod:`bench.raw_probe`'s JSON (``img_per_s: {config: {batch: value}}``); also returns the
    overall best (``any``, e.g. bf16 that does not keep the answers) for comparison. Falls back to a
    top-level ``ceiling`` object when the table is missing.
    """
    if path is None or not Path(path).exists():
        return None
    doc = json.loads(Path(path).read_text())
    table = doc.get("img_per_s") if isinstance(doc, dict) else None
    if not isinstance(table, dict):
        c = doc.get("ceiling") if isinstance(doc, dict) else None
        return {"source": str(path), **c} if isinstance(c, dict) and "img_per_s" in c else None
    points = [(v, cfg, int(bs)) for cfg, row in table.items() for bs, v in row.items() if v]
    keep = [p for p in points if _keeps_answers(p[1])]
    if not points:
        return None
    v, cfg, bs = max(keep or points)
    av, acfg, abs_ = max(points)
    return {"source": str(path), "config": cfg, "batch_size": bs, "img_per_s": v,
            "any": {"config": acfg, "batch_size": abs_, "img_per_s": av}, "table": table}  # fmt: skip


def _run(res: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((r for r in res["runs"] if r["run"] == name), None)


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def _fmt(v: Any) -> str:
    return "-" if v is None else str(v)


def runs_table(res: dict[str, Any]) -> str:
    """One row per load run, with ratios to the naive baseline and the ceiling of the same run."""
    naive = _run(res, "naive/classify")
    naive_ips = naive["img_per_s"] if naive else None
    ceiling = (res.get("ceiling") or {}).get("img_per_s")
    head = (
        "run",
        "conc.",
        "img/s",
        "x naive",
        "x ceiling",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "errors",
        "503 share",
        "503 p99 ms",
        "timeouts",
        "server CPU ms/img",
        "client CPU ms/req",
        "others busy (cores)",
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in res["runs"]:
        cfg, lat, rej = r["config"], r["latency_ms"], r["rejected_503"]
        conc = f"rate {cfg['rate_per_s']:.0f}/s" if cfg.get("rate_per_s") else str(cfg["concurrency"])
        errors = {k: v for k, v in r["errors"].items() if k != "503"}
        cells = (
            r["run"],
            conc,
            r["img_per_s"],
            _ratio(r["img_per_s"], naive_ips),
            _ratio(r["img_per_s"], ceiling),
            lat["p50"],
            lat["p95"],
            lat["p99"],
            errors or 0,
            f"{100 * rej['share']:.1f}%",
            rej["p99_ms"],
            r["timeouts"],
            r["server_cpu"]["cpu_ms_per_image"],
            r["client_cpu"]["cpu_ms_per_request"],
            r["others_cores_busy"],
        )
        lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
    return "\n".join(lines)


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 4's CPU targets: measured value, target, met or not."""
    ours = _run(res, "ours/classify")
    best_ours = max(
        (r for r in res["runs"] if r["run"].startswith("ours/")), key=lambda r: r["img_per_s"], default=None
    )
    naive = _run(res, "naive/classify")
    ceiling = (res.get("ceiling") or {}).get("img_per_s")
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, target: str, met: bool | None) -> None:
        out.append({"target": name, "value": value, "goal": target, "met": met})

    if best_ours and ceiling:
        v = round(best_ours["img_per_s"] / ceiling, 2)
        add(f"end-to-end / raw ceiling ({best_ours['run']})", v, ">= 0.60", v >= 0.60)
    paired = (res.get("paired_ratios") or {}).get("ours_vs_naive")
    if paired:
        add("/classify vs naive baseline (paired rounds, median)", paired["median"], ">= 8x", paired["median"] >= 8)
    elif ours and naive:
        v = round(ours["img_per_s"] / naive["img_per_s"], 2)
        add("/classify vs naive baseline", v, ">= 8x", v >= 8)
    pre = res.get("preprocess")
    if pre:
        row = next((r for r in pre["rows"] if r["size"] == res["load"]["size"]), pre["rows"][-1])
        v = row["speedup_vs_hf_default"]
        add(f"preprocessing speed-up at {row['size']} vs AutoImageProcessor", v, ">= 3x", v >= 3)
    for name in ("overload/closed", "overload/open"):
        r = _run(res, name)
        if r:
            p99, rej = r["latency_ms"]["p99"], r["rejected_503"]
            add(f"{name}: accepted p99 ms", p99, "< 2000", p99 is not None and p99 < 2000)
            add(
                f"{name}: 503 p99 ms ({100 * rej['share']:.1f}% rejected)",
                rej["p99_ms"],
                "< 50",
                rej["p99_ms"] is not None and rej["p99_ms"] < 50,
            )
            add(f"{name}: timeouts", r["timeouts"], "0", r["timeouts"] == 0)
    for key in ("ours_first", "ours_cached"):
        v = res["cold_start_s"].get(key)
        if v is not None:
            add(f"cold start to ready, s ({key})", v, "< 5", v < 5)
    return out


def precision_ceilings(res: dict[str, Any]) -> list[str]:
    """Each server variant with an explicit precision against the raw probe's best row of that precision."""
    table = (res.get("ceiling") or {}).get("table") or {}
    out = []
    for key, info in (res.get("servers") or {}).items():
        precision = (info.get("settings") or {}).get("precision")
        run = _run(res, f"{key}/classify")
        if not precision or not run:
            continue
        rows = [row for cfg, row in table.items() if cfg.split("@")[0].split("/")[1] == precision]
        best = max((v for row in rows for v in row.values() if v), default=None)
        if best:
            out.append(f"Our server `{key}` (`precision={precision}`): {run['img_per_s']} img/s = "
                       f"{_ratio(run['img_per_s'], best)} of the raw {precision} ceiling ({best} img/s).")  # fmt: skip
    return out


def _gpu_text(gpu: Any) -> str:
    if not gpu:
        return "none"
    if isinstance(gpu, dict):
        return ", ".join(f"{k} {v}" for k, v in gpu.items() if v is not None)
    return str(gpu)


def device_warnings(res: dict[str, Any]) -> list[str]:
    """Loud lines for every server that did not run on the device the run expected (e.g. a CPU fallback)."""
    expected = res.get("expect_device")
    if not expected:
        return []
    out = []
    for name, info in (res.get("servers") or {}).items():
        for when in ("at_start", "at_end"):
            dev = (info.get(when) or {}).get("device")
            if dev is None or not str(dev).startswith(expected):
                out.append(
                    f"**WARNING: server `{name}` ran on `{dev}` {when.replace('_', ' ')}, not on {expected}: "
                    f"its numbers are not {expected} numbers.**"
                )
    return out


def servers_table(res: dict[str, Any]) -> str:
    """What each server really ran: backend, device and dtype from its ``classifier_model_info``."""
    servers = res.get("servers") or {}
    if not servers:
        return ""
    lines = ["| server | settings | at start | at end |", "|---|---|---|---|"]
    for name, info in servers.items():
        cells = []
        for when in ("at_start", "at_end"):
            i = info.get(when) or {}
            cells.append(" ".join(str(i.get(k, "?")) for k in ("backend", "device", "dtype")) if i else "-")
        lines.append(f"| {name} | {info.get('settings') or 'defaults'} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def render_markdown(res: dict[str, Any]) -> str:
    """The whole report as markdown."""
    m = res["machine"]
    flags = ", ".join(f for f, on in m["cpu_flags"].items() if on) or "none of interest"
    lines = [
        f"### Run {res.get('started_utc', '')}",
        "",
        f"- Command: `{res.get('command', '')}`",
        f"- Machine: {m['cpu_model']}, {m['usable_cores']} usable cores (host {m['host_cores']}), flags: {flags}; "
        f"load average at start {m['load_average_1m']}; GPU: {_gpu_text(m.get('gpu'))}",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in m['versions'].items() if v)}",
        f"- Model: {res['model']['what']} (`{res['model']['dir']}`)",
        f"- Load: {res['load']['size']} JPEGs (sample photos), 1 image/request, concurrency "
        f"{res['load']['concurrency']}, {res['load']['duration_s']} s per configuration in "
        f"{res['load'].get('rounds', 1)} interleaved rounds (medians shown); our settings: "
        f"{res['server_settings'] or 'defaults'}",
        f"- Others on the host: up to {max((r['others_cores_busy'] for r in res['runs']), default=0)} cores busy "
        "during a run (host busy CPU minus server and load generator)",
        "",
        *[w + "\n" for w in device_warnings(res)],
        servers_table(res),
        "",
        runs_table(res),
        "",
    ]
    ceiling = res.get("ceiling")
    if ceiling:
        lines += [f"Raw ceiling (in-process, no HTTP, no decoding, precision that keeps the answers): "
                  f"{ceiling['img_per_s']} img/s ({ceiling.get('config')}, batch {ceiling.get('batch_size')}), "
                  f"from `{ceiling['source']}`."]  # fmt: skip
        anyc = ceiling.get("any")
        if anyc and anyc["config"] != ceiling.get("config"):
            lines += [f"Fastest overall (a reduced precision the check did not pass for this model): "
                      f"{anyc['img_per_s']} img/s ({anyc['config']}, batch {anyc['batch_size']})."]  # fmt: skip
        lines += [*precision_ceilings(res), ""]
    else:
        lines += ["Raw ceiling: not measured in this run (no raw probe JSON).", ""]
    variants = [(k, f"default vs `{k.removeprefix('ours_vs_')}` variant") for k in res.get("paired_ratios") or {}
                if k.startswith("ours_vs_") and k != "ours_vs_naive"]  # fmt: skip
    for key, what in (("ours_vs_naive", "ours vs naive"), ("batching_gain", "default vs max_batch_size=1"), *variants):
        pr = (res.get("paired_ratios") or {}).get(key)
        if pr:
            lines += [f"Paired ratio {what} (`/classify`, round by round): median {pr['median']}x, "
                      f"range {pr['min']}-{pr['max']}x.", ""]  # fmt: skip
    b1, ours = _run(res, "ours_batch1/classify"), _run(res, "ours/classify")
    if b1 and ours:
        lines += [
            f"Dynamic batching: default settings {ours['img_per_s']} img/s vs `max_batch_size=1` "
            f"{b1['img_per_s']} img/s = {_ratio(ours['img_per_s'], b1['img_per_s'])}.",
            "",
        ]
    if res.get("ramp"):
        sat = res["saturation"]
        lines += [
            "Concurrency ramp on `/classify` (c → img/s, p99 ms): "
            + "; ".join(f"{r['concurrency']} → {r['img_per_s']}, {r['p99_ms']}" for r in res["ramp"])
            + f". Saturating concurrency: ramp {sat.get('ramp_concurrency', sat['concurrency'])}, used "
            f"{sat['concurrency']} (at least the benchmark's).",
            "",
        ]
    if res.get("overload"):
        o = res["overload"]
        lines += [
            f"Overload: `max_queue_images={o['max_queue_images']}`; closed loop at concurrency "
            f"{o['closed_concurrency']}, open loop at {o['open_rate_per_s']} req/s (twice the saturated rate).",
            "",
        ]
    cs, first = res["cold_start_s"], res.get("first_request_s", {})
    lines += [
        "Cold start (process start → `/v2/health/ready` 200, warm-up included): "
        + ", ".join(f"{k} {v} s" for k, v in cs.items()),
        "",
        "First `/classify` request right after ready (fresh connection): "
        + ", ".join(f"{k} {v} s" for k, v in first.items()),
        "",
    ]
    if res.get("preprocess"):
        lines += ["Preprocessing, ms per image, one thread:", "", res["preprocess"].get("markdown", ""), ""]
    lines += ["Targets (issue 4):", "", "| target | measured | goal | met |", "|---|---|---|---|"]
    for t in targets(res):
        met = "-" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {_fmt(t['value'])} | {t['goal']} | {met} |")
    return "\n".join(lines) + "\n"
