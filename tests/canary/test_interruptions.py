"""Interruptions of a running analysis: SIGTERM and SIGINT stop it between checks and leave the traffic
where it is, saying so; Prometheus going away is a failed check, never a pass; a change somebody else
makes to the canary's traffic stops the tool before it sends anything more.

A real ``python -m predictor canary`` process; the test acts once its decision log shows the state it
wants (events, not sleeps).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.support.canary_stack import KNATIVE_PROFILE, NAMESPACE, knative_revision, rendered_isvc, with_knative_status
from tests.support.prometheus import Prometheus, tool
from tests.support.servers import REPO

NAME = rendered_isvc(KNATIVE_PROFILE, "demo")["metadata"]["name"]


def write_isvc(path: Path, ready: bool = True) -> Path:
    obj = with_knative_status(
        rendered_isvc(KNATIVE_PROFILE, "demo"), knative_revision(NAME, 1), knative_revision(NAME, 2)
    )
    if not ready:
        obj["status"]["components"]["predictor"]["latestReadyRevision"] = knative_revision(NAME, 1)
    path.write_text(yaml.safe_dump(obj))
    return path


def start(isvc: Path, prometheus_url: str, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PATH": f"{Path(tool('kubectl')).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    args = [
        sys.executable,
        "-m",
        "predictor",
        "canary",
        "--isvc",
        NAME,
        "-n",
        NAMESPACE,
        "--isvc-file",
        str(isvc),
        "--prometheus-url",
        prometheus_url,
        "--log-format",
        "json",
        *extra,
    ]
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def read_until(proc: subprocess.Popen[str], event: str, timeout_s: float = 60) -> list[dict]:
    """Decision lines up to and including the first ``event`` line."""
    lines, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"exited {proc.wait()} before {event}: {lines} {proc.stderr.read()}")
        lines.append(json.loads(line))
        if lines[-1]["event"] == event:
            return lines
    raise AssertionError(f"no {event} line in {timeout_s}s: {lines}")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_between_checks_leaves_traffic_where_it_is(signum, code, tmp_path, bare_prometheus):
    isvc = write_isvc(tmp_path / "isvc.yaml")
    proc = start(isvc, bare_prometheus.url, "--step-interval", "10m")
    try:
        read_until(proc, "traffic")  # step 1 applied; now waiting 10 minutes for the first check
        after_step = isvc.read_bytes()
        t0 = time.monotonic()
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert time.monotonic() - t0 < 10, "stops at once, not at the next check"
    events = [json.loads(line) for line in out.splitlines()]
    stopped, result = events[-2], events[-1]
    assert stopped["event"] == "stopped" and stopped["signal"] == signal.Signals(signum).name
    assert stopped["traffic_percent"] == 10 and stopped["step"] == 1
    assert stopped["rollback_patch"] == {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
    assert (result["outcome"], result["exit_code"]) == ("stopped", code)
    assert [e["event"] for e in events] == ["stopped", "result"], "no check and no patch after the signal"
    assert isvc.read_bytes() == after_step
    assert yaml.safe_load(isvc.read_text())["spec"]["predictor"]["canaryTrafficPercent"] == 10


def test_sigterm_while_waiting_for_the_canary_sends_nothing(tmp_path, bare_prometheus):
    isvc = write_isvc(tmp_path / "isvc.yaml", ready=False)
    before = isvc.read_bytes()
    proc = start(isvc, bare_prometheus.url, "--ready-timeout", "10m", "--log-format", "text")
    try:
        line = ""
        while " wait " not in line:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 143
    assert "stopped  stopped by SIGTERM at step 1/4: traffic unchanged: the tool sent no patch" in out
    assert isvc.read_bytes() == before


def test_prometheus_going_away_is_a_failed_check(tmp_path):
    isvc = write_isvc(tmp_path / "isvc.yaml")
    prom = Prometheus(tmp_path / "prometheus", []).start()
    try:
        prom.wait_ready()
        proc = start(isvc, prom.url, "--step-interval", "2", "--max-failed-checks", "1")
        read_until(proc, "traffic")
    finally:
        prom.stop()  # before the first check
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1, err
    (check,) = [json.loads(line) for line in out.splitlines() if '"event":"check"' in line]
    assert check["verdict"] == "rollback"
    assert check["reasons"][0].startswith(f"Prometheus {prom.url} unreachable: ConnectError")
    assert yaml.safe_load(isvc.read_text())["spec"]["predictor"]["canaryTrafficPercent"] == 0


def test_traffic_changed_by_somebody_else_stops_the_tool(tmp_path, bare_prometheus):
    isvc = write_isvc(tmp_path / "isvc.yaml")
    proc = start(isvc, bare_prometheus.url, "--step-interval", "2", "--max-failed-checks", "1")
    try:
        read_until(proc, "traffic")
        obj = yaml.safe_load(isvc.read_text())
        obj["spec"]["predictor"]["canaryTrafficPercent"] = 30  # a person takes over
        isvc.write_text(yaml.safe_dump(obj))
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 3
    assert "canary traffic is 30% but the tool last set 10%: somebody else changed it; nothing more is sent" in err
    assert "left at" not in err, "the traffic is the other person's now"
    assert yaml.safe_load(isvc.read_text())["spec"]["predictor"]["canaryTrafficPercent"] == 30
    events = [json.loads(line) for line in out.splitlines()]
    assert events[-1]["outcome"] == "error"
    assert (events[-2]["verdict"], events[-2]["patch"], events[-2]["applied"]) == ("rollback", None, False)
