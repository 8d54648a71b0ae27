"""One flag style for every command line (``python -m predictor ...`` and ``python -m predictor.client``).

Flags are kebab-case (``--model-dir``), the CLI convention; the snake_case spelling of the same flag
(``--model_dir``, the settings field's and KServe's name, used by older commands) is accepted as an
alias. ``--help`` shows each flag's default, its choices and the unit its name carries (``--step-s``,
``--max-batch-delay-ms``). A flag that does not exist is answered with the nearest one that does.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from typing import Any

ALIAS_NOTE = "Flags are kebab-case (--model-dir); the snake_case spelling (--model_dir) is accepted too."


def kebab(name: str) -> str:
    """``model_dir`` -> ``model-dir``."""
    return name.replace("_", "-")


def normalize(argv: Sequence[str]) -> list[str]:
    """Every ``--snake_case`` flag (``--a_b=value`` too) spelled ``--kebab-case``; values and whatever
    follows a bare ``--`` are left as they are."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + list(argv[i:])
        if arg.startswith("--"):  # argparse never takes a "--" word as a value, so this is a flag
            name, eq, value = arg[2:].partition("=")
            arg = f"--{kebab(name)}{eq}{value}"
        out.append(arg)
    return out


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Adds ``(default: X)`` to a flag's help unless the help already states its default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        shown = default not in (None, argparse.SUPPRESS, False, [], "")
        if action.option_strings and shown and "default" not in text.lower() and action.nargs != 0:
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with the house flag style: snake_case aliases and suggestions."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("epilog", ALIAS_NOTE)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        argv = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(normalize(argv), namespace)

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            chosen = self.chosen(parsed)
            chosen.error(unrecognized(extras, chosen))
        return parsed

    def chosen(self, parsed: argparse.Namespace) -> argparse.ArgumentParser:
        """The innermost subcommand's parser that ``parsed`` went through (``self`` without subcommands)."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                sub = action.choices.get(getattr(parsed, action.dest, None) or "")
                if sub is not None:
                    return sub.chosen(parsed) if isinstance(sub, Parser) else sub
        return self


def option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every long flag of ``parser``."""
    return [s for a in parser._actions for s in a.option_strings if s.startswith("--")]


def unrecognized(extras: list[str], parser: argparse.ArgumentParser) -> str:
    """argparse's message, each unknown flag followed by the nearest real one when there is one."""
    known = option_strings(parser)
    words = []
    for extra in extras:
        flag = extra.split("=", 1)[0]
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6) if flag.startswith("-") else []
        words.append(f"{extra} (did you mean {close[0]}?)" if close else extra)
    hint = "" if any("did you mean" in w for w in words) else f"; {parser.prog} --help lists every flag"
    return "unrecognized arguments: " + " ".join(words) + hint
