"""Errors of the canary tool, each carrying the exit code the CLI ends with."""

from __future__ import annotations

EXIT_PROMOTED = 0
EXIT_ROLLED_BACK = 1
EXIT_BAD_INPUT = 2
EXIT_STOPPED_ON_ERROR = 3


class CanaryError(Exception):
    """Base of the tool's errors; ``exit_code`` is what ``python -m predictor canary`` exits with."""

    exit_code = EXIT_STOPPED_ON_ERROR


class CanaryInputError(CanaryError):
    """A flag, the InferenceService or the Prometheus URL is unusable; nothing was patched (exit 2)."""

    exit_code = EXIT_BAD_INPUT


class NoCanary(CanaryInputError):
    """The InferenceService has no canary to analyse (exit 2, or 0 with ``--skip-without-canary``)."""


class ApplyFailed(CanaryError):
    """A patch could not be sent, or was refused, in the middle of a run (exit 3); traffic stays as it was."""


class ChangedUnderneath(ApplyFailed):
    """Somebody else changed the canary or its traffic during the analysis (exit 3); nothing more is sent."""


class PrometheusUnavailable(CanaryError):
    """Prometheus could not be reached or answered an error: a failed check, never a pass."""


class QueryFailed(PrometheusUnavailable):
    """Prometheus answered, but not with a usable result for a query."""
