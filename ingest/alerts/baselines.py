"""A baseline rule's history of one device: 24 hourly slots of 5 numbers, plus a smoothed recent
value, and the hour's baseline taken from them (the usual for this hour of the day, or the
median of the last 24 hourly means). Fixed size: nothing grows with time. `conditions.py`'s
`BaselineJudge` judges a reading against it.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, insort
from typing import Any, Final

# Final: compiled (`compiled.py`), a constant is inlined instead of looked up per reading.
HOUR_NS: Final = 3_600_000_000_000
SLOTS: Final = 24
# Per slot: which absolute hour it holds, that hour's sum and count, the usual mean for this
# hour of the day (an average over days), and over how many days.
_HOUR: Final = 0
_SUM: Final = 1
_COUNT: Final = 2
_USUAL: Final = 3
_DAYS: Final = 4
_DAY_WEIGHT: Final = 0.3  # how much a new day moves the usual for its hour
NO_HOUR: Final = -(1 << 60)  # no hour judged yet (hours since 1970 are nowhere near)


class BaselineState:
    __slots__ = ("baseline", "first_ts", "hour", "hour_baseline", "hour_count", "hour_sum", "means",
                 "median", "median_hour", "recent", "recent_ts", "slots")  # fmt: skip

    def __init__(self) -> None:
        self.first_ts = 0
        self.recent = math.nan
        self.recent_ts = 0
        self.baseline = math.nan  # the last baseline judged against, for the message
        self.slots = array("d", [-1.0, 0.0, 0.0, 0.0, 0.0] * SLOTS)
        # The rolling median for `median_hour` (-1: none; NaN: too few hours): it excludes that
        # hour's own slot, the only one readings of that hour change, so it holds until a slot
        # starts afresh.
        self.median_hour = -1
        self.median = math.nan
        # The hourly means that median is of, sorted: the next hour's median moves it by one mean
        # out and one in (see `_rolling_median`). Not saved: rebuilt from the slots.
        self.means: array[float] | None = None
        # The hour of the last reading judged (NO_HOUR: none yet), and what holds while readings
        # stay in it: its baseline (NaN: none), and its slot's sum and count, kept here and
        # written back to the slot when another hour comes or the state is saved (`settle`). So
        # a reading pays for none of the hour's bookkeeping, nor for reading and writing the
        # array. (Sentinels, not None: compiled, an int or a float is then kept unboxed.)
        self.hour = NO_HOUR
        self.hour_baseline = math.nan
        self.hour_sum = 0.0
        self.hour_count = 0.0

    def settle(self) -> None:
        """Writes the current hour's sum and count back to its slot: the slots are then whole."""
        if self.hour != NO_HOUR:
            base = (self.hour % SLOTS) * 5
            self.slots[base + _SUM] = self.hour_sum
            self.slots[base + _COUNT] = self.hour_count

    def forget(self) -> None:
        """Settles, then forgets what is remembered (the hour's sums and baseline, the median):
        judging goes on from the slots alone, as after a restart."""
        self.settle()
        self.hour, self.median_hour, self.means = NO_HOUR, -1, None

    def dump(self) -> list[Any]:
        slots = list(self.slots)
        if self.hour != NO_HOUR:  # the current hour's sum and count, as `settle` would write
            base = (self.hour % SLOTS) * 5
            slots[base + _SUM], slots[base + _COUNT] = self.hour_sum, self.hour_count
        # JSON has no NaN ("nothing yet"): it travels as null.
        return [self.first_ts, _number(self.recent), self.recent_ts, slots,
                _number(self.baseline)]  # fmt: skip

    @classmethod
    def load(cls, data: list[Any]) -> BaselineState:
        state = cls()
        state.first_ts, state.recent_ts = int(data[0]), int(data[2])
        state.recent = math.nan if data[1] is None else float(data[1])
        state.slots = array("d", data[3])
        if len(state.slots) != SLOTS * 5:  # judging would index past it, mid-ingest
            raise ValueError(f"{len(state.slots)} numbers of baseline slots, not {SLOTS * 5}")
        state.baseline = math.nan if data[4] is None else float(data[4])
        return state


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value


def enter_hour(state: BaselineState, hour: int, same_hour: bool) -> None:
    """A reading of another hour than the last one judged: its slot starts afresh if it held
    another hour, and the baseline for the hour is taken (the usual for this hour of the day,
    or the median of the last 24 hours); both hold for every reading of the hour.

    Each slot read or written costs a float object (the array's items are C doubles, Python
    objects only on the way in or out): what is known already is passed on, not read again."""
    left, left_sum, left_count = state.hour, state.hour_sum, state.hour_count
    state.settle()  # the hour left behind
    slots = state.slots
    base = (hour % SLOTS) * 5
    held = slots[base + _HOUR]
    if held != hour:
        dropped, usual, days = _new_hour(slots, base, hour, held)
        state.hour_sum = state.hour_count = 0.0
    else:
        dropped, usual, days = math.nan, slots[base + _USUAL], slots[base + _DAYS]
        state.hour_sum, state.hour_count = slots[base + _SUM], slots[base + _COUNT]
    if same_hour:
        state.hour_baseline = usual if days else math.nan
    elif state.median_hour != hour:
        # The previous hour's sum and count: the ones just settled, if it was the hour left.
        if left != hour - 1:
            left_sum, left_count = _hour_sums(slots, hour - 1)
        state.hour_baseline = state.median = _rolling_median(
            state, hour, dropped, left_sum / left_count if left_count else math.nan
        )
        state.median_hour = hour
    else:
        state.hour_baseline = state.median
    state.hour = hour


def _hour_sums(slots: array[float], hour: int) -> tuple[float, float]:
    """The sum and count of `hour`, if its slot still holds it (else nothing: 0, 0)."""
    base = (hour % SLOTS) * 5
    if slots[base + _HOUR] != hour:
        return 0.0, 0.0
    return slots[base + _SUM], slots[base + _COUNT]


def _new_hour(slots: array[float], base: int, hour: int, held: float) -> tuple[float, float, float]:
    """This hour of the day comes round again: the old hour's mean (`held` was that hour) joins
    the usual. Returns that mean if the old hour was the one just out of the last 24 hours
    (else NaN), and the usual and the number of days it is of, as now written.

    The slot's sum and count are left as they were: the hour's own are kept in the state from
    now on (`BaselineState.hour_sum`), and `settle` writes them over these before anything
    reads the slot again."""
    dropped = math.nan
    count = slots[base + _COUNT]
    days = slots[base + _DAYS]
    usual = slots[base + _USUAL]
    if count:
        mean = slots[base + _SUM] / count
        usual = mean if days == 0 else usual + _DAY_WEIGHT * (mean - usual)
        days += 1
        slots[base + _USUAL] = usual
        slots[base + _DAYS] = days
        if held == hour - SLOTS:
            dropped = mean
    slots[base + _HOUR] = hour
    return dropped, usual, days


def _rolling_median(state: BaselineState, hour: int, dropped: float, previous: float) -> float:
    """The median of the hourly means of the last 24 hours (this hour excluded; NaN: too few).

    From one hour to the next (the usual case), only two slots changed since the last median
    was taken: the previous hour's, which now has its mean (`previous`, NaN if none), and this
    hour's, started afresh, whose old mean (`dropped`, NaN if none) was the oldest of the 24
    hours if it was not older still. So the sorted means move by one out and one in, instead of
    all 24 read and sorted again; anything else (a gap, a late reading, a restart) reads them
    all from the slots.
    """
    means = state.means
    if means is not None and state.median_hour == hour - 1:
        if dropped == dropped:
            at = bisect_left(means, dropped)
            if at == len(means) or means[at] != dropped:
                return _median(state, hour)  # cannot happen; reading them all is always right
            del means[at]
        if previous == previous:
            insort(means, previous)
        return _middle(means)
    return _median(state, hour)


def _median(state: BaselineState, hour: int) -> float:
    """`_rolling_median` from every slot: the hours of the last 24 that have a mean."""
    slots, oldest = state.slots, hour - SLOTS
    # Whole columns at once (array slices are copied in C): a third of the per-slot indexing.
    means = sorted(
        total / count
        for first, total, count in zip(
            slots[_HOUR::5], slots[_SUM::5], slots[_COUNT::5], strict=True
        )
        if count and oldest <= first < hour
    )
    state.means = array("d", means)
    return _middle(state.means)


def _middle(means: array[float]) -> float:
    if len(means) < SLOTS // 2:
        return math.nan  # too few hours to call anything usual
    middle = len(means) // 2
    return means[middle] if len(means) % 2 else (means[middle - 1] + means[middle]) / 2
