"""predictor.shed.RefusalPacer: refusals at once up to a second's burst, then one per 1/rate in turn, and at
once again after a quiet second; 0 never paces. (The protocol's holding is tested through a real server in
tests/integration/test_overload.py.)"""

from __future__ import annotations

import pytest

from predictor.shed import RefusalPacer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_a_second_s_worth_is_answered_at_once_then_refusals_take_turns() -> None:
    clock = Clock()
    pacer = RefusalPacer(10, tick_s=0, clock=clock)
    delays = [pacer.delay_s() for _ in range(16)]
    assert delays[:11] == pytest.approx([0.0] * 11, abs=1e-9)  # the burst (a second's worth) and the current turn
    assert delays[11:] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])  # then one turn each 1/rate later


def test_turns_hold_the_long_run_rate_as_time_passes() -> None:
    clock = Clock()
    pacer = RefusalPacer(50, tick_s=0, clock=clock)
    answered_by = []
    for _ in range(500):  # 500 refusals asked for within 2 s
        answered_by.append(clock.now + pacer.delay_s())
        clock.now += 0.004
    span = max(answered_by) - min(answered_by)
    assert 500 / span == pytest.approx(50, rel=0.12), "after the burst, 50 a second"
    assert sorted(answered_by) == answered_by, "in turn: first asked, first answered"


def test_after_a_quiet_second_refusals_are_answered_at_once_again() -> None:
    clock = Clock()
    pacer = RefusalPacer(5, clock=clock)
    for _ in range(20):
        pacer.delay_s()
    assert pacer.delay_s() > 1.0
    clock.now += 10
    assert pacer.delay_s() == 0.0


def test_zero_never_paces() -> None:
    pacer = RefusalPacer(0, clock=Clock())
    assert {pacer.delay_s() for _ in range(10_000)} == {0.0}


def test_held_refusals_are_released_together_on_ticks_never_before_their_turn() -> None:
    clock = Clock()
    clock.now = 1000.003
    exact, ticked = RefusalPacer(100, tick_s=0, clock=clock), RefusalPacer(100, tick_s=0.05, clock=clock)
    turns = [(clock.now + exact.delay_s(), clock.now + ticked.delay_s()) for _ in range(300)]
    held = [(turn, release) for turn, release in turns if release > clock.now]
    assert len(held) == 300 - 101, "the burst and the current turn are answered at once, ticks or not"
    for turn, release in held:
        assert turn - 1e-9 <= release < turn + 0.05, "released at the first tick at or after its turn"
        assert abs(release / 0.05 - round(release / 0.05)) < 1e-6, "on a tick"
    releases = [release for _, release in held]
    assert sorted(releases) == releases, "still in turn"
    assert len(set(round(r, 6) for r in releases)) == pytest.approx(len(held) / 5, abs=1), "five a tick at 100/s"
