"""Bad input gets a clear error, exit code 2 and no patch; a canary the tool cannot see is never passed.

Runs ``classifier_canary.cli.main`` in this process (one real ``python -m predictor canary`` subprocess
checks the wiring) against real Prometheus processes and the chart's InferenceService in a file.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
import yaml

from classifier_canary.cli import main
from tests.support.canary_stack import KNATIVE_PROFILE, NAMESPACE, knative_revision, rendered_isvc, with_knative_status
from tests.support.prometheus import wait_until
from tests.support.servers import REPO, free_port

NAME = rendered_isvc(KNATIVE_PROFILE, "demo")["metadata"]["name"]


@pytest.fixture
def isvc_file(tmp_path):
    obj = with_knative_status(
        rendered_isvc(KNATIVE_PROFILE, "demo"), knative_revision(NAME, 1), knative_revision(NAME, 2)
    )
    path = tmp_path / "isvc.yaml"
    path.write_text(yaml.safe_dump(obj))
    return path


def canary(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def base(isvc_file, prometheus_url: str, *extra: str) -> list[str]:
    return ["--isvc", NAME, "-n", NAMESPACE, "--isvc-file", str(isvc_file), "--prometheus-url", prometheus_url, *extra]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--steps", "10,50,25,100"], "--steps: steps must be strictly increasing, got [10, 50, 25, 100]"),
        (["--steps", "10,50"], "--steps: the last step must be 100 (the promotion), got [10, 50]"),
        (["--steps", "100"], "--steps: need at least one step below 100 and then 100, got [100]"),
        (["--steps", "0,100"], "--steps: every step must be a percentage in 1..100, got [0, 100]"),
        (["--steps", "10,ten,100"], "--steps '10,ten,100': invalid literal for int()"),
        (["--max-error-ratio", "1.5"], "--max-error-ratio: Input should be less than or equal to 1 (got 1.5)"),
        (["--max-shed-ratio", "-0.1"], "--max-shed-ratio: Input should be greater than or equal to 0 (got -0.1)"),
        (["--max-p95-ratio", "0.8"], "--max-p95-ratio: Input should be greater than or equal to 1 (got 0.8)"),
        (["--min-requests", "0"], "--min-requests: Input should be greater than or equal to 1 (got 0)"),
        (["--max-failed-checks", "0"], "--max-failed-checks: Input should be greater than or equal to 1 (got 0)"),
        (["--step-interval", "ten minutes"], "--step-interval 'ten minutes': 'ten minutes' is not a duration"),
        (["--step-interval", "0"], "--step-interval: Input should be greater than or equal to 1 (got 0.0)"),
        (["--expect-dtype", "int8"], "--expect-dtype: Input should be 'float32', 'bfloat16' or 'float16'"),
        (["--log-format", "yaml"], "--log-format: Input should be 'text' or 'json' (got 'yaml')"),
        (["--on-monitoring-outage", "wait"], "--on-monitoring-outage: Input should be 'rollback' or 'hold'"),
        (["--count-failed-checks", "all"], "--count-failed-checks: Input should be 'consecutive' or 'total'"),
        (["--min-p95-increase", "soon"], "--min-p95-increase 'soon': 'soon' is not a duration"),
        (["--max-class-divergence", "1.5"], "--max-class-divergence: Input should be less than or equal to 1"),
        (["--canary-url", "canary:8080"], "--canary-url: 'canary:8080' is not an http:// or https:// base URL"),
        (["--reference-labels", "l.csv"], "reference_labels needs reference_dir"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(flags, message, isvc_file, bare_prometheus, capsys):
    before = isvc_file.read_bytes()
    code, out, err = canary(capsys, *base(isvc_file, bare_prometheus.url), *flags)
    assert code == 2
    assert message in err
    assert out == "" and isvc_file.read_bytes() == before


def test_unreadable_reference_set_is_bad_input_before_any_patch(isvc_file, bare_prometheus, capsys):
    before = isvc_file.read_bytes()
    flags = ["--reference-dir", "/nonexistent/ref"]
    code, out, err = canary(capsys, *base(isvc_file, bare_prometheus.url), *flags)
    assert code == 2 and "--reference-dir /nonexistent/ref: not a directory" in err
    assert " traffic " not in out and isvc_file.read_bytes() == before


def test_every_problem_is_listed_at_once(capsys):
    code, _, err = canary(capsys, "--isvc", "Bad_Name", "--prometheus-url", "prom:9090", "--steps", "50,10")
    assert code == 2
    assert "--isvc: 'Bad_Name' is not a Kubernetes name" in err
    assert "--prometheus-url: 'prom:9090' is not an http:// or https:// base URL" in err
    assert "--steps: steps must be strictly increasing" in err


def test_missing_required_flags(capsys):
    code, _, err = canary(capsys)
    assert code == 2 and "--isvc: Field required" in err and "--prometheus-url: Field required" in err


def test_unknown_inferenceservice(isvc_file, bare_prometheus, capsys):
    before = isvc_file.read_bytes()
    args = base(isvc_file, bare_prometheus.url)
    args[1] = "nope"
    code, out, err = canary(capsys, *args)
    assert code == 2
    assert f"InferenceService {NAMESPACE}/nope not found: {isvc_file} holds {NAMESPACE}/{NAME}" in err
    assert isvc_file.read_bytes() == before and "patch" not in out
    assert out.splitlines()[-1].endswith("(exit 2)") and " result " in out


def test_a_url_that_is_not_prometheus(isvc_file, tmp_path, capsys):
    """A real HTTP server that is not Prometheus (an http.server process answering 404)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/").status_code == 200, 20, "http.server")
        before = isvc_file.read_bytes()
        code, out, err = canary(capsys, *base(isvc_file, f"http://127.0.0.1:{port}"))
    finally:
        server.terminate()
        server.wait(10)
    assert code == 2
    assert f"http://127.0.0.1:{port} is not a Prometheus server: GET /api/v1/status/buildinfo answered 404" in err
    assert isvc_file.read_bytes() == before and "patch" not in out


def test_an_unreachable_prometheus_url(isvc_file, capsys):
    port = free_port()
    code, _, err = canary(capsys, *base(isvc_file, f"http://127.0.0.1:{port}"))
    assert code == 2 and f"cannot reach Prometheus at http://127.0.0.1:{port}" in err


def test_not_an_inferenceservice_file(tmp_path, bare_prometheus, capsys):
    path = tmp_path / "cm.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": NAME}}))
    code, _, err = canary(capsys, *base(path, bare_prometheus.url))
    assert code == 2 and "holds no InferenceService" in err
    code, _, err = canary(capsys, *base(tmp_path / "missing.yaml", bare_prometheus.url))
    assert code == 2 and "cannot read --isvc-file" in err


def test_no_canary_is_exit_2_or_0_when_asked(isvc_file, bare_prometheus, capsys):
    obj = yaml.safe_load(isvc_file.read_text())
    obj["status"]["components"]["predictor"]["latestRolledoutRevision"] = knative_revision(NAME, 2)  # all rolled out
    isvc_file.write_text(yaml.safe_dump(obj))
    before = isvc_file.read_bytes()
    code, out, err = canary(capsys, *base(isvc_file, bare_prometheus.url))
    assert code == 2 and f"{NAMESPACE}/{NAME} has no canary to analyse" in err
    code, out, err = canary(
        capsys, *base(isvc_file, bare_prometheus.url, "--skip-without-canary", "--log-format", "json")
    )
    assert code == 0 and err == ""
    assert '"outcome":"no-canary","exit_code":0' in out
    assert isvc_file.read_bytes() == before


def test_canary_never_ready_is_rolled_back(isvc_file, bare_prometheus, capsys):
    obj = yaml.safe_load(isvc_file.read_text())
    obj["status"]["components"]["predictor"]["latestReadyRevision"] = knative_revision(NAME, 1)
    isvc_file.write_text(yaml.safe_dump(obj))
    code, out, _ = canary(
        capsys, *base(isvc_file, bare_prometheus.url, "--ready-timeout", "1", "--poll-interval", "0.2")
    )
    assert code == 1
    assert " wait " in out and "latestReadyRevision=" + knative_revision(NAME, 1) in out
    assert "ROLLBACK [ready]: canary not ready after 1s" in out
    assert yaml.safe_load(isvc_file.read_text())["spec"]["predictor"]["canaryTrafficPercent"] == 0


def test_no_series_is_a_failed_check_never_a_pass(isvc_file, bare_prometheus, capsys):
    """Prometheus answers, but holds nothing for this InferenceService: each check fails with the reason."""
    code, out, _ = canary(
        capsys,
        *base(
            isvc_file, bare_prometheus.url, "--step-interval", "1", "--max-failed-checks", "2", "--log-format", "json"
        ),
    )
    assert code == 1
    checks = [yaml.safe_load(line) for line in out.splitlines() if '"event":"check"' in line]
    assert [c["verdict"] for c in checks] == ["fail", "rollback"]
    for c in checks:
        assert c["reasons"][0].startswith(f"no series for canary revision '{knative_revision(NAME, 2)}' in ")
        assert c["reasons"][1].startswith(f"no series for stable revision '{knative_revision(NAME, 1)}' in ")
        assert "revision:classifier_requests:rate1s{namespace='ml', isvc='" + NAME in c["reasons"][0]


def test_live_cluster_unreachable_is_a_clear_error(tmp_path, bare_prometheus, capsys):
    """The kubernetes client path, for real, against an API server address where nothing listens."""
    port = free_port()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "nowhere",
                "clusters": [{"name": "nowhere", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "nowhere", "context": {"cluster": "nowhere", "user": "u"}}],
            }
        )
    )
    code, _, err = canary(
        capsys,
        "--isvc",
        NAME,
        "-n",
        NAMESPACE,
        "--prometheus-url",
        bare_prometheus.url,
        "--kubeconfig",
        str(kubeconfig),
    )
    assert code == 2
    assert f"cannot reach the Kubernetes API at https://127.0.0.1:{port} to get inferenceservice ml/{NAME}" in err
    code, _, err = canary(
        capsys, "--isvc", NAME, "--prometheus-url", bare_prometheus.url, "--kubeconfig", str(tmp_path / "none")
    )
    assert code == 2 and "no usable Kubernetes configuration" in err


def test_python_m_predictor_canary_exit_code(isvc_file):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "predictor",
            "canary",
            "--isvc",
            NAME,
            "--prometheus-url",
            "http://127.0.0.1:1",
            "--max-p95-ratio",
            "0",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "--max-p95-ratio: Input should be greater than or equal to 1" in done.stderr
    helped = subprocess.run(
        [sys.executable, "-m", "predictor", "canary", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert helped.returncode == 0 and "--max-failed-checks N" in helped.stdout and "Exit codes:" in helped.stdout
