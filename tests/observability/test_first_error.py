"""A new pod's first error is visible to ``increase()`` on a real Prometheus: its error counters exist at 0
from start-up, so the first increment is a change from a scraped 0, not the birth of a series (which
``rate()`` and ``increase()`` cannot see)."""

from __future__ import annotations

from tests.support.prometheus import Prometheus, scrape_job, wait_until
from tests.support.servers import start_server

LABELS = {"namespace": "ml", "isvc": "demo", "revision": "demo-predictor-00001", "pod": "new-pod"}


def _value(prom: Prometheus, expr: str) -> float | None:
    result = prom.query(expr)
    return float(result[0]["value"][1]) if result else None


def test_first_error_of_a_new_pod_is_seen_by_increase(tiny_model_dir, cat_jpeg, tmp_path):
    # Every request misses a 1 ms deadline: its first answer is a 504 (a server error, counted in
    # requests_total{code="504"} and rejections_total{reason="deadline"}).
    server = start_server(tiny_model_dir, tmp_path, request_timeout_ms=1)
    prom = Prometheus(tmp_path / "prometheus", [scrape_job("pod", server.port, LABELS)]).start()
    try:
        prom.wait_ready()
        errors = 'classifier_requests_total{isvc="demo", code="504", protocol="classify"}'
        refusals = 'classifier_rejections_total{isvc="demo", reason="deadline"}'
        # The pod's zeros are scraped before its first error (as a pod scraped once before its first
        # failing request is, in a cluster).
        wait_until(lambda: (_value(prom, f"count_over_time({errors}[1m])") or 0) >= 2, 60, "two scrapes of 0")
        assert _value(prom, errors) == 0 and _value(prom, refusals) == 0
        r = server.client.post("/classify", files={"image": ("c.jpg", cat_jpeg, "image/jpeg")})
        assert r.status_code == 504, r.text
        wait_until(lambda: _value(prom, errors) == 1, 30, "the error scraped")
        assert _value(prom, f"increase({errors}[1m])") >= 0.99
        assert _value(prom, f"increase({refusals}[1m])") >= 0.99
        assert _value(prom, 'sum(increase(classifier_requests_total{isvc="demo", code=~"5.."}[1m]))') >= 0.99
    finally:
        prom.stop()
        server.stop()
