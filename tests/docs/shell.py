"""Walking a documented command the way bash would (bashlex), and running the parts that can run here.

A command is parsed into lists, pipelines and simple commands; each simple command goes to the checker
of its tool (tests/docs/checks.py). Pipelines that call ``curl`` or ``redis-cli`` (or files made with
``mkdir``/``cp``) run for real in a work directory, against the live predictor and Redis of the test:
``localhost:8080`` and ``redis://localhost:6379`` point there, ``localhost:8081`` to the predictor's gRPC
port, ``localhost:9090`` to a Prometheus, ``--metrics_port N`` to a free port, ``redis-cli`` gets Redis's
port, and ``$URL`` (the InferenceService URL in cluster docs) is the predictor's URL. Nothing else of a
command is changed: it runs as a reader would run it in a clone, with PATH as the reader's (no
``.tools/`` on it: what needs helm or kubectl must find them there itself).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bashlex

from .extract import Command
from .world import NAMESPACE, RELEASE, REPO, predictor_pod

EXECUTED = frozenset({"curl", "redis-cli", "mkdir", "cp"})
"""Commands run for real (in the work directory, against the live services)."""
HELPERS = frozenset({"grep", "tail", "head", "jq", "base64", "sleep", "kill", "cat", "echo", "true"})
"""Commands that appear only around a checked one (in a pipeline or list); not checked themselves."""
REDIS_ERROR = re.compile(r"^(\(error\) )?(ERR|NOGROUP|WRONGTYPE|BUSYGROUP|NOSCRIPT|OOM|NOAUTH)\b", re.MULTILINE)
CURL_STATUS = "curl() { command curl -w '%{stderr}HTTP_STATUS %{http_code}\\n' \"$@\"; }\n"


@dataclass
class Services:
    """The live things executed commands reach: the predictor (with /v1/jobs) and Redis."""

    server_url: str
    server_port: int
    redis_port: int
    start_worker: Callable[[], None]
    """Starts a queue worker once (results for ``--wait``)."""
    metrics_port: int
    """The predictor's metrics-only port (the chart's ``monitoring.metricsPort``, 9095, in the docs)."""
    grpc_port: int = 0
    prometheus_port: int = 0
    """A real Prometheus with no series (what a canary rehearsal queries)."""


@dataclass
class Context:
    """One document's run: its shell variables, the work directory, what was checked and what failed."""

    command: Command
    workdir: Path
    services: Services | None
    variables: dict[str, str] = field(default_factory=dict)
    job_ids: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    checked: Counter = field(default_factory=Counter)
    text: str = ""
    """The command's text as parsed (placeholders substituted)."""

    @property
    def profile(self) -> str:
        return self.command.profile

    def fail(self, message: str) -> None:
        self.failures.append(f"{self.command.where()}: {message}\n    {self.command.text[:300]}")


def placeholders(profile: str, job_ids: list[str]) -> dict[str, str]:
    """Upper-case placeholders of the docs (``kubectl -n NS logs POD``) and what they stand for."""
    return {
        "NS": NAMESPACE,
        "ISVC": RELEASE,
        "RELEASE": RELEASE,
        "POD": predictor_pod(profile).name,
        "NEW": "0.2.0",
        "TAG": "0.2.0",
        "REGISTRY": "ghcr.io/acme",
        "<id>": job_ids[-1] if job_ids else "<id>",
        "<pod-name>": "crashed-worker",
    }


def substitute(text: str, profile: str, job_ids: list[str]) -> str:
    values = placeholders(profile, job_ids)
    text = text.replace("<id>", values["<id>"]).replace("<pod-name>", values["<pod-name>"])
    words = "|".join(k for k in values if k.isupper())
    # not $NS (a variable) nor NS=... (its assignment)
    return re.sub(rf"(?<![A-Za-z0-9_$])({words})(?![A-Za-z0-9_=])", lambda m: values[m.group(1)], text)


def expand(word: str, variables: dict[str, str]) -> str:
    """``$VAR`` / ``${VAR}`` replaced with the document's variables (unknown ones are left)."""
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: variables.get(m.group(1), m.group(0)), word)


def words_of(node: Any) -> list[str]:
    return [p.word for p in getattr(node, "parts", []) if p.kind == "word"]


def substitutions(node: Any) -> list[Any]:
    """Commands inside ``$(...)`` anywhere below ``node``."""
    found: list[Any] = []

    class Visitor(bashlex.ast.nodevisitor):
        def visitcommandsubstitution(self, n: Any, command: Any) -> bool:
            found.append(command)
            return False

    Visitor().visit(node)
    return found


def simple_commands(node: Any) -> list[Any]:
    """The simple commands of a pipeline/list/compound, outermost level only."""
    if node.kind == "command":
        return [node]
    out: list[Any] = []
    for part in getattr(node, "parts", []) or getattr(node, "list", []):
        if part.kind in ("command", "pipeline", "list", "compound", "until", "while", "if", "for"):
            out += simple_commands(part)
    return out


def pipelines(node: Any) -> list[Any]:
    """The pipelines (or lone commands) of a list or compound, each run on its own."""
    if node.kind in ("pipeline", "command"):
        return [node]
    out: list[Any] = []
    for part in getattr(node, "parts", []) or getattr(node, "list", []):
        if part.kind in ("command", "pipeline", "list", "compound", "until", "while", "if", "for"):
            out += pipelines(part)
    return out


def node_end(node: Any) -> int:
    """Where a node's text ends, heredoc bodies included (bashlex puts those after the command)."""
    end = node.pos[1]
    for attr in ("parts", "list"):
        for child in getattr(node, attr, None) or []:
            end = max(end, node_end(child))
    for attr in ("heredoc", "output", "command"):
        child = getattr(node, attr, None)
        if child is not None and hasattr(child, "pos"):
            end = max(end, node_end(child))
    return end


def script_text(text: str, services: Services) -> str:
    """A documented pipeline pointed at the live services."""
    text = re.sub(r"\b(localhost|127\.0\.0\.1):8080\b", f"127.0.0.1:{services.server_port}", text)
    text = re.sub(r"\b(localhost|127\.0\.0\.1):8081\b", f"127.0.0.1:{services.grpc_port}", text)
    text = re.sub(r"\b(localhost|127\.0\.0\.1):9090\b", f"127.0.0.1:{services.prometheus_port}", text)
    text = re.sub(r"(--metrics[_-]port)([ =])\d+", lambda m: f"{m.group(1)}{m.group(2)}{free_port()}", text)
    text = re.sub(r"\b(localhost|127\.0\.0\.1):9095\b", f"127.0.0.1:{services.metrics_port}", text)
    text = re.sub(r"redis://localhost:6379", f"redis://127.0.0.1:{services.redis_port}", text)
    return re.sub(r"(?<![\w-])redis-cli(?![\w-])", f"redis-cli -p {services.redis_port}", text)


def execute(text: str, ctx: Context) -> subprocess.CompletedProcess[str]:
    """Run a pipeline with bash in the work directory; curl reports each HTTP status on stderr."""
    assert ctx.services is not None
    env = reader_env(ctx)
    env["URL"] = ctx.variables.get("URL", ctx.services.server_url)
    script = "set -o pipefail\n" + CURL_STATUS + script_text(text, ctx.services) + "\n"
    return subprocess.run(["bash", "-c", script], cwd=ctx.workdir, env=env, capture_output=True, text=True, timeout=300)


def reader_env(ctx: Context) -> dict[str, str]:
    """The environment of a reader's shell: this one's, with ``.tools/`` off PATH."""
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p).name != ".tools")
    return {**os.environ, **ctx.variables, "PATH": path, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}


def start(text: str, ctx: Context, log: Path) -> subprocess.Popen[bytes]:
    """Start a long-running documented command (a worker) in its own process group, output to ``log``."""
    assert ctx.services is not None
    script = script_text(text, ctx.services) + "\n"
    with log.open("wb") as out:
        return subprocess.Popen(
            ["bash", "-c", script],
            cwd=ctx.workdir,
            env=reader_env(ctx),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_statuses(stderr: str) -> list[int]:
    return [int(s) for s in re.findall(r"^HTTP_STATUS (\d+)$", stderr, re.MULTILINE)]
