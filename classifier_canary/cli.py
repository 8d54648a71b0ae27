"""``python -m predictor canary``: promote or roll back an InferenceService canary from its metrics.

Exit codes: 0 promoted (or no canary, with --skip-without-canary), 1 rolled back, 2 bad input (nothing
was patched), 3 stopped on an error mid-run (traffic left as the last patch set it), 130/143 stopped by
SIGINT/SIGTERM between checks (traffic left where it was).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from classifier_canary.config import CanaryConfig, parse_duration
from classifier_canary.errors import EXIT_BAD_INPUT, EXIT_PROMOTED, CanaryError, CanaryInputError, NoCanary

# flag -> (config field, converter, metavar); durations go from "10m" to seconds
FLAGS: dict[str, tuple[str, Any, str]] = {
    "--isvc": ("isvc", str, "NAME"),
    "--namespace": ("namespace", str, "NAMESPACE"),
    "--prometheus-url": ("prometheus_url", str, "URL"),
    "--steps": ("steps", lambda s: tuple(int(x) for x in s.split(",") if x.strip()), "P1,P2,...,100"),
    "--step-interval": ("step_interval_seconds", parse_duration, "DURATION"),
    "--max-error-ratio": ("max_error_ratio", float, "RATIO"),
    "--max-shed-ratio": ("max_shed_ratio", float, "RATIO"),
    "--max-client-error-increase": ("max_client_error_increase", float, "RATIO"),
    "--max-p95-ratio": ("max_p95_ratio", float, "FACTOR"),
    "--min-p95-increase": ("min_p95_increase_seconds", parse_duration, "DURATION"),
    "--min-requests": ("min_requests", int, "N"),
    "--max-failed-checks": ("max_failed_checks", int, "N"),
    "--count-failed-checks": ("count_failed_checks", str, "{consecutive,total}"),
    "--on-monitoring-outage": ("on_monitoring_outage", str, "{rollback,hold}"),
    "--max-class-divergence": ("max_class_divergence", float, "JS"),
    "--max-confidence-shift": ("max_confidence_shift", float, "PROBABILITY"),
    "--min-quality-predictions": ("min_quality_predictions", int, "N"),
    "--reference-dir": ("reference_dir", Path, "DIR"),
    "--reference-labels": ("reference_labels", Path, "CSV"),
    "--min-reference-agreement": ("min_reference_agreement", float, "RATIO"),
    "--max-reference-accuracy-drop": ("max_reference_accuracy_drop", float, "RATIO"),
    "--stable-url": ("stable_url", str, "URL"),
    "--canary-url": ("canary_url", str, "URL"),
    "--reference-timeout": ("reference_timeout_seconds", parse_duration, "DURATION"),
    "--max-no-data-checks": ("max_no_data_checks", int, "N"),
    "--expect-version": ("expect_version", str, "VERSION"),
    "--expect-dtype": ("expect_dtype", str, "{float32,bfloat16,float16}"),
    "--ready-timeout": ("ready_timeout_seconds", parse_duration, "DURATION"),
    "--poll-interval": ("poll_interval_seconds", parse_duration, "DURATION"),
    "--prometheus-timeout": ("prometheus_timeout_seconds", parse_duration, "DURATION"),
    "--log-format": ("log_format", str, "{text,json}"),
    "--isvc-file": ("isvc_file", Path, "PATH"),
    "--kubeconfig": ("kubeconfig", Path, "PATH"),
    "--context": ("context", str, "NAME"),
    "--crd": ("crd", str, "{auto,cluster,shipped}"),
}
SWITCHES = {
    "--dry-run": "dry_run",
    "--skip-without-canary": "skip_without_canary",
    "--skip-live-quality": "skip_live_quality",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The canary flags, one per :class:`CanaryConfig` field (help from the field's description)."""
    fields = CanaryConfig.model_fields
    for flag, (name, convert, metavar) in FLAGS.items():
        f = fields[name]
        default = " (required)" if f.is_required() else f" (default: {_default_text(name, f.default)})"
        if convert is parse_duration:  # the unit: what a duration may be written as
            default = default.removesuffix(")") + "; a duration: 90s, 10m, 1h, or plain seconds)"
        if f.default is None:
            default = ""
        names = [flag, "-n"] if flag == "--namespace" else [flag]
        parser.add_argument(
            *names, dest=name, metavar=metavar, default=argparse.SUPPRESS, help=f"{f.description}{default}"
        )
    for flag, name in SWITCHES.items():
        parser.add_argument(
            flag, dest=name, action="store_true", default=argparse.SUPPRESS, help=fields[name].description
        )


def _default_text(name: str, value: Any) -> str:
    if name == "steps":
        return ",".join(map(str, value))
    if name.endswith("_seconds"):
        return f"{value:g}s"
    return str(value)


def config_from_args(args: argparse.Namespace) -> CanaryConfig:
    """Convert and validate the given flags.

    Raises:
        CanaryInputError: a flag is missing, unparsable or out of range; the message names the flag.
    """
    given = vars(args)
    values: dict[str, Any] = {}
    problems, unparsed = [], set()
    for flag, (name, convert, _) in FLAGS.items():
        if name in given:
            try:
                values[name] = convert(given[name])
            except ValueError as e:
                problems.append(f"{flag} {given[name]!r}: {e}")
                unparsed.add(name)
    values.update({name: True for name in SWITCHES.values() if given.get(name)})
    try:
        cfg = CanaryConfig(**values)
    except ValidationError as e:
        by_field = {name: flag for flag, (name, _, _) in FLAGS.items()}
        for err in e.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            if field in unparsed:
                continue
            got = f" (got {err['input']!r})" if err["type"] not in ("missing", "value_error") else ""
            problems.append(f"{by_field.get(field, field)}: {err['msg'].removeprefix('Value error, ')}{got}")
    if problems:
        raise CanaryInputError("; ".join(problems))
    return cfg


def make_store(cfg: CanaryConfig):  # -> Store
    """The store the flags ask for: a file, or the cluster; wrapped for --dry-run."""
    from classifier_canary.store import DryRunStore, FileStore, LiveStore

    if cfg.isvc_file is not None:
        store = FileStore(cfg.isvc_file, cfg.namespace, cfg.isvc)
    else:
        store = LiveStore(cfg.namespace, cfg.isvc, cfg.kubeconfig, cfg.context)
    return DryRunStore(store) if cfg.dry_run else store


def run(cfg: CanaryConfig) -> int:
    """Run one analysis with signal handling; returns the exit code."""
    from classifier_canary.log import DecisionLog
    from classifier_canary.prometheus import PrometheusClient
    from classifier_canary.runner import Runner, StopFlag

    log = DecisionLog(cfg.log_format, f"{cfg.namespace}/{cfg.isvc}")
    stop = StopFlag()
    previous = {s: signal.signal(s, stop.request) for s in (signal.SIGINT, signal.SIGTERM)}
    prom = PrometheusClient(cfg.prometheus_url, cfg.prometheus_timeout_seconds)
    try:
        return Runner(cfg, make_store(cfg), prom, log, stop).run()
    except NoCanary as e:
        code = EXIT_PROMOTED if cfg.skip_without_canary else EXIT_BAD_INPUT
        if code:
            print(f"error: {e}", file=sys.stderr)
        log.emit("result", f"no-canary: {e} (exit {code})", outcome="no-canary", exit_code=code, error=str(e))
        return code
    except CanaryError as e:
        print(f"error: {e}", file=sys.stderr)
        outcome = "bad-input" if isinstance(e, CanaryInputError) else "error"
        log.emit("result", f"{outcome}: {e} (exit {e.exit_code})", outcome=outcome, exit_code=e.exit_code, error=str(e))
        return e.exit_code
    finally:
        prom.close()
        for s, handler in previous.items():
            signal.signal(s, handler)


def run_from_args(args: argparse.Namespace) -> int:
    """Entry point for ``python -m predictor canary`` once argparse has parsed the flags."""
    try:
        cfg = config_from_args(args)
    except CanaryInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return run(cfg)


def build_parser(prog: str = "python -m predictor canary") -> argparse.ArgumentParser:
    from predictor.flags import Parser

    parser = Parser(prog=prog, description=__doc__)
    add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run; returns the exit code."""
    return run_from_args(build_parser().parse_args(argv))
