"""Server processes for benchmarks and smoke tests: start, time to ready, CPU used, stop; machine facts.

Linux only (CPU accounting reads ``/proc``).
"""

from __future__ import annotations

import http.client
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

_CLK_TCK = os.sysconf("SC_CLK_TCK")
REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def renice_thread(nice: int) -> None:
    """Give the calling thread this niceness (Linux sets it per thread; 0 leaves it as it is). A thread
    pool initializer, so that only the pool's threads are niced."""
    if nice:
        os.setpriority(os.PRIO_PROCESS, 0, nice)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def host_busy_s() -> float:
    """CPU seconds all cores of the host have spent busy (not idle or iowait) since boot."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    steal_guest = sum(vals[7:]) if len(vals) > 7 else 0  # steal, guest (guest is counted in user)
    return (sum(vals) - idle - steal_guest) / _CLK_TCK


class ServerProcess:
    """One server started as a child process, with the time it took to become ready."""

    def __init__(self, argv: Sequence[str], port: int, log_path: Path | None = None, cwd: Path | None = None) -> None:
        self.argv = list(argv)
        self.port = port
        self.log_path = log_path
        self.cwd = cwd or REPO_ROOT  # ``python -m predictor`` imports the package of this tree
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_s: float | None = None
        self._t0 = 0.0
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL on loopback."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str = "/v2/health/ready", timeout_s: float = 300.0) -> float:
        """Start the process and poll ``ready_path`` until it answers 200; returns seconds to ready.

        Raises:
            RuntimeError: the process exited, or was not ready within ``timeout_s``.
        """
        self.launch()
        return self.wait_ready(ready_path, timeout_s)

    def launch(self) -> None:
        """Start the process without waiting (see :meth:`wait_ready`)."""
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "wb")
        self._t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            self.argv, cwd=self.cwd, stdout=self._log or subprocess.DEVNULL, stderr=subprocess.STDOUT
        )

    def wait_ready(self, ready_path: str = "/v2/health/ready", timeout_s: float = 300.0) -> float:
        """Poll ``ready_path`` until 200; returns seconds from :meth:`launch` to ready."""
        assert self.proc is not None, "not launched"
        deadline = self._t0 + timeout_s
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode} before ready: {self._tail()}")
            if _get_status(self.port, ready_path) == 200:
                self.ready_s = time.perf_counter() - self._t0
                return self.ready_s
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server not ready within {timeout_s} s: {self._tail()}")

    def cpu_s(self) -> float:
        """CPU seconds the server process has used so far."""
        assert self.proc is not None, "not started"
        return process_cpu_s(self.proc.pid)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log:
            self._log.close()
            self._log = None
        return self.proc.returncode

    def _tail(self, n: int = 2000) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        return "(no log)"

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def timed_post(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, float]:
    """One POST on a fresh connection; returns (status, seconds)."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status, time.perf_counter() - t0
    finally:
        conn.close()


def _get_status(port: int, path: str) -> int | None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", path)
        status = conn.getresponse().status
        conn.close()
        return status
    except OSError:
        return None


def served_info(port: int) -> dict[str, str] | None:
    """What a server says it runs: ``classifier_model_info``'s labels (ours) or ``GET /info`` (naive)."""
    import json

    from prometheus_client.parser import text_string_to_metric_families

    for path in ("/metrics", "/info"):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace")
            conn.close()
        except OSError:
            continue
        if resp.status != 200:
            continue
        if path == "/info":
            return json.loads(body)
        for fam in text_string_to_metric_families(body):
            for sample in fam.samples:
                if sample.name == "classifier_model_info" and sample.value == 1:
                    return {k: sample.labels[k] for k in ("backend", "device", "dtype", "version")}
    return None


def ours_argv(model_dir: Path, port: int, **settings: Any) -> list[str]:
    """Command line of our server, with any settings field as a flag."""
    argv = [sys.executable, "-m", "predictor", "serve", "--model_dir", str(model_dir), "--http_port", str(port)]
    for k, v in settings.items():
        argv += [f"--{k}", str(v)]
    return argv


def naive_argv(model_dir: Path, port: int) -> list[str]:
    """Command line of the naive baseline server."""
    return [sys.executable, "-m", "bench.naive_server", "--model_dir", str(model_dir), "--port", str(port)]


def machine_info() -> dict[str, Any]:
    """CPU model, usable cores, the instruction-set flags that matter here, load, library versions."""
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
    versions = {}
    for mod in ("torch", "transformers", "openvino", "onnxruntime", "PIL", "numpy"):
        try:
            versions[mod] = __import__(mod).__version__
        except (ImportError, AttributeError):
            versions[mod] = None
    return {
        "cpu_model": model or platform.processor(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "host_cores": os.cpu_count(),
        "cpu_flags": {f: f in flags for f in wanted},
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "versions": versions,
        "gpu": gpu_info(),
    }


def gpu_info() -> dict[str, Any] | None:
    """The first CUDA device as torch (and NVML, for the driver) sees it; None without one."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        props = torch.cuda.get_device_properties(0)
        info: dict[str, Any] = {
            "name": props.name,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "devices": torch.cuda.device_count(),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "capability": f"{props.major}.{props.minor}",
        }
    except Exception as e:  # a broken CUDA install is worth reporting, not crashing the benchmark
        return {"error": repr(e)}
    try:
        import pynvml

        pynvml.nvmlInit()
        info["driver"] = pynvml.nvmlSystemGetDriverVersion()
    except Exception:
        info["driver"] = None
    return info
