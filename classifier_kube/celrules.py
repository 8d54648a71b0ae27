"""Evaluate a CRD's ``x-kubernetes-validations`` rules the way the API server does.

Each rule is compiled once with the ``cel`` interpreter (PyPI ``common-expression-language``) and
evaluated with ``self`` bound to the node's value, converted as Kubernetes types it (``format: date-time``
strings are timestamps, ``format: duration`` strings durations, ``format: byte`` strings bytes), plus the
Kubernetes library functions of :mod:`classifier_kube.cel_library`.

* A rule passes only when it evaluates to ``true``; ``false`` reports its ``messageExpression`` (or
  ``message``, or ``failed rule: <rule>``), and an evaluation error fails the object, as on the API server.
* A transition rule (it reads ``oldSelf``) runs only on an update and only where the node has an old value;
  on a create it is *not applicable* (unless ``optionalOldSelf``, where ``oldSelf`` is an empty optional).
* A rule the interpreter cannot parse, or that calls a function neither the interpreter nor the library
  has, is *uncompilable*: reported with the reason, never counted as a pass.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Literal

import cel

from classifier_kube.cel_library import KNOWN_FUNCTIONS, KUBERNETES_FUNCTIONS, check_interpreter_version

Status = Literal["passed", "failed", "not_applicable", "uncompilable"]

_NAMED = re.compile(r"^[A-Za-z]\w*$")  # operators are named _&&_, _[_], @in, !_, ...
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class CompiledRule:
    """One rule, compiled: ``program`` is None when it is uncompilable (``problem`` says why)."""

    text: str
    program: cel.Program | None
    transition: bool
    problem: str = ""


@dataclass(frozen=True)
class RuleOutcome:
    """What one evaluation of a rule on one node came to; ``message`` is set unless it passed."""

    status: Status
    message: str = ""


def compile_rule(text: str) -> CompiledRule:
    """Parse ``text`` and check that every function it calls can be evaluated here."""
    try:
        program = cel.compile(text)
    except (ValueError, RuntimeError) as e:
        return CompiledRule(text, None, "oldSelf" in text, f"the interpreter cannot parse it: {_one_line(e)}")
    refs = program.references()
    missing = sorted(f for f in refs["functions"] if _NAMED.match(f) and f not in KNOWN_FUNCTIONS)
    transition = "oldSelf" in refs["variables"]
    if missing:
        return CompiledRule(text, None, transition, f"calls functions not implemented here: {', '.join(missing)}")
    return CompiledRule(text, program, transition)


class RuleEvaluator:
    """Compiles each distinct rule once and evaluates rules on nodes of an object."""

    def __init__(self) -> None:
        self.interpreter_version = check_interpreter_version()
        self._compiled: dict[str, CompiledRule] = {}

    def compiled(self, rule: dict[str, Any]) -> CompiledRule:
        """The compiled form of a rule (cached by its text)."""
        text = rule["rule"]
        if text not in self._compiled:
            self._compiled[text] = compile_rule(text)
        return self._compiled[text]

    def evaluate(
        self, rule: dict[str, Any], schema: dict[str, Any], value: Any, old: Any, has_old: bool
    ) -> RuleOutcome:
        """Evaluate ``rule`` with ``self = value`` (and ``oldSelf = old`` when ``has_old``)."""
        compiled = self.compiled(rule)
        if compiled.program is None:
            return RuleOutcome("uncompilable", compiled.problem)
        variables: dict[str, Any] = {"self": to_cel(schema, value)}
        if compiled.transition:
            optional = bool(rule.get("optionalOldSelf"))
            if has_old:
                old_value = to_cel(schema, old)
                variables["oldSelf"] = cel.OptionalValue.of(old_value) if optional else old_value
            elif optional:
                variables["oldSelf"] = cel.OptionalValue.none()
            else:
                return RuleOutcome("not_applicable", "transition rule (oldSelf): not applicable on create")
        context = cel.Context(variables=variables, functions=KUBERNETES_FUNCTIONS)
        try:
            verdict = compiled.program.execute(context)
        except Exception as e:  # the interpreter raises KeyError, TypeError, RuntimeError, ...
            return RuleOutcome("failed", f"evaluation error: {_one_line(e)}")
        if verdict is True:
            return RuleOutcome("passed")
        if verdict is not False:
            return RuleOutcome("failed", f"rule evaluated to {verdict!r}, not a bool")
        return RuleOutcome("failed", self._message(rule, context))

    def _message(self, rule: dict[str, Any], context: cel.Context) -> str:
        """``messageExpression`` when it yields a non-empty string, else ``message``, else the API server's default."""
        expression = rule.get("messageExpression")
        if expression:
            try:
                text = cel.compile(expression).execute(context)
            except Exception:  # the API server falls back to message too
                text = None
            if isinstance(text, str) and text.strip():
                return text
        return rule.get("message") or f"failed rule: {rule['rule']}"


def to_cel(schema: dict[str, Any], value: Any) -> Any:
    """``value`` as Kubernetes presents it to CEL: formatted strings become timestamps, durations, bytes."""
    if isinstance(value, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        sub = extra if isinstance(extra, dict) else {}
        return {k: to_cel(props.get(k, sub), v) for k, v in value.items()}
    if isinstance(value, list):
        items = schema.get("items", {})
        return [to_cel(items, v) for v in value]
    if isinstance(value, str) and schema.get("type") == "string":
        fmt = schema.get("format")
        try:
            if fmt == "date-time":
                return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            if fmt == "duration":
                return parse_go_duration(value)
            if fmt == "byte":
                return base64.b64decode(value, validate=True)
        except ValueError:
            return value  # left as a string: the schema's format check reports it
    return value


def parse_go_duration(text: str) -> dt.timedelta:
    """Go's ``time.ParseDuration`` (``1h30m``, ``-1.5s``, ``300ms``, ``0``)."""
    sign, body = (-1, text[1:]) if text.startswith("-") else (1, text.removeprefix("+"))
    if body == "0":
        return dt.timedelta(0)
    parts = _DURATION_PART.findall(body)
    if not body or "".join(n + u for n, u in parts) != body:
        raise ValueError(f"invalid duration {text!r}")
    return dt.timedelta(seconds=sign * sum(float(n) * _DURATION_UNIT_S[u] for n, u in parts))


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text}" if isinstance(error, KeyError | IndexError) else text
