"""Logging set-up: text or JSON lines, each carrying the request id of the request being served; rejected
requests logged per interval, not per request (:class:`RejectionLog`)."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import sys
import time
from collections.abc import Callable

REJECTIONS_LOGGER = "predictor.rejections"
"""The logger rejected requests are logged on (:class:`RejectionLog`)."""

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id (and exception)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def configure_logging(log_format: str = "text", level: str = "INFO") -> None:
    """Route every logger (ours, KServe's, uvicorn's) through one stderr handler in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    # Python warnings and library progress bars would otherwise bypass the format (and break JSON lines).
    logging.captureWarnings(True)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name in ("kserve", "kserve.trace", "uvicorn", "uvicorn.error", "uvicorn.access", "transformers"):
        lg = logging.getLogger(name)
        lg.handlers = []
        lg.propagate = True
    # Per-request access and latency lines stay off at INFO.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)


def rejection_log(interval_s: float) -> RejectionLog:
    """A :class:`RejectionLog` on :data:`REJECTIONS_LOGGER` (``rejection_log_interval_seconds``)."""
    return RejectionLog(logging.getLogger(REJECTIONS_LOGGER), interval_s)


class RejectionLog:
    """Rejected requests in the log without a line per request: one line per interval for a flood.

    In each interval (it starts with the first rejection after a quiet one) the first rejection of each
    kind (status and reason) is logged in full, under its request id; the others are only counted, and
    one summary line at the interval's end says how many of each there were. Under any flood that is at
    most one line per kind plus one per interval. Every rejection is still counted in the metrics
    (``classifier_rejections_total``), and at DEBUG level each one is logged too.

    Args:
        logger: Where the lines go.
        interval_s: Length of an interval.
        clock: Monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self, logger: logging.Logger, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.logger = logger
        self.interval_s = interval_s
        self._clock = clock
        self._started: float | None = None
        self._seen: set[tuple[int, str]] = set()
        self._suppressed: dict[tuple[int, str], int] = {}
        self._timer: asyncio.TimerHandle | None = None

    def record(self, status: int, reason: str, message: str) -> None:
        """One rejection: ``message`` is what one full line would say (method, path, status, error)."""
        now = self._clock()
        if self._started is not None and now - self._started >= self.interval_s:
            self.flush()
        if self._started is None:
            self._started = now
            self._schedule_flush()
        kind = (status, reason)
        level = rejection_level(status)
        if kind not in self._seen:
            self._seen.add(kind)
            self.logger.log(level, "%s", message)
            return
        self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("%s", message)

    def flush(self) -> None:
        """End the interval: the summary line, if anything was left out of the log in it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        started, suppressed = self._started, self._suppressed
        self._started, self._seen, self._suppressed = None, set(), {}
        if not suppressed or started is None:
            return
        seconds = min(self._clock() - started, self.interval_s)
        parts = ", ".join(f"{n} x {status} {reason}" for (status, reason), n in sorted(suppressed.items()))
        level = max(rejection_level(status) for status, _ in suppressed)
        what = "shed" if set(suppressed) == {(503, "queue_full")} else "refused"
        self.logger.log(
            level,
            "%s %d more requests in the last %.0f s (%s); the first of each kind is logged above, all are "
            "counted in classifier_rejections_total",
            what, sum(suppressed.values()), seconds, parts,
        )  # fmt: skip

    def _schedule_flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a script, a test): the next record or an explicit flush ends it
            return
        self._timer = loop.call_later(self.interval_s, self.flush)


def rejection_level(status: int) -> int:
    """Log level of a rejection: ERROR for server faults (5xx other than 503), else WARNING."""
    return logging.ERROR if status >= 500 and status != 503 else logging.WARNING
