"""Fixtures of the chart tests: the CRD validator (built once), each profile rendered once, and a tally of
the CEL rules the validator evaluated, skipped on create, or could not compile (printed in the summary)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from classifier_kube.validate import CrdResult, CrdValidator

from .chart_support import CRDS, PROFILES, profile_name, render


@dataclass
class CelTally:
    """What the CEL evaluation of the chart tests came to, across every validated object."""

    objects: int = 0
    evaluations: int = 0
    not_applicable: set[str] = field(default_factory=set)
    unchecked: set[str] = field(default_factory=set)
    uncompilable_in_crds: list[str] | None = None

    def add(self, result: CrdResult) -> None:
        self.objects += 1
        self.evaluations += result.cel_evaluated
        self.not_applicable.update(result.not_applicable_cel)
        self.unchecked.update(result.unchecked_cel)


_TALLY = CelTally()


@pytest.fixture(scope="session")
def crd_validator() -> CrdValidator:
    return CrdValidator(CRDS)


@pytest.fixture(scope="session")
def cel_tally() -> CelTally:
    """Record each CrdResult of a rendered object here; the summary lists what was not evaluated."""
    return _TALLY


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Every profile in chart/ci rendered once: {profile name: objects}."""
    return {profile_name(p): render([p]) for p in PROFILES}


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    t = _TALLY
    if not t.objects and t.uncompilable_in_crds is None:
        return
    terminalreporter.section("chart: CEL rules (x-kubernetes-validations)")
    terminalreporter.write_line(f"{t.evaluations} rule evaluations on {t.objects} rendered custom resources")
    if t.uncompilable_in_crds is not None:
        terminalreporter.write_line(f"rules in the shipped CRDs that cannot be compiled: {len(t.uncompilable_in_crds)}")
        for line in t.uncompilable_in_crds:
            terminalreporter.write_line(f"  UNCOMPILABLE {line[:300]}")
    for line in sorted(t.unchecked):
        terminalreporter.write_line(f"  NOT EVALUATED {line[:300]}")
    for line in sorted(t.not_applicable):
        terminalreporter.write_line(f"  not applicable on create (transition rule) {line[:200]}")
