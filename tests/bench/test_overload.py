"""Smoke test of the overload sweep (bench/overload.py): every kind of step runs against a real server on
the tiny model and lands in the JSON and the markdown, and the probe refuses with the queue held full.
Asserts behaviour, not speed (speed lives in bench/)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench import overload
from bench.overload import main, parse_server
from tests.support.servers import REPO

pytestmark = pytest.mark.slow


def test_a_short_sweep_writes_every_step_and_the_probe(tiny_model_dir: Path, tmp_path: Path) -> None:
    out, md = tmp_path / "overload.json", tmp_path / "overload.md"
    argv = ["--model_dir", str(tiny_model_dir), "--protocols", "classify,v2-binary", "--closed", "2,8",
            "--open", "2", "--polite", "classify", "--duration", "1", "--warmup", "0.5", "--size", "160x120",
            "--probe_duration", "1", "--out", str(out), "--md", str(md)]  # fmt: skip
    assert main(argv) == 0
    res = json.loads(out.read_text())
    steps = [(r["protocol"], r["loop"], r["load"]) for r in res["steps"]]
    assert len(steps) == 2 * 3 + 2  # per protocol: 2 closed + 1 open; classify: 2 polite
    assert {s[1] for s in steps} == {"closed", "open", "closed, honours Retry-After"}
    for r in res["steps"]:
        assert r["server"] == "after" and r["timeouts"] == 0, r
        assert r["img_per_s"] > 0 and r["log_lines_per_s"] >= 0 and r["goodput_vs_base"] is not None
        own, seen = r["server_timing_ms"], r["latency_ms"]
        assert 0 < own["p50"] <= seen["p50"] and own["p99"] <= seen["p99"], r  # the server's own part of it
    for proto in ("classify", "v2-binary"):
        p = res["probe"]["after"][proto]
        assert p["rejections"] > 0 and p["other"] == {}, p  # only refusals while the queue is held full
        assert p["server_cpu_ms_per_rejection"] > 0
    text = md.read_text()
    assert "## classify" in text and "## v2-binary" in text and "CPU of one rejection" in text


def test_servers_are_source_trees() -> None:
    assert parse_server(f"after={REPO}") == ("after", REPO)
    with pytest.raises(Exception, match="NAME=DIR"):
        parse_server("/tmp")


def test_the_load_runs_at_the_niceness_asked_for_and_the_servers_do_not(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    seen: dict[str, object] = {}

    def sweep(a, targets):
        seen["load"] = os.getpriority(os.PRIO_PROCESS, 0)  # Linux: the calling thread's
        seen["servers"] = [os.getpriority(os.PRIO_PROCESS, t.server.proc.pid) for t in targets]
        return []

    monkeypatch.setattr(overload, "sweep", sweep)
    out = tmp_path / "overload.json"
    argv = ["--model_dir", str(tiny_model_dir), "--client_nice", "7", "--probe_duration", "0",
            "--out", str(out), "--md", str(tmp_path / "overload.md")]  # fmt: skip
    assert main(argv) == 0
    assert seen == {"load": 7, "servers": [base]}
    assert json.loads(out.read_text())["client_nice"] == 7
    assert os.getpriority(os.PRIO_PROCESS, 0) == base  # the test's own thread is untouched


def test_pinned_mode_runs_the_servers_and_the_load_on_the_cpus_asked_for(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.fail("pinned mode needs two CPUs")
    mine = os.sched_getaffinity(0)
    seen: dict[str, object] = {}

    def sweep(a, targets):
        seen["load"] = os.sched_getaffinity(0)
        seen["servers"] = [os.sched_getaffinity(t.server.proc.pid) for t in targets]
        return []

    monkeypatch.setattr(overload, "sweep", sweep)
    out = tmp_path / "overload.json"
    server_cpu, client_cpu = sorted(mine)[:2]
    argv = ["--model_dir", str(tiny_model_dir), "--pin_server", str(server_cpu), "--pin_client", str(client_cpu),
            "--probe_duration", "0", "--out", str(out), "--md", str(tmp_path / "overload.md")]  # fmt: skip
    try:
        assert main(argv) == 0
    finally:
        os.sched_setaffinity(0, mine)
    assert seen == {"load": {client_cpu}, "servers": [{server_cpu}]}
    res = json.loads(out.read_text())
    assert res["pinned"] == {"server": [server_cpu], "client": [client_cpu]}
    assert "Pinned: servers on CPUs" in (tmp_path / "overload.md").read_text()
