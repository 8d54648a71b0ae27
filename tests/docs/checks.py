"""Check one documented command: parse it as bash, send each simple command to its tool's checker, run
what can run here, compare a shown sample output with the real one.

Per tool: ``kubectl`` and ``helm`` in tests/docs/check_kube.py; ``make`` targets and variables against
the Makefile; ``python`` must be the virtualenv's, its ``-m`` module's flags must be in its ``--help``
(the client runs for real, and what it writes to ``--output`` must be results; so do the planner, a
canary rehearsal on a file, the bench tools in :data:`RUN_MODULES`, and a queue worker, which must log
that it started); ``docker build``
``--build-arg`` names against the Dockerfile's ``ARG``; ``bash SCRIPT`` must exist and parse;
``curl`` and ``redis-cli`` run against the live predictor and Redis (any HTTP status >= 400, exit code
or Redis error reply fails).
"""

from __future__ import annotations

import json
import re
from typing import Any

import bashlex

from .check_kube import check_helm, check_kubectl
from .extract import Command
from .shell import (
    EXECUTED,
    HELPERS,
    REDIS_ERROR,
    Context,
    execute,
    expand,
    http_statuses,
    node_end,
    pipelines,
    simple_commands,
    start,
    substitute,
    substitutions,
    words_of,
)
from .world import REPO, dockerfile_args, make_targets, make_variables, predictor_pod, python_flags, run, script_flags

SCORE_TOLERANCE = 0.02
"""Largest difference between a documented and a measured score: the docs round to 2 places, and the
backend `auto` picks (OpenVINO, ONNX Runtime, PyTorch; a reduced precision where it keeps the answers)
moves scores by up to about 0.01."""


RUN_MODULES = ("predictor plan", "predictor canary --isvc-file", "bench.preprocess_probe")
"""``python -m`` commands (module, subcommand, a flag they must carry) run for real from a document's shell
blocks, as a reader runs them; the exit code must be the document's (``# exit N``, else 0). Other modules
(benchmarks that measure for minutes, the model builders that write into ``models/``) are checked
against their ``--help``."""
LONG_RUNNING = {"predictor worker": "worker started"}
"""Documented commands that run until stopped: started, they must log this within
:data:`START_TIMEOUT_S`, then they are stopped."""
START_TIMEOUT_S = 300


def check_command(ctx: Context) -> None:
    """Check ``ctx.command``; failures and unchecked parts are recorded in ``ctx``."""
    cmd = ctx.command
    if reason := cmd.skip_reason(cmd.text):
        ctx.unchecked.append(f"{cmd.where()}: {cmd.text.splitlines()[0][:100]} ({reason})")
        return
    text = ctx.text = substitute(cmd.text, cmd.profile, ctx.job_ids)
    try:
        # bashlex wants a bare heredoc word: <<'EOF' -> << EOF (same length, so positions still match)
        nodes = bashlex.parse(re.sub(r"<<(['\"])(\w+)\1", r"<< \2 ", text))
    except Exception as e:  # bashlex raises its own ParsingError and, on odd input, others
        return ctx.fail(f"does not parse as a shell command: {e}")
    before = sum(ctx.checked.values())
    for node in nodes:
        for pipeline in pipelines(node):
            _check_pipeline(pipeline, text, ctx)
    if sum(ctx.checked.values()) == before and not ctx.failures and not ctx.unchecked:
        if not all(p.kind == "assignment" for n in nodes for c in simple_commands(n) for p in c.parts):
            ctx.fail("nothing in this command has a checker")


def _check_pipeline(node: Any, text: str, ctx: Context) -> None:
    commands = simple_commands(node)
    tools = [words_of(c)[0] if words_of(c) else "" for c in commands]
    for command in commands:
        _check_static(command, ctx)
    if any(t in EXECUTED for t in tools):
        _run(text[node.pos[0] : node_end(node)], ctx, tools)


def _check_static(node: Any, ctx: Context) -> None:
    for inner in substitutions(node):
        if ctx.command.skip_reason(_text(inner, ctx)):
            ctx.unchecked.append(f"{ctx.command.where()}: nested {_text(inner, ctx)[:80]!r}")
            continue
        for pipeline in pipelines(inner):
            for command in simple_commands(pipeline):
                _check_static(command, ctx)
    assignments = [p.word for p in node.parts if p.kind == "assignment"]
    for a in assignments:
        _assign(a, ctx)
    words = [expand(w, ctx.variables) for w in words_of(node)]
    if not words:
        return
    checker = STATIC.get(words[0])
    if checker is not None:
        checker(words, ctx)
    elif words[0] not in EXECUTED | HELPERS:
        ctx.fail(f"{words[0]}: no checker for this command (mark it unchecked with a reason, or drop it)")


def _text(node: Any, ctx: Context) -> str:
    """The source text of a node (positions are into the substituted command text)."""
    return ctx.text[node.pos[0] : node.pos[1]]


def _assign(assignment: str, ctx: Context) -> None:
    """``NS=ml``; ``URL=$(kubectl get inferenceservice ... {.status.url})`` -> the live predictor's URL;
    ``POD=$(kubectl get pods ... {.items[0].metadata.name})`` -> the profile's predictor pod."""
    name, _, value = assignment.partition("=")
    if "{.status.url}" in value and ctx.services is not None:
        ctx.variables[name] = ctx.services.server_url
    elif ".metadata.name}" in value:
        ctx.variables[name] = predictor_pod(ctx.profile).name
    elif "$(" not in value and "$!" not in value:
        ctx.variables[name] = expand(value, ctx.variables)


# ---------------------------------------------------------------- executed: curl, redis-cli, files


def _run(text: str, ctx: Context, tools: list[str]) -> None:
    if ctx.services is None:
        return ctx.fail("needs the live predictor, which this check runs without")
    ctx.checked[tools[0]] += 1
    result = execute(text, ctx)
    statuses = http_statuses(result.stderr)
    stderr = re.sub(r"^HTTP_STATUS \d+\n?", "", result.stderr, flags=re.MULTILINE).strip()
    if result.returncode != 0:
        ctx.fail(f"exit {result.returncode}: {stderr[-600:] or result.stdout[-600:]}")
    if any(s >= 400 for s in statuses):
        ctx.fail(f"HTTP {statuses}: {result.stdout[-400:]}")
    if "redis-cli" in tools and REDIS_ERROR.search(result.stdout):
        ctx.fail(f"Redis answered an error: {REDIS_ERROR.search(result.stdout).group(0)} ... {result.stdout[:300]}")
    _remember_job_ids(result.stdout, ctx)
    if ctx.command.expected is not None and "curl" in tools:
        ctx.failures += [
            f"{ctx.command.where()}: sample output: {e}" for e in compare_sample(ctx.command.expected, result.stdout)
        ]


def _remember_job_ids(stdout: str, ctx: Context) -> None:
    try:
        answer = json.loads(stdout)
    except ValueError:
        return
    if isinstance(answer, dict) and isinstance(answer.get("job_ids"), list):
        ctx.job_ids += answer["job_ids"]


def compare_sample(expected: str, actual: str) -> list[str]:
    """Differences between a documented answer and the real one: every documented key present with the
    same value; each documented prediction among the real ones with its score within SCORE_TOLERANCE."""
    try:
        doc = json.loads(expected)
    except ValueError:
        return _compare_text(expected, actual)
    try:
        real = json.loads(actual)
    except ValueError as e:
        return [f"not JSON ({e}): {actual[:200]}"]
    errors = []
    for key, value in doc.items():
        if key == "predictions":
            for i, (shown, got) in enumerate(zip(value, real.get("predictions", []), strict=False)):
                errors += _compare_predictions(i, shown, got)
        elif real.get(key) != value:
            errors.append(f"{key} is {real.get(key)!r}, the docs show {value!r}")
    return errors


def _compare_text(expected: str, actual: str) -> list[str]:
    """A printed sample (``[b'tiger cat' b'Egyptian cat' ...]``): the same quoted words, in any order (two
    classes a hundredth apart may swap between backends), else the same text."""
    quoted = re.compile(r"'([^']*)'|\"([^\"]*)\"")
    shown = {a or b for a, b in quoted.findall(expected)}
    if shown:
        got = {a or b for a, b in quoted.findall(actual)}
        return [] if got == shown else [f"prints {sorted(got)}, the docs show {sorted(shown)}"]
    return (
        [] if actual.strip() == expected.strip() else [f"prints {actual.strip()[:200]!r}, the docs show {expected!r}"]
    )


def _compare_predictions(i: int, shown: list[dict], got: list[dict]) -> list[str]:
    by_label = {p["label"]: p for p in got}
    errors = []
    for p in shown:
        real = by_label.get(p["label"])
        if real is None:
            errors.append(
                f"image {i}: {p['label']!r} is not among the real top-{len(got)}: {[g['label'] for g in got]}"
            )
        elif abs(real["score"] - p["score"]) > SCORE_TOLERANCE or real["class_id"] != p["class_id"]:
            errors.append(f"image {i}: {p['label']} scores {real['score']:.3f} (class {real['class_id']}), docs {p}")
    return errors


# ---------------------------------------------------------------- static: make, python, docker, bash


def check_make(words: list[str], ctx: Context) -> None:
    ctx.checked["make"] += 1
    for w in words[1:]:
        if "=" in w:
            if w.split("=", 1)[0] not in make_variables():
                ctx.fail(f"make: the Makefile has no variable {w.split('=', 1)[0]}")
        elif w not in make_targets():
            ctx.fail(f"make: no target {w!r} (make help lists {', '.join(sorted(make_targets()))})")


def check_python(words: list[str], ctx: Context) -> None:
    ctx.checked["python"] += 1
    if words[0] != ".venv/bin/python":
        ctx.fail(f"bare {words[0]}: outside the virtualenv it lacks the dependencies; write .venv/bin/python")
    args = words[1:]
    if args[:1] == ["-m"] and len(args) > 1:
        _check_module(args[1], args[2:], ctx)
    elif args[:1] in (["-c"], ["-"]):
        _run_python(ctx)
    elif args and args[0].endswith(".py"):
        if not (REPO / args[0]).is_file():
            return ctx.fail(f"{args[0]} does not exist")
        flags = script_flags(args[0])
        _check_flags(args[1:], flags, f"{args[0]} --help", ctx)
    else:
        ctx.fail(f"python {args[:1]}: no check for this form")


def _check_module(module: str, args: list[str], ctx: Context) -> None:
    sub = args[0] if args and not args[0].startswith("-") else None
    flags = python_flags(module, sub) if sub else None
    if flags is None or isinstance(flags, str):
        flags, sub = python_flags(module, None), None
    if isinstance(flags, str):
        return ctx.fail(f"python -m {module} --help fails: {flags}")
    _check_flags(args, flags, f"python -m {module}{' ' + sub if sub else ''} --help", ctx)
    if module == "predictor.client":
        _run_client(args, ctx)
    elif not ctx.command.inline:
        called = " ".join([module, *args])
        if any(_matches(called, pattern) for pattern in RUN_MODULES):
            _run_module(ctx)
        elif (ready := next((t for p, t in LONG_RUNNING.items() if _matches(called, p)), None)) is not None:
            _run_until(ready, ctx)


def _matches(called: str, pattern: str) -> bool:
    words = pattern.split()
    return called.startswith(" ".join(words[:2])) and all(w in called.split() for w in words[2:])


def _run_module(ctx: Context) -> None:
    ctx.checked["python (run)"] += 1
    if ctx.services is None:
        return ctx.fail("needs the live services")
    result = execute(substitute(ctx.command.text, ctx.profile, ctx.job_ids), ctx)
    if result.returncode != ctx.command.exit_code:
        ctx.fail(
            f"exit {result.returncode}, the document says {ctx.command.exit_code}: "
            f"{(result.stderr or result.stdout)[-800:]}"
        )
    _compare_output(result.stdout, ctx)


def _compare_output(stdout: str, ctx: Context) -> None:
    if ctx.command.expected is not None:
        errors = compare_sample(ctx.command.expected, stdout)
        ctx.failures += [f"{ctx.command.where()}: sample output: {e}" for e in errors]


def _run_until(ready: str, ctx: Context) -> None:
    """Start a command that runs until stopped; it must print ``ready`` before it exits or times out."""
    import os
    import signal
    import time

    ctx.checked["python (start)"] += 1
    if ctx.services is None:
        return ctx.fail("needs the live services")
    log = ctx.workdir / f"started-{ctx.command.line}.log"
    proc = start(substitute(ctx.command.text, ctx.profile, ctx.job_ids), ctx, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while ready not in log.read_text(errors="replace") and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        alive = proc.poll() is None
        if alive:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
    output = log.read_text(errors="replace")
    if ready not in output:
        state = "still starting" if alive else f"exited {proc.returncode}"
        ctx.fail(f"never logged {ready!r} ({state} after {START_TIMEOUT_S} s at most): {output[-800:]}")


def _check_flags(args: list[str], flags: Any, where: str, ctx: Context) -> None:
    for a in args:
        name = a[2:].split("=", 1)[0]
        if a.startswith("--") and not (
            name in flags.long or (flags.snake_alias and name.replace("_", "-") in flags.long)
        ):
            ctx.fail(f"{a.split('=', 1)[0]} is not a flag of {where} (has {', '.join(sorted(flags.long))})")


def _run_python(ctx: Context) -> None:
    ctx.checked["python (run)"] += 1
    if ctx.services is None:
        return ctx.fail("needs the live predictor")
    result = execute(substitute(ctx.command.text, ctx.profile, ctx.job_ids), ctx)
    if result.returncode != ctx.command.exit_code:
        ctx.fail(f"exit {result.returncode}: {result.stderr[-600:]}")
    _compare_output(result.stdout, ctx)


def _run_client(args: list[str], ctx: Context) -> None:
    """Run the client for real; each row it writes to ``--output`` must be a result (status ok)."""
    if ctx.services is None:
        return ctx.fail("needs the live predictor")
    if args and args[0] == "submit" and "--wait" in args:
        ctx.services.start_worker()
    result = execute(substitute(ctx.command.text, ctx.profile, ctx.job_ids), ctx)
    if result.returncode != 0:
        return ctx.fail(f"the client exited {result.returncode}: {result.stderr[-600:]}")
    output = args[args.index("--output") + 1] if "--output" in args else None
    if output:
        rows = (ctx.workdir / output).read_text().splitlines()
        statuses = {
            json.loads(r)["status"] if output.endswith(".jsonl") else r.split(",")[1]
            for r in rows[1 if output.endswith(".csv") else 0 :]
        }
        if statuses != {"ok"}:
            ctx.fail(f"{output} holds rows with status {sorted(statuses)}, not results (submit needs --wait)")


def check_docker(words: list[str], ctx: Context) -> None:
    ctx.checked["docker"] += 1
    if words[1:2] != ["build"]:
        return ctx.fail(f"docker {words[1:2]}: no check (no Docker engine here); mark it unchecked")
    args = words[2:]
    for i, a in enumerate(args):
        if a == "--build-arg" and args[i + 1].split("=", 1)[0] not in dockerfile_args():
            ctx.fail(f"docker build: the Dockerfile has no ARG {args[i + 1].split('=', 1)[0]}")
    if not (REPO / args[-1]).is_dir():
        ctx.fail(f"docker build: context {args[-1]} is not a directory")


def check_bash(words: list[str], ctx: Context) -> None:
    ctx.checked["bash"] += 1
    script = REPO / words[1]
    if not script.is_file():
        return ctx.fail(f"{words[1]} does not exist")
    result = run(["bash", "-n", str(script)])
    if result.returncode != 0:
        ctx.fail(f"bash -n {words[1]}: {result.stderr}")


STATIC = {
    "kubectl": check_kubectl,
    "helm": check_helm,
    "make": check_make,
    "python": check_python,
    "python3": check_python,
    ".venv/bin/python": check_python,
    "docker": check_docker,
    "bash": check_bash,
}


def check_all(commands: list[Command], make_context) -> tuple[list[str], list[str], dict]:
    """Check commands in document order with shared variables; returns failures, unchecked, counts."""
    failures: list[str] = []
    unchecked: list[str] = []
    counts: dict[str, int] = {}
    variables: dict[str, str] = {}
    job_ids: list[str] = []
    for command in commands:
        ctx = make_context(command)
        ctx.variables, ctx.job_ids = variables, job_ids
        check_command(ctx)
        failures += ctx.failures
        unchecked += ctx.unchecked
        for k, v in ctx.checked.items():
            counts[k] = counts.get(k, 0) + v
    return failures, unchecked, counts
