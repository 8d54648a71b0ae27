"""Fixtures of the canary tests: the CRD validator, and the canary stack (real predictors and Prometheus)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from classifier_kube.validate import CrdValidator
from tests.support.canary_stack import CanaryStack
from tests.support.prometheus import Prometheus


@pytest.fixture(scope="session")
def crd_validator() -> CrdValidator:
    return CrdValidator()


@pytest.fixture(scope="session")
def canary_stack(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CanaryStack]:
    """Stable, healthy, refusing and slow predictors (the embedded model) and a Prometheus scraping them."""
    stack = CanaryStack(tmp_path_factory.mktemp("canary-stack"), default_model_dir)
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def bare_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """A real Prometheus that scrapes nothing: every canary query returns no series."""
    prom = Prometheus(tmp_path_factory.mktemp("bare-prometheus"), []).start()
    try:
        prom.wait_ready()
        yield prom
    finally:
        prom.stop()
