"""Traffic profiles: rates from segments, arrivals, images per request, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from classifier_plan.errors import PlanInputError
from classifier_plan.traffic import TrafficProfile, load_traffic

REPO = Path(__file__).resolve().parents[2]


def profile(**kw: object) -> TrafficProfile:
    return TrafficProfile.model_validate({"name": "t", "duration": "1h", **kw})


def test_points_linear_and_step() -> None:
    p = profile(segments=[{"kind": "points", "points": [[0, 60], ["10m", 120]]}])
    assert p.rate_per_s(np.array([0.0, 300.0, 600.0, 3000.0])) == pytest.approx([1.0, 1.5, 2.0, 2.0])
    s = profile(segments=[{"kind": "points", "interpolation": "step", "points": [[0, 60], ["10m", 120]]}])
    assert s.rate_per_s(np.array([0.0, 599.0, 600.0])) == pytest.approx([1.0, 1.0, 2.0])


def test_spike_add_set_ramp_and_idle() -> None:
    p = profile(
        segments=[
            {"kind": "points", "points": [[0, 60]]},
            {"kind": "spike", "at": "5m", "duration": "2m", "rate_per_min": 600, "ramp": "60s", "mode": "set"},
            {"kind": "spike", "at": "20m", "duration": "1m", "rate_per_min": 60},
            {"kind": "idle", "from": "30m", "to": "40m"},
        ]
    )
    t = np.array([299.0, 300.0, 330.0, 360.0, 419.0, 420.0, 1230.0, 1900.0, 2500.0])
    # set with a ramp: from the 1 req/s underneath to 10 req/s over 60 s; add: 1 + 1.
    assert p.rate_per_s(t) == pytest.approx([1.0, 1.0, 5.5, 10.0, 10.0, 1.0, 2.0, 0.0, 1.0])


def test_diurnal_peak_and_trough() -> None:
    p = profile(
        duration="24h", segments=[{"kind": "diurnal", "mean_per_min": 300, "amplitude_per_min": 250, "peak_at": "14h"}]
    )
    assert p.rate_per_s(np.array([14 * 3600.0, 2 * 3600.0])) == pytest.approx([550 / 60, 50 / 60])
    idle = profile(
        duration="48h",
        segments=[{"kind": "points", "points": [[0, 60]]}, {"kind": "idle", "from": "2h", "to": "6h", "every": "24h"}],
    )
    assert idle.rate_per_s(np.array([3 * 3600.0, 27 * 3600.0, 7 * 3600.0])) == pytest.approx([0.0, 0.0, 1.0])


def test_poisson_arrivals_match_the_rate() -> None:
    p = profile(segments=[{"kind": "points", "points": [[0, 600]]}], seed=3)
    times = np.concatenate([t for t, _ in p.arrivals_chunks()])
    assert np.all(np.diff(times) >= 0) and times.min() >= 0 and times.max() < 3600
    expected = 10 * 3600
    assert abs(len(times) - expected) < 4 * expected**0.5  # Poisson: within 4 sigma


def test_uniform_arrivals_are_evenly_spaced() -> None:
    p = profile(arrivals="uniform", segments=[{"kind": "points", "points": [[0, 150]]}])
    times = np.concatenate([t for t, _ in p.arrivals_chunks(chunk_s=7)])  # chunks must not disturb spacing
    assert len(times) == 9000
    assert np.diff(times) == pytest.approx(np.full(len(times) - 1, 0.4))


def test_images_per_request_weights() -> None:
    p = profile(images_per_request={1: 0.75, 8: 0.25}, segments=[{"kind": "points", "points": [[0, 6000]]}])
    images = np.concatenate([im for _, im in p.arrivals_chunks()])
    assert set(np.unique(images)) == {1, 8}
    assert (images == 8).mean() == pytest.approx(0.25, abs=0.01)
    assert p.mean_images == pytest.approx(2.75)


@pytest.mark.parametrize("path", sorted((REPO / "docs" / "traffic").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_profiles_load(path: Path) -> None:
    p = load_traffic(path)
    assert p.expected_requests() > 0


def _write(tmp_path: Path, data: object) -> Path:
    f = tmp_path / "traffic.yaml"
    f.write_text(yaml.safe_dump(data))
    return f


@pytest.mark.parametrize(
    ("data", "key", "says"),
    [
        (
            {"name": "x", "duration": "1h", "segments": [{"kind": "points", "points": [[0, 1]]}], "burst": 3},
            "burst",
            "accepted: name, description",
        ),
        (
            {
                "name": "x",
                "duration": "1h",
                "segments": [{"kind": "spike", "at": 0, "duration": 5, "rate_per_min": 1, "peak": 2}],
            },
            "segments.0.peak",
            "accepted: kind, at, duration",
        ),
        (
            {"name": "x", "duration": "1h", "segments": [{"kind": "points", "points": [[0, -5]]}]},
            "segments.0.points.0.1",
            "greater than or equal to 0",
        ),
        (
            {"name": "x", "duration": "soon", "segments": [{"kind": "points", "points": [[0, 1]]}]},
            "duration",
            "not like 90, 90s, 5m",
        ),
        ({"name": "x", "duration": "1h", "segments": [{"kind": "wave"}]}, "segments.0", "points"),
        ({"name": "x", "duration": "1h", "segments": []}, "segments", "at least 1"),
    ],
)
def test_bad_profiles_name_the_file_and_key(tmp_path: Path, data: object, key: str, says: str) -> None:
    f = _write(tmp_path, data)
    with pytest.raises(PlanInputError) as e:
        load_traffic(f)
    assert e.value.source == str(f)
    assert e.value.key == key, str(e.value)
    assert says in str(e.value)


def test_missing_and_non_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(PlanInputError, match="cannot read"):
        load_traffic(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(PlanInputError, match="not YAML"):
        load_traffic(bad)
