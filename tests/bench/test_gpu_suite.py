"""The GPU suite's plumbing, on the CPU: it has one try on a GPU machine, so what can break is checked here.

* the plan is printed and must fit the budget (a plan that does not fit fails before anything runs);
* a stage cut off by its limit is reported as such and keeps the rows it wrote before the cut;
* a benchmark killed mid-run keeps every row measured before the kill (rows are flushed as measured);
* a server that is not on the expected device is reported loudly;
* the whole dry run (``GPU_SUITE_DRY=1``: every stage with tiny settings on the CPU) passes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.report import device_warnings, read_jsonl, render_markdown
from tests.support.servers import REPO

SUITE = REPO / "bench" / "gpu_suite.sh"


def _suite(env: dict[str, str], out: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PY": sys.executable, "OUT": str(out), "GPU_SUITE_DRY": "1", **env}
    return subprocess.run(["bash", str(SUITE)], cwd=REPO, env=full, capture_output=True, text=True, timeout=timeout)


def _plan_total(stdout: str) -> int:
    (line,) = [ln for ln in stdout.splitlines() if ln.strip().startswith("total")]
    return int(line.split()[1].rstrip("s"))


def test_the_plan_fits_the_default_budget(tmp_path: Path) -> None:
    r = _suite({"GPU_SUITE_PLAN": "1"}, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    for stage in ("facts", "install", "imports", "models", "raw_probe", "serve_bench", "pytest", "capacity"):
        assert f"   {stage} " in r.stdout, r.stdout
    assert _plan_total(r.stdout) <= 510
    # value first: the serving comparison and the raw probe run before the slow tests
    order = [ln.split()[0] for ln in r.stdout.splitlines() if ln.startswith("   ")]
    assert order.index("serve_bench") < order.index("pytest") and order.index("raw_probe") < order.index("pytest")


def test_a_plan_over_budget_fails_before_anything_runs(tmp_path: Path) -> None:
    r = _suite({"GPU_SUITE_PLAN": "1", "GPU_SUITE_BUDGET_S": "300"}, tmp_path)
    assert r.returncode == 1 and "exceeds the budget" in r.stderr, r.stdout + r.stderr
    r = _suite({"GPU_SUITE_PLAN": "1", "GPU_SUITE_COMPILE": "1"}, tmp_path)  # compile needs its own run
    assert r.returncode == 1 and "compile" in r.stdout
    only = "facts install imports models compile"
    r = _suite({"GPU_SUITE_PLAN": "1", "GPU_SUITE_COMPILE": "1", "GPU_SUITE_ONLY": only}, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = _suite({"GPU_SUITE_BUDGET_S": "300"}, tmp_path / "run")  # the real run refuses too, running nothing
    assert r.returncode == 1 and "exceeds the budget" in (tmp_path / "run" / "suite.log").read_text()
    assert (tmp_path / "run" / "summary.txt").read_text() == "" and read_jsonl(tmp_path / "run" / "results.jsonl") == []


def test_a_stage_cut_off_by_its_limit_keeps_its_rows(tmp_path: Path) -> None:
    started = time.monotonic()
    r = _suite({"GPU_SUITE_ONLY": "selftest", "GPU_SUITE_LIMIT_selftest": "3"}, tmp_path)
    assert time.monotonic() - started < 40, "the stage's limit stopped it (it sleeps 60 s)"
    assert r.returncode == 1, r.stdout
    summary = (tmp_path / "summary.txt").read_text()
    assert "selftest     TIMEOUT after 3s" in summary, summary
    assert "facts        not selected" in summary
    assert read_jsonl(tmp_path / "results.jsonl") == [{"stage": "selftest", "row": 1}]
    assert "== selftest (limit 3s)" in (tmp_path / "suite.log").read_text()


def test_a_benchmark_killed_mid_run_keeps_what_it_measured(tiny_model_dir: Path, tmp_path: Path) -> None:
    rows_path = tmp_path / "rows.jsonl"
    argv = [sys.executable, "-m", "bench.serve_bench", "--model_dir", str(tiny_model_dir), "--skip_batch1",
            "--skip_naive", "--skip_ramp", "--protocols", "classify", "--concurrency", "2", "--duration", "8",
            "--rounds", "1", "--warmup", "0.2", "--variant", "second:max_batch_size=4", "--jsonl", str(rows_path),
            "--out", str(tmp_path / "sb.json"), "--md", str(tmp_path / "sb.md")]  # fmt: skip
    # 8 s per configuration: killed during the second, once the first one's row is written
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if rows_path.exists() and any(r.get("kind") == "run" for r in read_jsonl(rows_path)):
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else ""
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the benchmark and the servers it started, as `timeout` would
        proc.wait()
    rows = read_jsonl(rows_path)
    starts = [r for r in rows if r["kind"] == "cold_start"]
    runs = [r for r in rows if r["kind"] == "run"]
    assert {r["server"] for r in starts} == {"ours_first", "ours_second"}
    assert all(r["server_info"]["device"] == "cpu" and r["ready_s"] > 0 for r in starts), starts
    assert runs and runs[0]["run"] == "ours/classify" and runs[0]["img_per_s"] > 0
    assert runs[0]["server_info"]["backend"] and runs[0]["errors"] == {}
    assert not (tmp_path / "sb.json").exists()  # the final report never came: the rows are all there is


def _result(device_at_end: str) -> dict:
    info = {"backend": "torch", "device": "cuda", "dtype": "float16"}
    return {
        "machine": {"cpu_model": "x", "usable_cores": 16, "host_cores": 16, "cpu_flags": {}, "load_average_1m": 0,
                    "versions": {}, "gpu": {"name": "NVIDIA H200"}},
        "model": {"what": "m", "dir": "d"},
        "load": {"size": "640x480", "concurrency": 128, "duration_s": 12},
        "server_settings": {},
        "servers": {"ours_fp16": {"settings": {"precision": "fp16"}, "at_start": info,
                                  "at_end": {**info, "device": device_at_end}}},
        "runs": [], "cold_start_s": {}, "expect_device": "cuda",
    }  # fmt: skip


def test_a_server_off_the_expected_device_is_reported_loudly() -> None:
    assert device_warnings(_result("cuda")) == []
    (warning,) = device_warnings(_result("cpu"))
    assert "ours_fp16" in warning and "not cuda numbers" in warning
    md = render_markdown(_result("cpu"))
    assert "**WARNING: server `ours_fp16` ran on `cpu` at end" in md
    assert "GPU: name NVIDIA H200" in md
    assert "| ours_fp16 | {'precision': 'fp16'} | torch cuda float16 | torch cpu float16 |" in md


@pytest.mark.slow
def test_the_whole_dry_run_passes(tmp_path: Path) -> None:
    """Every stage on the CPU, with the wheel set scripts/gpu_wheels.sh makes for the GPU machine (built
    here from PyPI, as a session does before the device call) resolved for CPython 3.12."""
    wheels = tmp_path / "wheels"
    made = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_wheels.sh")],
        cwd=REPO,
        env={**os.environ, "WHL_DIR": str(wheels), "PY": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert made.returncode == 0, made.stderr[-3000:]
    out = tmp_path / "out"
    r = _suite({"GPU_SUITE_WHEELS": str(wheels)}, out, timeout=460)
    summary = (out / "summary.txt").read_text()
    assert r.returncode == 0, summary + r.stdout[-4000:]
    stages = {line.split()[0]: line.split()[1] for line in summary.splitlines()}
    assert set(stages) == {"facts", "install", "imports", "models", "raw_probe", "serve_bench", "pytest", "capacity"}
    assert set(stages.values()) == {"ok"}, summary
    rows = read_jsonl(out / "results.jsonl")
    kinds = {(r["stage"], r.get("kind")) for r in rows}
    assert {("facts", None), ("facts", "imports"), ("raw_probe", None)} <= kinds
    assert {("serve_bench", "cold_start"), ("serve_bench", "run")} <= kinds
    runs = {r["run"] for r in rows if r.get("kind") == "run"}
    assert {"ours/classify", "ours_fp16/classify", "ours_nvjpeg/classify", "naive/classify"} <= runs
    assert "ours_fp16/classify x8" in runs and {"overload/closed", "overload/open"} <= runs
    for name in ("suite.log", "serve_bench.md", "raw_probe.md", "logs.tgz", "capacity.json"):
        assert (out / name).stat().st_size > 0, name
    assert len(list(out.iterdir())) <= 8  # what the device tool brings back


def test_nan_logits_fail_the_raw_probe(tiny_model_dir: Path) -> None:
    """An fp16 overflow gives NaN logits fast: the probe must fail that point, not time it."""
    import numpy as np
    import torch

    from bench.raw_probe import measure
    from predictor.engine.torch_engine import TorchEngine
    from predictor.preprocess import PreprocessSpec

    engine = TorchEngine(PreprocessSpec.from_model_dir(tiny_model_dir), tiny_model_dir, threads=2)
    engine.load()
    rng = np.random.default_rng(0)
    assert measure(engine, 2, 0.05, rng) > 0
    with torch.no_grad():
        next(engine._module.parameters()).fill_(float("nan"))
    with pytest.raises(RuntimeError, match="NaN or infinite"):
        measure(engine, 2, 0.05, rng)
