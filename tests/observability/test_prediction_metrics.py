"""Prediction-level metrics through a real server: every protocol's answer is counted once under its top-1
label, with its top-1 probability in the confidence histogram; the class label is bounded."""

from __future__ import annotations

import base64

import pytest

from tests.support.servers import ServerProcess, start_server


def _counts(server: ServerProcess, label: str) -> tuple[float, float, float]:
    return (
        server.metric("classifier_predictions_total", **{"class": label}),
        server.metric("classifier_prediction_confidence_count"),
        server.metric("classifier_prediction_confidence_sum"),
    )


def test_each_protocol_counts_its_top1_answer(default_server: ServerProcess, cat_jpeg: bytes):
    c = default_server.client
    r = c.post("/classify", files={"image": ("c.jpg", cat_jpeg, "image/jpeg")}, params={"top_k": 3})
    assert r.status_code == 200, r.text
    top = r.json()["predictions"][0][0]  # the answer itself is the reference
    label, score = top["label"], top["score"]
    before = _counts(default_server, label)
    c.post("/classify", files={"image": ("c.jpg", cat_jpeg, "image/jpeg")})
    v1 = {"instances": [{"image": {"b64": base64.b64encode(cat_jpeg).decode()}}]}
    assert c.post("/v1/models/classifier:predict", json=v1).status_code == 200
    v2 = {
        "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(cat_jpeg).decode()]}]
    }
    r2 = c.post("/v2/models/classifier/infer", json=v2)
    assert r2.status_code == 200, r2.text
    after = _counts(default_server, label)
    assert after[0] - before[0] == 3, "one top-1 count per image answered, under the label answered"
    assert after[1] - before[1] == 3
    assert after[2] - before[2] == pytest.approx(3 * score, rel=1e-4)


def test_class_label_is_bounded(default_model_dir, cat_jpeg: bytes, tmp_path):
    """With prediction_metrics_max_classes=0 every answer is "other" and no class series exists."""
    server = start_server(default_model_dir, tmp_path, prediction_metrics_max_classes=0)
    try:
        r = server.client.post("/classify", files={"image": ("c.jpg", cat_jpeg, "image/jpeg")})
        assert r.status_code == 200, r.text
        text = server.metrics()
        assert server.metric("classifier_predictions_total", **{"class": "other"}) == 1
        classes = [line for line in text.splitlines() if line.startswith("classifier_predictions_total{")]
        assert len(classes) == 1, classes
    finally:
        server.stop()


def test_counters_are_born_at_zero(default_model_dir, tmp_path):
    """Before any request every error series and every class series exists, at 0."""
    server = start_server(default_model_dir, tmp_path, prediction_metrics_max_classes=10)
    try:
        text = server.metrics()
        for code in ("400", "500", "503", "504"):
            assert f'classifier_requests_total{{code="{code}",model="classifier",protocol="classify"}} 0.0' in text
        assert 'classifier_rejections_total{model="classifier",reason="queue_full"} 0.0' in text
        classes = [line for line in text.splitlines() if line.startswith("classifier_predictions_total{")]
        assert len(classes) == 11 and all(line.endswith(" 0.0") for line in classes), classes  # 10 + other
    finally:
        server.stop()
