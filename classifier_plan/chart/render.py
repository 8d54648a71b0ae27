"""``helm template`` run on the user's values, its errors turned into messages that name the file and key."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from classifier_plan.errors import PlanInputError

TOOLS_DIRS = (Path(__file__).resolve().parents[2] / ".tools", Path(".tools"))
"""Where ``make tools`` puts helm: the checkout beside the package, then the working directory's."""


def helm_binary() -> str:
    """helm from PATH, else from ``.tools/`` (``make tools``).

    Raises:
        PlanInputError: helm is in neither place; the message says how to get it.
    """
    path = shutil.which("helm") or next((str(d / "helm") for d in TOOLS_DIRS if (d / "helm").is_file()), None)
    if path is None:
        raise PlanInputError(
            "helm",
            "",
            "not found on PATH nor in .tools/: run `make tools` (puts helm into .tools/), or install helm 3+",
        )
    return path


def render(chart: Path, values: list[Path], release: str = "image-classifier", namespace: str = "default") -> str:
    """``helm template`` output for ``values`` (applied in order).

    Raises:
        PlanInputError: the values do not render (the message names the file, the key and helm's reason).
    """
    cmd = [helm_binary(), "template", release, str(chart), "--namespace", namespace]
    for v in values:
        cmd += ["-f", str(v)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise PlanInputError(str(chart), "", "helm template did not finish within 120 s") from None
    if out.returncode != 0:
        source = ", ".join(str(v) for v in values) or str(chart)
        raise PlanInputError(source, _key_of(out.stderr), "does not render: " + _helm_reason(out.stderr))
    return out.stdout


def _helm_reason(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith("Use --debug")]
    return " ".join(lines)[:1500] or "helm template failed"


def _key_of(stderr: str) -> str:
    """The values key a helm error names: a schema path, else the first dotted name in a chart message."""
    m = re.search(r"at '/([^']*)': additional propert(?:y|ies) '([^']+)'", stderr)
    if m:
        return ".".join(p for p in [*m.group(1).split("/"), m.group(2).split("'")[0]] if p)
    m = re.search(r"at '/([^']+)'", stderr)
    if m:
        return m.group(1).replace("/", ".")
    m = re.search(r"invalid values:\s*-\s*([A-Za-z][\w]*(?:\.[\w]+)+)", stderr)
    return m.group(1) if m else ""


def parse_objects(text: str) -> list[dict[str, Any]]:
    """Rendered YAML documents as objects (empty documents dropped)."""
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
