"""Counters born at zero and the bounded class label of the prediction metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

import predictor.admin  # registers the admin routes' errors
import predictor.errors
import predictor.queue.jobs  # registers the queue's errors
from predictor.errors import PredictorError
from predictor.metrics import (
    OTHER_CLASS,
    PROTOCOLS,
    REJECTION_REASONS,
    RESPONSE_CODES,
    PredictorMetrics,
    class_series_names,
)
from predictor.middleware import protocol_of
from predictor.routes import CLIENT_CLOSED_REQUEST


def _subclasses(cls: type) -> set[type]:
    out = set(cls.__subclasses__())
    for sub in list(out):
        out |= _subclasses(sub)
    return out


def _ours(cls: type) -> bool:
    return cls.__module__.startswith("predictor.") and not cls.__module__.startswith("classifier_canary")


def test_every_error_reason_and_status_is_listed():
    """The lists the counters are born from hold every reason and status an error of ours can carry."""
    assert predictor.errors and predictor.queue.jobs and predictor.admin  # every module that defines errors
    errors = {PredictorError} | {c for c in _subclasses(PredictorError) if _ours(c)}
    assert {c.reason for c in errors} == set(REJECTION_REASONS)
    assert {str(c.status_code) for c in errors} | {"200", "202", str(CLIENT_CLOSED_REQUEST)} == set(RESPONSE_CODES)


def test_every_protocol_the_middleware_counts_is_listed():
    paths = ["/classify", "/v2/models/m/infer", "/v1/models/m:predict", "/v1/jobs"]
    assert {protocol_of(p, "POST") for p in paths} | {"grpc"} == set(PROTOCOLS)


def test_counters_exist_at_zero_before_any_event():
    registry = CollectorRegistry()
    PredictorMetrics(registry).born_at_zero("m")
    for protocol in PROTOCOLS:
        for code in RESPONSE_CODES:
            labels = {"model": "m", "protocol": protocol, "code": code}
            assert registry.get_sample_value("classifier_requests_total", labels) == 0, labels
    for reason in REJECTION_REASONS:
        assert registry.get_sample_value("classifier_rejections_total", {"model": "m", "reason": reason}) == 0
    for name in ("classifier_images_total", "classifier_out_of_memory_total", "classifier_prediction_confidence_count"):
        assert registry.get_sample_value(name, {"model": "m"}) == 0, name
    assert registry.get_sample_value("classifier_predictions_total", {"model": "m", "class": OTHER_CLASS}) == 0


def test_class_series_names_are_bounded_and_keep_other_apart():
    labels = ["tench", "other", "goldfish", "crane", "crane"]
    assert class_series_names(labels, 3) == ["tench", "other (class 1)", "goldfish"]
    assert class_series_names(labels, 0) == []
    assert class_series_names(labels, 10) == ["tench", "other (class 1)", "goldfish", "crane", "crane (class 4)"]


def test_prediction_counts_bound_the_class_label():
    registry = CollectorRegistry()
    m = PredictorMetrics(registry)
    m.born_at_zero("m")
    m.predictions.set_classes("m", ["tench", "goldfish"])
    for class_id in (0, 1, 1, 2, 999):
        m.predictions.inc(class_id)

    def count(name: str) -> float | None:
        return registry.get_sample_value("classifier_predictions_total", {"model": "m", "class": name})

    assert (count("tench"), count("goldfish"), count(OTHER_CLASS)) == (1, 2, 2)
