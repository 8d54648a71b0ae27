"""``python -m predictor serve|worker|routes [--flag value ...]``: every flag is a settings field.

``python -m predictor routes`` lists every route ``serve`` with the same flags answers (path, methods,
public or admin-only), built as ``serve`` builds them, without loading the model.

``python -m predictor canary ...`` analyses an InferenceService canary (see ``predictor.canary.cli``);
``python -m predictor plan ...`` simulates the chart's autoscaling and cost (:mod:`predictor.plan`).
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from predictor.config import Settings, add_settings_arguments, settings_from_args


def build_parser() -> argparse.ArgumentParser:
    """The CLI: one subcommand per entry point, one flag per settings field."""
    parser = argparse.ArgumentParser(prog="python -m predictor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the model over HTTP (KServe v1/v2, /classify)")
    worker = sub.add_parser("worker", help="classify jobs from the Redis stream")
    routes = sub.add_parser("routes", help="list every route `serve` with these flags answers (no model load)")
    routes.add_argument("--json", dest="routes_json", action="store_true", help="print JSON instead of a table")
    for p in (serve, worker, routes):
        add_settings_arguments(p)
    from predictor.canary.cli import __doc__ as canary_doc
    from predictor.canary.cli import add_arguments as add_canary_arguments

    canary = sub.add_parser(
        "canary", help="promote or roll back an InferenceService canary from its metrics", description=canary_doc
    )
    add_canary_arguments(canary)
    plan = sub.add_parser("plan", help="simulate the chart's autoscaling and cost under a traffic profile")
    from predictor.plan.cli import add_arguments

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
        problems = "; ".join(f"--{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
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
