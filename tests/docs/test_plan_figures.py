"""Every planner figure docs/capacity.md and README.md quote comes from ``scripts/plan_doc_figures.py``:
the docs' generated blocks are what ``docs/plan-figures.json`` renders, the JSON was produced from the
current planner, chart and traffic files (fingerprint), and the quick runs give the same figures again."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def figures() -> ModuleType:
    spec = importlib.util.spec_from_file_location("plan_doc_figures", REPO / "scripts" / "plan_doc_figures.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def data(figures: ModuleType) -> dict:
    return json.loads(figures.FIGURES.read_text())


def test_the_docs_show_what_the_runs_produced_from_todays_sources(figures: ModuleType, data: dict) -> None:
    problems = figures.stale(data)
    assert not problems, "; ".join(problems) + " (run: .venv/bin/python scripts/plan_doc_figures.py)"
    assert set(data["runs"]) == set(figures.RUNS)


def test_a_changed_figure_or_source_is_caught(figures: ModuleType, data: dict, tmp_path: Path) -> None:
    """The check can fail: one figure changed in the JSON, or a fingerprint from other sources."""
    changed = copy.deepcopy(data)
    changed["runs"]["idle-night-spot-cpu"]["requests_timed_out_waking"] += 1
    assert any("generated block differs" in p for p in figures.stale(changed))
    other = {**data, "fingerprint": "0" * 64}
    assert any("other sources" in p for p in figures.stale(other))


@pytest.mark.parametrize("name", ["quiet-default-cpu", "spike-default-cpu", "peak-default-cpu"])
def test_a_quick_run_gives_the_same_figures_again(figures: ModuleType, data: dict, name: str) -> None:
    assert figures.RUNS[name].get("quick")
    assert figures.run_plan(name) == data["runs"][name]
