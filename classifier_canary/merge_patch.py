"""JSON merge patch (RFC 7386), the semantics of ``kubectl patch --type merge`` and of the API server.

Objects merge key by key, ``null`` deletes a key, and anything else (lists included) replaces the
target's value whole. ``spec.canary`` of an InferenceService is an atomic list, so a merge patch that
changes one entry carries the whole list.
"""

from __future__ import annotations

import copy
from typing import Any


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """The result of applying ``patch`` to ``target`` (RFC 7386 section 2); ``target`` is not modified."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def create_merge_patch(source: Any, target: Any) -> Any:
    """The smallest merge patch that turns ``source`` into ``target``.

    Raises:
        ValueError: ``target`` holds a ``null`` inside an object, which a merge patch cannot set
            (``null`` means "delete").
    """
    _reject_nulls(target)
    if not (isinstance(source, dict) and isinstance(target, dict)):
        return copy.deepcopy(target)
    patch: dict[str, Any] = {}
    for key in source.keys() - target.keys():
        patch[key] = None
    for key, value in target.items():
        if key not in source:
            patch[key] = copy.deepcopy(value)
        elif source[key] != value:
            if isinstance(source[key], dict) and isinstance(value, dict):
                patch[key] = create_merge_patch(source[key], value)
            else:
                patch[key] = copy.deepcopy(value)
    return patch


def _reject_nulls(node: Any, path: str = "") -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if value is None:
                raise ValueError(f"{path}/{key} is null: a JSON merge patch cannot set a null value")
            _reject_nulls(value, f"{path}/{key}")
