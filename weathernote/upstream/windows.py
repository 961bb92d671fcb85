"""Budget windows that hold in any span of their length, in Redis and in one process.

Open-Meteo may count a sliding minute: two calendar minutes each within their
limit can pass nearly twice the limit within one 60 s span. So the minute and
hour windows are sliding: each is a hash of twelve buckets (5 s for the minute,
5 min for the hour), and a spend is allowed only if the buckets of the last
span plus one bucket, with the new weight, stay within the limit: whatever span
of the window's length one looks at, it lies within those thirteen buckets, so
it never holds more than the limit (at the price of a twelfth of headroom at
worst). The day is the upstream's calendar day (UTC), one number.

`SPEND` checks every window given and spends from all of them or none, in one
script (on a Cluster every key shares the `{upstream_budget}` slot). A day
window that reads lower than the caller's own record of it (`floor`: it was
evicted, deleted or replaced since) is put back to that record first, so a lost
key never lets the day's spending start over. `LocalWindows` does the same
arithmetic in memory, for the allowance a process spends from while Redis
cannot be read.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

BUCKETS = 12
DAY_MS = 86_400_000


class Kind(StrEnum):
    """How a window counts: sliding buckets, or the calendar day (`FLOORED`: the shared day, kept from loss)."""

    SLIDING = "s"
    DAY = "d"
    FLOORED = "D"


@dataclass(frozen=True, slots=True)
class Window:
    """One window a spend is checked against: its key, limit and span."""

    key: str
    kind: Kind
    limit: float
    span_ms: int  # the window's length (the day's, for day windows)

    @property
    def bucket_ms(self) -> int:
        return self.span_ms if self.kind is not Kind.SLIDING else max(1, self.span_ms // BUCKETS)

    def args(self, expiry_ms: int) -> list[str | float | int]:
        return [self.kind.value, self.limit, self.span_ms, self.bucket_ms, expiry_ms]


# KEYS: the windows. ARGV: weight, now (ms), mode ("spend", "check" or "force"), floor (the
# caller's record of the FLOORED day), then per window: kind, limit, span, bucket, expiry (ms).
# Returns {allowed, refusing window (1-based, 0 if none), retry (ms, -1 if never), total of each
# window after the call (as text: Lua numbers would be truncated)}.
SPEND = """
local weight, now, mode, floor = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local totals, starts = {}, {}
local refusing, retry = 0, 0
for i, key in ipairs(KEYS) do
  local b = 4 + (i - 1) * 5
  local kind, limit, span, bucket = ARGV[b + 1], tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  local total = 0
  if kind == 's' then
    local fields = redis.call('HGETALL', key)
    local kept = {}
    for f = 1, #fields, 2 do
      local start, value = tonumber(fields[f]), tonumber(fields[f + 1])
      if start == nil or value == nil or start <= now - span - bucket then
        redis.call('HDEL', key, fields[f])
      else
        total = total + value
        kept[#kept + 1] = {start, value}
      end
    end
    table.sort(kept, function(x, y) return x[1] < y[1] end)
    starts[i] = kept
  else
    total = tonumber(redis.call('GET', key) or '0') or 0
    if kind == 'D' and total < floor then
      redis.call('SET', key, tostring(floor), 'PX', ARGV[b + 5])
      total = floor
    end
  end
  totals[i] = total
  if mode ~= 'force' and refusing == 0 and total + weight > limit then
    refusing = i
    if weight > limit then
      retry = -1
    elseif kind == 's' then
      local left = total
      for _, item in ipairs(starts[i]) do
        left = left - item[2]
        retry = item[1] + span + bucket - now
        if left + weight <= limit then break end
      end
    else
      retry = bucket - now % bucket
    end
  end
end
local allowed = refusing == 0 and 1 or 0
if allowed == 1 and mode ~= 'check' and weight > 0 then
  for i, key in ipairs(KEYS) do
    local b = 4 + (i - 1) * 5
    local kind, bucket, expiry = ARGV[b + 1], tonumber(ARGV[b + 4]), ARGV[b + 5]
    if kind == 's' then
      redis.call('HINCRBYFLOAT', key, tostring(now - now % bucket), weight)
    else
      redis.call('INCRBYFLOAT', key, weight)
    end
    redis.call('PEXPIRE', key, expiry)
    totals[i] = totals[i] + weight
  end
end
local reply = {allowed, refusing, retry}
for i = 1, #KEYS do reply[#reply + 1] = tostring(totals[i]) end
return reply
"""


@dataclass(slots=True)
class Outcome:
    """What a spend (or a check) found: allowed, or which window refused and until when."""

    allowed: bool
    refusing: int | None  # index of the refusing window
    retry_ms: int | None  # None: never (the weight exceeds the window's limit)
    totals: list[float]


def outcome(reply: list[object]) -> Outcome:
    """The SPEND script's reply, read."""
    allowed, refusing, retry, *totals = reply
    retry_ms = int(retry)  # type: ignore[call-overload]
    return Outcome(
        allowed=bool(allowed),
        refusing=int(refusing) - 1 if int(refusing) else None,  # type: ignore[call-overload]
        retry_ms=None if retry_ms < 0 else retry_ms,
        totals=[float(total) for total in totals],  # type: ignore[arg-type]
    )


class LocalWindows:
    """The same windows in this process's memory: the allowance it spends from while Redis cannot be read."""

    __slots__ = ("_buckets", "_days")

    def __init__(self) -> None:
        self._buckets: dict[str, dict[int, float]] = {}
        self._days: dict[str, tuple[int, float]] = {}  # key -> (day start, total)

    def spend(self, windows: list[Window], weight: float, now_ms: int) -> Outcome:
        totals = [self._total(window, now_ms) for window in windows]
        for index, (window, total) in enumerate(zip(windows, totals)):
            if total + weight > window.limit:
                return Outcome(False, index, self._retry(window, total, weight, now_ms), totals)
        self.add(windows, weight, now_ms)
        return Outcome(True, None, 0, [total + weight for total in totals])

    def add(self, windows: list[Window], weight: float, now_ms: int) -> None:
        """Count `weight` in every window without checking it (what was spent elsewhere, mirrored)."""
        for window in windows:
            total = self._total(window, now_ms)  # also drops what has left the window
            if window.kind is Kind.SLIDING:
                buckets = self._buckets.setdefault(window.key, {})
                start = now_ms - now_ms % window.bucket_ms
                buckets[start] = buckets.get(start, 0.0) + weight
            else:
                self._days[window.key] = (now_ms - now_ms % DAY_MS, total + weight)

    def forget(self, prefix: str) -> None:
        """Every window whose key starts with `prefix` (a payer not seen for a while)."""
        for windows in (self._buckets, self._days):
            for key in [key for key in windows if key.startswith(prefix)]:
                del windows[key]

    def __len__(self) -> int:
        return len(self._buckets) + len(self._days)

    def _total(self, window: Window, now_ms: int) -> float:
        if window.kind is not Kind.SLIDING:
            day, total = self._days.get(window.key, (0, 0.0))
            return total if day == now_ms - now_ms % DAY_MS else 0.0
        buckets = self._buckets.get(window.key, {})
        oldest = now_ms - window.span_ms - window.bucket_ms
        for start in [start for start in buckets if start <= oldest]:
            del buckets[start]
        return sum(buckets.values())

    def _retry(self, window: Window, total: float, weight: float, now_ms: int) -> int | None:
        if weight > window.limit:
            return None
        if window.kind is not Kind.SLIDING:
            return DAY_MS - now_ms % DAY_MS
        left = total
        retry = 0
        for start, value in sorted(self._buckets.get(window.key, {}).items()):
            left -= value
            retry = start + window.span_ms + window.bucket_ms - now_ms
            if left + weight <= window.limit:
                break
        return retry
