"""The connection-start pacer (fairuse/pacer.py): a burst, then a steady rate; the refused are told
to come back one admission interval apart, and come back to find room."""

from __future__ import annotations

import pytest

from weathernote.fairuse import Pacer


class Manual:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_admitted_then_the_rest_are_told_when_in_a_line() -> None:
    clock = Manual()
    pacer = Pacer(rate=10, burst=5, monotonic=clock)
    assert [pacer.admit() for _ in range(5)] == [0.0] * 5
    hints = [pacer.admit() for _ in range(4)]
    assert hints == pytest.approx([0.1, 0.2, 0.3, 0.4]), "one admission interval apart, in the order refused"


def test_the_refused_who_come_back_when_told_are_admitted() -> None:
    clock = Manual()
    pacer = Pacer(rate=10, burst=2, monotonic=clock)
    assert pacer.admit() == 0.0 and pacer.admit() == 0.0
    hints = [pacer.admit() for _ in range(6)]
    start = clock.now
    for hint in sorted(hints):
        clock.now = start + hint
        assert pacer.admit() == 0.0, f"told to come back after {hint} s, refused again"


def test_a_quiet_spell_restores_the_burst() -> None:
    clock = Manual()
    pacer = Pacer(rate=10, burst=3, monotonic=clock)
    assert all(pacer.admit() == 0.0 for _ in range(3))
    assert pacer.admit() > 0
    clock.now += 1.0
    assert [pacer.admit() for _ in range(3)] == [0.0] * 3


def test_hints_never_reach_past_the_horizon() -> None:
    clock = Manual()
    pacer = Pacer(rate=1, burst=1, horizon=5, monotonic=clock)
    assert pacer.admit() == 0.0
    hints = [pacer.admit() for _ in range(20)]
    assert max(hints) == 5 and hints[:4] == pytest.approx([1, 2, 3, 4])


def test_a_pacer_that_could_admit_nothing_is_refused() -> None:
    with pytest.raises(ValueError):
        Pacer(rate=0, burst=1)
    with pytest.raises(ValueError):
        Pacer(rate=1, burst=0)
