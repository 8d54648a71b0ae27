"""The canary test stack: real predictor processes labelled as a stable and canary revisions, a real
Prometheus scraping them with the labels the chart's PodMonitor gives pods in a cluster, load from
``bench.loadgen`` processes, and the InferenceService rendered by the chart in a YAML file that
``python -m predictor canary --isvc-file`` patches with ``kubectl patch --local``.

Each predictor is scraped once per identity it plays: a Knative revision (``<isvc>-predictor-0000N``) of
the default profile's InferenceService, and, for the Standard-mode run, the ``stable``/``canary`` track
of the standard-keda profile's. Shared by ``tests/canary`` and ``scripts/render_canary_panel.py``.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.prometheus import Prometheus, scrape_job, tool, wait_until
from tests.support.servers import REPO, ServerProcess, free_port, start_server

NAMESPACE = "ml"
CHART = REPO / "chart"
KNATIVE_PROFILE = CHART / "ci" / "default-values.yaml"
STANDARD_PROFILE = CHART / "ci" / "standard-keda-values.yaml"

# Every server: the embedded model on torch in fp32 (loads in seconds, and no background precision check
# competes for the CPU while the test measures). The canaries differ from the stable only where their
# name says.
BASE_FLAGS: dict[str, object] = {
    "backend": "torch",
    "precision": "fp32",
    "max_batch_size": 8,
    "max_batch_delay_ms": 2,
    "cpu_threads": 1,
    "decode_threads": 1,
}
CANARY_FLAGS: dict[str, dict[str, object]] = {
    "healthy": {},
    # A queue smaller than one request of the load (2 images): every request is refused with 400 (more
    # images than the queue can ever hold), a canary that refuses what the stable serves.
    "refusing": {"max_queue_images": 1},
    # Batches wait 2 s for more images than this load ever sends: every answer takes over 2 s, several
    # times the stable's p95 even on a machine busy with other work.
    "slow": {"max_batch_delay_ms": 2000, "max_batch_size": 64},
    # Batches wait 40 ms: a healthy canary whose p95 lands a histogram bucket or two above the stable's.
    "nudged": {"max_batch_delay_ms": 40, "max_batch_size": 64},
}
DEFAULT_CANARIES = ("healthy", "refusing", "slow")
# Canaries serving another model directory than the stable's (built by :func:`model_variant`).
CANARY_MODELS = {
    # The same weights with the label map shifted by one class: fast, no errors, every answer wrong.
    "permuted": "permuted",
    # The same model saved again (tensors read and written anew): the same answers.
    "reexported": "reexported",
}
# Canaries behind a misbehaving queue-proxy stand-in (delay ms, a 500 every Nth request): the predictor
# itself is healthy; the stable gets a well-behaved proxy whenever one of these runs.
CANARY_PROXIES: dict[str, tuple[float, int]] = {"proxied": (300.0, 3)}
# The same open-loop load on every revision under test: 3 requests/s of 2 small JPEGs each (light enough
# for a 2-core machine shared with other work).
LOAD_ARGS = [
    "--protocol",
    "classify",
    "--rate",
    "3",
    "--concurrency",
    "8",
    "--images-per-request",
    "2",
    "--size",
    "160x120",
    "--timeout",
    "10",
    "--duration",
    "600",
]


def model_variant(model_dir: Path, kind: str, out: Path) -> Path:
    """A copy of ``model_dir`` as a canary's model: ``permuted`` (labels shifted by one) or ``reexported``."""
    import json
    import shutil

    from safetensors.numpy import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    for f in model_dir.iterdir():
        if f.is_file() and f.name != "model.safetensors":
            shutil.copy(f, out / f.name)
    if kind == "reexported":
        save_file(load_file(model_dir / "model.safetensors"), out / "model.safetensors", metadata={"format": "pt"})
        return out
    (out / "model.safetensors").symlink_to(model_dir / "model.safetensors")
    config = json.loads((model_dir / "config.json").read_text())
    names = config["label_names"]
    config["label_names"] = names[1:] + names[:1]
    if "id2label" in config:
        config["id2label"] = {str(i): n for i, n in enumerate(config["label_names"])}
        config["label2id"] = {n: i for i, n in enumerate(config["label_names"])}
    (out / "config.json").write_text(json.dumps(config))
    return out


def render(values: Path, release: str, *sets: str) -> list[dict[str, Any]]:
    """``helm template`` the chart with one profile (and ``--set`` overrides)."""
    cmd = [tool("helm"), "template", release, str(CHART), "--namespace", NAMESPACE, "-f", str(values)]
    for s in sets:
        cmd += ["--set", s]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def rendered_isvc(values: Path, release: str, *sets: str) -> dict[str, Any]:
    """The InferenceService the chart renders."""
    (isvc,) = [o for o in render(values, release, *sets) if o["kind"] == "InferenceService"]
    return isvc


def knative_revision(isvc: str, n: int) -> str:
    """KServe's name of a predictor's n-th Knative revision."""
    return f"{isvc}-predictor-{n:05d}"


def with_knative_status(isvc: dict[str, Any], stable: str, canary: str) -> dict[str, Any]:
    """The object as KServe shows it once the canary revision is ready next to the stable one."""
    obj = copy.deepcopy(isvc)
    obj.setdefault("metadata", {})["namespace"] = NAMESPACE
    obj["status"] = {
        "components": {
            "predictor": {
                "latestCreatedRevision": canary,
                "latestReadyRevision": canary,
                "latestRolledoutRevision": stable,
            }
        },
        "conditions": [{"type": "Ready", "status": "True"}],
    }
    return obj


def with_standard_status(isvc: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(isvc)
    obj.setdefault("metadata", {})["namespace"] = NAMESPACE
    obj["status"] = {"conditions": [{"type": "Ready", "status": "True"}]}
    return obj


@dataclass
class Target:
    """One predictor process and the identities (label sets) Prometheus scrapes it under."""

    name: str
    server: ServerProcess
    identities: list[dict[str, str]] = field(default_factory=list)
    proxy: subprocess.Popen[bytes] | None = None
    proxy_port: int | None = None

    @property
    def url(self) -> str:
        """Where clients send requests: the queue-proxy stand-in when there is one, else the predictor."""
        return f"http://127.0.0.1:{self.proxy_port}" if self.proxy_port else self.server.url


def pod_labels(isvc: str, revision: str, track: str) -> dict[str, str]:
    """The labels the chart's PodMonitor gives a predictor pod's series."""
    return {
        "namespace": NAMESPACE,
        "isvc": isvc,
        "revision": revision,
        "track": track,
        "pod": f"{revision}-deployment-5f7d9c-x2x4z",
        "container": "kserve-container",
    }


class CanaryStack:
    """Stable + canary predictors, a Prometheus scraping them every second, and the rendered objects."""

    def __init__(
        self,
        workdir: Path,
        model_dir: Path,
        canaries: tuple[str, ...] = DEFAULT_CANARIES,
        extra_jobs: tuple[dict, ...] = (),
    ) -> None:
        self.workdir, self.model_dir, self.canaries, self.extra_jobs = workdir, model_dir, canaries, extra_jobs
        workdir.mkdir(parents=True, exist_ok=True)
        self.knative_isvc = rendered_isvc(KNATIVE_PROFILE, "demo")
        self.standard_isvc = rendered_isvc(STANDARD_PROFILE, "std")
        self.kn_name = self.knative_isvc["metadata"]["name"]
        self.std_name = self.standard_isvc["metadata"]["name"]
        self.targets: dict[str, Target] = {}
        self.prometheus: Prometheus | None = None

    def revision(self, target: str) -> str:
        """The Knative revision name a target plays (stable is the first revision)."""
        order = ["stable", *self.canaries]
        return knative_revision(self.kn_name, order.index(target) + 1)

    def start(self) -> CanaryStack:
        tool("prometheus")
        tool("kubectl")
        for name in ("stable", *self.canaries):
            flags = {**BASE_FLAGS, **CANARY_FLAGS.get(name, {})}
            model = self.model_dir
            if name in CANARY_MODELS:
                model = model_variant(self.model_dir, CANARY_MODELS[name], self.workdir / f"model-{name}")
            server = start_server(model, self.workdir, wait=False, **flags)
            self.targets[name] = Target(name, server)
        jobs = []
        proxied = any(name in CANARY_PROXIES for name in self.canaries)
        for name, target in self.targets.items():
            target.identities.append(
                pod_labels(self.kn_name, self.revision(name), "stable" if name == "stable" else "canary")
            )
            if name in ("stable", "refusing"):
                track = "stable" if name == "stable" else "canary"
                target.identities.append(pod_labels(self.std_name, track, track))
            for i, labels in enumerate(target.identities):
                jobs.append(scrape_job(f"{name}-{i}", target.server.port, labels))
            if name in CANARY_PROXIES or (proxied and name == "stable"):
                self._start_proxy(target, *CANARY_PROXIES.get(name, (0.0, 0)))
                labels = {**target.identities[0], "container": "queue-proxy"}
                jobs.append(scrape_job(f"{name}-queue-proxy", target.proxy_port, labels))
        self.prometheus = Prometheus(self.workdir / "prometheus", [*jobs, *self.extra_jobs]).start()
        self.prometheus.wait_ready()
        for target in self.targets.values():
            target.server.wait_ready(timeout_s=300)  # four model loads on a shared 2-core machine
        wait_until(lambda: set(self.prometheus.targets_up().values()) == {"up"}, 60, "every scrape target up")
        return self

    def _start_proxy(self, target: Target, delay_ms: float, fail_every: int) -> None:
        target.proxy_port = free_port()
        args = [sys.executable, "-m", "tests.support.queue_proxy", "--upstream", target.server.url,
                "--port", str(target.proxy_port), "--delay-ms", str(delay_ms),
                "--fail-every", str(fail_every)]  # fmt: skip
        log = (self.workdir / f"queue-proxy-{target.name}.log").open("wb")
        target.proxy = subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        proc, url = target.proxy, target.url

        def listening() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"queue-proxy stand-in exited with {proc.returncode}")
            return httpx.get(f"{url}/metrics", timeout=2).status_code == 200

        # Listening before the next free port is chosen: a port picked while this one is not bound yet
        # could be the same one.
        wait_until(listening, 120, f"the queue-proxy stand-in of {target.name}")

    def stop(self) -> None:
        if self.prometheus is not None:
            self.prometheus.stop()
        for target in self.targets.values():
            target.server.stop()
            if target.proxy is not None and target.proxy.poll() is None:
                target.proxy.terminate()
                target.proxy.wait(20)

    def knative_file(self, canary: str, path: Path) -> Path:
        """The default profile's InferenceService with ``canary`` as its ready latest revision."""
        obj = with_knative_status(self.knative_isvc, self.revision("stable"), self.revision(canary))
        path.write_text(yaml.safe_dump(obj, sort_keys=False))
        return path

    def standard_file(self, path: Path) -> Path:
        """The standard-keda profile's InferenceService (canary in ``spec.canary``), ready."""
        path.write_text(yaml.safe_dump(with_standard_status(self.standard_isvc), sort_keys=False))
        return path

    @contextmanager
    def load(self, *names: str) -> Iterator[None]:
        """The same load on each named target, from one ``bench.loadgen`` process each, until the block ends.

        Returns once Prometheus holds answered requests of every loaded target.
        """
        procs = []
        try:
            for name in names:
                url = self.targets[name].url
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "bench.loadgen", "--url", url, *LOAD_ARGS],
                        cwd=REPO,
                        stdout=subprocess.DEVNULL,
                        stderr=(self.workdir / f"load-{name}.log").open("wb"),
                    )
                )
            for name in names:
                labels = self.targets[name].identities[0]
                expr = f'sum(classifier_requests_total{{isvc="{labels["isvc"]}", revision="{labels["revision"]}"}})'
                wait_until(lambda e=expr: _positive(self.prometheus, e), 60, f"requests of {name} in Prometheus")
            yield
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                    p.wait(20)

    def tool_args(self, isvc_file: Path, isvc: str, *extra: str) -> list[str]:
        """``python -m predictor canary`` on a file, against this Prometheus, with short test intervals."""
        assert self.prometheus is not None
        return [
            sys.executable,
            "-m",
            "predictor",
            "canary",
            "--isvc",
            isvc,
            "-n",
            NAMESPACE,
            "--isvc-file",
            str(isvc_file),
            "--prometheus-url",
            self.prometheus.url,
            *extra,
        ]


class RestartingPods:
    """A kube-state-metrics stand-in (a real HTTP server in a thread): ``pods`` restart every
    ``every_s`` seconds in ``kube_pod_container_status_restarts_total``, scraped with honor_labels as
    kube-prometheus-stack scrapes kube-state-metrics (the series' namespace and pod are the subject's)."""

    def __init__(self, pods: list[str], every_s: float = 2.0) -> None:
        import http.server
        import threading

        started, body = time.monotonic(), self._body

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                text = body(pods, int((time.monotonic() - started) // every_s)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def _body(pods: list[str], restarts: int) -> str:
        lines = ["# TYPE kube_pod_container_status_restarts_total counter"]
        lines += [
            f'kube_pod_container_status_restarts_total{{namespace="{NAMESPACE}",pod="{p}",container="c"}} {restarts}'
            for p in pods
        ]
        return "\n".join(lines) + "\n"

    def job(self) -> dict:
        return scrape_job("kube-state-metrics", self.port, honor_labels=True)

    def close(self) -> None:
        self.server.shutdown()


def _positive(prom: Prometheus | None, expr: str) -> bool:
    assert prom is not None
    return any(float(s["value"][1]) > 0 for s in prom.query(expr))


@dataclass
class ToolRun:
    """A finished run of the canary tool."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def events(self) -> list[dict[str, Any]]:
        """The JSON decision lines."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["event"] == event]


def run_tool(args: list[str], timeout_s: float = 120) -> ToolRun:
    """Run the tool to its end (kubectl from PATH or .tools)."""
    env = {**os.environ, "PATH": f"{Path(tool('kubectl')).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    t0 = time.monotonic()
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout_s, env=env)
    return ToolRun(done.returncode, done.stdout, done.stderr, time.monotonic() - t0)
