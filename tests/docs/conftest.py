"""Fixtures of the documentation test: a live predictor (default model, gRPC on, /v1/jobs on a real Redis),
a queue worker started on demand, a real Prometheus with no series, and a work directory laid out as a
plain clone after ``make run`` and ``make tools``: every tracked top-level entry of the repository, the
``.venv``, ``.tools`` and the default model, plus what the docs' commands make there (``cat.jpg``,
``coffee.jpg``, ``photos/``). ``bench/`` is a directory of its own (its tools write ``bench/results``
there, not into the repository)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.queue.conftest import RedisServer, kill_all, spawn_worker
from tests.support.prometheus import Prometheus
from tests.support.servers import ServerProcess, free_port, start_server

from .checks import check_all
from .extract import Command
from .shell import Context, Services
from .world import REPO

UNCHECKED: set[str] = set()
"""Commands not checked, with the reason their document gives (listed in the test summary)."""


def write_photos(workdir: Path) -> None:
    """cat.jpg and coffee.jpg as README.md makes them (scikit-image's samples, Pillow's defaults)."""
    from PIL import Image
    from skimage import data

    Image.fromarray(data.chelsea()).save(workdir / "cat.jpg")
    Image.fromarray(data.coffee()).save(workdir / "coffee.jpg")
    (workdir / "photos").mkdir(exist_ok=True)
    for name in ("cat.jpg", "coffee.jpg"):
        (workdir / "photos" / name).write_bytes((workdir / name).read_bytes())


def seed_dead_letter(redis_url: str) -> None:
    """One job moved to the dead-letter stream as a worker moves one after max_deliveries (consumer
    ``crashed-worker``), so docs/queue.md's dead-letter commands have an entry to show."""
    import asyncio

    from predictor.config import Settings
    from predictor.queue.jobs import JobQueue

    async def seed() -> None:
        queue = JobQueue(Settings(redis_url=redis_url))
        await queue.submit([b"not an image"])
        (job,) = await queue.read("crashed-worker", 1, 100)
        await queue.dead_letter(job, 5, "delivered 5 times without an acknowledgement", "crashed-worker")
        await queue.close()

    asyncio.run(seed())


@pytest.fixture(scope="session")
def doc_redis(redis_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(redis_binary, tmp_path_factory.mktemp("doc-redis"))
    server.start()
    seed_dead_letter(server.url)
    yield server
    server.kill()


@pytest.fixture(scope="session")
def redis_binary() -> str:
    import shutil

    path = shutil.which("redis-server")
    if path is None:
        pytest.fail("redis-server is not installed: run scripts/system_deps.sh (apt-get install redis-server)")
    return path


@pytest.fixture(scope="session")
def doc_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    prom = Prometheus(tmp_path_factory.mktemp("doc-prometheus"), []).start()
    try:
        prom.wait_ready()
        yield prom
    finally:
        prom.stop()


@pytest.fixture(scope="session")
def doc_services(
    default_model_dir: Path,
    doc_redis: RedisServer,
    doc_prometheus: Prometheus,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Services]:
    logs = tmp_path_factory.mktemp("doc-services")
    grpc_port = free_port()
    metrics_port = free_port()  # as in the chart: metrics on their own port, not on the inference port
    server: ServerProcess = start_server(
        default_model_dir, logs, redis_url=doc_redis.url, enable_grpc="true", grpc_port=grpc_port,
        http_metrics_port=metrics_port,
    )  # fmt: skip
    workers: list = []

    def start_worker() -> None:
        if not workers:
            workers.append(spawn_worker(doc_redis.url, "docs-worker", default_model_dir, logs))

    yield Services(server.url, server.port, doc_redis.port, start_worker, metrics_port, grpc_port, doc_prometheus.port)
    kill_all(workers)
    server.stop()


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("doc-workdir")
    write_photos(d)
    clone_layout(d)
    return d


def clone_layout(d: Path) -> None:
    """``d`` as a clone after ``make run`` and ``make tools``, by symlinks into the repository."""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for top in sorted({line.split("/", 1)[0] for line in tracked.splitlines()} | {".venv", ".tools"}):
        if top == "bench":
            (d / "bench").mkdir()
            for entry in (REPO / "bench").iterdir():
                os.symlink(entry, d / "bench" / entry.name)
        elif (REPO / top).exists():
            os.symlink(REPO / top, d / top)


@pytest.fixture
def run_commands(doc_services: Services, workdir: Path) -> Callable[[list[Command]], tuple[list, list, dict]]:
    """Check a document's commands in order; unchecked ones go to the session's summary."""

    def run(commands: list[Command]) -> tuple[list[str], list[str], dict]:
        failures, unchecked, counts = check_all(commands, lambda c: Context(c, workdir, doc_services))
        UNCHECKED.update(unchecked)
        return failures, unchecked, counts

    return run


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if UNCHECKED:
        terminalreporter.section(f"docs: {len(UNCHECKED)} documented commands NOT checked (reason in the doc)")
        for line in sorted(UNCHECKED):
            terminalreporter.write_line(f"UNCHECKED {line}")
