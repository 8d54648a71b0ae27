"""The Dockerfile, checked statically (no Docker engine in CI): checkov's Dockerfile policies, the house
rules (multi-stage, pinned base, numeric user, exec-form entry point) and the same pip commands as the
Makefile."""

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


def test_multi_stage_with_every_base_pinned_by_digest():
    froms = [args for word, args in instructions() if word == "FROM"]
    assert len(froms) >= 2
    for args in froms:
        image = args.split()[0]
        assert re.fullmatch(r"nvidia/cuda:[0-9.]+-(cudnn-)?runtime-ubuntu[0-9.]+@sha256:[0-9a-f]{64}", image), image


def test_dependency_layer_comes_before_the_source():
    copies = [args for word, args in instructions() if word == "COPY"]
    pyproject = next(i for i, a in enumerate(copies) if a.startswith("pyproject.toml"))
    source = next(i for i, a in enumerate(copies) if a.startswith("predictor/"))
    assert pyproject < source
    runs = [a for w, a in instructions() if w == "RUN"]
    first_install = next(i for i, a in enumerate(runs) if "pip install" in a and "--upgrade pip" in a)
    assert "touch predictor/__init__.py" in runs[first_install]


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


def _pip_installs(commands: list[str]) -> list[list[str]]:
    """Each `<python> -m pip install ...` as its argument list after `install`."""
    out = []
    for command in commands:
        for part in re.split(r"&&|;", command):
            words = shlex.split(part.replace("$(PY)", "python"))
            if words[1:4] == ["-m", "pip", "install"]:
                out.append(words[4:])
    return out


def test_pip_install_commands_match_the_makefile():
    """Same interpreter invocation and flags; both install the project from pyproject.toml, with no
    requirements file or package pinned on the side. Only the editable flag (-e, for development) and
    the extras ([dev] for tests, [gpu] for the image) differ."""
    makefile = (REPO_ROOT / "Makefile").read_text()
    make_cmds = [line.strip() for line in makefile.splitlines() if "-m pip install" in line]
    docker_cmds = [a for w, a in instructions() if w == "RUN" and "pip install" in a]
    make = _pip_installs(make_cmds)
    docker = _pip_installs(docker_cmds)
    assert make and docker

    def normalize(args):
        args = [a for a in args if a != "-e"]
        return [re.sub(r"^\.\[[a-z,]+\]$", ".", a) for a in args]

    assert ["-q", "--upgrade", "pip"] in make and ["-q", "--upgrade", "pip"] in docker
    project_make = {tuple(normalize(a)) for a in make if "pip" not in a}
    project_docker = {tuple(normalize(a)) for a in docker if "pip" not in a}
    assert project_make == project_docker == {("-q", ".")}, (project_make, project_docker)
    assert "requirements" not in TEXT and "constraint" not in TEXT.lower()
    import tomllib

    extras = set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for args in docker:
        for extra in re.findall(r"^\.\[([a-z,]+)\]$", " ".join(args)):
            assert set(extra.split(",")) <= extras


def test_dockerignore_keeps_the_context_small():
    lines = [
        line for line in (REPO_ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")
    ]
    assert lines[0] == "**", "deny everything, then allow what the build needs"
    allowed = {line[1:] for line in lines if line.startswith("!")}
    assert {"pyproject.toml", "predictor/"} <= allowed
    assert not any(a.startswith((".venv", ".tools", "models/*/", "tests")) for a in allowed)


@pytest.mark.parametrize("path", ["pyproject.toml", "predictor", "models/fetch_hf.py", "models/__init__.py"])
def test_copied_paths_exist(path):
    assert (REPO_ROOT / path).exists()
