"""Plan progress: a bar on a terminal, a line every interval elsewhere, nothing when asked for nothing."""

from __future__ import annotations

import io

import pytest

from classifier_plan.progress import LineProgress, choose_mode, make


class Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(
    ("flag", "tty", "sim_s", "mode"),
    [
        ("auto", True, 7200, "bar"),
        ("auto", True, 600, "off"),  # a short run on a terminal: nothing to watch
        ("auto", False, 600, "lines"),  # a log or a pipe: lines (they appear only once a run is slow)
        ("on", True, 600, "bar"),
        ("on", False, 7200, "lines"),
        ("off", False, 7200, "off"),
        ("off", True, 7200, "off"),
    ],
)
def test_mode(flag: str, tty: bool, sim_s: float, mode: str) -> None:
    assert choose_mode(flag, Stream(tty), sim_s) == mode


def test_lines_every_interval_of_wall_clock() -> None:
    now = [100.0]
    out = io.StringIO()
    p = LineProgress(1000, "plan: simulating (fluid)", interval_s=30, out=out, clock=lambda: now[0])
    for _ in range(10):
        now[0] += 10  # 10 s of wall clock per 100 simulated seconds
        p.update(100)
    p.close()
    lines = out.getvalue().splitlines()
    assert lines == [
        "plan: simulating (fluid): 30 % (300 of 1,000 simulated s) after 30 s",
        "plan: simulating (fluid): 60 % (600 of 1,000 simulated s) after 60 s",
        "plan: simulating (fluid): 90 % (900 of 1,000 simulated s) after 90 s",
    ]


def test_make() -> None:
    assert make("off", 10, "x") is None and make(False, 10, "x") is None
    assert isinstance(make("lines", 10, "x"), LineProgress)
    bar = make(True, 10, "x")
    assert type(bar).__name__ == "tqdm"
    bar.close()
