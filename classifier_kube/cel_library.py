"""The Kubernetes CEL functions that the ``cel`` interpreter (PyPI ``common-expression-language``) lacks.

The API server evaluates ``x-kubernetes-validations`` with cel-go plus Kubernetes' libraries
(k8s.io/apiserver/pkg/cel/library) and cel-go's ``ext.Strings`` (version 2). The Rust interpreter behind
``common-expression-language`` implements the CEL core (macros, ``size``, ``contains``, ``startsWith``,
``endsWith``, ``matches``, conversions, timestamps and durations) but none of those libraries. This module
supplies, with the API server's semantics:

* regex: ``find``, ``findAll`` (Go RE2 semantics: ASCII classes, leftmost-first match);
* lists: ``isSorted``, ``sum``, ``min``, ``max``, ``indexOf``, ``lastIndexOf``;
* strings (ext.Strings v2): ``charAt``, ``indexOf``, ``lastIndexOf``, ``lowerAscii``, ``upperAscii``,
  ``replace``, ``split``, ``substring``, ``trim``, ``join``;
* URLs: ``url``, ``isURL``, ``getScheme``, ``getHost``, ``getHostname``, ``getPort``, ``getEscapedPath``
  (Go's ``url.ParseRequestURI``: an absolute URI or an absolute path; a URL value is its string here).

Not provided (a rule calling them is reported as not compilable, never passed): the quantity, IP/CIDR,
semver, format and authorizer libraries, and cel-go's optional syntax (``.?``), which the interpreter's
parser refuses. The interpreter is called as ``x.f(a)`` -> ``f(x, a)``: a name shared by strings and
lists (``indexOf``) dispatches on the receiver's type.
"""

from __future__ import annotations

import itertools
import logging
import re
import urllib.parse
from collections.abc import Callable
from functools import lru_cache
from importlib import metadata
from typing import Any

logger = logging.getLogger(__name__)

WRITTEN_FOR = "0.10"
"""``common-expression-language`` major.minor whose native function set :data:`NATIVE_FUNCTIONS` lists."""

NATIVE_FUNCTIONS = frozenset(
    {
        "size", "contains", "startsWith", "endsWith", "matches",
        "int", "uint", "double", "string", "bytes", "dyn", "type", "timestamp", "duration",
        "getFullYear", "getMonth", "getDayOfYear", "getDayOfMonth", "getDate", "getDayOfWeek",
        "getHours", "getMinutes", "getSeconds", "getMilliseconds",
        "of", "ofNonZeroValue", "none", "hasValue", "value", "orValue", "or",  # optional.*, for optionalOldSelf
    }
)  # fmt: skip
"""Named functions the interpreter implements itself (operators and macros are not named functions)."""


def check_interpreter_version() -> str:
    """The installed interpreter's version; logs a warning when it is not the one this module was written for."""
    version = metadata.version("common-expression-language")
    if not version.startswith(WRITTEN_FOR + "."):
        logger.warning(
            "common-expression-language %s: classifier_kube.cel_library was written for %s.x; "
            "re-check NATIVE_FUNCTIONS (tests/kube/test_cel_library.py)",
            version,
            WRITTEN_FOR,
        )
    return version


class CelFunctionError(ValueError):
    """A library function got arguments it has no overload for, or failed as cel-go's would."""


def _need(value: Any, kind: type | tuple[type, ...], function: str) -> None:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CelFunctionError(f"no such overload: {function} on {type(value).__name__}")


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    """Go's regexp classes (\\d, \\w, \\s, \\b) are ASCII-only; so are these."""
    try:
        return re.compile(pattern, re.ASCII)
    except re.error as e:
        raise CelFunctionError(f"Illegal regex: {e}") from None


# ---------------------------------------------------------------- kubernetes.regex


def find(text: str, pattern: str) -> str:
    """``<string>.find(<string>)``: the first match, or ``''``."""
    _need(text, str, "find")
    match = _regex(pattern).search(text)
    return match.group(0) if match else ""


def find_all(text: str, pattern: str, limit: int = -1) -> list[str]:
    """``<string>.findAll(<string>[, <int>])``: every match (at most ``limit`` when ``limit >= 0``)."""
    _need(text, str, "findAll")
    _need(limit, int, "findAll")
    matches = [m.group(0) for m in _regex(pattern).finditer(text)]
    return matches if limit < 0 else matches[:limit]


# ---------------------------------------------------------------- kubernetes.lists


def _sortable(items: list[Any], function: str) -> None:
    _need(items, list, function)
    kinds = {type(i) for i in items}
    numbers = kinds <= {int, float}
    if len(kinds) > 1 and not numbers:
        raise CelFunctionError(f"no such overload: {function} on a list of mixed types")


def is_sorted(items: list[Any]) -> bool:
    """``<list>.isSorted()``: each element is at most the next."""
    _sortable(items, "isSorted")
    return all(a <= b for a, b in itertools.pairwise(items))


def list_sum(items: list[Any]) -> Any:
    """``<list>.sum()``: 0 for an empty list."""
    _need(items, list, "sum")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise CelFunctionError(f"no such overload: sum on a list holding {type(item).__name__}")
    return sum(items, start=0)


def list_min(items: list[Any]) -> Any:
    """``<list>.min()``: error on an empty list."""
    _sortable(items, "min")
    if not items:
        raise CelFunctionError("min called on empty list")
    return min(items)


def list_max(items: list[Any]) -> Any:
    """``<list>.max()``: error on an empty list."""
    _sortable(items, "max")
    if not items:
        raise CelFunctionError("max called on empty list")
    return max(items)


def _cel_equal(a: Any, b: Any) -> bool:
    """CEL equality: a bool never equals a number (Python's True == 1 does)."""
    return (isinstance(a, bool) == isinstance(b, bool)) and a == b


# ---------------------------------------------------------------- ext.Strings (v2)


def index_of(target: Any, item: Any, offset: int = 0) -> int:
    """``<string>.indexOf(<string>[, <int>])`` (code points) or ``<list>.indexOf(<T>)``; -1 if absent."""
    if isinstance(target, list):
        return next((i for i, x in enumerate(target) if _cel_equal(x, item)), -1)
    _need(target, str, "indexOf")
    _need(item, str, "indexOf")
    if not 0 <= offset <= len(target):
        raise CelFunctionError(f"index out of range: {offset}")
    return target.find(item, offset)


def last_index_of(target: Any, item: Any, offset: int | None = None) -> int:
    """``<string>.lastIndexOf(<string>[, <int>])`` or ``<list>.lastIndexOf(<T>)``; -1 if absent."""
    if isinstance(target, list):
        return next((i for i in range(len(target) - 1, -1, -1) if _cel_equal(target[i], item)), -1)
    _need(target, str, "lastIndexOf")
    _need(item, str, "lastIndexOf")
    end = len(target) if offset is None else offset
    if not 0 <= end <= len(target):
        raise CelFunctionError(f"index out of range: {end}")
    return target.rfind(item, 0, end + len(item))


def char_at(text: str, index: int) -> str:
    """``<string>.charAt(<int>)``: the code point at ``index``; ``''`` at the end."""
    _need(text, str, "charAt")
    if not 0 <= index <= len(text):
        raise CelFunctionError(f"index out of range: {index}")
    return text[index : index + 1]


def substring(text: str, start: int, end: int | None = None) -> str:
    """``<string>.substring(<int>[, <int>])`` in code points; out-of-range or inverted bounds are errors."""
    _need(text, str, "substring")
    stop = len(text) if end is None else end
    if not 0 <= start <= stop <= len(text):
        raise CelFunctionError(f"substring bounds out of range: [{start}:{stop}] of {len(text)}")
    return text[start:stop]


def split(text: str, separator: str, limit: int = -1) -> list[str]:
    """``<string>.split(<string>[, <int>])`` as Go's ``strings.SplitN``: 0 -> [], <0 -> all parts."""
    _need(text, str, "split")
    _need(separator, str, "split")
    if limit == 0:
        return []
    if separator == "":
        chars = list(text)
        return chars if limit < 0 or limit >= len(chars) else [*chars[: limit - 1], text[limit - 1 :]]
    return text.split(separator) if limit < 0 else text.split(separator, limit - 1)


def replace(text: str, old: str, new: str, limit: int = -1) -> str:
    """``<string>.replace(<string>, <string>[, <int>])``: ``limit < 0`` replaces every occurrence."""
    _need(text, str, "replace")
    return text.replace(old, new, limit)


def join(items: list[str], separator: str = "") -> str:
    """``<list<string>>.join([<string>])``."""
    _need(items, list, "join")
    for item in items:
        _need(item, str, "join")
    return separator.join(items)


def lower_ascii(text: str) -> str:
    """``<string>.lowerAscii()``: only A-Z change."""
    _need(text, str, "lowerAscii")
    return text.translate(_LOWER)


def upper_ascii(text: str) -> str:
    """``<string>.upperAscii()``: only a-z change."""
    _need(text, str, "upperAscii")
    return text.translate(_UPPER)


def trim(text: str) -> str:
    """``<string>.trim()``: leading and trailing Unicode white space removed."""
    _need(text, str, "trim")
    return text.strip()


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_PORT = re.compile(r"^\d*$")


def _request_uri(text: str, function: str) -> urllib.parse.SplitResult:
    """``text`` parsed as Go's ``url.ParseRequestURI`` accepts it; ``ValueError`` otherwise."""
    _need(text, str, function)
    if not text or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError(f"{function}: {text!r} is not a valid URL (empty, or a control character)")
    if not text.startswith("/") and not _SCHEME.match(text):
        raise ValueError(f"{function}: {text!r} is not an absolute URI or an absolute path")
    parts = urllib.parse.urlsplit(text, allow_fragments=False)
    after_ipv6 = parts.netloc.rpartition("@")[2].rpartition("]")[2]
    if ":" in after_ipv6 and not _PORT.match(after_ipv6.rpartition(":")[2]):
        raise ValueError(f"{function}: invalid port {after_ipv6.rpartition(':')[2]!r} in {text!r}")
    return parts


def url(text: str) -> str:
    """``url(<string>)``: the URL (an error when Go's ``url.ParseRequestURI`` refuses it)."""
    _request_uri(text, "url")
    return text


def is_url(text: str) -> bool:
    """``isURL(<string>)``: whether ``url`` accepts it."""
    try:
        _request_uri(text, "isURL")
    except ValueError:
        return False
    return True


def get_scheme(u: str) -> str:
    """``<URL>.getScheme()``: the scheme, empty for a path."""
    return _request_uri(u, "getScheme").scheme


def get_host(u: str) -> str:
    """``<URL>.getHost()``: host and port as written (IPv6 in brackets), without user information."""
    return _request_uri(u, "getHost").netloc.rpartition("@")[2]


def get_hostname(u: str) -> str:
    """``<URL>.getHostname()``: the host without port or IPv6 brackets."""
    return _request_uri(u, "getHostname").hostname or ""


def get_port(u: str) -> str:
    """``<URL>.getPort()``: the port as written, empty when none."""
    host = get_host(u)
    return host.rpartition(":")[2] if ":" in host.rpartition("]")[2] else ""


def get_escaped_path(u: str) -> str:
    """``<URL>.getEscapedPath()``: the path, escaped as written."""
    return urllib.parse.quote(_request_uri(u, "getEscapedPath").path, safe="/%:@!$&'()*+,;=-._~")


_UPPER_ASCII, _LOWER_ASCII = "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz"
_LOWER = str.maketrans(_UPPER_ASCII, _LOWER_ASCII)
_UPPER = str.maketrans(_LOWER_ASCII, _UPPER_ASCII)

KUBERNETES_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "find": find,
    "findAll": find_all,
    "isSorted": is_sorted,
    "sum": list_sum,
    "min": list_min,
    "max": list_max,
    "indexOf": index_of,
    "lastIndexOf": last_index_of,
    "charAt": char_at,
    "substring": substring,
    "split": split,
    "replace": replace,
    "join": join,
    "lowerAscii": lower_ascii,
    "upperAscii": upper_ascii,
    "trim": trim,
    "url": url,
    "isURL": is_url,
    "getScheme": get_scheme,
    "getHost": get_host,
    "getHostname": get_hostname,
    "getPort": get_port,
    "getEscapedPath": get_escaped_path,
}
"""Name -> implementation, registered on every evaluation context."""

KNOWN_FUNCTIONS = NATIVE_FUNCTIONS | KUBERNETES_FUNCTIONS.keys()
"""Every named function a rule may call and have evaluated."""
