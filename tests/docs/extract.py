"""The shell commands the documentation gives: fenced ``bash``/``sh`` blocks and inline code in markdown,
the lines of the rendered NOTES.txt, and the commands inside alert descriptions.

Directives, HTML comments in a markdown source (invisible once rendered):

* ``<!-- doc-test profile: NAME -->``: the commands after it run against ``chart/ci/NAME-values.yaml``
  (until the next such line; the default profile is ``default``).
* ``<!-- doc-test profile "PREFIX": NAME -->``: only the commands starting with PREFIX in the next
  block or paragraph.
* ``<!-- doc-test unchecked "PREFIX": REASON -->``: the commands starting with PREFIX in the next block
  or paragraph are not checked, for REASON (counted and listed in the test summary). A directive that
  matches no command is an error, so none outlives its command.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

COMMAND_WORDS = frozenset(
    {"kubectl", "helm", "curl", "make", "python", "python3", ".venv/bin/python", "redis-cli", "docker", "bash"}
)
"""First words that make a line of prose code, NOTES or an alert a command."""
MENTIONS = frozenset({"helm template", "helm upgrade", "helm install", "helm lint", "helm rollback"})
"""Tool verbs named in prose (``run `helm upgrade` with ...``): not commands."""

DIRECTIVE = re.compile(r'^\s*<!--\s*doc-test\s+(profile|unchecked)\s*(?:"([^"]+)")?\s*:\s*(.+?)\s*-->\s*$')
INLINE = re.compile(r"`([^`\n]+)`")
PROSE_INLINE = re.compile(r"`([^`]+)`")
"""Inline code in a paragraph of markdown: it may wrap onto the next line, as rendered markdown allows."""
HEREDOC = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1")
SAMPLE = re.compile(r"^#\s*([\[{].*)$")
EXIT = re.compile(r"^#\s*exit (\d+)\b")
"""``# exit 1`` right below a command: the exit code the document says it ends with (else 0)."""
FENCE = re.compile(r"^\s*```\s*([A-Za-z]*)\s*$")
SHELL_LANGS = frozenset({"bash", "sh", "shell"})


@dataclass
class Command:
    """One command as a reader would copy it, with where it came from and how to check it."""

    source: str
    line: int
    text: str
    profile: str = "default"
    inline: bool = False
    expected: str | None = None
    """Sample output the document shows right below the command (a ``# {...}`` line)."""
    exit_code: int = 0
    """The exit code the document gives (a ``# exit N`` line right below), else 0."""
    skips: dict[str, str] = field(default_factory=dict)
    """``{prefix: reason}`` from unchecked directives: this command, or a command nested in it (inside
    ``$(...)``), that starts with the prefix is not checked."""

    def where(self) -> str:
        return f"{self.source}:{self.line}"

    def skip_reason(self, text: str) -> str | None:
        """Why ``text`` (this command or one nested in it) is not checked, or None."""
        return next((reason for prefix, reason in self.skips.items() if text.startswith(prefix)), None)


@dataclass
class _Scoped:
    kind: str
    prefix: str
    value: str
    line: int
    used: int = 0
    seen_content: bool = False


@dataclass
class Extracted:
    """Commands of one source, and directive errors (stale or malformed)."""

    commands: list[Command] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def first_word(text: str) -> str:
    return text.strip().split(maxsplit=1)[0] if text.strip() else ""


def is_prose_command(text: str) -> bool:
    """Inline code, a NOTES line or an alert fragment that is a command (not a tool mention)."""
    words = text.split()
    if not words:
        return False
    if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=\$\(", words[0]):
        return True  # URL=$(kubectl ...)
    return words[0] in COMMAND_WORDS and len(words) >= 2 and " ".join(words[:3]) not in MENTIONS


def block_commands(lines: list[str], first_line: int) -> list[tuple[int, str, str | None]]:
    """``(line, text, sample output)`` for each command of a shell block: continuation lines joined,
    heredoc bodies kept, comment lines dropped (a ``# {...}`` line right below is the sample output)."""
    out: list[tuple[int, str, str | None]] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if not stripped:
            i += 1
            continue
        if stripped.startswith("#"):
            sample = SAMPLE.match(stripped) or EXIT.match(stripped)
            if sample and out and out[-1][2] is None and _last_line(out[-1], first_line) == first_line + i - 1:
                out[-1] = (out[-1][0], out[-1][1], stripped.lstrip("# ") if EXIT.match(stripped) else sample.group(1))
            i += 1
            continue
        start, text = i, lines[i]
        while text.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            text += "\n" + lines[i]
        for _quote, term in HEREDOC.findall(text):
            while i + 1 < len(lines):
                i += 1
                text += "\n" + lines[i]
                if lines[i].strip() == term:
                    break
        out.append((first_line + start, text.strip(), None))
        i += 1
    return out


def _last_line(entry: tuple[int, str, str | None], first_line: int) -> int:
    return entry[0] + entry[1].count("\n")


def markdown_commands(path: Path, root: Path) -> Extracted:
    """Every command of a markdown file (see the module docstring for the directives)."""
    source = str(path.relative_to(root))
    lines = path.read_text().splitlines()
    result = Extracted()
    profile = "default"
    scoped: list[_Scoped] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        directive = DIRECTIVE.match(line)
        if directive:
            kind, prefix, value = directive.groups()
            if kind == "profile" and not prefix:
                profile = value
            elif kind == "unchecked" and not prefix:
                result.errors.append(f'{source}:{i + 1}: an unchecked directive needs a "PREFIX"')
            else:
                scoped.append(_Scoped(kind, prefix, value, i + 1))
            i += 1
            continue
        fence = FENCE.match(line)
        if fence:
            end = next((j for j in range(i + 1, len(lines)) if FENCE.match(lines[j])), len(lines))
            if fence.group(1) in SHELL_LANGS:
                for lineno, text, sample in block_commands(lines[i + 1 : end], i + 2):
                    code = EXIT.match(f"# {sample}") if sample else None
                    command = Command(source, lineno, text, profile, expected=None if code else sample)
                    command.exit_code = int(code.group(1)) if code else 0
                    result.commands.append(_apply(command, scoped))
            _close(scoped, result, source, whole=True)
            i = end + 1
            continue
        if not line.strip():
            _close(scoped, result, source, whole=False)
            i += 1
            continue
        end = _paragraph_end(lines, i)
        for s in scoped:
            s.seen_content = True
        for lineno, span in prose_spans(lines[i:end], i + 1):
            if is_prose_command(span):
                result.commands.append(_apply(Command(source, lineno, span, profile, inline=True), scoped))
        i = end
    _close(scoped, result, source, whole=True)
    return result


def _paragraph_end(lines: list[str], start: int) -> int:
    """The index after a run of prose lines: up to a blank line, a fence or a directive."""
    end = start + 1
    while end < len(lines) and lines[end].strip() and not FENCE.match(lines[end]) and not DIRECTIVE.match(lines[end]):
        end += 1
    return end


def prose_spans(lines: list[str], first_line: int) -> list[tuple[int, str]]:
    """``(line, code)`` of the inline code of prose lines; code that wraps onto the next line is joined
    with one space (as markdown renders it), and backticks pair across lines as they do in markdown."""
    text = "\n".join(lines)
    return [
        (first_line + text.count("\n", 0, m.start()), re.sub(r"\s*\n\s*", " ", m.group(1)).strip())
        for m in PROSE_INLINE.finditer(text)
    ]


def _apply(command: Command, scoped: list[_Scoped]) -> Command:
    for s in scoped:
        if s.kind == "profile" and command.text.startswith(s.prefix):
            s.used += 1
            command.profile = s.value
        elif s.kind == "unchecked" and s.prefix in command.text:
            s.used += 1
            command.skips[s.prefix] = s.value
    return command


def _close(scoped: list[_Scoped], result: Extracted, source: str, whole: bool) -> None:
    """End the scope of directives: after a block (``whole``), or at a blank line after prose."""
    for s in list(scoped):
        if whole or s.seen_content:
            if not s.used:
                result.errors.append(f"{source}:{s.line}: directive {s.kind} {s.prefix!r} matches no command")
            scoped.remove(s)


def text_commands(text: str, source: str, profile: str) -> list[Command]:
    """Commands in plain text (a rendered NOTES.txt): lines that start with a command word or assign
    ``$(...)`` (``\\`` continuations joined), and inline code in the other lines."""
    out: list[Command] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if is_prose_command(stripped) and not stripped.startswith("`"):
            start, command = i, stripped
            while command.endswith("\\") and i + 1 < len(lines):
                i += 1
                command += "\n" + lines[i].strip()
            out.append(Command(source, start + 1, command, profile))
        else:
            for span in INLINE.findall(lines[i]):
                if is_prose_command(span):
                    out.append(Command(source, i + 1, span, profile, inline=True))
        i += 1
    return out


def alert_commands(objects: list[dict], source: str, profile: str) -> list[Command]:
    """Commands quoted in the PrometheusRule's alert descriptions (from a command word to the end)."""
    out = []
    for rule_set in (o for o in objects if o.get("kind") == "PrometheusRule"):
        for group in rule_set["spec"]["groups"]:
            for rule in group["rules"]:
                text = (rule.get("annotations") or {}).get("description", "")
                found = re.search(r"\b(kubectl|helm) ", text)
                if found:
                    out.append(
                        Command(f"{source} alert {rule['alert']}", 0, text[found.start() :].rstrip("."), profile)
                    )
    return out
