"""The statistics of serve_bench's interleaved rounds: one row per configuration, paired ratios, the
concurrency ramp, and which runs failed. Pure functions over the rows :func:`bench.serve_bench.measure`
returns, so they are tested without a server."""

from __future__ import annotations

import statistics
from typing import Any

RAMP = (1, 2, 4, 8, 16, 32)


def combine(name: str, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Several rounds of one configuration as one row: medians, with the per-round img/s kept."""
    med = statistics.median
    first = rounds[0]
    errors: dict[str, int] = {}
    for r in rounds:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    total = sum(r["requests"] for r in rounds)
    rejected = sum(r["rejected_503"]["count"] for r in rounds)
    p99s = [r["rejected_503"]["p99_ms"] for r in rounds if r["rejected_503"]["p99_ms"] is not None]
    cpu = [r["server_cpu"]["cpu_ms_per_image"] for r in rounds if r["server_cpu"]["cpu_ms_per_image"]]
    return {
        "run": name,
        "config": {**first["config"], "duration_s": sum(r["duration_s"] for r in rounds)},
        "rounds_img_per_s": [r["img_per_s"] for r in rounds],
        "img_per_s": round(med(r["img_per_s"] for r in rounds), 2),
        "req_per_s": round(med(r["req_per_s"] for r in rounds), 2),
        "images": sum(r["images"] for r in rounds),
        "requests": total,
        "latency_ms": {
            k: (round(med(v), 2) if (v := [r["latency_ms"][k] for r in rounds if r["latency_ms"][k]]) else None)
            for k in first["latency_ms"]
        },
        "errors": dict(sorted(errors.items())),
        "timeouts": sum(r["timeouts"] for r in rounds),
        "rejected_503": {
            "count": rejected,
            "share": round(rejected / total, 4) if total else 0.0,
            "p99_ms": max(p99s) if p99s else None,
        },
        "server_cpu": {"cpu_ms_per_image": round(med(cpu), 2) if cpu else None},
        "client_cpu": {"cpu_ms_per_request": round(med(r["client_cpu"]["cpu_ms_per_request"] for r in rounds), 3)},
        "others_cores_busy": round(statistics.fmean(r["others_cores_busy"] for r in rounds), 2),
        "sample_error": next((r["sample_error"] for r in rounds if r["sample_error"]), ""),
    }


def paired_ratio(rounds: dict[str, list[dict[str, Any]]], a: str, b: str) -> dict[str, Any] | None:
    """img/s of ``a`` over ``b`` round by round (each pair measured seconds apart): median, min, max."""
    if a not in rounds or b not in rounds:
        return None
    ratios = [x["img_per_s"] / y["img_per_s"] for x, y in zip(rounds[a], rounds[b], strict=True) if y["img_per_s"]]
    if not ratios:
        return None
    return {"median": round(statistics.median(ratios), 2), "min": round(min(ratios), 2), "max": round(max(ratios), 2)}


def summarize_ramp(ramp: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean img/s and worst p99 per concurrency over the up and the down pass."""
    out = []
    for c in RAMP:
        steps = [r for r in ramp if r["config"]["concurrency"] == c]
        ips = round(statistics.fmean(r["img_per_s"] for r in steps), 2)
        out.append({"concurrency": c, "img_per_s": ips, "p99_ms": max(r["latency_ms"]["p99"] or 0 for r in steps)})
    return out


def saturating_concurrency(ramp: list[dict[str, Any]], share: float = 0.9) -> int:
    """Smallest ramp concurrency whose throughput reaches ``share`` of the ramp's best."""
    best = max(r["img_per_s"] for r in ramp)
    return min(r["concurrency"] for r in ramp if r["img_per_s"] >= share * best)


def failed_runs(res: dict[str, Any]) -> list[str]:
    """Runs that measured nothing or met errors other than the expected 503s of the overload runs."""
    out = []
    for r in res["runs"]:
        errors = {k: v for k, v in r["errors"].items() if not (k == "503" and r["run"].startswith("overload/"))}
        if not r["img_per_s"] or errors or r["timeouts"]:
            out.append(f"run {r['run']} failed: {r['img_per_s']} img/s, errors {errors}, timeouts {r['timeouts']}; "
                       f"{r.get('sample_error') or ''}")  # fmt: skip
    return out
