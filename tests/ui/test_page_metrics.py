"""The metrics panel: its Prometheus text parser and quantile, run in Chromium, against independent references."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.browser import TIMEOUT_MS, PageSession
from tests.support.servers import ServerProcess

Opener = Callable[..., PageSession]
MODULE_JS = "async ({fn, args}) => { const m = await import('./ui/metrics.js'); return m[fn](...args); }"
EXPOSITION = r"""# HELP odd_total A counter with awkward labels.
# TYPE odd_total counter
odd_total{model="a\"b",path="C:\\dir",note="two\nlines",expr="{x=1, y=2}"} 3.0
odd_total{model="plain"} 1e+03 1700000000000
# TYPE temp gauge
temp -2.5e-3
temp{where="out"} NaN
# TYPE lat_seconds histogram
lat_seconds_bucket{le="0.1",model="m"} 10.0
lat_seconds_bucket{le="0.2",model="m"} 20.0
lat_seconds_bucket{le="+Inf",model="m"} 20.0
lat_seconds_sum{model="m"} 2.5
lat_seconds_count{model="m"} 20.0
"""


def in_page(page: PageSession, fn: str, *args: object) -> object:
    return page.page.evaluate(MODULE_JS, {"fn": fn, "args": list(args)})


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile (promql/quantile.go), written from its documentation."""
    if not buckets or buckets[-1][0] != math.inf or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    b = next(i for i, (_, count) in enumerate(buckets) if count >= rank)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    if b == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start, below = (0.0, 0.0) if b == 0 else buckets[b - 1]
    end, count = buckets[b]
    return start + (end - start) * (rank - below) / (count - below)


def test_parser_reads_what_prometheus_client_reads(ui_server: ServerProcess, open_page: Opener):
    page = open_page(ui_server)
    ours = in_page(page, "parsePrometheus", EXPOSITION)
    theirs = [s for fam in text_string_to_metric_families(EXPOSITION) for s in fam.samples]
    assert len(ours) == len(theirs)
    for mine, ref in zip(ours, theirs, strict=True):
        assert mine["name"] == ref.name and mine["labels"] == ref.labels
        assert mine["value"] == ref.value or (math.isnan(mine["value"]) and math.isnan(ref.value))
    assert ours[0]["labels"] == {"model": 'a"b', "path": "C:\\dir", "note": "two\nlines", "expr": "{x=1, y=2}"}


@pytest.mark.parametrize(
    "buckets",
    [
        [(0.1, 10.0), (0.2, 20.0), (math.inf, 20.0)],  # in the second bucket: 0.19 by hand
        [(0.1, 100.0), (0.2, 100.0), (math.inf, 100.0)],  # all in the first: from 0
        [(0.1, 1.0), (0.2, 2.0), (math.inf, 50.0)],  # in +Inf: the highest finite bound
        [(0.005, 3.0), (0.01, 3.0), (0.025, 7.0), (0.05, 9.0), (math.inf, 9.0)],
        [(0.1, 0.0), (math.inf, 0.0)],  # no observations
    ],
)
def test_quantile_is_prometheus_histogram_quantile(ui_server: ServerProcess, open_page: Opener, buckets):
    page = open_page(ui_server)
    got = in_page(page, "histogramQuantile", 0.95, [list(b) for b in buckets])  # Playwright carries Infinity
    expected = histogram_quantile(0.95, buckets)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, rel=1e-12)
    if buckets[0] == (0.1, 10.0):
        assert got == pytest.approx(0.19)


def test_panel_shows_the_servers_figures(ui_server: ServerProcess, open_page: Opener, photo_files: dict[str, Path]):
    page = open_page(ui_server)
    before = ui_server.metric("classifier_requests_total")
    page.upload([photo_files["cat"], photo_files["text"]])
    page.wait_finished(2)
    # The server counts a request just after answering it: poll (with a deadline) until both are counted.
    deadline = time.monotonic() + 10
    while ui_server.metric("classifier_requests_total") < before + 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    families = {f.name: f for f in text_string_to_metric_families(ui_server.metrics())}
    requests = sum(s.value for s in families["classifier_requests"].samples if s.name == "classifier_requests_total")
    errors = sum(
        s.value
        for s in families["classifier_requests"].samples
        if s.name == "classifier_requests_total" and int(s.labels["code"]) >= 400
    )
    images = ui_server.metric("classifier_images_total")
    cumulative: dict[float, float] = {}
    for s in families["classifier_request_duration_seconds"].samples:
        if s.name.endswith("_bucket"):
            le = float(s.labels["le"])
            cumulative[le] = cumulative.get(le, 0.0) + s.value
    p95 = histogram_quantile(0.95, sorted(cumulative.items()))
    assert requests == before + 2 and errors >= 1 and images >= 1 and p95 is not None

    page.page.wait_for_function(
        "n => document.getElementById('m-requests').textContent === n", arg=f"{int(requests):,}", timeout=TIMEOUT_MS
    )
    text = {k: page.page.inner_text(f"#m-{k}") for k in ("requests", "errors", "images", "queue", "inflight")}
    assert text == {
        "requests": f"{int(requests):,}",
        "errors": f"{int(errors):,}",
        "images": f"{int(images):,}",
        "queue": "0 of 256 images",
        "inflight": "0",
    }
    shown = float(page.page.get_attribute("#m-p95", "data-seconds"))
    assert shown == pytest.approx(p95, rel=1e-12)
    assert page.page.inner_text("#m-p95") == (f"{_to_fixed(p95 * 1000, 1)} ms" if p95 < 1 else f"{_to_fixed(p95, 2)} s")


def _to_fixed(x: float, digits: int) -> str:
    """JavaScript's ``Number.prototype.toFixed``: the exact binary value, ties rounded up (Python's format
    rounds ties to even, so 81.25 would be "81.2" here and "81.3" on the page)."""
    return str(Decimal(x).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))
