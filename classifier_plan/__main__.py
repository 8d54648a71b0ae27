"""``python -m classifier_plan ...``: the same as ``python -m predictor plan ...``."""

import sys

from predictor.__main__ import run_tool

raise SystemExit(run_tool("plan", sys.argv[1:]))
