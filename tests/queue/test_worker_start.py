"""``python -m predictor worker`` that cannot start says why in one line, as ``serve`` does (issue 26)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.support.servers import REPO


def worker(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "predictor", "worker", *flags], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_no_redis_url_is_one_line_naming_the_flag() -> None:
    r = worker("--model-dir", "models/efficientnet-lite0")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs --redis-url" in lines[0] and "PREDICTOR_REDIS_URL" in lines[0], r.stderr


def test_no_model_directory_is_one_line(tmp_path: Path) -> None:
    r = worker("--redis_url", "redis://127.0.0.1:1", "--model_dir", str(tmp_path / "nope"), "--metrics_port", "0")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"cannot load the model from {tmp_path / 'nope'}" in r.stderr and "is not a model directory" in r.stderr


def test_a_taken_metrics_port_is_one_line_before_the_model_loads(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = worker("--redis-url", "redis://127.0.0.1:1", "--model-dir", str(tmp_path), "--metrics-port", str(port))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"cannot serve metrics on --metrics-port {port}" in r.stderr and "cannot load" not in r.stderr
