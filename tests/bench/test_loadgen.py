"""Smoke test of the load generator: a real server process, real HTTP, a couple of seconds per protocol.

Asserts behaviour (well-formed JSON, every request answered, bad payloads counted apart), not speed:
speed lives in ``bench/``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.loadgen import run_load, server_timing_s
from bench.procs import ServerProcess, free_port, naive_argv
from tests.support.servers import REPO, start_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def naive_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The naive baseline server on the tiny random model."""
    port = free_port()
    server = ServerProcess(naive_argv(tiny_model_dir, port), port, tmp_path_factory.mktemp("naive") / "log")
    server.start(timeout_s=120)
    yield server
    server.stop()


def _check_result(result: dict, protocol: str) -> None:
    assert result["config"]["protocol"] == protocol
    assert result["ok_requests"] > 0, result["sample_error"]
    assert result["errors"] == {}, result["sample_error"]
    assert result["timeouts"] == 0
    assert result["invalid_responses"] == 0, result["sample_error"]
    assert result["images"] == result["ok_requests"] * result["config"]["images_per_request"]
    lat = result["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert result["img_per_s"] > 0
    assert result["client_cpu"]["cpu_s"] > 0


def test_cli_prints_well_formed_json_against_the_naive_server(naive_server: ServerProcess) -> None:
    cmd = [sys.executable, "-m", "bench.loadgen", "--url", naive_server.url, "--protocol", "classify",
           "--concurrency", "4", "--duration", "2", "--size", "320x240", "--validate"]  # fmt: skip
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    _check_result(result, "classify")
    assert result["rejected_503"]["count"] == 0
    assert result["duration_s"] == pytest.approx(2.0, abs=1.0)


def test_request_count_bounds_the_run(naive_server: ServerProcess) -> None:
    result = run_load(naive_server.url, concurrency=2, duration_s=30, requests=10, size=(320, 240))
    assert result["requests"] == 10
    assert result["duration_s"] < 30


def test_bad_payloads_are_counted_apart(naive_server: ServerProcess) -> None:
    result = run_load(naive_server.url, concurrency=4, duration_s=2, size=(320, 240), bad_ratio=0.3, seed=1)
    _check_result(result, "classify")
    bad = result["bad_payload"]
    assert bad["sent"] > 0
    assert bad["status_counts"] == {"400": bad["sent"]}


def test_remote_urls_are_refused() -> None:
    with pytest.raises(ValueError, match="loopback"):
        run_load("http://example.com:8080", duration_s=1)


@pytest.fixture(scope="module")
def our_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Our server on the tiny model, for the protocols the naive server does not speak."""
    server = start_server(tiny_model_dir, tmp_path_factory.mktemp("ours"))
    yield server
    server.stop()


@pytest.mark.parametrize("protocol", ["classify", "v2-json", "v2-binary", "v1"])
def test_every_protocol_encoding_is_accepted_by_our_server(our_server, protocol: str) -> None:
    result = run_load(
        our_server.url, protocol=protocol, concurrency=4, duration_s=1.5, size=(320, 240),
        images_per_request=2, validate=True,
    )  # fmt: skip
    _check_result(result, protocol)


def test_polite_clients_wait_for_retry_after(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Closed loop against a one-image queue held by slow batches: clients that ignore Retry-After come
    straight back; clients that honour it (as python -m predictor.client does) wait a second or more."""
    server = start_server(tiny_model_dir, tmp_path, max_queue_images=1, max_batch_size=64, max_batch_delay_ms=1500)
    try:
        load = {"protocol": "classify", "concurrency": 4, "duration_s": 3.0, "size": (160, 120), "seed": 3}
        rude = run_load(server.url, **load)
        polite = run_load(server.url, honor_retry_after=True, **load)
    finally:
        server.stop()
    for r in (rude, polite):
        assert r["ok_requests"] > 0 and r["timeouts"] == 0 and set(r["errors"]) <= {"503"}, r["sample_error"]
        assert r["rejected_503"]["retry_after_s"]["p50"] >= 1
    # Each polite client is refused at most once per second (Retry-After >= 1 s): 4 clients x ~3 s.
    assert polite["rejected_503"]["count"] <= 4 * 4, polite["rejected_503"]
    assert rude["rejected_503"]["count"] > 4 * polite["rejected_503"]["count"], (rude["rejected_503"], polite)


def test_honouring_retry_after_is_a_closed_loop_option() -> None:
    with pytest.raises(ValueError, match="closed loop"):
        run_load("http://127.0.0.1:9", rate_per_s=5.0, honor_retry_after=True, duration_s=1)


def test_the_servers_own_time_is_read_from_server_timing() -> None:
    assert server_timing_s("total;dur=12.5") == pytest.approx(0.0125)
    assert server_timing_s("db;dur=1, total;desc=x;dur=3") == pytest.approx(0.003)
    assert server_timing_s(None) is None and server_timing_s("total") is None and server_timing_s("total;dur=x") is None
    both = 'queue;desc="admitted to inferred";dur=900.5, total;dur=950.25'
    assert server_timing_s(both) == pytest.approx(0.95025) and server_timing_s(both, "queue") == pytest.approx(0.9005)
    assert server_timing_s("total;dur=3", "queue") is None
