"""``bench.capacity`` on a busy machine: it measures the other tenants' CPU (``serve_bench.measure``) and
refuses to write a pod's capacity that was theirs; ``--allow_busy`` writes it marked untrusted, and
``python -m predictor plan`` refuses that profile unless told ``--allow-untrusted-capacity``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
QUICK = ["--duration", "1", "--warmup", "0.2", "--concurrency", "1", "--rates", "0.5", "--retries", "1"]
QUICK += ["--batch_sizes", "1", "--raw_seconds", "0.1", "--max_others_busy", "0.25"]


@pytest.fixture
def other_tenants() -> Iterator[None]:
    """Two processes that are not the benchmark's, each keeping a core busy (what another tenant does)."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        yield
    finally:
        for p in burners:
            p.kill()
            p.wait()


def capacity(model_dir: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "bench.capacity", "--model_dir", str(model_dir), "--out", str(out), *QUICK, *extra]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600, env=os.environ.copy())


def plan(capacity_json: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "predictor", "plan", "--traffic", "docs/traffic/quiet.yaml", "--capacity"]
    argv += [str(capacity_json), "--out", str(out), "--no-plots", "--progress", "off", "--engine", "request", *extra]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_a_busy_machine_is_refused_loudly_and_nothing_is_written(
    tiny_model_dir: Path, tmp_path: Path, other_tenants: None
) -> None:
    out = tmp_path / "capacity.json"
    r = capacity(tiny_model_dir, out)
    assert r.returncode == 3, r.stderr[-2000:]
    assert "REFUSED, the machine is busy" in r.stderr and "other tenants used" in r.stderr
    assert "closed c=1" in r.stderr and "in each of 2 tries" in r.stderr
    assert not out.exists()


def test_allow_busy_keeps_the_least_disturbed_try_and_marks_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The retry policy alone (the measuring is the real one above): quiet on the second try is kept as is;
    busy in every try raises, or with ``allow_busy`` keeps the least disturbed try, marked."""
    from bench import capacity as cap

    tries = iter([0.9, 0.1, 1.5, 0.7, 1.2])
    monkeypatch.setattr(cap, "load_point", lambda server, name, **load: {"others_cores_busy": next(tries)})
    quiet = cap.quiet_point(None, "p", retries=2, max_others=0.25, allow_busy=False)  # type: ignore[arg-type]
    assert quiet == {"others_cores_busy": 0.1, "attempts": 2}
    with pytest.raises(cap.BusyMachine, match=r"p: other tenants used 0.7 cores \(limit 0.25\) in each of 3 tries"):
        cap.quiet_point(None, "p", retries=2, max_others=0.25, allow_busy=False)  # type: ignore[arg-type]
    tries = iter([0.9, 0.6, 1.5])
    kept = cap.quiet_point(None, "q", retries=2, max_others=0.25, allow_busy=True)  # type: ignore[arg-type]
    assert (
        kept["others_cores_busy"] == 0.6 and kept["attempts"] == 2 and "q: other tenants used 0.6" in kept["disturbed"]
    )


def untrusted_profile(tmp_path: Path) -> Path:
    """The packaged measured profile as ``--allow_busy`` writes a disturbed one."""
    data = json.loads((REPO / "classifier_plan/data/capacity/cpu-epyc-2c-efficientnet-lite0.json").read_text())
    data.update(
        trusted=False, untrusted_reasons=["closed c=16: other tenants used 1.4 cores (limit 0.25) in each of 4 tries"]
    )
    p = tmp_path / "busy.json"
    p.write_text(json.dumps(data))
    return p


def test_plan_refuses_an_untrusted_profile_unless_told(tmp_path: Path) -> None:
    busy = untrusted_profile(tmp_path)
    refused = plan(busy, tmp_path / "plan")
    assert refused.returncode == 2
    assert "marked untrusted" in refused.stderr and "--allow-untrusted-capacity" in refused.stderr
    assert "closed c=16: other tenants used 1.4 cores" in refused.stderr
    assert not (tmp_path / "plan").exists()
    done = plan(busy, tmp_path / "plan", "--allow-untrusted-capacity")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "capacity profile is UNTRUSTED" in (tmp_path / "plan" / "report.md").read_text()
