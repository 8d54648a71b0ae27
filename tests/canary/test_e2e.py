"""Three canaries judged end to end: real predictor processes under load from ``bench.loadgen``, a real
Prometheus scraping them with the PodMonitor's labels, ``python -m predictor canary`` as a real process
patching the chart's InferenceService in a file with ``kubectl patch --local``.

healthy (same model and settings) -> promoted; refusing (a queue smaller than a request: every answer
a 400, which no 5xx or latency check sees) -> rolled back; slow (batches wait 2 s) -> rolled back.
Short intervals (5 s) keep each run well under a minute; the p95 ratio limit is 3 here (1.25 by
default) because p95s over ~15 requests on a 2-core machine shared with other work are noisy, and the
slow canary is more than 10x slower.
"""

from __future__ import annotations

import yaml

from tests.support.canary_stack import CanaryStack, ToolRun, run_tool

FAST = [
    "--steps",
    "10,50,100",
    "--step-interval",
    "5",
    "--min-requests",
    "5",
    "--max-p95-ratio",
    "3",
    "--max-failed-checks",
    "2",
    "--max-no-data-checks",
    "3",
    # ~30 images a window: the same model on the same photos differs only by which photos fell into it
    "--min-quality-predictions",
    "10",
    "--max-class-divergence",
    "0.2",
    "--max-confidence-shift",
    "0.2",
]


def judged(run: ToolRun) -> list[dict]:
    """Check lines that judged (no "not enough data" waits)."""
    return [c for c in run.of("check") if c["verdict"] != "no-data"]


def traffic_patches(run: ToolRun) -> list:
    """Every patch the run applied, in order."""
    return [e["patch"] for e in run.events() if e["event"] in ("traffic", "check") and e["patch"] is not None]


def test_healthy_canary_is_promoted(canary_stack: CanaryStack, tmp_path):
    isvc = canary_stack.knative_file("healthy", tmp_path / "isvc.yaml")
    with canary_stack.load("stable", "healthy"):
        run = run_tool(canary_stack.tool_args(isvc, canary_stack.kn_name, *FAST, "--log-format", "json"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.seconds < 60
    (start,) = run.of("start")
    assert start["mode"] == "Knative" and start["crd"].startswith("shipped")
    verdicts = [c["verdict"] for c in judged(run)]
    assert verdicts[-1] == "promote" and "rollback" not in verdicts and verdicts.count("pass") == 1, verdicts
    patches = traffic_patches(run)
    assert patches[0] == {"spec": {"predictor": {"canaryTrafficPercent": 10}}}
    assert {"spec": {"predictor": {"canaryTrafficPercent": 50}}} in patches
    assert patches[-1] == {"spec": {"predictor": {"canaryTrafficPercent": None}}}
    for check in judged(run):
        if check["verdict"] in ("pass", "promote"):
            c, s = check["canary"], check["stable"]
            assert c["revision"] == canary_stack.revision("healthy") and s["revision"] == canary_stack.revision(
                "stable"
            )
            assert c["error_ratio"] == 0 and c["shed_ratio"] == 0 and c["requests"] >= 5 and s["requests"] >= 5
            assert c["client_error_ratio"] == 0 and s["client_error_ratio"] == 0
            assert c["versions"] == s["versions"] and c["dtypes"] == ["float32"]
    (result,) = run.of("result")
    assert (result["outcome"], result["exit_code"]) == ("promoted", 0)
    assert "canaryTrafficPercent" not in yaml.safe_load(isvc.read_text())["spec"]["predictor"]


def test_refusing_canary_is_rolled_back(canary_stack: CanaryStack, tmp_path):
    isvc = canary_stack.knative_file("refusing", tmp_path / "isvc.yaml")
    with canary_stack.load("stable", "refusing"):
        run = run_tool(canary_stack.tool_args(isvc, canary_stack.kn_name, *FAST, "--log-format", "json"))
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.seconds < 60
    checks = judged(run)
    assert [c["verdict"] for c in checks] == ["fail", "rollback"]
    for check in checks:
        assert check["traffic_percent"] == 10, "never moved past the first step"
        c, s = check["canary"], check["stable"]
        assert (c["error_ratio"], c["shed_ratio"], c["client_error_ratio"]) == (0, 0, 1.0)
        assert c["p95_seconds"] is None and s["error_ratio"] == 0 and s["client_error_ratio"] == 0
        assert "canary client-error (4xx) ratio 100.00% > the stable's 0.00% + 1.00%" in check["reasons"]
    assert checks[-1]["patch"] == {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
    assert yaml.safe_load(isvc.read_text())["spec"]["predictor"]["canaryTrafficPercent"] == 0
    # The canary's own counters (an independent reference) agree: it answered nothing but 400.
    server = canary_stack.targets["refusing"].server
    assert server.metric("classifier_requests_total", code="400") > 0
    assert server.metric("classifier_requests_total", code="200") == 0


def test_slow_canary_is_rolled_back(canary_stack: CanaryStack, tmp_path):
    isvc = canary_stack.knative_file("slow", tmp_path / "isvc.yaml")
    with canary_stack.load("stable", "slow"):
        run = run_tool(canary_stack.tool_args(isvc, canary_stack.kn_name, *FAST, "--log-format", "json"))
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.seconds < 60
    checks = judged(run)
    assert [c["verdict"] for c in checks] == ["fail", "rollback"]
    for check in checks:
        c, s = check["canary"], check["stable"]
        assert c["error_ratio"] == 0 and c["shed_ratio"] == 0
        assert c["p95_seconds"] >= 2.0, "every answer waited the 2 s batch delay"
        assert check["p95_ratio"] > 3 and check["p95_ratio"] == c["p95_seconds"] / s["p95_seconds"]
        assert len(check["reasons"]) == 1 and check["reasons"][0].startswith("canary p95 ")
        assert "> x3 and +" in check["reasons"][0] and check["decided_by"] == ["http"]
    assert yaml.safe_load(isvc.read_text())["spec"]["predictor"]["canaryTrafficPercent"] == 0


def test_standard_mode_rollback_removes_spec_canary(canary_stack: CanaryStack, tmp_path):
    """Standard mode: revisions are the stable/canary tracks; rolling back removes spec.canary."""
    isvc = canary_stack.standard_file(tmp_path / "isvc.yaml")
    before = yaml.safe_load(isvc.read_text())
    with canary_stack.load("stable", "refusing"):
        run = run_tool(canary_stack.tool_args(isvc, canary_stack.std_name, *FAST, "--log-format", "json"))
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.of("start")[0]["mode"] == "Standard"
    checks = judged(run)
    assert [c["verdict"] for c in checks] == ["fail", "rollback"]
    assert (checks[0]["canary"]["revision"], checks[0]["stable"]["revision"]) == ("canary", "stable")
    first = traffic_patches(run)[0]
    assert first["spec"]["canary"][0]["trafficPercent"] == 10
    assert first["spec"]["canary"][0]["predictor"] == before["spec"]["canary"][0]["predictor"]
    assert checks[-1]["patch"] == {"spec": {"canary": None}}
    after = yaml.safe_load(isvc.read_text())
    assert "canary" not in after["spec"] and after["spec"]["predictor"] == before["spec"]["predictor"]


def test_dry_run_prints_the_patches_and_changes_nothing(canary_stack: CanaryStack, tmp_path):
    isvc = canary_stack.knative_file("healthy", tmp_path / "isvc.yaml")
    before = isvc.read_bytes()
    args = canary_stack.tool_args(
        isvc, canary_stack.kn_name, *FAST, "--steps", "50,100", "--max-p95-ratio", "4", "--dry-run"
    )
    with canary_stack.load("stable", "healthy"):
        run = run_tool(args)
    assert run.returncode == 0, run.stdout + run.stderr
    assert isvc.read_bytes() == before
    lines = run.stdout.splitlines()
    traffic = next(line for line in lines if " traffic " in line)
    assert traffic.endswith(
        'step 1/2: canary gets 50% | patch (dry run, not sent) {"spec":{"predictor":{"canaryTrafficPercent":50}}}'
    )
    promote = next(line for line in lines if "| PROMOTE [" in line)
    assert "step 1/2 at 50% over 5s: canary " in promote
    assert 'patch (dry run, not sent) {"spec":{"predictor":{"canaryTrafficPercent":null}}}' in promote
    assert lines[-1].endswith(
        "result   promoted: canary "
        + canary_stack.revision("healthy")
        + " is the stable revision now (dry run: nothing was changed)"
        + " (decided by monitoring+http+outside+model+answers) (exit 0)"
    )
