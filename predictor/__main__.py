"""``python -m predictor serve|worker|routes [--flag value ...]``: every flag is a settings field.

``python -m predictor routes`` lists every route ``serve`` with the same flags answers (path, methods,
public or admin-only), built as ``serve`` builds them, without loading the model.

Flags are kebab-case (``--model-dir``); the snake_case spelling (``--model_dir``) is accepted too.

The tools beside the service keep their documented commands through thin dispatchers that import them
only when asked (so serving never imports them): ``python -m predictor canary ...`` runs the canary
analysis (:mod:`classifier_canary`, extra ``[canary]``), ``python -m predictor plan ...`` the capacity and
cost planner (:mod:`classifier_plan`, extra ``[plan]``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from pydantic import ValidationError

from predictor.config import Settings, add_settings_arguments, settings_from_args
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
    routes = sub.add_parser("routes", help="list every route `serve` with these flags answers (no model load)")
    routes.add_argument("--json", dest="routes_json", action="store_true", help="print JSON instead of a table")
    for p in (serve, worker, routes):
        add_settings_arguments(p)
    for name, (_, help_text, _) in TOOLS.items():
        # listed for --help; `main` hands these commands to the tool before this parser sees them
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


TOOLS: dict[str, tuple[str, str, str]] = {
    "canary": ("classifier_canary.cli", "promote or roll back an InferenceService canary from its metrics", "canary"),
    "plan": ("classifier_plan.cli", "simulate the chart's autoscaling and cost under a traffic profile", "plan"),
}
"""Subcommand → (module with ``add_arguments`` and ``run_from_args``, help, the extra that installs it)."""


def run_tool(name: str, argv: list[str]) -> int:
    """Parse ``argv`` with the tool's own flags and run it; a missing extra is one clear line, exit 2."""
    module_name, help_text, extra = TOOLS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        print(
            f"python -m predictor {name} needs the [{extra}] extra (missing module {e.name!r}): "
            f"pip install 'image-classifier[{extra}]'",
            file=sys.stderr,
        )
        return 2
    parser = Parser(prog=f"python -m predictor {name}", description=module.__doc__ or help_text)
    module.add_arguments(parser)
    run: Callable[[argparse.Namespace], int] = module.run_from_args
    return run(parser.parse_args(argv))


def main(argv: list[str] | None = None) -> None:
    """Parse flags (then env vars, then defaults) and run the chosen entry point."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in TOOLS:
        raise SystemExit(run_tool(argv[0], argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValidationError as e:
        problems = "; ".join(f"--{kebab('.'.join(map(str, err['loc'])))}: {err['msg']}" for err in e.errors())
        print(f"invalid settings: {problems}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.command == "serve":
        from predictor.server import serve

        serve(settings)
    elif args.command == "routes":
        print_routes(settings, as_json=args.routes_json)
    else:
        from predictor.queue.worker import main as worker_main

        worker_main(settings)


def print_routes(settings: Settings, *, as_json: bool) -> None:
    """Print the route table of ``serve`` with ``settings`` (JSON, or one aligned line per route)."""
    import json
    import logging

    logging.basicConfig(level=logging.WARNING)
    from predictor.server import route_listing

    listing = route_listing(settings)
    if as_json:
        print(json.dumps(listing, indent=2))
        return
    width = max(len(r["path"]) for r in listing)
    for r in listing:
        access = "public" if r["public"] else "admin token"
        print(f"{r['path']:<{width}}  {','.join(r['methods']):<9}  {access:<11}  {r['summary']}")


if __name__ == "__main__":
    main()
