"""``python -m classifier_canary ...``: the same as ``python -m predictor canary ...``."""

import sys

from predictor.__main__ import run_tool

raise SystemExit(run_tool("canary", sys.argv[1:]))
