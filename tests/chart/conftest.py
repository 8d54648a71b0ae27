"""Fixtures of the chart tests: the CRD validator (built once) and each profile rendered once."""

from __future__ import annotations

from typing import Any

import pytest

from predictor.kube.validate import CrdValidator

from .chart_support import CRDS, PROFILES, profile_name, render

_UNCHECKED_CEL: set[str] = set()


@pytest.fixture(scope="session")
def crd_validator() -> CrdValidator:
    return CrdValidator(CRDS)


@pytest.fixture(scope="session")
def record_unchecked_cel():
    """Collects CEL rules the validator could not evaluate; they are listed in the test summary."""
    return _UNCHECKED_CEL.update


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Every profile in chart/ci rendered once: {profile name: objects}."""
    return {profile_name(p): render([p]) for p in PROFILES}


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _UNCHECKED_CEL:
        terminalreporter.section("chart: CEL rules NOT evaluated offline (checked only by an API server)")
        for line in sorted(_UNCHECKED_CEL):
            terminalreporter.write_line(f"UNCHECKED {line[:200]}")
