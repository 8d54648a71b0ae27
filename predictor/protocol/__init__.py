"""Wire formats: one codec per format, used by every transport.

* :mod:`~predictor.protocol.common`: what every format parses into (:class:`ParsedRequest`), base64.
* :mod:`~predictor.protocol.v2`: KServe/Triton v2 — JSON and the binary tensor extension over REST, and
  the same requests over gRPC (raw contents), with one parser and one output builder.
* :mod:`~predictor.protocol.v1`: KServe v1 ``instances``.
* :mod:`~predictor.protocol.status`: the one HTTP status → gRPC code table.

Nothing here knows about batching, engines or the web framework.
"""

from predictor.protocol.common import ParsedRequest, b64decode, predictions_json
from predictor.protocol.status import grpc_code, grpc_error
from predictor.protocol.v1 import parse_v1

__all__ = ["ParsedRequest", "b64decode", "grpc_code", "grpc_error", "parse_v1", "predictions_json"]
