"""The planner's one error type for bad input: it names the file, the key and what is accepted."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any


class PlanInputError(ValueError):
    """A traffic, capacity, price or values file (or a flag) the planner cannot use; the CLI exits 2.

    Args:
        source: the file (or ``--flag``) that is wrong.
        key: the dotted key inside it (empty when the whole file is wrong).
        message: what was wrong and what is accepted.
    """

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source, self.key, self.message = source, key, message
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {message}")


def _walk(model: Any, loc: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
    """Follow ``loc`` through nested pydantic models: (the model reached, ``loc`` without union tags).

    List indices and dict keys are kept in the path; a discriminated union's tag (``spike`` in
    ``segments.0.spike.at``) selects the member and is dropped from the path shown to the user.
    """
    from pydantic import BaseModel

    current: Any = model
    shown: list[Any] = []
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is not None:
                shown.append(part)
                current = field.annotation
                continue
        member = _union_member(current, part)
        if member is not None:
            current = member  # a discriminator tag: not shown
            continue
        shown.append(part)
        current = _element(current)
    return (current if isinstance(current, type) and issubclass(current, BaseModel) else None), tuple(shown)


def _models_in(annotation: Any) -> list[Any]:
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _union_member(annotation: Any, tag: Any) -> Any:
    """The member of a union whose ``kind`` literal is ``tag`` (None when ``tag`` is no such tag)."""
    for m in _models_in(annotation):
        kind = m.model_fields.get("kind")
        if kind is not None and tag in typing.get_args(kind.annotation):
            return m
    return None


def _element(annotation: Any) -> Any:
    """Inside ``list[X]`` / ``dict[K, X]`` / ``tuple[...]``: X (the annotation itself otherwise)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (list, dict, tuple) and args:
        return args[-1]
    return annotation


def from_validation(source: str, error: Exception, model: Any = None) -> PlanInputError:
    """A pydantic ``ValidationError`` as a :class:`PlanInputError` naming the first bad key.

    For an unknown key, the message lists the keys accepted at that place (from ``model``).
    """
    from pydantic import ValidationError

    if not isinstance(error, ValidationError):
        return PlanInputError(source, "", str(error))
    problems: list[tuple[str, str]] = []
    for err in error.errors():
        loc = tuple(err["loc"])
        parent, shown = _walk(model, loc[:-1]) if model is not None else (None, loc[:-1])
        key = ".".join(str(p) for p in (*shown, *loc[-1:]))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key" + (f" (accepted: {', '.join(parent.model_fields)})" if parent is not None else "")
        problems.append((key, msg))
    key, msg = problems[0]
    more = "; ".join(f"{k}: {m}" for k, m in problems[1:])
    return PlanInputError(source, key, msg + (f" (also {more})" if more else ""))


M = typing.TypeVar("M")


def load_yaml_model(path: Path, model: type[M], what: str, shape: str) -> M:
    """Read the YAML mapping at ``path`` and validate it as ``model`` (a pydantic model class).

    Args:
        what: what the file is, for the unreadable-file message ("price file").
        shape: what it must be when it is not a mapping ("a price file is a mapping with ...").

    Raises:
        PlanInputError: unreadable, not YAML, not a mapping, or invalid (naming the first bad key).
    """
    import yaml
    from pydantic import ValidationError

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise PlanInputError(str(path), "", f"cannot read the {what}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise PlanInputError(str(path), "", f"not YAML: {e}") from None
    if not isinstance(data, dict):
        raise PlanInputError(str(path), "", shape)
    try:
        return model.model_validate(data)  # type: ignore[attr-defined]
    except ValidationError as e:
        raise from_validation(str(path), e, model) from None
