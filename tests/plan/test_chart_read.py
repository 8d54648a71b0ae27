"""Reading the rendered chart (real helm) for every chart/ci profile, and values that do not render."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from classifier_plan.chart import plan_from_values
from classifier_plan.errors import PlanInputError
from classifier_plan.report import _plan_lines
from classifier_plan.units import parse_quantity
from classifier_plan.values import classify, read_values

from .conftest import CHART, PROFILES, chart_plan, values_file

DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())


def effective(profile: Path) -> dict[str, Any]:
    """chart/values.yaml with the profile on top: the independent reference for what must be read."""
    from classifier_plan.values import deep_merge

    return deep_merge(DEFAULTS, yaml.safe_load(profile.read_text()) or {})


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name.removesuffix("-values.yaml"))
def test_every_profile_is_read_as_its_values_say(profile: Path, helm: str) -> None:
    plan, _ = plan_from_values(CHART, [profile])
    v = effective(profile)
    a = v["autoscaling"]
    assert plan.mode == v["deploymentMode"].lower()
    assert (plan.min_replicas, plan.max_replicas) == (a["minReplicas"], a["maxReplicas"])
    for key in ("max_batch_size", "max_batch_delay_ms", "max_queue_images", "request_timeout_ms"):
        assert getattr(plan.settings, key) == v["settings"][key]
    assert plan.pod.gpus == (v["gpu"]["count"] if v["gpu"]["enabled"] else 0)
    assert plan.pod.cpu_request == parse_quantity(v["resources"]["requests"]["cpu"])
    if plan.mode == "knative":
        assert plan.autoscaler == "kpa"
        assert plan.knative is not None and plan.knative.target == a["knative"]["target"]
        assert plan.knative.metric == a["knative"]["metric"]
        assert plan.knative.scale_down_delay_s == 300.0  # "5m"
    else:
        assert plan.autoscaler == a["standard"]["autoscaler"]
    assert (plan.nodepool is not None) == v["karpenter"]["nodePool"]["enabled"]


def test_keda_profile_triggers(helm: str) -> None:
    plan, _ = plan_from_values(CHART, [CHART / "ci" / "standard-keda-values.yaml"])
    signals = {(m.signal, m.aggregation, m.target, m.target_type) for m in plan.hpa_metrics}
    # KServe builds prometheus triggers without a metricType, so KEDA's default AverageValue applies.
    assert signals == {("queue_depth", "sum", 16.0, "AverageValue"), ("gpu_util", "sum", 80.0, "AverageValue")}
    assert plan.keda is not None and (plan.keda.polling_s, plan.keda.cooldown_s) == (30.0, 300.0)
    assert plan.scrape_interval_s == 15.0


def test_nodepool_of_the_spot_profile(helm: str) -> None:
    plan, _ = plan_from_values(CHART, [CHART / "ci" / "gpu-spot-knative-canary-values.yaml"])
    n = plan.nodepool
    assert n is not None
    assert n.capacity_types == ("spot", "on-demand") and n.families == ("g5", "g6", "g6e")
    assert dict(n.limits)["nvidia.com/gpu"] == 16.0 and n.consolidate_after_s == 300.0
    assert plan.canary == (("canary[0].trafficPercent", 10),)


def test_settings_come_from_the_container_flags(tmp_path: Path, helm: str) -> None:
    plan = chart_plan(tmp_path, {"settings": {"max_batch_size": 8, "max_queue_images": 40, "request_timeout_ms": 900}})
    assert (plan.settings.max_batch_size, plan.settings.max_queue_images, plan.settings.request_timeout_ms) == (
        8,
        40,
        900,
    )


@pytest.mark.parametrize(
    ("values", "key", "says"),
    [
        (
            {"autoscaling": {"minReplicas": 9, "maxReplicas": 2}},
            "autoscaling.minReplicas",
            "greater than autoscaling.maxReplicas",
        ),
        ({"autoscaling": {"bogus": 1}}, "autoscaling.bogus", "not allowed"),
        ({"settings": {"max_batch_size": "many"}}, "settings.max_batch_size", "does not render"),
    ],
)
def test_values_that_do_not_render_name_file_and_key(
    tmp_path: Path, helm: str, values: dict, key: str, says: str
) -> None:
    f = values_file(tmp_path, values)
    with pytest.raises(PlanInputError) as e:
        plan_from_values(CHART, [f])
    assert e.value.source == str(f)
    assert e.value.key == key, str(e.value)
    assert says in str(e.value)


def test_values_are_classified_by_rendering(tmp_path: Path, helm: str) -> None:
    f = values_file(
        tmp_path,
        {
            "image": {"tag": "9.9.9"},  # changes the manifests, not the simulation
            "autoscaling": {"maxReplicas": 7, "minReplicas": 1},  # maxReplicas modelled; minReplicas = default
            "settings": {"max_batch_size": 16, "log_level": "DEBUG"},
            "monitoring": {"dashboard": {"enabled": False}},
        },
    )
    values = read_values([f])
    plan, text = plan_from_values(CHART, [f])
    got = {c.key: c.status for c in classify(CHART, values, "image-classifier", plan, text)}
    assert got == {
        "image.tag": "not modelled",
        "autoscaling.maxReplicas": "modelled",
        "autoscaling.minReplicas": "chart default",
        "settings.max_batch_size": "modelled",
        "settings.log_level": "not modelled",
        "monitoring.dashboard.enabled": "not modelled",
    }


@pytest.mark.parametrize(
    ("profile", "resource"), [("gpu-mig", "nvidia.com/mig-1g.10gb"), ("gpu-timeslicing", "nvidia.com/gpu.shared")]
)
def test_a_gpu_share_is_read_as_a_gpu_and_the_report_says_how_it_is_simulated(
    profile: str, resource: str, helm: str
) -> None:
    plan, _ = plan_from_values(CHART, [CHART / "ci" / f"{profile}-values.yaml"])
    assert (plan.pod.gpu_resource, plan.pod.gpus) == (resource, 1)
    assert any(f"GPU share `{resource}`: simulated as a whole GPU" in line for line in _plan_lines(plan))
    default, _ = plan_from_values(CHART, [])
    assert not any("GPU share" in line for line in _plan_lines(default))


def test_the_http_add_on_profile_is_read_as_the_scaledobject_and_interceptor_the_add_on_makes(helm: str) -> None:
    """The HTTPScaledObject (Standard mode that scales to zero) is simulated as the add-on behaves: KEDA's
    cooldown is its scaledownPeriod, the HPA aims at its targetValue per pod of the interceptor's request rate,
    and the interceptor holds requests for conditionWait (the chart's cold-start budget)."""
    from classifier_plan.chart import HpaMetric, HttpAddonScaling, KedaScaling

    plan, _ = plan_from_values(CHART, [CHART / "ci" / "standard-keda-http-values.yaml"])
    assert (plan.mode, plan.autoscaler, plan.min_replicas, plan.max_replicas) == ("standard", "httpAddon", 0, 6)
    assert plan.http_addon == HttpAddonScaling("requestRate", 50.0, 60.0, 300.0, 210.0, 40.0)
    assert plan.keda == KedaScaling(polling_s=15.0, cooldown_s=300.0)
    (metric,) = plan.hpa_metrics
    assert metric == HpaMetric("http_request_rate", 50.0, "sum", "AverageValue")
    assert plan.unmodelled == ()
    lines = _plan_lines(plan)
    assert any("KEDA HTTP add-on: requestRate at the interceptor, target 50 per pod" in line for line in lines)
