"""The Dockerfile, checked statically (no Docker engine in CI): checkov's Dockerfile policies, the house
rules (multi-stage, pinned base, numeric user, exec-form entry point, no frontend to fetch, a small source
layer, a writable HOME) and the same lock-install commands as the Makefile. `make image-check` builds and
runs the image for real (scripts/image_check.py)."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from .chart_support import REPO_ROOT, run, tool

DOCKERFILE = REPO_ROOT / "Dockerfile"
TEXT = DOCKERFILE.read_text()


def instructions(text: str = TEXT) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def checkov(path) -> dict:
    result = run(
        [tool("checkov"), "-f", str(path), "--framework", "dockerfile", "--skip-download", "-o", "json"], check=False
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report


def test_checkov_passes_or_every_skip_is_justified():
    report = checkov(DOCKERFILE)
    summary = report["summary"]
    assert summary["parsing_errors"] == 0
    failed = [f"{c['check_id']} {c['check_name']}" for c in report["results"]["failed_checks"]]
    assert summary["failed"] == 0, failed
    assert summary["passed"] > 50
    for check in report["results"]["skipped_checks"]:
        reason = check.get("check_result", {}).get("suppress_comment", "")
        assert reason and len(reason) > 10, f"{check['check_id']} skipped without a reason"
    for match in re.finditer(r"#\s*checkov:skip=([A-Z0-9_]+)(:?)(.*)", TEXT):
        assert match.group(2) == ":" and len(match.group(3).strip()) > 10, f"unjustified skip {match.group(1)}"


def test_checkov_flags_a_bad_dockerfile(tmp_path):
    """The check above would catch an unpinned root image."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install flask\nENTRYPOINT python app.py\n")
    report = checkov(bad)
    ids = {c["check_id"] for c in report["results"]["failed_checks"]}
    assert {"CKV_DOCKER_3", "CKV_DOCKER_7"} <= ids, ids


def test_multi_stage_with_the_base_pinned_by_digest_and_overridable():
    froms = [args for word, args in instructions() if word == "FROM"]
    assert len(froms) >= 2
    (base,) = re.findall(r"^ARG BASE_IMAGE=(\S+)$", TEXT, re.M)
    assert re.fullmatch(r"debian:bookworm-slim@sha256:[0-9a-f]{64}", base), base
    stages = set()
    for args in froms:
        image, *rest = args.split()
        assert image == "${BASE_IMAGE}" or image in stages, f"FROM {image}: every stage starts from BASE_IMAGE"
        if rest:
            assert rest[0].upper() == "AS"
            stages.add(rest[1])


def test_no_syntax_directive_so_offline_builders_fetch_no_frontend():
    assert not re.search(r"^#\s*syntax\s*=", TEXT, re.M | re.I)


def test_dependency_layer_comes_before_the_source_and_the_source_is_its_own_layer():
    copies = [args for word, args in instructions() if word == "COPY"]
    lock = next(i for i, a in enumerate(copies) if a.startswith("pyproject.toml uv.lock"))
    venv = next(i for i, a in enumerate(copies) if a.startswith("--from=deps /opt/venv"))
    source = next(i for i, a in enumerate(copies) if a.startswith("predictor/"))
    assert lock < venv < source
    # the package is copied on its own (not installed into the venv), so a source change is a small layer
    assert copies[source].split() == ["predictor/", "/opt/app/predictor/"]
    packages = {a.split()[0] for a in copies if a.endswith("/") and a.split()[-1].startswith("/opt/app/")}
    assert packages == {"predictor/", "classifier_canary/", "classifier_kube/"}, "the image holds no planner"
    assert re.search(r"PYTHONPATH=/opt/app\b", TEXT)


def test_home_is_writable_under_a_read_only_root():
    import yaml

    envs = " ".join(a for w, a in instructions() if w == "ENV")
    (home,) = re.findall(r"(?<![A-Z_])HOME=(\S+)", envs)
    assert home == "/tmp"
    tpl = (REPO_ROOT / "chart" / "templates" / "_pod.tpl").read_text()
    assert "mountPath: /tmp" in tpl, "the chart mounts an emptyDir at HOME"
    values = yaml.safe_load((REPO_ROOT / "chart" / "values.yaml").read_text())
    assert values["containerSecurityContext"]["readOnlyRootFilesystem"] is True


def test_runtime_runs_as_a_numeric_non_root_user_with_exec_entrypoint():
    runtime = TEXT[TEXT.rindex("\nFROM ") :]
    users = [a for w, a in instructions(runtime) if w == "USER"]
    assert users and re.fullmatch(r"[1-9][0-9]*(:[1-9][0-9]*)?", users[-1]), users
    (entrypoint,) = [a for w, a in instructions(runtime) if w == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["python", "-m", "predictor", "serve"]


def test_python_311_and_no_model_baked_by_default():
    assert "python3.11" in TEXT
    assert re.search(r'^ARG BAKE_MODEL=""$', TEXT, re.M)
    assert 'if [ -n "$BAKE_MODEL" ]' in TEXT


def test_uid_matches_the_chart_security_context():
    import yaml

    values = yaml.safe_load((REPO_ROOT / "chart" / "values.yaml").read_text())
    uid = values["containerSecurityContext"]["runAsUser"]
    assert f"--uid {uid}" in TEXT and f"USER {uid}:" in TEXT


def _lock_installs(text: str) -> tuple[list[list[str]], list[list[str]]]:
    """The `uv export` and `pip install` commands of a Makefile or Dockerfile, as argument lists."""
    exports, installs = [], []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        if line.lstrip().startswith("#") or not ("uv export" in line or "pip install" in line):
            continue
        for part in re.split(r"&&|;", line.strip().removeprefix("RUN ")):
            words = shlex.split(part.replace("$(PY)", "python").replace("$(VENV)/bin/uv", "uv"))
            words = [w for w in words if w != "$(LOCK_EXTRAS)"]
            if words[:2] == ["uv", "export"]:
                exports.append(words[2:])
            elif words[1:4] == ["-m", "pip", "install"] and "--require-hashes" in words:
                installs.append(words[4:])
    return exports, installs


def test_both_install_paths_install_the_lock_with_hashes_only():
    """The Makefile (the venv of make run / make test) and the Dockerfile install the same way: uv.lock
    exported with hashes, then pip with --require-hashes --no-deps, so nothing outside the lock enters."""
    make_exports, make_installs = _lock_installs((REPO_ROOT / "Makefile").read_text())
    docker_exports, docker_installs = _lock_installs(TEXT)
    assert make_exports and docker_exports and make_installs and docker_installs
    for args in make_exports + docker_exports:
        assert {"--frozen", "--no-emit-project"} <= set(args) and "requirements-txt" in args, args
        assert "--no-hashes" not in args
    assert [a for a in make_installs] == [["-q", "--require-hashes", "--no-deps", "-r", "$(VENV)/requirements.txt"]]
    assert docker_installs == [["-q", "--require-hashes", "--no-deps", "-r", "requirements.txt"]]
    # the image takes the runtime dependencies, the gpu and canary extras, never the dev tools or the planner
    (docker_export,) = docker_exports
    extras = [docker_export[i + 1] for i, a in enumerate(docker_export) if a == "--extra"]
    assert extras == ["gpu", "canary"], extras
    uv_pins = set(re.findall(r"uv==([0-9.]+)", TEXT)) | set(
        re.findall(r"UV_VERSION := ([0-9.]+)", (REPO_ROOT / "Makefile").read_text())
    )
    assert len(uv_pins) == 1, f"one uv version for both: {uv_pins}"


def test_dockerignore_keeps_the_context_small():
    lines = [
        line for line in (REPO_ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")
    ]
    assert lines[0] == "**", "deny everything, then allow what the build needs"
    allowed = {line[1:] for line in lines if line.startswith("!")}
    assert {"pyproject.toml", "uv.lock", "predictor/"} <= allowed
    assert not any(a.startswith((".venv", ".tools", "models/*/", "tests")) for a in allowed)


@pytest.mark.parametrize("path", ["pyproject.toml", "uv.lock", "predictor", "models/fetch_hf.py", "models/__init__.py"])
def test_copied_paths_exist(path):
    assert (REPO_ROOT / path).exists()
