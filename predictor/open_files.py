"""The process's open-file limit, sized at start-up to the connections the settings allow.

HTTP and gRPC connections, the model's files, the event loop and every thread's pipes share one limit
(``RLIMIT_NOFILE``). Once it is reached, no port can accept: a red team's 20,000 idle gRPC connections took
it all, and ``/v2/health/live`` with it. The connection caps (``max_connections``, ``grpc_max_connections``)
bound what clients can hold; :func:`ensure_open_files` makes sure the limit is above those caps plus a
margin for the rest, raising the soft limit towards the hard one where it is lower, and says so in the log
when even the hard limit is too low.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from predictor.config import Settings

logger = logging.getLogger(__name__)

OTHER_OPEN_FILES = 512
"""Open files besides client connections: model and cache files, logs, the listening sockets, the event loop,
pipes of the decode and inference threads, a GPU runtime's device files (tens), Redis."""


def needed_open_files(settings: Settings) -> int:
    """Open files the settings may need at once: every HTTP connection, every gRPC one when gRPC is served,
    and :data:`OTHER_OPEN_FILES`."""
    grpc = settings.grpc_max_connections if settings.enable_grpc else 0
    return settings.max_connections + grpc + OTHER_OPEN_FILES


@dataclass(frozen=True)
class OpenFiles:
    """The open-file limit before and after :func:`ensure_open_files` (None: unlimited), and what the
    settings need."""

    needed: int
    soft_before: int | None
    soft: int | None
    hard: int | None

    @property
    def enough(self) -> bool:
        """The soft limit now covers what the settings need."""
        return self.soft is None or self.soft >= self.needed


def ensure_open_files(settings: Settings) -> OpenFiles | None:
    """Raise the soft ``RLIMIT_NOFILE`` to what the settings need (at most the hard limit); log a warning
    naming the settings to lower when the hard limit is below it. None where the platform has no such limit."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Linux
        return None

    def limit(value: int) -> int | None:
        return None if value == resource.RLIM_INFINITY else value

    needed = needed_open_files(settings)
    soft_value, hard_value = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = limit(soft_value), limit(hard_value)
    raised = soft
    if soft is not None and soft < needed:
        raised = needed if hard is None else max(soft, min(hard, needed))
        if raised != soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard_value))
            logger.info("open-file limit raised from %d to %d (the connection caps need %d)", soft, raised, needed)
    result = OpenFiles(needed, soft, raised, hard)
    if not result.enough:
        logger.warning(
            "open-file limit %d (hard) is below the %d the connection caps need (max_connections=%d, "
            "grpc_max_connections=%d, %d for the rest): clients holding connections could leave the server "
            "unable to accept any; lower the caps or raise the container's nofile limit",
            hard,
            needed,
            settings.max_connections,
            settings.grpc_max_connections if settings.enable_grpc else 0,
            OTHER_OPEN_FILES,
        )
    return result
