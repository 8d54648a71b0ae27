"""Automated canary analysis of an InferenceService: step the canary's traffic share, judge each step by
the revisions' own Prometheus metrics, and promote or roll back (``python -m predictor canary``).

Modules: :mod:`config` (flags and thresholds), :mod:`analysis` (the pure step/verdict state machine),
:mod:`queries` (PromQL from the chart's recording rules), :mod:`prometheus` (client and measurement),
:mod:`merge_patch` (RFC 7386), :mod:`isvc` (canary state and patches of both deployment modes),
:mod:`guard` (CRD validation of every patch), :mod:`store` (cluster, file, dry run), :mod:`log` (the
decision log), :mod:`runner` (one run), :mod:`cli`.
"""

from classifier_canary.analysis import Analysis, Decision, Measurement, RevisionStats, Verdict, evaluate
from classifier_canary.config import CanaryConfig

__all__ = ["Analysis", "CanaryConfig", "Decision", "Measurement", "RevisionStats", "Verdict", "evaluate"]
