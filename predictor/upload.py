"""How long a request body may take to arrive: the body deadline and the minimum upload rate.

A body must arrive within ``body_timeout_s`` of the request's start, and, once ``upload_grace_s`` has
passed, at ``min_upload_bytes_per_s`` on average at least (bytes received so far / time since the start).
A body that breaks either, a stalled one included, is refused with 408 (:class:`UploadTooSlow`) the moment
it does: each wait for the next part of the body is bounded by the time at which the limits would be broken
if nothing more came. The limits apply to the bytes as sent (before inflating a compressed body).

The HTTP middleware reads every request body through :class:`TimedBody`; the connection's head is the
HTTP server's (:mod:`predictor.http_guard`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import Message, Receive

from predictor.errors import UploadTooSlow


@dataclass(frozen=True)
class UploadLimits:
    """Limits on one request body (from :class:`~predictor.config.Settings`)."""

    body_timeout_s: float = 60.0
    min_bytes_per_s: int = 10_000
    grace_s: float = 5.0

    def deadline(self, started: float, received: int) -> float:
        """When a body that started at ``started`` and has ``received`` bytes breaks a limit if no more come."""
        latest = started + self.body_timeout_s
        if self.min_bytes_per_s <= 0:
            return latest
        return min(latest, started + max(self.grace_s, received / self.min_bytes_per_s))

    def broken(self, started: float, received: int, now: float) -> UploadTooSlow:
        """The error for a body past :meth:`deadline`: which limit it broke, and by how much."""
        elapsed = now - started
        if elapsed >= self.body_timeout_s:
            return UploadTooSlow(
                f"request body not received within {self.body_timeout_s:g} s (body_timeout_s): {received} bytes "
                "came; send the whole body at once, and faster"
            )
        return UploadTooSlow(
            f"request body arriving at {received / max(elapsed, 1e-9):.0f} bytes/s ({received} bytes in "
            f"{elapsed:.1f} s), under the minimum of {self.min_bytes_per_s} bytes/s (min_upload_bytes_per_s) that "
            f"applies after {self.grace_s:g} s (upload_grace_s)"
        )


class TimedBody:
    """A request's ``receive`` with the body limits: call it as the ASGI ``receive``.

    Args:
        receive: The server's ``receive``.
        limits: The body limits.
        clock: Monotonic seconds, the clock of the event loop (tests pass a fake one).

    Raises (from a call):
        UploadTooSlow: the body broke a limit; nothing more of it is read.
    """

    def __init__(self, receive: Receive, limits: UploadLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self._receive = receive
        self.limits = limits
        self._clock = clock
        self.started = clock()
        self.received = 0
        self.arrived = False
        """The last part of the body came."""
        self._done = False
        self._on_arrived: Callable[[], None] | None = None

    def when_arrived(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the whole body has come (now, if it has)."""
        if self.arrived:
            callback()
        else:
            self._on_arrived = callback

    async def __call__(self) -> Message:
        if self._done:  # past the body: what comes now is the disconnect, whenever it comes
            return await self._receive()
        try:
            async with asyncio.timeout(max(0.0, self.limits.deadline(self.started, self.received) - self._clock())):
                message = await self._receive()
        except TimeoutError:
            self._done = True
            raise self.limits.broken(self.started, self.received, self._clock()) from None
        if message["type"] != "http.request":
            self._done = True
            return message
        self.received += len(message.get("body", b""))
        if not message.get("more_body", False):
            self._done = self.arrived = True
            if self._on_arrived is not None:
                self._on_arrived()
        elif self._clock() > self.limits.deadline(self.started, self.received):
            # A part that was waiting already (no wait to time out) does not let a body past its limits.
            self._done = True
            raise self.limits.broken(self.started, self.received, self._clock())
        return message
