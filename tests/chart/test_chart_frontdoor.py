"""Knative's front door: ``containerConcurrency`` follows the pod's queue (``auto``), so queue-proxy and the
activator hold the excess instead of the pod refusing it; an explicit value wins; a target the limit makes
unreachable is refused; Standard mode renders none."""

from __future__ import annotations

import pytest
import yaml

from classifier_kube.validate import CrdValidator

from .chart_support import CHART, one, render, render_error

VALUES = yaml.safe_load((CHART / "values.yaml").read_text())


def _predictor(*set_values: str) -> dict:
    return one(render(set_values=list(set_values)), "InferenceService")["spec"]["predictor"]


def test_auto_is_the_default_and_equals_the_pods_queue(crd_validator: CrdValidator):
    assert VALUES["autoscaling"]["knative"]["containerConcurrency"] == "auto"
    isvc = one(render(), "InferenceService")
    assert isvc["spec"]["predictor"]["containerConcurrency"] == VALUES["settings"]["max_queue_images"] == 256
    assert crd_validator.validate(isvc).errors == []


@pytest.mark.parametrize(("queue", "expected"), [(64, 64), (1000, 1000), (5000, 1000)])
def test_auto_follows_max_queue_images_up_to_knatives_limit(queue: int, expected: int):
    assert _predictor(f"settings.max_queue_images={queue}")["containerConcurrency"] == expected


@pytest.mark.parametrize("value", [0, 48])
def test_an_explicit_value_wins(value: int):
    assert _predictor(f"autoscaling.knative.containerConcurrency={value}")["containerConcurrency"] == value


def test_a_concurrency_target_above_the_limit_is_refused():
    err = render_error(set_values=["settings.max_queue_images=16", "autoscaling.knative.target=32"])
    assert "autoscaling.knative.target (32) exceeds containerConcurrency (16)" in err
    # An rps target is not a number of requests in the pod: no conflict.
    rps = _predictor("settings.max_queue_images=16", "autoscaling.knative.target=32", "autoscaling.knative.metric=rps")
    assert rps["containerConcurrency"] == 16 and rps["scaleTarget"] == 32


def test_anything_else_is_refused_by_the_schema():
    err = render_error(set_values=["autoscaling.knative.containerConcurrency=lots"])
    assert "/autoscaling/knative/containerConcurrency" in err
    err = render_error(set_values=["autoscaling.knative.containerConcurrency=1001"])
    assert "/autoscaling/knative/containerConcurrency" in err


def test_standard_mode_has_no_container_concurrency():
    assert "containerConcurrency" not in _predictor("deploymentMode=Standard")
