"""docs/performance.md leads with a table generated from benchmark results (issue 26), never typed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.headline import BEGIN, END, PAGE, RECORDS, TIMES, current_table, from_serve_bench, main, render


def run(run: str, img_per_s: float, p50: float, p99: float, cpu: float) -> dict:
    return {
        "run": run,
        "img_per_s": img_per_s,
        "latency_ms": {"p50": p50, "p95": p99 - 1, "p99": p99},
        "server_cpu": {"cpu_ms_per_image": cpu},
    }


SERVE_BENCH = {
    "machine": {"cpu_model": "Test CPU", "usable_cores": 4},
    "model": {"dir": "bench/results/models/resnet50-random", "what": "a test model"},
    "load": {"size": "640x480", "concurrency": 16, "duration_s": 30, "rounds": 3},
    "cold_start_s": {"ours_first": 7.5, "ours_cached": 3.25, "naive": 4.0},
    "ceiling": {"img_per_s": 80.0, "config": "openvino/fp32/LATENCY batch 8"},
    "paired_ratios": {"ours_vs_naive": {"median": 2.5, "min": 2.4, "max": 2.6}},
    "runs": [
        run("ours/classify", 60.0, 250.0, 300.0, 30.0),
        run("ours_batch1/classify", 50.0, 300.0, 350.0, 35.0),
        {**run("naive/classify", 24.0, 600.0, 700.0, 80.0), "others_cores_busy": 0.35},
    ],
}


def test_the_page_holds_what_the_committed_results_generate() -> None:
    assert BEGIN in PAGE.read_text() and END in PAGE.read_text()
    assert current_table(PAGE.read_text()) == render(json.loads(RECORDS.read_text()))
    assert main(["--check"]) == 0


def test_a_typed_change_to_the_table_is_caught(tmp_path: Path) -> None:
    page = tmp_path / "performance.md"
    page.write_text(PAGE.read_text().replace("| 48.7 |", "| 58.7 |", 1))
    assert page.read_text() != PAGE.read_text(), "the page's first row changed"
    assert main(["--check", "--page", str(page)]) == 1
    assert main(["--page", str(page)]) == 0  # regenerate
    assert page.read_text() == PAGE.read_text()


def test_a_record_from_a_serve_bench_result(tmp_path: Path) -> None:
    rec = from_serve_bench(SERVE_BENCH, "4c-test", "2026-12-06 04:00 UTC", "make bench")
    rows = {r["what"]: r for r in rec["rows"]}
    ours = rows["ours, `/classify` (defaults)"]
    assert (ours["img_per_s"], ours["x_naive"], ours["x_ceiling"]) == (60.0, 2.5, 0.75)  # 60/24, 60/80
    assert (ours["p50_ms"], ours["p99_ms"], ours["cpu_ms_per_image"]) == (250.0, 300.0, 30.0)
    assert rows["naive baseline (HF processor + model, FastAPI)"]["x_ceiling"] == 0.3
    ceiling = rows["raw ceiling: openvino/fp32/LATENCY batch 8, in-process"]
    assert (ceiling["x_naive"], ceiling["x_ceiling"]) == (3.33, 1.0)
    assert "ours_batch1/classify" not in json.dumps(rec), "only the headline's runs"
    table = render([rec])
    assert f"| ours, `/classify` (defaults) | 60 | 2.5{TIMES} | 0.75 | 250 | 300 | 30 |" in table
    assert "7.5 s first start" in table and "3.25 s cached" in table and "naive 4 s" in table
    assert "Test CPU, 4 usable cores, others busy up to 0.35 cores" in table and "Command: `make bench`" in table


def test_from_serve_bench_replaces_only_its_setup(tmp_path: Path) -> None:
    records, page, result = tmp_path / "headline.json", tmp_path / "performance.md", tmp_path / "serve_bench.json"
    old = json.loads(RECORDS.read_text())
    records.write_text(json.dumps([*old, {**old[0], "setup": "4c-resnet50-random", "rows": []}]))
    page.write_text(f"# P\n\n{BEGIN}\nstale\n{END}\n\n## Method\n")
    result.write_text(json.dumps(SERVE_BENCH))
    assert main(["--from-serve-bench", str(result), "--records", str(records), "--page", str(page)]) == 0
    setups = [r["setup"] for r in json.loads(records.read_text())]
    assert setups == [old[0]["setup"], "4c-resnet50-random"], "replaced in place of the old record of that setup"
    text = page.read_text()
    assert "stale" not in text and f"| 60 | 2.5{TIMES} |" in text and text.endswith(f"{END}\n\n## Method\n")


def test_a_page_without_markers_is_refused(tmp_path: Path) -> None:
    page = tmp_path / "performance.md"
    page.write_text("# no markers\n")
    with pytest.raises(ValueError, match="lacks the markers"):
        main(["--page", str(page)])
