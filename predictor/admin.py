"""The admin token: who may call the routes that change the server's state (KServe's model repository).

The token is read from ``admin_token_file`` (a mounted Secret) on every admin call, so a rotated Secret
applies without a restart, and compared in constant time. REST answers 401 without a bearer token and
403 with a wrong one; with ``enable_model_repository_routes`` off the routes are not mounted at all (404).
KServe's gRPC repository RPCs are always refused (UNIMPLEMENTED).
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import Any

from fastapi import Request

from predictor.errors import Forbidden, PredictorError, Unauthenticated

logger = logging.getLogger(__name__)

HOW = "send 'Authorization: Bearer <token>' with the token in the server's admin_token_file"


class AdminTokenUnavailable(PredictorError):
    """The admin token file cannot be read or is empty: every admin call is refused (fail closed)."""

    status_code = 500
    reason = "admin_token_unavailable"


class AdminToken:
    """The bearer token of the admin routes, read from a file.

    Args:
        path: The file holding the token (surrounding whitespace ignored).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def expected(self) -> bytes:
        """The token now in the file; raises :class:`AdminTokenUnavailable` if unreadable or empty."""
        try:
            token = self.path.read_bytes().strip()
        except OSError as e:
            logger.error("admin token file %s cannot be read: %s", self.path, e)
            raise AdminTokenUnavailable("the admin token is not available on this server") from None
        if not token:
            logger.error("admin token file %s is empty", self.path)
            raise AdminTokenUnavailable("the admin token is not available on this server")
        return token

    def check(self, authorization: str | None) -> None:
        """Accept ``Bearer <the token>``; raise 401 for a missing or malformed header, 403 for a wrong token."""
        if not authorization:
            raise Unauthenticated(f"this admin route needs a bearer token: {HOW}")
        scheme, _, presented = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Unauthenticated(f"the Authorization header is not a bearer token: {HOW}")
        if not hmac.compare_digest(presented.strip().encode(), self.expected()):
            raise Forbidden("the bearer token is not this server's admin token")

    async def require(self, request: Request) -> None:
        """FastAPI dependency of every admin route."""
        self.check(request.headers.get("authorization"))

    def check_startup(self) -> None:
        """Fail the start when the token cannot be read (an admin route that can never succeed is a mistake)."""
        self.expected()


async def refuse_grpc_repository(context: Any) -> None:
    """Run before KServe's gRPC ``RepositoryModelLoad``/``Unload`` (:func:`predictor.kserve_compat.
    guard_grpc_repository`): always UNIMPLEMENTED. kserve 0.21's servicer fails on every such call (it reads
    a dict the repository extension does not return), and the admin token guards the HTTP routes only."""
    from grpc_interceptor import exceptions as grpc_exceptions

    raise grpc_exceptions.Unimplemented(
        "model repository calls are not served over gRPC: with enable_model_repository_routes on, use "
        "POST /v2/repository/models/{name}/load or /unload over HTTP with the admin token"
    )
