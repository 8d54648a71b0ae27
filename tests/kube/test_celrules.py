"""Rule compilation and evaluation (classifier_kube.celrules): messages, errors, Kubernetes type mapping."""

from __future__ import annotations

import datetime as dt

import pytest

from classifier_kube.celrules import RuleEvaluator, compile_rule, parse_go_duration, to_cel

STRING = {"type": "string"}


@pytest.fixture(scope="module")
def evaluator() -> RuleEvaluator:
    return RuleEvaluator()


def test_a_rule_calling_an_unknown_function_is_uncompilable():
    compiled = compile_rule("isIP(self) && ip(self).family() == 4")  # the IP library: not provided
    assert compiled.program is None
    assert compiled.problem == "calls functions not implemented here: family, ip, isIP"


def test_a_rule_the_parser_refuses_is_uncompilable():
    compiled = compile_rule("self.?spec.orValue('') == ''")  # optional field selection
    assert compiled.program is None and compiled.problem.startswith("the interpreter cannot parse it")


def test_operators_macros_and_library_functions_compile():
    compiled = compile_rule("self.all(k, k.find('^a') == '' && self[k].split('@').size() <= 2) || !has(self.x)")
    assert compiled.program is not None and compiled.problem == "" and not compiled.transition


def test_a_rule_reading_old_self_is_a_transition_rule():
    assert compile_rule("self == oldSelf").transition
    assert not compile_rule("self == 'oldSelf'").transition  # a string literal is not a reference


def test_true_passes_false_reports_the_message(evaluator):
    rule = {"rule": "self.size() <= 3", "message": "at most 3 characters"}
    assert evaluator.evaluate(rule, STRING, "abc", None, False).status == "passed"
    outcome = evaluator.evaluate(rule, STRING, "abcd", None, False)
    assert (outcome.status, outcome.message) == ("failed", "at most 3 characters")


def test_message_expression_wins_over_message(evaluator):
    rule = {"rule": "self.size() <= 3", "message": "static", "messageExpression": "'got ' + string(self.size())"}
    assert evaluator.evaluate(rule, STRING, "abcd", None, False).message == "got 4"


def test_a_failing_message_expression_falls_back_to_message(evaluator):
    rule = {"rule": "false", "message": "static", "messageExpression": "self.nope"}
    assert evaluator.evaluate(rule, {"type": "object"}, {}, None, False).message == "static"


def test_without_a_message_the_api_servers_default_is_used(evaluator):
    assert evaluator.evaluate({"rule": "self > 1"}, {}, 0, None, False).message == "failed rule: self > 1"


def test_an_evaluation_error_fails_the_rule(evaluator):
    outcome = evaluator.evaluate({"rule": "self.missing == 1"}, {"type": "object"}, {}, None, False)
    assert outcome.status == "failed" and "evaluation error" in outcome.message and "missing" in outcome.message


def test_a_non_bool_result_fails_the_rule(evaluator):
    outcome = evaluator.evaluate({"rule": "self + 1"}, {}, 1, None, False)
    assert outcome.status == "failed" and "not a bool" in outcome.message


def test_a_transition_rule_without_old_value_is_not_applicable(evaluator):
    rule = {"rule": "self == oldSelf", "message": "immutable"}
    assert evaluator.evaluate(rule, STRING, "a", None, False).status == "not_applicable"
    assert evaluator.evaluate(rule, STRING, "a", "a", True).status == "passed"
    assert evaluator.evaluate(rule, STRING, "a", "b", True).message == "immutable"


def test_optional_old_self_is_evaluated_on_create_too(evaluator):
    rule = {"rule": "!oldSelf.hasValue() || self == oldSelf.value()", "optionalOldSelf": True}
    assert evaluator.evaluate(rule, STRING, "a", None, False).status == "passed"
    assert evaluator.evaluate(rule, STRING, "a", "b", True).status == "failed"


def test_formatted_strings_reach_cel_as_kubernetes_types(evaluator):
    stamp = {"type": "string", "format": "date-time"}
    rule = {"rule": "self > timestamp('2024-01-01T00:00:00Z')"}
    assert evaluator.evaluate(rule, stamp, "2024-06-01T12:00:00Z", None, False).status == "passed"
    assert evaluator.evaluate(rule, stamp, "2023-06-01T12:00:00Z", None, False).status == "failed"
    wait = {"type": "string", "format": "duration"}
    assert evaluator.evaluate({"rule": "self == duration('1h30m')"}, wait, "90m", None, False).status == "passed"


def test_to_cel_follows_the_schema_into_maps_and_lists():
    schema = {
        "type": "object",
        "properties": {"at": {"type": "array", "items": {"type": "string", "format": "date-time"}}},
        "additionalProperties": False,
    }
    assert to_cel(schema, {"at": ["2024-01-01T00:00:00Z"]}) == {"at": [dt.datetime(2024, 1, 1, tzinfo=dt.UTC)]}
    assert to_cel({"type": "string", "format": "date-time"}, "not a time") == "not a time"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1h30m", 5400), ("-1.5s", -1.5), ("300ms", 0.3), ("0", 0), ("2h45m10.5s", 9910.5), ("1us", 1e-6)],
)
def test_go_durations_parse_like_time_parse_duration(text, seconds):
    assert parse_go_duration(text).total_seconds() == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5", "1d", "", "h", "1h 30m"])
def test_malformed_go_durations_are_refused(text):
    with pytest.raises(ValueError):
        parse_go_duration(text)
