"""The serving package serves: importing every module of ``predictor`` imports none of the tools beside
it (classifier_plan, classifier_canary, classifier_kube) nor their own dependencies (simpy, CEL,
matplotlib); kubernetes and jsonschema only as far as ``import kserve`` already brings them. The tools
keep their documented commands (``python -m predictor plan|canary``) through lazy dispatchers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOOL_PACKAGES = ("classifier_plan", "classifier_canary", "classifier_kube")
TOOL_DEPENDENCIES = ("simpy", "cel", "matplotlib", "kubernetes", "jsonschema")

IMPORT_ALL = """
import importlib, json, pkgutil, sys
import predictor
for m in pkgutil.walk_packages(predictor.__path__, "predictor."):
    importlib.import_module(m.name)
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def _top_level_modules(code: str) -> set[str]:
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return set(json.loads(r.stdout.splitlines()[-1]))


def test_importing_the_serving_package_imports_no_tool_and_no_tool_dependency():
    serving = _top_level_modules(IMPORT_ALL)
    assert "predictor" in serving and "torch" in serving  # it did import the serving modules
    assert not serving & set(TOOL_PACKAGES), serving & set(TOOL_PACKAGES)
    kserve_alone = _top_level_modules(
        "import json, sys, kserve; print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))"
    )
    ours = (serving - kserve_alone) & set(TOOL_DEPENDENCIES)
    assert not ours, f"the serving package itself imports {ours}"
    assert "simpy" not in serving and "cel" not in serving


def test_no_serving_module_names_a_tool_package():
    offenders = [
        f"{path.relative_to(REPO)}: {line.strip()}"
        for path in (REPO / "predictor").rglob("*.py")
        for line in path.read_text().splitlines()
        if any(f"import {t}" in line or f"from {t}" in line for t in TOOL_PACKAGES)
    ]
    assert not offenders, offenders


def test_the_documented_tool_commands_still_work_through_the_dispatcher():
    for tool, words in (("plan", "--traffic"), ("canary", "--isvc")):
        r = subprocess.run(
            [sys.executable, "-m", "predictor", tool, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 0 and f"python -m predictor {tool}" in r.stdout and words in r.stdout, r.stderr
    listed = subprocess.run([sys.executable, "-m", "predictor", "--help"], cwd=REPO, capture_output=True, text=True)
    assert "plan" in listed.stdout and "canary" in listed.stdout


def test_a_tool_that_is_not_installed_is_one_clear_line():
    code = (
        "import sys; sys.modules['classifier_plan'] = None\n"
        "from predictor.__main__ import main; main(['plan', '--help'])"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "needs the [plan] extra" in r.stderr and "pip install 'image-classifier[plan]'" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
