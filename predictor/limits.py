"""The request rules every entry point applies (HTTP, gRPC, the job API, the queue worker), in one place.

Each takes the limits as arguments (from :class:`~predictor.config.Settings`) and raises
:class:`~predictor.errors.InvalidInput` naming what was wrong and what is accepted.
"""

from __future__ import annotations

from typing import Any

from predictor.errors import InvalidInput


def check_top_k(top_k: Any, default: int, maximum: int, num_labels: int | None = None) -> int:
    """The ``top_k`` to use: ``default`` when None; an int from 1 to ``maximum`` otherwise.

    Args:
        top_k: What the request asked for (None = not given).
        default: ``default_top_k``.
        maximum: ``max_top_k``.
        num_labels: The model's class count, when known: a larger ``top_k`` returns every class.
    """
    if top_k is None:
        k = default
    elif isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= maximum:
        raise InvalidInput(f"top_k must be an integer from 1 to {maximum}, got {top_k!r}")
    else:
        k = top_k
    return min(k, num_labels) if num_labels else k


def check_image_count(n: int, maximum: int) -> None:
    """At least one image, at most ``maximum`` (``max_images_per_request``)."""
    if n == 0:
        raise InvalidInput("no images in the request: send at least one")
    if n > maximum:
        raise InvalidInput(f"{n} images in one request, over the limit of {maximum} (max_images_per_request)")
