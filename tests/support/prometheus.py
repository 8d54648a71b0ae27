"""A real Prometheus server for tests: a ``prometheus`` process on a free loopback port with static scrape
targets, and the helpers around it (finding binaries, polling with a deadline). Used by the observability
and canary tests and by ``scripts/render_dashboard.py``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.servers import free_port

REPO = Path(__file__).resolve().parents[2]


class MissingTool(AssertionError):
    """A required binary is absent: a test failure (CI installs them), never a skip."""


def tool(name: str) -> str:
    """Path of ``name`` on PATH or in the repository's ``.tools/`` (``make tools``)."""
    path = shutil.which(name) or shutil.which(name, path=str(REPO / ".tools"))
    if path is None:
        hint = "make tools" if name in ("helm", "kubectl") else "bash scripts/system_deps.sh"
        raise MissingTool(f"{name} not found on PATH or in .tools/: run `{hint}`")
    return path


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy; raise after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (httpx.TransportError, OSError) as e:
            last_error = e
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what} (last error: {last_error})")
        time.sleep(interval_s)


def scrape_job(name: str, port: int, labels: dict[str, str] | None = None, honor_labels: bool = False) -> dict:
    job: dict[str, Any] = {
        "job_name": name,
        "static_configs": [{"targets": [f"127.0.0.1:{port}"], "labels": labels or {}}],
    }
    if honor_labels:
        job["honor_labels"] = True
    return job


class Prometheus:
    """A real ``prometheus`` server on a free loopback port, with its TSDB in ``workdir``."""

    def __init__(self, workdir: Path, scrape_jobs: list[dict], rules: dict | None = None, interval: str = "1s"):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config: dict[str, Any] = {
            "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
            "scrape_configs": scrape_jobs,
        }
        if rules is not None:
            (workdir / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
            config["rule_files"] = [str(workdir / "rules.yaml")]
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def start(self) -> Prometheus:
        binary = tool("prometheus")
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={self.workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1d",
                    "--web.console.templates=/nonexistent",
                    "--web.console.libraries=/nonexistent",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 60) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            return self.client.get("/-/ready", timeout=2).status_code == 200

        wait_until(ready, timeout_s, "prometheus /-/ready")

    def api(self, path: str, **params: Any) -> Any:
        r = self.client.get(f"/api/v1/{path}", params=params)
        body = r.json()
        if body.get("status") != "success":
            raise PromQLError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; the result as a list (a scalar becomes one sample without labels)."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        return self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step}")["result"]

    def targets_up(self) -> dict[str, str]:
        return {t["scrapePool"]: t["health"] for t in self.api("targets")["activeTargets"]}

    def stop(self) -> None:
        self.client.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class PromQLError(AssertionError):
    pass
