"""Typed errors, each carrying the HTTP status it maps to.

One base class (:class:`PredictorError`); one handler in :mod:`predictor.routes` turns any of them into
``{"error": "..."}`` with the status (and ``Retry-After`` where set). The ``reason`` is a short, bounded
label used in the rejection metrics.
"""

from __future__ import annotations


class PredictorError(Exception):
    """Base of every error this package raises on purpose."""

    status_code: int = 500
    reason: str = "internal"
    default_retry_after_seconds: int | None = None
    """``Retry-After`` when the raiser names none (None: no header)."""

    def __init__(self, message: str, *, retry_after_seconds: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_seconds = (
            retry_after_seconds if retry_after_seconds is not None else self.default_retry_after_seconds
        )

    def for_image(self, index: int, count: int) -> PredictorError:
        """This error as the answer to a whole request of ``count`` images, image ``index`` being the one
        that failed: the message names the image when there are several; status and ``Retry-After`` stay."""
        if count == 1:
            return self
        return type(self)(f"image {index}: {self.message}", retry_after_seconds=self.retry_after_seconds)

    def headers(self) -> dict[str, str]:
        """Extra response headers for this error."""
        if self.retry_after_seconds is None:
            return {}
        return {"Retry-After": str(self.retry_after_seconds)}


class InvalidInput(PredictorError):
    """The request is malformed: bad image bytes, base64, tensor shape or dtype, image count."""

    status_code = 400
    reason = "invalid_input"


class PayloadTooLarge(PredictorError):
    """The body is larger than ``max_request_bytes``."""

    status_code = 413
    reason = "too_large"


class UnsupportedMediaType(PredictorError):
    """The content type is not one the endpoint reads."""

    status_code = 415
    reason = "unsupported_media_type"


class UploadTooSlow(PredictorError):
    """The request body did not arrive within ``body_timeout_s``, or slower than ``min_upload_bytes_per_s``."""

    status_code = 408
    reason = "body_timeout"


class Unauthenticated(PredictorError):
    """An admin route was called without a bearer token (``Authorization: Bearer <token>``)."""

    status_code = 401
    reason = "unauthenticated"

    def headers(self) -> dict[str, str]:
        """``WWW-Authenticate: Bearer``, as RFC 6750 asks of a 401."""
        return {"WWW-Authenticate": 'Bearer realm="admin"'}


class Forbidden(PredictorError):
    """An admin route was called with a token that is not the admin token."""

    status_code = 403
    reason = "forbidden"


class ModelNotFound(PredictorError):
    """The request names a model this server does not serve."""

    status_code = 404
    reason = "model_not_found"


class Overloaded(PredictorError):
    """The inference queue is full; the client should retry after ``Retry-After`` seconds."""

    status_code = 503
    reason = "queue_full"
    default_retry_after_seconds = 1


class NotReady(PredictorError):
    """The model is not loaded yet, or the server is draining after SIGTERM."""

    status_code = 503
    reason = "not_ready"
    default_retry_after_seconds = 1


class NotLive(PredictorError):
    """Liveness: the model, having been ready, has not been for longer than the grace period (unloaded)."""

    status_code = 503
    reason = "not_live"


class DeadlineExceeded(PredictorError):
    """The request was not answered within ``request_timeout_ms``."""

    status_code = 504
    reason = "deadline"


class InsufficientMemory(PredictorError):
    """The device ran out of memory for one image even in a batch of its own (its batch-mates were answered)."""

    status_code = 507
    reason = "insufficient_memory"
    default_retry_after_seconds = 1


class EngineBroken(PredictorError):
    """The device is unusable (a broken CUDA context): the pod reports not live and not ready until restarted."""

    status_code = 503
    reason = "engine_broken"
    default_retry_after_seconds = 1


class InferenceFailed(PredictorError):
    """The forward pass failed (a server fault, not the client's)."""

    status_code = 500
    reason = "inference_failed"
