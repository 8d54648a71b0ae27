"""One observability stack per session: the predictor (embedded EfficientNet-Lite0, a small queue so that
load gets 503s, JSON logs, jobs on Redis), a queue worker, stand-in GPU exporters, and a real Prometheus
scraping them every second with the chart's rules loaded; then a load run through ``bench.loadgen``.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.observability.stack import (
    ChartQueries,
    Identity,
    Prometheus,
    StandInGpuExporter,
    chart_queries,
    free_port,
    scrape_job,
    tool,
    wait_until,
)
from tests.support.servers import ServerProcess, jpeg_bytes, start_server

REPO = Path(__file__).resolve().parents[2]
MAX_QUEUE_IMAGES = 4
WORKER_POD = "demo-worker-6c8d9f-abcde"


@dataclass
class Stack:
    chart: ChartQueries
    prometheus: Prometheus
    server: ServerProcess
    worker_port: int
    identities: list[Identity]
    load: list[dict[str, Any]] = field(default_factory=list)
    error_request_id: str = ""
    jobs_submitted: int = 0

    def worker_metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.worker_port}/metrics", timeout=5).text


def _redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run scripts/system_deps.sh (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "", "--appendonly", "no"],
        stdout=(workdir / "redis.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    import redis

    client = redis.Redis(port=port)
    wait_until(lambda: _ping(client), 20, "redis-server PING")
    return proc, f"redis://127.0.0.1:{port}/0"


def _ping(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def obs_stack(
    default_model_dir: Path, tiny_model_dir: Path, photos: dict, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    from bench.loadgen import run_load

    tool("prometheus")  # fail fast, before anything starts
    work = tmp_path_factory.mktemp("observability")
    chart = chart_queries()
    identities = [Identity(isvc) for isvc in sorted(chart.identities)]
    started: list[Any] = []
    worker_proc = redis_proc = None
    try:
        redis_proc, redis_url = _redis(work)
        server = start_server(
            default_model_dir,
            work,
            wait=False,
            max_queue_images=MAX_QUEUE_IMAGES,
            max_batch_size=4,
            backend="torch",  # loads in seconds; OpenVINO's IR export would take ~20 s of the 2 cores
            log_format="json",
            redis_url=redis_url,
        )
        started.append(server)
        worker_port = free_port()
        worker_args = {
            "redis_url": redis_url,
            "model_dir": str(tiny_model_dir),
            "consumer_name": WORKER_POD,
            "metrics_port": worker_port,
            "device": "cpu",
            "backend": "torch",
            "cpu_threads": 1,
        }
        worker_proc = subprocess.Popen(
            [sys.executable, "-m", "predictor", "worker", *[f"--{k}={v}" for k, v in worker_args.items()]],
            cwd=REPO,
            stdout=(work / "worker.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        # One stand-in GPU per InferenceService pod, at 94 % memory so that ClassifierGpuMemoryHigh's
        # expression has a series to return; scraped like a DCGM exporter (honor_labels: pod/namespace
        # are the GPU's consumer, not the exporter).
        gpus = [StandInGpuExporter(i.pod, i.namespace, util=62.0, used_mib=21650, total_mib=23028) for i in identities]
        started.extend(gpus)
        jobs = [scrape_job(f"predictor-{i.isvc}", server.port, i.labels()) for i in identities]
        jobs += [scrape_job(f"dcgm-{i.isvc}", g.port, honor_labels=True) for i, g in zip(identities, gpus, strict=True)]
        jobs.append(scrape_job("worker", worker_port, {"namespace": "ml", "pod": WORKER_POD, "container": "worker"}))
        prometheus = Prometheus(work / "prometheus", jobs, rules=chart.rule_file()).start()
        started.append(prometheus)
        prometheus.wait_ready()
        server.wait_ready()
        stack = Stack(chart, prometheus, server, worker_port, identities)
        wait_until(lambda: "classifier_worker_stream_length" in stack.worker_metrics(), 90, "the worker's /metrics")
        wait_until(lambda: set(prometheus.targets_up().values()) == {"up"}, 30, "every scrape target up")

        # The load: steady traffic with undecodable images (400s), then a burst past the queue (503s).
        steady = run_load(server.url, concurrency=2, duration_s=6, bad_ratio=0.25, size=(320, 240), timeout_s=20)
        burst = run_load(server.url, protocol="v1", concurrency=12, duration_s=4, size=(320, 240), timeout_s=20)
        # However slow the shared machine, some bad requests for sure (bad_ratio=1: every one undecodable).
        bad = run_load(server.url, concurrency=1, requests=3, bad_ratio=1.0, size=(320, 240), timeout_s=20)
        stack.load = [steady, burst, bad]
        # Queue mode: jobs through the predictor's /v1/jobs, finished by the worker.
        image = base64.b64encode(jpeg_bytes(photos["chelsea"], size=(128, 96))).decode()
        for _ in range(3):
            r = server.client.post("/v1/jobs", json={"images": [image]})
            assert r.status_code == 202, r.text
        stack.jobs_submitted = 3
        # An error with our own request id, for the log tests.
        stack.error_request_id = f"obs-{time.time_ns()}"
        r = server.client.post("/classify", content=b"not an image", headers={
            "content-type": "text/plain", "x-request-id": stack.error_request_id})  # fmt: skip
        assert r.status_code == 415 and r.headers["x-request-id"] == stack.error_request_id

        wait_until(lambda: _worker_done(stack) >= 3, 60, "the worker to finish the jobs")
        # Synchronise on data, not time: Prometheus holds the predictor's final request count ...
        total = server.metric("classifier_requests_total")
        wait_until(
            lambda: any(
                float(s["value"][1]) >= total
                for s in prometheus.query(f'sum(classifier_requests_total{{job="predictor-{identities[0].isvc}"}})')
            ),
            30,
            f"Prometheus to scrape all {total:.0f} requests",
        )

        # ... in two scrapes, so that rate() over a window has two samples of every series, also of those
        # the last requests created (the bad images' 400s come last, behind the burst).
        def last_scrape() -> float:
            return min(float(s["value"][1]) for s in prometheus.query('timestamp(up{job=~"predictor-.*"})'))

        seen = last_scrape()
        wait_until(lambda: last_scrape() >= seen + 1.5, 30, "a second scrape after the final request count")
        # ... and the rules have been evaluated on it.
        wait_until(lambda: prometheus.query("revision:classifier_request_error_ratio:rate5m"), 30, "recording rules")
        yield stack
    finally:
        for obj in reversed(started):
            obj.stop()
        _stop(worker_proc)
        _stop(redis_proc)


def _worker_done(stack: Stack) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = stack.worker_metrics()
    except httpx.TransportError:
        return 0
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "classifier_worker_jobs_total" and s.labels.get("outcome") == "ok"
    )
