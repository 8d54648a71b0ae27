"""Durations and Kubernetes quantities as the chart and the planner's files write them."""

from __future__ import annotations

import math
import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_QUANTITY = re.compile(r"^([+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


def parse_duration(value: str | float | int) -> float:
    """Seconds of ``90``, ``"90s"``, ``"5m"``, ``"1h30m"``, ``"2d"``, ``"250ms"`` (Go-style, plus days).

    ``"Never"`` is infinite.

    Raises:
        ValueError: anything else, or a negative number.
    """
    if isinstance(value, bool):
        raise ValueError(f"duration {value!r} is not a number or a string like 90s, 5m, 2h, 1d")
    if isinstance(value, int | float):
        if value < 0 or math.isnan(value):
            raise ValueError(f"duration {value!r} must be >= 0 seconds")
        return float(value)
    text = str(value).strip()
    if text == "Never":
        return math.inf
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"duration {value!r} is not like 90, 90s, 5m, 1h30m, 2d or Never")
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def parse_quantity(value: str | float | int) -> float:
    """A Kubernetes quantity as a float in base units (``"500m"`` -> 0.5, ``"8Gi"`` -> 8589934592).

    Raises:
        ValueError: not a quantity.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    m = _QUANTITY.match(str(value).strip())
    if m is None:
        raise ValueError(f"quantity {value!r} is not like 4, 500m, 8Gi or 2G")
    number, suffix = float(m.group(1)), m.group(2) or ""
    return number * (_BINARY[suffix] if suffix in _BINARY else _DECIMAL[suffix])


def fmt_duration(seconds: float) -> str:
    """``95`` -> ``"1m35s"``, ``7200`` -> ``"2h"`` (for reports)."""
    if math.isinf(seconds):
        return "never"
    s = round(seconds)
    if s < 60:
        return f"{seconds:.1f}s" if seconds < 10 and seconds != s else f"{s}s"
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    out = "".join(f"{v}{u}" for v, u in ((d, "d"), (h, "h"), (m, "m"), (sec, "s")) if v)
    return out
