"""Every command the documentation gives works as written (issue 16).

Commands come from README.md, chart/README.md, docs/*.md, chart/templates/NOTES.txt rendered for each
profile, and the alert descriptions (tests/docs/extract.py); each is checked by kind against reality
(tests/docs/checks.py): kubectl and helm against the objects of the document's profile, ``--set`` keys
against the schema, our CLIs' flags against their ``--help``, make targets against the Makefile, curl
and redis-cli run against a live predictor and Redis, sample outputs against the real answers, metric
names against what the code exports. The negative cases at the end put known-broken commands (the
ones issue 16 found) through the same checker.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from .checks import check_command
from .extract import Command, alert_commands, markdown_commands, text_commands
from .shell import Context
from .world import CHART, NAMESPACE, RELEASE, REPO, make_targets, rendered, run, tool, world

DOCS = [
    "README.md",
    "chart/README.md",
    "models/README.md",
    *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")),
]
PROFILES = sorted(p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml"))
MAX_UNCHECKED = 5
"""The few commands that cannot run here (registry and network access, another chart's objects)."""


def notes(profile: str) -> str:
    cmd = [tool("helm"), "install", RELEASE, str(CHART), "-n", NAMESPACE, "--dry-run=client"]
    result = run([*cmd, "-f", str(CHART / "ci" / f"{profile}-values.yaml")])
    assert result.returncode == 0, result.stderr
    return result.stdout[result.stdout.index("NOTES:") :]


@pytest.mark.parametrize("doc", DOCS)
def test_documented_commands_work(doc, run_commands):
    extracted = markdown_commands(REPO / doc, REPO)
    assert not extracted.errors, extracted.errors
    failures, unchecked, counts = run_commands(extracted.commands)
    assert not failures, f"{len(failures)} documented commands fail:\n" + "\n".join(failures)
    print(f"{doc}: {len(extracted.commands)} commands, checked {counts}, unchecked {len(unchecked)}")


@pytest.mark.parametrize("profile", PROFILES)
def test_notes_commands_work(profile, run_commands):
    commands = text_commands(notes(profile), f"NOTES.txt[{profile}]", profile)
    assert len(commands) >= 5, [c.text for c in commands]
    failures, _, counts = run_commands(commands)
    assert not failures, "\n".join(failures)
    assert counts["kubectl"] >= 2 and counts["curl"] >= 2, counts


@pytest.mark.parametrize("profile", PROFILES)
def test_alert_commands_work(profile, run_commands):
    commands = alert_commands(list(rendered(profile)), f"PrometheusRule[{profile}]", profile)
    failures, _, _ = run_commands(commands)
    assert not failures, "\n".join(failures)
    if any(o["kind"] == "PrometheusRule" for o in rendered(profile)):
        assert commands, "the canary alert tells how to roll back"


def test_unchecked_commands_are_few_and_give_a_reason():
    skips = {}
    for doc in DOCS:
        for c in markdown_commands(REPO / doc, REPO).commands:
            skips.update({f"{doc}: {prefix}": reason for prefix, reason in c.skips.items()})
    print(f"{len(skips)} documented commands are not checked:", *(f"{k} ({v})" for k, v in skips.items()), sep="\n  ")
    assert len(skips) <= MAX_UNCHECKED, skips
    assert all(len(reason) > 10 for reason in skips.values()), skips


def test_make_dashboard_brings_what_the_script_needs():
    """observability.md's one command: the target builds the model, installs prometheus, puts helm on PATH."""
    result = run(["make", "-n", "--no-print-directory", "dashboard"])
    assert result.returncode == 0, result.stderr
    assert "scripts/system_deps.sh" in result.stdout and "render_dashboard.py" in result.stdout
    assert ".tools" in result.stdout and "dashboard" in make_targets()


def test_make_help_prints_the_variables_with_their_values():
    """Issue 26: `make help` printed `$(PORT)` literally and never said PORT and MODEL are variables."""
    result = run(["make", "--no-print-directory", "help"])
    assert result.returncode == 0, result.stderr
    assert "$(" not in result.stdout, result.stdout
    for shown in ("PORT=8080", "MODEL=default", "GRPC=0", "GRPC_PORT=8081", "make TARGET VAR=value"):
        assert shown in result.stdout, result.stdout
    assert "PORT=9000" in run(["make", "--no-print-directory", "help", "PORT=9000"]).stdout


def test_make_run_grpc_serves_grpc_on_its_port():
    """`make run GRPC=1` (README's gRPC example) turns gRPC on; PORT moves the HTTP port."""
    dry = run(["make", "-n", "--no-print-directory", "run", "GRPC=1", "PORT=9000"]).stdout
    line = next(ln for ln in dry.splitlines() if "-m predictor serve" in ln)
    assert "--http-port 9000" in line and "--enable-grpc true --grpc-port 8081" in line, line
    plain = next(ln for ln in run(["make", "-n", "run"]).stdout.splitlines() if "-m predictor serve" in ln)
    assert "--http-port 8080" in plain and "grpc" not in plain, plain


OBJECT_NAME = re.compile(r"`((?:classifier|<fullname>|<isvc>|<release>)-[a-z0-9<>.-]+?)(-…|…)?`")


def test_object_names_in_the_docs_are_rendered():
    """Names of our objects in prose (`<fullname>-worker`, `classifier-predictor-…`) are ones a profile renders
    (or its controllers create) for release classifier."""
    names = {o.name for profile in PROFILES for o in world(profile)}
    wrong, found = [], OBJECT_NAME.findall("".join((REPO / d).read_text() for d in [*DOCS, "chart/values.yaml"]))
    assert len(found) >= 5, found
    for doc in [*DOCS, "chart/values.yaml"]:
        for name, ellipsis in OBJECT_NAME.findall((REPO / doc).read_text()):
            name = re.sub(r"<(fullname|isvc|release)>", RELEASE, name)
            if not (name in names or (ellipsis and any(n.startswith(f"{name}-") for n in names))):
                wrong.append(f"{doc}: {name}{ellipsis}")
    assert not wrong, f"names no profile renders: {wrong}"


# ---------------------------------------------------------------- metric names and PromQL

METRIC = re.compile(
    r"(?<![:\w])(classifier_[a-z0-9_]+|(?:revision|isvc):[a-z0-9_]+:[a-z0-9_]+|DCGM_FI_[A-Z_]+|kube_[a-z_]+)\b"
)
EXTERNAL = {
    "kube_deployment_spec_replicas",
    "kube_deployment_status_replicas_available",
    "kube_pod_container_status_restarts_total",
}
"""kube-state-metrics series the chart's alerts and the canary analysis read."""
PACKAGES = {p.name for p in REPO.iterdir() if (p / "__init__.py").exists()}
"""The repository's packages (``classifier_plan``, ...): named like our metrics, but not metrics."""


def exported_names(text: str) -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        # a labelled metric with no sample yet shows only its family: add the series names it will have
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "summary": ["_count", "_sum"]}
        names |= {family.name + s for s in suffixes.get(family.type, [])}
        names |= {s.name for s in family.samples}
    return names


@pytest.fixture(scope="module")
def known_metrics(doc_services) -> set[str]:
    """What the live predictor and a worker export, the chart's recording rules, DCGM and kube-state names."""
    import httpx

    from predictor import gpu_metrics
    from predictor.queue.metrics import WorkerMetrics

    names = exported_names(httpx.get(f"http://127.0.0.1:{doc_services.metrics_port}/metrics").text)
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    WorkerMetrics(registry)
    names |= exported_names(generate_latest(registry).decode())
    for profile in PROFILES:
        for o in rendered(profile):
            if o["kind"] == "PrometheusRule":
                names |= {r["record"] for g in o["spec"]["groups"] for r in g["rules"] if "record" in r}
    return names | {gpu_metrics.UTIL, gpu_metrics.FB_USED, gpu_metrics.FB_FREE} | EXTERNAL


def test_metric_names_in_the_docs_are_exported(known_metrics):
    unknown = {}
    for doc in [*DOCS, "chart/templates/NOTES.txt"]:
        for name in METRIC.findall((REPO / doc).read_text()):
            if name not in known_metrics and name not in PACKAGES and not name.endswith("_"):
                unknown.setdefault(name, doc)
    assert not unknown, f"metric names the code does not export: {unknown}"


NOT_PROMQL = re.compile(r"^(kubectl|curl|label_values\(|[\w:]+\{[\w,]+\}$)")
"""Inline code that is not PromQL: commands, Grafana variable queries, and ``name{label,label}`` (a
metric with its label names)."""


def test_promql_in_the_docs_parses(tmp_path):
    """Inline code that is a PromQL expression (a metric name with a selector or a function) parses."""
    exprs = []
    for doc in DOCS:
        for span in re.findall(r"`([^`\n]+)`", (REPO / doc).read_text()):
            if METRIC.search(span) and re.search(r"[({]", span) and not NOT_PROMQL.match(span):
                exprs.append((doc, span))
    rules = [
        {"record": f"doc:expr_{i}", "expr": e.replace("…", "x").replace("$__rate_interval", "5m")}
        for i, (_, e) in enumerate(exprs)
    ]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "docs", "rules": rules}]}))
    result = run([tool("promtool"), "check", "rules", str(tmp_path / "rules.yaml")])
    assert result.returncode == 0, result.stdout + result.stderr + json.dumps(exprs, indent=1)
    assert len(exprs) >= 3, exprs


# ---------------------------------------------------------------- the checker catches broken commands


def check(text: str, doc_services, workdir: Path, profile: str = "default", expected: str | None = None) -> list:
    ctx = Context(Command("negative-case", 1, text, profile, expected=expected), workdir, doc_services)
    check_command(ctx)
    return ctx.failures


PATCH = '--type merge -p \'{"spec":{"predictor":{"canaryTrafficPercent":10}}}\''
TYPO = PATCH.replace("canaryTrafficPercent", "canaryTraficPercent")
FLAG_TYPO = '--type merge -p \'{"data":{"kubernetes.podspec-tolerationz":"enabled"}}\''


@pytest.mark.parametrize(
    ("text", "profile", "complaint"),
    [
        # issue 16, item 1: the old InferenceService name
        (
            f"kubectl -n ml patch inferenceservice classifier-image-classifier {PATCH}",
            "default",
            "no InferenceService named",
        ),
        # item 4: NOTES' Standard-mode upgrade without release and chart
        ("helm upgrade --set image.tag=NEW,canary.enabled=false", "standard-keda", "requires 2 arguments"),
        # item 5: rollback in the wrong namespace
        ("helm rollback classifier", "default", "add -n ml"),
        # item 8: bare python
        ("python -m predictor.client classify photos/ --url http://localhost:8080", "default", "bare python"),
        # item 10: the InferenceService does not carry the pod label
        (
            "kubectl -n ml get inferenceservice,revisions,pods -l serving.kserve.io/inferenceservice=classifier",
            "default",
            "no InferenceService in namespace ml carries",
        ),
        ("make venv tool", "default", "no target 'tool'"),
        (
            "helm upgrade classifier ./chart -n ml --reuse-values --set canary.enabeld=true",
            "default",
            "'enabeld' is not a key",
        ),
        (
            "kubectl -n ml logs -l serving.kserve.io/inferenceservice=classifier -c predictor",
            "default",
            "no container 'predictor'",
        ),
        (
            'kubectl -n ml patch inferenceservice classifier -p \'{"spec":{"predictor":{"canaryTrafficPercent":10}}}\'',
            "default",
            "needs --type merge or json",
        ),
        (f"kubectl -n ml patch inferenceservice classifier {TYPO}", "default", "canaryTraficPercent"),
        ("kubectl -n ml create secret generic redis-auth --from-literal=password=x", "queue-worker", "reads no Secret"),
        (
            f"kubectl -n knative-serving patch configmap config-features {FLAG_TYPO}",
            "default",
            "no Knative feature flag",
        ),
        ("curl -s -F image=@cat.jpg 'localhost:8080/v2/models/resnet/infer'", "default", "HTTP"),
        ("curl -s -F image=@cat.jpg 'localhost:8080/classify?top_k=0'", "default", "HTTP [400]"),
        (
            ".venv/bin/python -m predictor.client classify photos/ --urls http://localhost:8080",
            "default",
            "--urls is not a flag",
        ),
        ("redis-cli XINFO CONSUMERS image_processing_queue no-such-group", "default", "Redis answered an error"),
        ("kubectl -n ml get scaledobject", "default", "no ScaledObject in namespace ml"),
        ("docker build --build-arg MODEL=x .", "default", "no ARG MODEL"),
        # the canary-analysis Job: only its profile renders it, under the release's name, with its container
        ("kubectl -n ml logs job/classifier-canary-1", "default", "no Job named"),
        ("kubectl -n ml logs -f job/classifier-image-classifier-canary-1", "canary-analysis", "no Job named"),
        ("kubectl -n ml logs job/classifier-canary-1 -c predictor", "canary-analysis", "no container 'predictor'"),
        (
            "kubectl -n ml logs -l app.kubernetes.io/component=canary-analysis --tail=-1",
            "default",
            "no Pod in namespace ml carries",
        ),
    ],
)
def test_the_checker_fails_broken_commands(text, profile, complaint, doc_services, workdir):
    failures = check(text, doc_services, workdir, profile)
    assert any(complaint in f for f in failures), failures


def test_submit_without_wait_writes_no_results(doc_services, workdir):
    """Item 9: `submit ... --output results.jsonl` without --wait writes job ids, not results."""
    text = (
        ".venv/bin/python -m predictor.client submit photos/ --redis_url redis://localhost:6379 --output results.jsonl"
    )
    failures = check(text, doc_services, workdir)
    assert any("not results (submit needs --wait)" in f for f in failures), failures


def test_a_wrong_sample_output_fails(doc_services, workdir):
    """Item 14: README's old sample answer ("tabby 0.61") is not what the model answers."""
    shown = '{"model":"classifier","predictions":[[{"label":"tabby, tabby cat","score":0.61,"class_id":281}]]}'
    failures = check("curl -F image=@cat.jpg 'localhost:8080/classify?top_k=3'", doc_services, workdir, expected=shown)
    assert any("sample output" in f and "tabby, tabby cat scores" in f for f in failures), failures


def test_inline_code_that_wraps_a_line_is_checked(tmp_path, doc_services, workdir):
    """Inline code pairs its backticks across the lines of a paragraph, as markdown renders it: a command
    that wraps, or one after a span that wraps, is extracted and checked (both here lack ``-n ml``)."""
    doc = tmp_path / "wrapped.md"
    doc.write_text(
        "Bring Helm in line (`--set image.tag=OLD --set\n"
        "canary.enabled=false`; rollback: `helm rollback classifier` or the old tag). Knative: `kubectl patch\n"
        '  inferenceservice classifier --type merge -p \'{"spec":{"predictor":{"canaryTrafficPercent":0}}}\'`.\n'
    )
    commands = markdown_commands(doc, tmp_path).commands
    assert [(c.line, c.text.split(" -p ")[0]) for c in commands] == [
        (2, "helm rollback classifier"),
        (2, "kubectl patch inferenceservice classifier --type merge"),
    ]
    failures = [f for c in commands for f in check(c.text, doc_services, workdir)]
    assert any("add -n ml" in f for f in failures) and any("namespace default" in f for f in failures), failures


GRPC_WITH_BINARY_DATA = """.venv/bin/python - <<'EOF'
import numpy as np, tritonclient.grpc as grpcclient
client = grpcclient.InferenceServerClient("localhost:8081")
inp = grpcclient.InferInput("image", [1], "BYTES")
inp.set_data_from_numpy(np.array([open("cat.jpg", "rb").read()], dtype=np.object_), binary_data=True)
res = client.infer("classifier", [inp], outputs=[grpcclient.InferRequestedOutput("label")])
EOF"""


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        # issue 26: the planner as the README showed it, with a values file nobody ships
        (
            ".venv/bin/python -m predictor plan --values my-values.yaml --traffic docs/traffic/spike.yaml "
            "--capacity cpu-epyc-2c-efficientnet-lite0 --out plan/",
            "cannot read the values file",
        ),
        # a worker with the chart's model directory and no Redis URL never starts
        (".venv/bin/python -m predictor worker --metrics_port 9091", "never logged 'worker started'"),
        # "gRPC is the same with tritonclient.grpc", taken literally
        (GRPC_WITH_BINARY_DATA, "binary_data"),
        # models/README.md's bare python
        ("python -m models.build_default --out models/efficientnet-lite0", "bare python"),
        # a flag in neither spelling
        (".venv/bin/python -m predictor plan --trafic docs/traffic/spike.yaml --out plan/", "--trafic is not a flag"),
    ],
)
def test_the_checker_fails_what_a_newcomer_hit(text, complaint, doc_services, workdir):
    failures = check(text, doc_services, workdir)
    assert any(complaint in f for f in failures), failures


def test_a_documented_exit_code_is_held(doc_services, workdir, tmp_path):
    """``# exit 1`` below a command: it must exit 1, and exiting 0 then fails (the docs' canary rehearsal)."""
    doc = tmp_path / "exit.md"
    plan = ".venv/bin/python -m predictor plan --values nope.yaml --traffic docs/traffic/spike.yaml --out p/"
    doc.write_text(f"```bash\n{plan}\n# exit 2\n{plan}\n```\n")
    first, second = markdown_commands(doc, tmp_path).commands
    assert (first.exit_code, second.exit_code) == (2, 0)
    ctx = Context(first, workdir, doc_services)
    check_command(ctx)
    assert not ctx.failures, ctx.failures
    assert any("exit 2, the document says 0" in f for f in check(second.text, doc_services, workdir))


def test_a_canary_rehearsal_on_a_chart_rendering_fails(doc_services, workdir):
    """Issue 26: the chart's InferenceService alone has no status, so the rehearsal finds no canary (exit 2)."""
    out = run([tool("helm"), "template", RELEASE, str(CHART), "-n", NAMESPACE, "--set", "canary.enabled=true"])
    (isvc,) = [d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "InferenceService"]
    (workdir / "rendered-isvc.yaml").write_text(
        yaml.safe_dump({**isvc, "metadata": {**isvc["metadata"], "namespace": NAMESPACE}})
    )
    text = (
        ".venv/bin/python -m predictor canary --isvc classifier -n ml --isvc-file rendered-isvc.yaml "
        "--prometheus-url http://localhost:9090 --steps 10,100 --step-interval 1s --max-failed-checks 1"
    )
    failures = check(text, doc_services, workdir)
    assert any("exit 2, the document says 0" in f and "no canary" in f for f in failures), failures


def test_a_printed_sample_is_compared_by_its_words():
    """README's tritonclient samples print arrays: the same labels in any order pass, another label fails."""
    from .checks import compare_sample

    shown = "[b'tiger cat' b'Egyptian cat' b'tabby, tabby cat']"
    assert compare_sample(shown, "[b'Egyptian cat' b'tiger cat' b'tabby, tabby cat']\n") == []
    assert compare_sample(shown, "[b'tiger cat' b'lynx, catamount' b'tabby, tabby cat']\n")
    assert compare_sample("3 jobs", "3 jobs\n") == [] and compare_sample("3 jobs", "4 jobs")
