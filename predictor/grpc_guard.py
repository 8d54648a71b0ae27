"""The gRPC front door: how many calls the server takes, and how it says no.

* :class:`CallLimit`, a server interceptor, counts the calls in progress (all connections) and refuses a
  call past ``grpc_max_pending_rpcs`` at once with RESOURCE_EXHAUSTED, a message that names the limit and
  ``grpc-retry-pushback-ms`` trailing metadata (gRPC's retry pushback: how long a client should wait).
  The refused call's message is not parsed (a raw-bytes handler); each refusal is counted
  (``classifier_rejections_total{reason="too_many_calls"}`` and a gRPC 503, see ``predictor.server``).
* Every refusal of ours that asks the client to come back (queue full or over the queue-wait budget:
  UNAVAILABLE; out of device memory: RESOURCE_EXHAUSTED) carries the same trailing metadata, from the
  error's ``Retry-After`` (:func:`predictor.protocol.status.grpc_error` attaches it).
* :func:`server_options`: the HTTP/2 and message limits (``grpc.max_concurrent_streams`` per connection,
  message sizes equal to REST's ``max_request_bytes``), which :mod:`predictor.kserve_compat` hands to
  KServe's gRPC server.

KServe's ``ExceptionToStatusInterceptor`` turns the ``grpc_interceptor`` exceptions raised here into the
call's status and details; this interceptor runs inside it and sets the trailing metadata first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio
from grpc_interceptor import exceptions as grpc_exceptions

from predictor.config import Settings

CORE_BACKLOG = 1 << 20
"""gRPC core's pending-call backlog limits (``grpc.server.max_pending_requests`` and its hard limit)."""
PUSHBACK_KEY = "grpc-retry-pushback-ms"
"""Trailing metadata key of gRPC's retry pushback (gRFC A6): milliseconds before a retry."""


def pushback_metadata(retry_after_s: float) -> tuple[tuple[str, str], ...]:
    """The trailing metadata that tells a gRPC client to retry after ``retry_after_s`` seconds."""
    return ((PUSHBACK_KEY, str(max(0, round(retry_after_s * 1000)))),)


def server_options(settings: Settings) -> list[tuple[str, Any]]:
    """gRPC server channel options: the concurrent-stream cap and message limits equal to REST's."""
    return [
        ("grpc.max_concurrent_streams", settings.grpc_max_concurrent_streams),
        # gRPC core's own backlog of calls not yet picked up by the server's loop: past 1000 it drops calls at
        # random, which the client sees as CANCELLED with no message. Raised out of reach, so that every
        # refusal is ours (a status with a message and pushback).
        ("grpc.server.max_pending_requests", CORE_BACKLOG),
        ("grpc.server.max_pending_requests_hard_limit", CORE_BACKLOG),
        ("grpc.max_receive_message_length", settings.max_request_bytes),
        ("grpc.max_send_message_length", settings.max_request_bytes),
    ]


class CallLimit(aio.ServerInterceptor):
    """Caps the unary calls in progress and adds retry pushback to refusals.

    Args:
        max_pending: Most calls in progress at once (``grpc_max_pending_rpcs``).
        retry_after_s: Seconds a refused client should wait (the admission's ``Retry-After``).
        on_refusal: Called for each call refused at the limit (the rejection and request metrics).
    """

    def __init__(
        self, max_pending: int, retry_after_s: Callable[[], float], on_refusal: Callable[[], None] | None = None
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.max_pending = max_pending
        self._retry_after_s = retry_after_s
        self._on_refusal = on_refusal
        self.pending = 0
        self.refused = 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # streaming methods: not served by this predictor's data plane
        if self.pending >= self.max_pending:
            self.refused += 1
            if self._on_refusal is not None:
                self._on_refusal()
            return grpc.unary_unary_rpc_method_handler(self._refuse)  # raw bytes: the message is not parsed
        behavior = handler.unary_unary

        async def counted(request: Any, context: aio.ServicerContext) -> Any:
            self.pending += 1
            try:
                return await behavior(request, context)
            except grpc_exceptions.GrpcException as e:
                pushback = getattr(e, "retry_after_seconds", None)
                if pushback is not None:
                    context.set_trailing_metadata(pushback_metadata(pushback))
                raise
            finally:
                self.pending -= 1

        return handler._replace(unary_unary=counted)

    async def _refuse(self, request: bytes, context: aio.ServicerContext) -> None:
        wait = max(1.0, float(self._retry_after_s()))
        context.set_trailing_metadata(pushback_metadata(wait))
        raise grpc_exceptions.ResourceExhausted(
            f"server busy: {self.pending} calls in progress, the most it takes at once (grpc_max_pending_rpcs="
            f"{self.max_pending}); retry in {wait:.0f} s ({PUSHBACK_KEY})"
        )
