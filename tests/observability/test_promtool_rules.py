"""Alert behaviour: ``promtool test rules`` suites (tests/observability/rules/*.test.yaml) run against the
PrometheusRule rendered from the chart: each alert fires when it should and stays silent when healthy."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.observability.stack import NAMESPACE, PROFILES, RELEASE, profile_name, render, tool

SUITES = sorted((Path(__file__).parent / "rules").glob("*.test.yaml"))
# The profile whose rules the suites run against: it renders every alert (the worker's included).
PROFILE = next(p for p in PROFILES if profile_name(p) == "queue-worker")


def rule_groups(values: Path) -> list[dict]:
    rules = [o for o in render(values) if o["kind"] == "PrometheusRule"]
    return rules[0]["spec"]["groups"] if rules else []


def alert_names(groups: list[dict]) -> set[str]:
    return {r["alert"] for g in groups for r in g["rules"] if "alert" in r}


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rules.yaml (the rendered groups; annotations, which are prose, stripped) beside copies of the suites."""
    d = tmp_path_factory.mktemp("promtool")
    groups = rule_groups(PROFILE)
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (d / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    for suite in SUITES:
        shutil.copy(suite, d / suite.name)
    return d


def test_suites_render_against_the_expected_release():
    """The suites' literal label values are the rendered ones (release demo, namespace ml)."""
    text = yaml.safe_dump(rule_groups(PROFILE))
    assert f'namespace=\\"{NAMESPACE}\\"' in text or f'namespace="{NAMESPACE}"' in text
    assert f'isvc=\\"{RELEASE}\\"' in text or f'isvc="{RELEASE}"' in text  # the InferenceService is the release


@pytest.mark.parametrize("suite", SUITES, ids=lambda p: p.name)
def test_promtool_suite(suite: Path, rules_dir: Path):
    result = subprocess.run(
        [tool("promtool"), "test", "rules", suite.name], cwd=rules_dir, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_case():
    """Coverage: each alert any profile renders is tested both ways; the suites name no unknown alert."""
    rendered = set().union(*(alert_names(rule_groups(p)) for p in PROFILES))
    assert rendered <= alert_names(rule_groups(PROFILE)), "an alert is missing from the profile the suites use"
    fires, silent = set(), set()
    for suite in SUITES:
        for test in yaml.safe_load(suite.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    assert fires | silent <= rendered, f"suites test alerts the chart does not have: {(fires | silent) - rendered}"
    assert rendered <= fires, f"alerts never shown firing: {rendered - fires}"
    assert rendered <= silent, f"alerts never shown silent: {rendered - silent}"


def test_promtool_fails_a_wrong_expectation(rules_dir: Path):
    """The harness would catch an alert that does not behave: a suite expecting a silent alert to fire fails."""
    bad = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [],
                "alert_rule_test": [
                    {
                        "eval_time": "10m",
                        "alertname": "ClassifierHighErrorRatio",
                        "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
                    }
                ],
            }
        ],
    }
    (rules_dir / "wrong.yaml").write_text(yaml.safe_dump(bad))
    result = subprocess.run(
        [tool("promtool"), "test", "rules", "wrong.yaml"], cwd=rules_dir, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr


def test_a_missing_binary_is_a_failure_not_a_skip():
    """CI installs prometheus/promtool (scripts/system_deps.sh) and helm (make tools); without them the
    observability tests fail with the command to run."""
    from tests.observability.stack import MissingTool

    with pytest.raises(AssertionError, match=r"system_deps\.sh"):
        tool("prometheus-that-does-not-exist")
    assert issubclass(MissingTool, AssertionError)
