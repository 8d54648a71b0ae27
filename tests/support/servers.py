"""Real server processes for the tests: free ports, JPEG bytes, a `python -m predictor serve` child process."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_DIR = REPO / "models" / "efficientnet-lite0"


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jpeg_bytes(arr: np.ndarray, quality: int = 90, size: tuple[int, int] | None = None) -> bytes:
    """Encode an RGB array as JPEG, optionally resized to (width, height)."""
    img = Image.fromarray(arr)
    if size is not None:
        img = img.resize(size, Image.BICUBIC)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@dataclass
class ServerProcess:
    """A `python -m predictor serve` child process on a free port."""

    proc: subprocess.Popen
    port: int
    log_path: Path
    model_name: str = "classifier"
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=60)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_records(self, containing: str = "") -> list[dict]:
        """The log's JSON objects (a server run with ``--log_format json``) whose message contains ``containing``."""
        out = []
        for line in self.log().splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and containing in str(doc.get("message", "")):
                out.append(doc)
        return out

    def metrics(self) -> str:
        return self.client.get("/metrics").text

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include ``labels`` (0 when absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        total = 0.0
        for fam in text_string_to_metric_families(self.metrics()):
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total

    def wait_metric(self, name: str, expected: float, timeout_s: float = 30, **labels: str) -> float:
        """The metric's value once it equals ``expected`` (polled), or its last value after ``timeout_s``.

        A response can reach the client before the server records the batch that answered it (metrics
        are observed after the futures resolve), so a test waits for the metric, not for the response.
        """
        deadline = time.monotonic() + timeout_s
        while (value := self.metric(name, **labels)) != expected and time.monotonic() < deadline:
            time.sleep(0.05)
        return value

    def wait_ready(self, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                if self.client.get(f"/v2/models/{self.model_name}/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready in {timeout_s}s:\n{self.log()[-4000:]}")

    def assert_healthy(self, image: bytes) -> None:
        """Still serving: ready, and a real classification answers 200."""
        assert self.proc.poll() is None, self.log()[-3000:]
        assert self.client.get("/v2/health/ready").status_code == 200
        r = self.client.post("/classify", files={"image": ("x.jpg", image, "image/jpeg")})
        assert r.status_code == 200, r.text

    def stop(self) -> int:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_server(
    model_dir: Path,
    log_dir: Path,
    *,
    wait: bool = True,
    module: str = "predictor",
    env: dict[str, str] | None = None,
    **flags: object,
) -> ServerProcess:
    """Start the predictor on a free port with ``--flag value`` for each keyword.

    ``module`` is what ``python -m`` runs (a test launcher that changes one part, then runs the real
    server); ``env`` adds environment variables.
    """
    port = free_port()
    args = [sys.executable, "-m", module, "serve", "--model_dir", str(model_dir), "--http_port", str(port)]
    flags.setdefault("cache_dir", str(log_dir / "cache"))
    # Latency-bounded admission refuses what would wait past 1 s at the measured drain rate, and a test
    # machine's rate depends on what else runs: tests of other features get a budget as long as the
    # request deadline; the admission tests set their own.
    flags.setdefault("max_queue_wait_ms", 30_000)
    for k, v in flags.items():
        args += [f"--{k}", str(v)]
    log_path = log_dir / f"server-{port}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = ServerProcess(proc, port, log_path, model_name=str(flags.get("model_name", "classifier")))
    if wait:
        try:
            server.wait_ready()
        except Exception:
            server.stop()
            raise
    return server


def start_grpc_server(model_dir: Path, log_dir: Path, **flags: object) -> tuple[ServerProcess, int]:
    """:func:`start_server` with the v2 gRPC protocol on too, on a free port: the server and that port."""
    grpc_port = free_port()
    return start_server(model_dir, log_dir, enable_grpc="true", grpc_port=grpc_port, **flags), grpc_port
