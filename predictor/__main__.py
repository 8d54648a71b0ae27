"""``python -m predictor serve|worker [--flag value ...]``: every flag is a settings field.

Flags are kebab-case (``--model-dir``); the snake_case spelling (``--model_dir``) is accepted too.

``python -m predictor canary ...`` analyses an InferenceService canary (see ``predictor.canary.cli``);
``python -m predictor plan ...`` simulates the chart's autoscaling and cost (:mod:`predictor.plan`).
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from predictor.config import add_settings_arguments, settings_from_args
from predictor.flags import Parser, kebab

SERVE_DOC = """Serve the model over HTTP: KServe v2 (JSON, binary tensors; gRPC with --enable-grpc true),
KServe v1, POST /classify, /metrics, and the job routes with --redis-url. Each flag is a settings field:
a flag given wins over its PREDICTOR_* environment variable, which wins over the default. Units are in
the names (-ms, -seconds, -bytes).
Example: python -m predictor serve --model-dir models/efficientnet-lite0 --http-port 8080"""
WORKER_DOC = """Classify jobs from the Redis stream (queue mode) through the same pipeline as serve, and serve
Prometheus metrics on --metrics-port (0 = none). It needs --redis-url and a model directory. The flags are
serve's.
Example: python -m predictor worker --redis-url redis://localhost:6379 --model-dir models/efficientnet-lite0
--metrics-port 9091"""


def build_parser() -> argparse.ArgumentParser:
    """The CLI: one subcommand per entry point, one flag per settings field."""
    parser = Parser(prog="python -m predictor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the model over HTTP (KServe v1/v2, /classify)", description=SERVE_DOC)
    worker = sub.add_parser("worker", help="classify jobs from the Redis stream", description=WORKER_DOC)
    for p in (serve, worker):
        add_settings_arguments(p)
    from predictor.canary.cli import __doc__ as canary_doc
    from predictor.canary.cli import add_arguments as add_canary_arguments

    canary = sub.add_parser(
        "canary", help="promote or roll back an InferenceService canary from its metrics", description=canary_doc
    )
    add_canary_arguments(canary)
    from predictor.plan.cli import __doc__ as plan_doc
    from predictor.plan.cli import add_arguments

    plan = sub.add_parser(
        "plan", help="simulate the chart's autoscaling and cost under a traffic profile", description=plan_doc
    )

    add_arguments(plan)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Parse flags (then env vars, then defaults) and run the chosen entry point."""
    args = build_parser().parse_args(argv)
    if args.command == "canary":
        from predictor.canary.cli import run_from_args

        raise SystemExit(run_from_args(args))
    if args.command == "plan":
        from predictor.plan.cli import main as plan_main

        raise SystemExit(plan_main(args))
    try:
        settings = settings_from_args(args)
    except ValidationError as e:
        problems = "; ".join(f"--{kebab('.'.join(map(str, err['loc'])))}: {err['msg']}" for err in e.errors())
        print(f"invalid settings: {problems}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.command == "serve":
        from predictor.server import serve

        serve(settings)
    else:
        from predictor.queue.worker import main as worker_main

        worker_main(settings)


if __name__ == "__main__":
    main()
