"""Fixtures of the queue tests: real ``redis-server`` processes, worker processes, images.

The tiny model (``tiny_model_dir``) comes from ``tests/conftest.py``.

A missing ``redis-server`` binary fails the tests (CI installs it with ``scripts/system_deps.sh``).
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.support.servers import free_port

REPO = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.05) -> object:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


class RedisServer:
    """A ``redis-server`` on a free port with an append-only file fsynced on every write.

    ``kill()`` and ``start()`` again on the same port and directory simulate a crash and restart in
    which nothing acknowledged is lost.
    """

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start and wait until it answers PING (AOF loaded)."""
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.workdir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--protected-mode",
                "no",
            ],
            stdout=open(self.workdir / "redis.log", "ab"),
            stderr=subprocess.STDOUT,
        )
        wait_for(self._answers, 20, f"redis-server on port {self.port}")

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"redis-server exited with {self.proc.returncode}: {self.log()}")
        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
        except redis.exceptions.RedisError:
            return False

    def kill(self) -> None:
        """SIGKILL (a crash) and wait until the process is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def client(self) -> redis.Redis:
        """A synchronous client (bytes responses)."""
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def log(self) -> str:
        """The server's log, for failure messages."""
        path = self.workdir / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


@pytest.fixture(scope="session")
def redis_binary() -> str:
    """Path of ``redis-server``; fails (never skips) when it is not installed."""
    path = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if path is None:
        pytest.fail("redis-server is not installed: run scripts/system_deps.sh (apt-get install redis-server)")
    return path


@pytest.fixture
def redis_server(redis_binary: str, tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh, running Redis for one test."""
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(redis_binary, workdir)
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def module_redis(redis_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A running Redis shared by the tests of one module."""
    server = RedisServer(redis_binary, tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def png_images() -> list[bytes]:
    """300 distinct small PNGs (crops of scikit-image's sample photos)."""
    from PIL import Image
    from skimage import data

    photos = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    out = []
    for i in range(300):
        photo = photos[i % len(photos)]
        y, x = (i * 7) % 200, (i * 13) % 200
        buf = io.BytesIO()
        Image.fromarray(photo[y : y + 48, x : x + 64]).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


class WorkerProcess:
    """``python -m predictor worker`` as a subprocess, with its log kept for failure messages."""

    def __init__(self, args: list[str], log_path: Path, metrics_port: int) -> None:
        self.log_path = log_path
        self.metrics_port = metrics_port
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "predictor", "worker", *args],
            cwd=REPO,
            env=env,
            stdout=open(log_path, "wb"),
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        """The worker's output so far."""
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        """Still running."""
        return self.proc.poll() is None

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample from the worker's /metrics (None when absent or not serving yet)."""
        from prometheus_client.parser import text_string_to_metric_families

        try:
            text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).text
        except httpx.TransportError:
            return None
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> int:
        """Send ``sig`` and wait for the exit code."""
        if self.alive():
            self.proc.send_signal(sig)
        return self.proc.wait(timeout_s)


def spawn_worker(redis_url: str, name: str, model_dir: Path, log_dir: Path, **flags: object) -> WorkerProcess:
    """Start ``python -m predictor worker`` on the tiny model, fast-reclaim settings, a free metrics port."""
    settings = {
        "redis_url": redis_url,
        "model_dir": str(model_dir),
        "consumer_name": name,
        "metrics_port": free_port(),
        "visibility_timeout_ms": 1000,
        "max_batch_size": 16,
        "max_batch_delay_ms": 2,
        "cpu_threads": 1,
        "device": "cpu",
        **flags,
    }
    args = [a for k, v in settings.items() for a in (f"--{k}", str(v))]
    return WorkerProcess(args, log_dir / f"worker-{name}.log", int(settings["metrics_port"]))


def kill_all(workers: list[WorkerProcess]) -> None:
    """SIGKILL what is still running (test teardown)."""
    for w in workers:
        if w.alive():
            w.proc.kill()
            w.proc.wait(10)


@pytest.fixture
def start_worker(tiny_model_dir: Path, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker processes on a Redis URL; all are killed at the end of the test."""
    started: list[WorkerProcess] = []

    def start(redis_url: str, name: str, **flags: object) -> WorkerProcess:
        started.append(spawn_worker(redis_url, name, tiny_model_dir, tmp_path, **flags))
        return started[-1]

    yield start
    kill_all(started)
