"""Fixtures of the planner tests: a hand-made capacity profile, chart profiles, a plan builder."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from classifier_plan.assumptions import Assumptions
from classifier_plan.capacity import CapacityProfile
from classifier_plan.chart import ChartPlan, plan_from_values
from classifier_plan.prices import load_prices
from classifier_plan.setup import SimSetup

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "chart"
PROFILES = sorted((CHART / "ci").glob("*-values.yaml"))

SYNTHETIC = {
    "schema": 1,
    "kind": "estimate",
    "source": "hand-made for the tests: 10 ms for 1 image, 100 ms for 32",
    "date": "2026-12-01T00:00:00+00:00",
    "machine": {"cpu_model": "test", "usable_cores": 2},
    "model": {"name": "synthetic", "bytes": 100_000_000},
    "gpu": {"name": "L4", "count": 1},
    "settings": {"max_batch_size": 32, "max_batch_delay_ms": 5, "max_queue_images": 256, "request_timeout_ms": 30000},
    "pod_model": {
        "batch_time_ms": [[1, 10.0], [32, 100.0]],
        "overhead_ms": 5.0,
        "cpu_shared": False,
        "cpu_ms_per_image": 2.0,
        "cold_start_s": 10.0,
        "capacity_img_per_s": 320.0,
        "measured_max_batch_size": 32,
    },
}
"""A pod whose numbers are easy to compute by hand: S(n) = 10 + 90 (n - 1) / 31 ms, 320 img/s saturated."""


def batch_ms(n: int) -> float:
    """The synthetic profile's forward time, computed independently of PodModel."""
    return 10.0 + 90.0 * (n - 1) / 31.0


@pytest.fixture(scope="session")
def helm() -> str:
    path = shutil.which("helm")
    if path is None:
        pytest.fail("helm not found on PATH: run `make tools` (it puts helm into .tools)")
    return path


@pytest.fixture
def synthetic_path(tmp_path: Path) -> Path:
    p = tmp_path / "capacity.json"
    p.write_text(json.dumps(SYNTHETIC))
    return p


@pytest.fixture
def profile() -> CapacityProfile:
    return CapacityProfile.model_validate(SYNTHETIC)


def values_file(tmp_path: Path, values: dict[str, Any], name: str = "values.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(values))
    return p


def make_setup(
    tmp_path: Path,
    helm: str,
    values: dict[str, Any],
    profile: CapacityProfile,
    min_replicas: int | None = None,
    **assume: Any,
) -> SimSetup:
    """Render the real chart with ``values`` and build a simulation setup around it; ``min_replicas``
    overrides the rendered one (a floor the chart refuses to render, such as Standard-mode KEDA at zero,
    whose engines are still cross-checked)."""
    plan, _ = plan_from_values(CHART, [values_file(tmp_path, values)])
    if min_replicas is not None:
        plan = dataclasses.replace(plan, min_replicas=min_replicas)
    return SimSetup(plan, profile, load_prices(), Assumptions(**assume))


def chart_plan(tmp_path: Path, values: dict[str, Any]) -> ChartPlan:
    return plan_from_values(CHART, [values_file(tmp_path, values)])[0]
