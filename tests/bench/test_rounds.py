"""serve_bench's round statistics (bench/rounds.py): medians over rounds, paired ratios, the ramp, and
which runs count as failed."""

from __future__ import annotations

from typing import Any

import pytest

from bench.rounds import RAMP, combine, failed_runs, paired_ratio, saturating_concurrency, summarize_ramp


def _run(name: str, img_per_s: float, *, errors: dict[str, int] | None = None, p99: float = 50.0,
         rejected: int = 0, rejected_p99: float | None = None, timeouts: int = 0, cpu: float | None = 10.0,
         requests: int = 100, concurrency: int = 16) -> dict[str, Any]:  # fmt: skip
    return {
        "run": name,
        "config": {"concurrency": concurrency, "protocol": "classify"},
        "duration_s": 10.0,
        "img_per_s": img_per_s,
        "req_per_s": img_per_s,
        "images": int(img_per_s * 10),
        "requests": requests,
        "latency_ms": {"p50": p99 / 2, "p99": p99},
        "errors": errors or {},
        "timeouts": timeouts,
        "rejected_503": {"count": rejected, "p99_ms": rejected_p99},
        "server_cpu": {"cpu_ms_per_image": cpu},
        "client_cpu": {"cpu_ms_per_request": 0.2},
        "others_cores_busy": 0.1,
        "sample_error": "",
    }


def test_combine_takes_medians_and_sums_counts() -> None:
    rounds = [
        _run("a", 40.0, p99=90.0, errors={"503": 2}, rejected=2, rejected_p99=12.0),
        _run("a", 50.0, p99=60.0, errors={"503": 1, "500": 1}, rejected=1, rejected_p99=30.0),
        _run("a", 45.0, p99=70.0),
    ]
    row = combine("a", rounds)
    assert row["rounds_img_per_s"] == [40.0, 50.0, 45.0]
    assert row["img_per_s"] == 45.0 and row["latency_ms"]["p99"] == 70.0
    assert row["errors"] == {"500": 1, "503": 3}
    assert row["requests"] == 300 and row["rejected_503"] == {"count": 3, "share": 0.01, "p99_ms": 30.0}
    assert row["config"]["duration_s"] == 30.0


def test_paired_ratio_pairs_rounds_and_is_none_without_both() -> None:
    rounds = {"ours": [_run("ours", 40), _run("ours", 60)], "naive": [_run("naive", 20), _run("naive", 20)]}
    assert paired_ratio(rounds, "ours", "naive") == {"median": 2.5, "min": 2.0, "max": 3.0}
    assert paired_ratio(rounds, "ours", "missing") is None
    assert paired_ratio({"a": [_run("a", 1)], "b": [_run("b", 0)]}, "a", "b") is None


def test_the_ramp_averages_both_passes_and_finds_the_knee() -> None:
    shape = {1: 10, 2: 19, 4: 30, 8: 40, 16: 44, 32: 45}
    ramp = [_run(f"ramp/c{c}", shape[c] + d, concurrency=c, p99=c * 10 + d) for d in (1, -1) for c in RAMP]
    summary = summarize_ramp(ramp)
    assert [r["img_per_s"] for r in summary] == [shape[c] for c in RAMP]
    assert summary[0]["p99_ms"] == 11
    assert saturating_concurrency(summary) == 16  # 44 >= 0.9 * 45 = 40.5; 40 is not
    assert saturating_concurrency(summary, share=0.85) == 8  # 40 >= 38.25; 30 is not


@pytest.mark.parametrize(
    ("run", "failed"),
    [
        (_run("ours/classify", 40.0), False),
        (_run("overload/closed", 20.0, errors={"503": 50}), False),  # 503s are what an overload run is for
        (_run("ours/classify", 40.0, errors={"503": 1}), True),
        (_run("overload/closed", 20.0, errors={"500": 1}), True),
        (_run("ours/classify", 0.0), True),
        (_run("ours/classify", 40.0, timeouts=1), True),
    ],
)
def test_failed_runs(run: dict[str, Any], failed: bool) -> None:
    assert bool(failed_runs({"runs": [run]})) is failed
