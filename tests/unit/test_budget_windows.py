"""The budget's window arithmetic, in memory: what the local allowance spends by, and what the Redis
script computes alike (tests/service/test_budget_script.py holds the script to the same promises)."""

from __future__ import annotations

import random

from weathernote.upstream.windows import DAY_MS, Kind, LocalWindows, Window

MINUTE = Window("minute", Kind.SLIDING, 600, 60_000)


def test_no_span_of_a_minute_ever_holds_more_than_the_limit() -> None:
    """A fixed calendar minute lets two adjacent windows pass nearly twice the limit in 60 s; the sliding
    window never does, however the spends are timed."""
    rng = random.Random(7)
    windows = LocalWindows()
    spent: list[tuple[int, float]] = []
    now = 1_000_000
    for _ in range(20_000):
        now += rng.choice((1, 10, 250, 900, 4_000))
        weight = rng.choice((1.0, 1.5, 3.0, 30.0))
        if windows.spend([MINUTE], weight, now).allowed:
            spent.append((now, weight))
    assert sum(weight for _, weight in spent) > 600 * 10, "it spends, not only refuses"
    start = 0
    total = 0.0
    for end in range(len(spent)):  # every span of 60 s ending at a spend
        total += spent[end][1]
        while spent[start][0] <= spent[end][0] - 60_000:
            total -= spent[start][1]
            start += 1
        assert total <= 600 + 1e-9, f"{total} spent between {spent[start][0]} and {spent[end][0]}"


def test_the_calendar_trick_is_refused() -> None:
    """600 at the end of one calendar minute, then 600 more at the start of the next: refused."""
    windows = LocalWindows()
    assert windows.spend([MINUTE], 600, 59_000).allowed
    refused = windows.spend([MINUTE], 600, 61_000)
    assert not refused.allowed and refused.refusing == 0
    assert refused.retry_ms is not None and 0 < refused.retry_ms <= 65_000
    # once the first spend's bucket has left the window, room again
    assert windows.spend([MINUTE], 600, 61_000 + refused.retry_ms).allowed


def test_all_windows_or_none_and_the_first_that_refuses_says_so() -> None:
    day = Window("day", Kind.DAY, 10, DAY_MS)
    windows = LocalWindows()
    assert windows.spend([MINUTE, day], 8, 1000).allowed
    refused = windows.spend([MINUTE, day], 5, 2000)
    assert (refused.allowed, refused.refusing) == (False, 1)
    assert refused.retry_ms == DAY_MS - 2000, "a day refuses until the next UTC midnight"
    assert refused.totals == [8, 8], "nothing was taken from the minute"
    assert windows.spend([MINUTE, day], 5, DAY_MS + 1000).allowed, "a new day starts from nothing"


def test_a_weight_larger_than_a_window_never_fits() -> None:
    refused = LocalWindows().spend([MINUTE], 601, 0)
    assert not refused.allowed and refused.retry_ms is None


def test_forgotten_payers_leave_nothing_behind() -> None:
    windows = LocalWindows()
    for payer in range(100):
        minute = Window(f"share:client:{payer}:minute", Kind.SLIDING, 10, 60_000)
        day = Window(f"share:client:{payer}:day:0", Kind.DAY, 10, DAY_MS)
        windows.spend([minute, day], 1, 1000)
    assert len(windows) == 200
    for payer in range(100):
        windows.forget(f"share:client:{payer}:")
    assert len(windows) == 0


def test_what_is_mirrored_counts_and_leaves_the_window_as_it_slides() -> None:
    """Shared spends are added to the local windows unchecked, so that an outage's allowance starts
    from what was spent; what has left the window is dropped, so mirroring for a day holds no more
    than a window's buckets."""
    windows = LocalWindows()
    for second in range(0, 86_400, 5):
        windows.add([MINUTE], 1, second * 1000)
    assert len(windows._buckets["minute"]) <= 14
    refused = windows.spend([MINUTE], 600, 86_400_000)
    assert not refused.allowed and refused.totals[0] > 0, "the allowance knows the last minute's spending"


def test_a_day_window_starts_over_at_midnight_when_added_to() -> None:
    day = Window("share:day", Kind.DAY, 10, DAY_MS)
    windows = LocalWindows()
    windows.add([day], 9, DAY_MS - 1000)
    assert not windows.spend([day], 2, DAY_MS - 500).allowed
    windows.add([day], 1, DAY_MS + 1000)  # the next day
    assert windows.spend([day], 9, DAY_MS + 2000).allowed, "the new day holds only what was added today"
