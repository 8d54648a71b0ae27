"""Progress of a long plan: a tqdm bar on a terminal, a line every half minute elsewhere (logs, CI, pipes).

``--recommend`` simulates tens of candidates; each gets a line of its own, so a run that takes a quarter
of an hour on a busy machine is never silent.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import IO, Literal

Mode = Literal["off", "bar", "lines"]

LINE_INTERVAL_S = 30.0
"""Wall-clock seconds between two progress lines off a terminal."""


def choose_mode(flag: str, stream: IO[str], sim_duration_s: float) -> Mode:
    """``--progress auto``: a bar on a terminal for a run of more than an hour simulated, lines off one
    (they appear only once a run has taken :data:`LINE_INTERVAL_S`); ``on`` forces, ``off`` silences."""
    if flag == "off":
        return "off"
    tty = stream.isatty()
    if not tty:
        return "lines"
    return "bar" if flag == "on" or sim_duration_s > 3600 else "off"


class LineProgress:
    """tqdm's ``update``/``close`` interface, written as one line every ``interval_s`` of wall clock."""

    def __init__(
        self,
        total: float,
        desc: str,
        interval_s: float = LINE_INTERVAL_S,
        out: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.desc, self.interval_s = max(total, 1e-9), desc, interval_s
        self.out, self.clock = out or sys.stderr, clock
        self.start = self.last = clock()
        self.done = 0.0

    def update(self, n: float = 1) -> None:
        self.done += n
        now = self.clock()
        if now - self.last >= self.interval_s:
            self.last = now
            share = min(1.0, self.done / self.total)
            print(
                f"{self.desc}: {100 * share:.0f} % ({self.done:,.0f} of {self.total:,.0f} simulated s) "
                f"after {now - self.start:.0f} s",
                file=self.out,
                flush=True,
            )

    def close(self) -> None:
        """Nothing to tidy: every line is complete."""


def make(mode: Mode | bool, total_s: float, desc: str):  # -> tqdm | LineProgress | None
    """The progress object ``mode`` asks for (``True`` = a bar, as before modes), or ``None``."""
    if mode is True or mode == "bar":
        from tqdm import tqdm

        return tqdm(total=math.ceil(total_s), unit="sim-s", desc=desc, leave=False)
    if mode == "lines":
        return LineProgress(total_s, desc)
    return None
