"""The Kubernetes CEL library functions, called through the real interpreter as rules call them (``x.f(a)``),
checked against the examples of the Kubernetes and cel-go library documentation."""

from __future__ import annotations

from importlib import metadata

import cel
import pytest

from classifier_kube.cel_library import KUBERNETES_FUNCTIONS, NATIVE_FUNCTIONS, WRITTEN_FOR


def evaluate(expression: str):
    return cel.evaluate(expression, cel.Context(functions=KUBERNETES_FUNCTIONS))


# Examples from k8s.io/apiserver/pkg/cel/library (regex.go, lists.go) and cel-go ext/strings.go; each is true.
DOCUMENTED = [
    "'abc 123'.find('[0-9]+') == '123'",
    "'abc 123'.find('xyz') == ''",
    "'123 abc 456'.findAll('[0-9]+') == ['123', '456']",
    "'123 abc 456'.findAll('[0-9]+', 1) == ['123']",
    "'123 abc 456'.findAll('xyz') == []",
    "[1, 2, 3].isSorted()",
    "['a', 'b', 'b', 'c'].isSorted()",
    "![2.0, 1.0].isSorted()",
    "[].isSorted()",
    "[1, 3].sum() == 4",
    "[1.0, 3.0].sum() == 4.0",
    "[].sum() == 0",
    "[1, 3].min() == 1",
    "[1, 3].max() == 3",
    "[1].min() == 1",
    "[1, 2, 2, 3].indexOf(2) == 1",
    "['a', 'b', 'b', 'c'].lastIndexOf('b') == 2",
    "[1.0].indexOf(1.1) == -1",
    "[].indexOf('string') == -1",
    "'hello'.charAt(4) == 'o'",
    "'hello'.charAt(5) == ''",
    "'hello mellow'.indexOf('') == 0",
    "'hello mellow'.indexOf('ello') == 1",
    "'hello mellow'.indexOf('jello') == -1",
    "'hello mellow'.indexOf('', 2) == 2",
    "'hello mellow'.indexOf('ello', 2) == 7",
    "'hello mellow'.lastIndexOf('') == 12",
    "'hello mellow'.lastIndexOf('ello') == 7",
    "'hello mellow'.lastIndexOf('jello') == -1",
    "'hello mellow'.lastIndexOf('ello', 6) == 1",
    "'TacoCat'.lowerAscii() == 'tacocat'",
    "'TacoCÆt Xii'.lowerAscii() == 'tacocÆt xii'",
    "'TacoCat'.upperAscii() == 'TACOCAT'",
    "'TacoCÆt Xii'.upperAscii() == 'TACOCÆT XII'",
    "'hello hello'.replace('he', 'we') == 'wello wello'",
    "'hello hello'.replace('he', 'we', -1) == 'wello wello'",
    "'hello hello'.replace('he', 'we', 1) == 'wello hello'",
    "'hello hello'.replace('he', 'we', 0) == 'hello hello'",
    "'hello hello hello'.split(' ') == ['hello', 'hello', 'hello']",
    "'hello hello hello'.split(' ', 0) == []",
    "'hello hello hello'.split(' ', 1) == ['hello hello hello']",
    "'hello hello hello'.split(' ', 2) == ['hello', 'hello hello']",
    "'hello hello hello'.split(' ', -1) == ['hello', 'hello', 'hello']",
    "'tacocat'.substring(4) == 'cat'",
    "'tacocat'.substring(0, 4) == 'taco'",
    "'  \\ttrim\\n    '.trim() == 'trim'",
    "['hello', 'mellow'].join() == 'hellomellow'",
    "['hello', 'mellow'].join(' ') == 'hello mellow'",
    "[].join('/') == ''",
    # the URL library (k8s.io/apiserver/pkg/cel/library/urls.go)
    "url('https://example.com/path').getScheme() == 'https'",
    "url('/absolute-path').getScheme() == ''",
    "url('https://example.com:80/').getHost() == 'example.com:80'",
    "url('https://[::1]:80/').getHost() == '[::1]:80'",
    "url('https://example.com:80/').getHostname() == 'example.com'",
    "url('https://[::1]/').getHostname() == '::1'",
    "url('https://example.com:80/').getPort() == '80'",
    "url('https://example.com/').getPort() == ''",
    "url('https://example.com/path with spaces/').getEscapedPath() == '/path%20with%20spaces/'",
    "isURL('https://user:pass@example.com:80/path?query=val#fragment') == true",
    "isURL('/absolute-path') == true",
    "isURL('relative-path') == false",
    "isURL('example.com') == false",
    "isURL('https://example.com:8o/') == false",
]


@pytest.mark.parametrize("expression", DOCUMENTED)
def test_documented_example_holds(expression):
    assert evaluate(expression) is True


@pytest.mark.parametrize(
    "expression",
    [
        "[].min()",  # min called on empty list
        "[].max()",
        "'hello'.charAt(6)",
        "'hello mellow'.indexOf('ello', 20)",
        "'hello mellow'.lastIndexOf('ello', -1)",
        "'tacocat'.substring(-1)",
        "'tacocat'.substring(2, 1)",
        "'abc'.find('[')",  # Illegal regex
        "[1, 'a'].isSorted()",  # no overload on mixed types
        "[true].sum()",
        "url('relative-path')",
        "url('')",
    ],
)
def test_documented_errors_are_errors(expression):
    with pytest.raises(RuntimeError):
        evaluate(expression)


def test_regex_classes_are_ascii_as_in_go():
    """Go's RE2 \\d matches only 0-9; Python's re would match the Arabic-Indic digit too."""
    assert evaluate("'\u0663 7'.find('\\\\d')") == "7"


def test_split_on_the_empty_separator_splits_code_points_like_go():
    assert evaluate("'abc'.split('')") == ["a", "b", "c"]
    assert evaluate("'abc'.split('', 2)") == ["a", "bc"]


def test_list_index_of_does_not_equate_bool_and_int():
    assert evaluate("[true, 1].indexOf(1)") == 1


@pytest.mark.parametrize(
    "expression",
    [
        "size('ab') == 2",
        "'abc'.contains('b')",
        "'abc'.startsWith('a')",
        "'abc'.endsWith('c')",
        "'abc'.matches('^a.c$')",
        "int('5') == 5",
        "uint(5) == 5u",
        "double(1) == 1.0",
        "string(1) == '1'",
        "bytes('a') == b'a'",
        "dyn(1) == 1",
        "type(1) == int",
        "timestamp('2024-03-01T10:20:30.456Z').getFullYear() == 2024",
        "timestamp('2024-03-01T10:20:30.456Z').getMonth() == 2",
        "timestamp('2024-03-01T10:20:30.456Z').getDayOfYear() == 60",
        "timestamp('2024-03-01T10:20:30.456Z').getDayOfMonth() == 0",
        "timestamp('2024-03-01T10:20:30.456Z').getDate() == 1",
        "timestamp('2024-03-01T10:20:30.456Z').getDayOfWeek() == 5",
        "timestamp('2024-03-01T10:20:30.456Z').getHours() == 10",
        "timestamp('2024-03-01T10:20:30.456Z').getMinutes() == 20",
        "timestamp('2024-03-01T10:20:30.456Z').getSeconds() == 30",
        "timestamp('2024-03-01T10:20:30.456Z').getMilliseconds() == 456",
        "duration('90s') == duration('1m30s')",
        "optional.of(1).hasValue() && optional.of(1).value() == 1",
        "optional.none().orValue(2) == 2",
        "optional.none().or(optional.of(1)).value() == 1",
        "!optional.ofNonZeroValue(0).hasValue()",
    ],
)
def test_every_function_listed_as_native_is_native(expression):
    """NATIVE_FUNCTIONS must not claim a function the interpreter lacks (it would never be flagged)."""
    assert cel.evaluate(expression) is True


def test_every_native_function_is_probed():
    probed = {"size", "contains", "startsWith", "endsWith", "matches", "int", "uint", "double", "string", "bytes"}
    probed |= {"dyn", "type", "timestamp", "duration"}
    probed |= {f for f in NATIVE_FUNCTIONS if f.startswith("get")}
    probed |= {"of", "ofNonZeroValue", "none", "hasValue", "value", "orValue", "or"}
    assert probed == NATIVE_FUNCTIONS


def test_library_functions_are_really_missing_natively():
    """If the interpreter gains one of them, ours would shadow it: re-check the semantics then."""
    for name in KUBERNETES_FUNCTIONS:
        with pytest.raises(RuntimeError, match="Undefined variable or function"):
            cel.evaluate(f"{name}('x', 'y')")


def test_the_installed_interpreter_is_the_one_the_library_was_written_for():
    assert metadata.version("common-expression-language").startswith(WRITTEN_FOR + ".")
