"""Capacity profiles: the pod model fitted from measurements, packaged profiles, prices, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from classifier_plan.capacity import DATA_DIR, PodModel, fit_pod_model, load_capacity
from classifier_plan.errors import PlanInputError
from classifier_plan.prices import load_prices

from .conftest import SYNTHETIC, batch_ms


def point(rate: float, batch: float, forward: float, wait: float, latency: float) -> dict:
    return {
        "rate_per_s": rate,
        "img_per_s": rate,
        "rejected_503_share": 0.0,
        "latency_ms": {"p50": latency, "p95": latency + 2.3},
        "mean_latency_ms": latency,
        "server_cpu_ms_per_image": 8.0,
        "server": {
            "mean_batch_size": batch,
            "mean_forward_ms": forward,
            "mean_batcher_wait_ms": wait,
            "mean_decode_ms": 1.5,
        },
    }


def test_fit_takes_the_servers_own_batch_times_and_the_light_load_overhead() -> None:
    # Open-loop points (what the fit uses): offered rate, then the server's mean batch, forward ms, batcher
    # wait and the mean latency.
    measured = {
        "settings": {"max_batch_size": 32},
        "machine": {"usable_cores": 2},
        "gpu": None,
        "measurements": {
            "cold_start_s": {"first": 9.5},
            "closed_loop": [],
            "open_loop": [
                point(1, 1.0, 3.0, 5.0, 12.0),
                point(4, 3.0, 9.0, 4.0, 25.0),
                point(16, 14.0, 80.0, 60.0, 200.0),
                point(64, 31.0, 170.0, 300.0, 700.0),
                point(128, 31.5, 168.0, 600.0, 1400.0),  # within 5 % of 31: merged, times kept monotone
            ],
        },
    }
    pm = fit_pod_model(measured)
    assert pm.batch_time_ms == [(1.0, 3.0), (3.0, 9.0), (14.0, 80.0), (31.5, 170.0)]
    assert pm.overhead_ms == pytest.approx(12.0 - 5.0 - 3.0)
    # p95 - p50 = 2.3 ms below the knee at every rate: an exponential part of mean 1 ms, not growing with load.
    assert pm.overhead_jitter_ms == pytest.approx(1.0) and pm.jitter_per_utilization_ms == pytest.approx(0.0, abs=1e-9)
    assert pm.cpu_shared and pm.cold_start_s == 9.5 and pm.cpu_ms_per_image == 8.0
    assert pm.capacity_img_per_s == pytest.approx(32 / pm.batch_ms(32) * 1000, rel=1e-3)


def test_batch_time_interpolation_and_extrapolation() -> None:
    pm = PodModel.model_validate(SYNTHETIC["pod_model"])
    for n in (1, 2, 16, 32):
        assert pm.batch_ms(n) == pytest.approx(batch_ms(n))
    assert pm.batch_ms(64) == pytest.approx(batch_ms(64))  # the last slope continues
    assert pm.capacity(32) == pytest.approx(320.0)
    # event loop 0 ms (not set) and no decode cost: the forward pass is the limit
    assert pm.frontend_img_per_s(1.0) == float("inf")


def test_frontend_limits_a_gpu_pod() -> None:
    pm = PodModel.model_validate({**SYNTHETIC["pod_model"], "frontend_ms_per_request": 5.0})
    assert pm.capacity(32, images_per_request=1.0) == pytest.approx(200.0)  # 1 / 5 ms
    assert pm.capacity(32, images_per_request=4.0) == pytest.approx(320.0)


@pytest.mark.parametrize("name", sorted(p.stem for p in DATA_DIR.glob("*.json")))
def test_packaged_profiles_load_and_say_what_they_are(name: str) -> None:
    p = load_capacity(name)
    assert p.source and p.pod_model.capacity_img_per_s > 0
    if p.kind == "estimate":
        assert "ESTIMATE" in p.source


def test_bad_capacity_files(tmp_path: Path) -> None:
    bad = tmp_path / "c.json"
    bad.write_text(json.dumps({**SYNTHETIC, "pod_model": {**SYNTHETIC["pod_model"], "speed": 3}}))
    with pytest.raises(PlanInputError) as e:
        load_capacity(bad)
    assert e.value.key == "pod_model.speed" and "accepted: batch_time_ms" in str(e.value)
    bad.write_text(
        json.dumps({**SYNTHETIC, "pod_model": {**SYNTHETIC["pod_model"], "batch_time_ms": [[4, 10], [2, 20]]}})
    )
    with pytest.raises(PlanInputError, match="increasing"):
        load_capacity(bad)
    bad.write_text("{not json")
    with pytest.raises(PlanInputError, match="not a JSON capacity profile"):
        load_capacity(bad)


def test_price_book_spot_and_allocatable() -> None:
    book = load_prices()
    g = book.instances["g4dn.xlarge"]
    assert g.price("on-demand") == 0.526
    assert g.price("spot") == pytest.approx(0.526 * (1 - 0.62))
    cpu, mem = book.instances["g6.2xlarge"].allocatable(0.0, 0.0)
    assert cpu == pytest.approx(8 - 0.090)  # 60 + 10 + 5 + 5 + 4 x 2.5 millicores
    assert mem == pytest.approx(32 * 2**30 * 0.925 - (11 * 58 + 255 + 100) * 2**20)


def test_jitter_calibration_recovers_a_known_spread() -> None:
    """Measurements made by the simulator itself with a known overhead spread: the grid finds it again."""
    from classifier_plan.capacity import CapacityProfile
    from classifier_plan.podcurve import QUANTILES, calibrate_jitter, simulate_fixed, standalone_setup

    truth = {**SYNTHETIC["pod_model"], "cpu_shared": True, "overhead_jitter_ms": 1.0, "jitter_per_utilization_ms": 3.0}
    known = CapacityProfile.model_validate({**SYNTHETIC, "gpu": None, "pod_model": truth})
    points = []
    for rate in (30.0, 90.0, 150.0):
        r = simulate_fixed(standalone_setup(known), rate, min(10.0, 2000 / rate), "uniform", warmup_s=1.0)
        p95 = r.quantiles_ms[QUANTILES.index(0.95)]
        points.append(
            {
                "rate_per_s": rate,
                "rejected_503_share": 0.0,
                "server": {"mean_batch_size": 1.0},
                "latency_ms": {"p95": p95},
            }
        )
    blank = {**truth, "overhead_jitter_ms": 0.0, "jitter_per_utilization_ms": 0.0}
    start = CapacityProfile.model_validate(
        {**SYNTHETIC, "gpu": None, "pod_model": blank, "measurements": {"open_loop": points}}
    )
    got = calibrate_jitter(start).pod_model
    assert (got.overhead_jitter_ms, got.jitter_per_utilization_ms) == (1.0, 3.0)
