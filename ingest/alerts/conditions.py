"""Each rule kind's condition, judged on one reading: alarm, clear, or neither (hold).

`HOLD` means "no change": between a rule's raise and clear levels (hysteresis), or not yet
judgeable (a window not yet covered, a baseline still learning). Conditions that need history
keep it in a small, fixed-size state object per device and rule; nothing grows with time:

- delta: at most 34 samples (one kept per 1/32 of the window), or one for "since last reading";
- baseline: 24 hourly slots of 5 numbers, plus a smoothed recent value;
- threshold and geofence: nothing; arrival: two distances (`place_conditions.py`).
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable
from operator import attrgetter
from typing import Any, Final

from devices.fast import AnyReading
from devices.place_rules import ArrivalRule, GeofenceRule
from devices.rules import BaselineRule, DeltaRule, Rule, ThresholdRule
from ingest.alerts.place_conditions import ArrivalState, arrival, geofence
from ingest.alerts.verdict import Verdict

# Final: compiled (`compiled.py`), a constant is inlined instead of looked up per reading.
HOUR_NS: Final = 3_600_000_000_000
SLOTS: Final = 24
_SAMPLES: Final = 32
# Per slot: which absolute hour it holds, that hour's sum and count, the usual mean for this
# hour of the day (an average over days), and over how many days.
_HOUR: Final = 0
_SUM: Final = 1
_COUNT: Final = 2
_USUAL: Final = 3
_DAYS: Final = 4
_DAY_WEIGHT: Final = 0.3  # how much a new day moves the usual for its hour


class DeltaState:
    __slots__ = ("samples",)

    def __init__(self) -> None:
        self.samples: deque[tuple[int, float]] = deque()

    def dump(self) -> list[Any]:
        return [list(s) for s in self.samples]

    @classmethod
    def load(cls, data: list[Any]) -> DeltaState:
        state = cls()
        state.samples.extend((int(ts), float(v)) for ts, v in data)
        return state


class BaselineState:
    __slots__ = ("baseline", "first_ts", "hour", "hour_baseline", "hour_count", "hour_sum", "means",
                 "median", "median_hour", "recent", "recent_ts", "slots")  # fmt: skip

    def __init__(self) -> None:
        self.first_ts = 0
        self.recent = math.nan
        self.recent_ts = 0
        self.baseline = math.nan  # the last baseline judged against, for the message
        self.slots = array("d", [-1.0, 0.0, 0.0, 0.0, 0.0] * SLOTS)
        # The rolling median for `median_hour` (-1: none): it excludes that hour's own slot,
        # the only one readings of that hour change, so it holds until a slot starts afresh.
        self.median_hour = -1
        self.median: float | None = None
        # The hourly means that median is of, sorted: the next hour's median moves it by one mean
        # out and one in (see `_rolling_median`). Not saved: rebuilt from the slots.
        self.means: array[float] | None = None
        # The hour of the last reading judged (None: none yet), and what holds while readings
        # stay in it: its baseline, and its slot's sum and count, kept here and written back
        # to the slot when another hour comes or the state is saved (`settle`). So a reading
        # pays for none of the hour's bookkeeping, nor for reading and writing the array.
        self.hour: int | None = None
        self.hour_baseline: float | None = None
        self.hour_sum = 0.0
        self.hour_count = 0.0

    def settle(self) -> None:
        """Writes the current hour's sum and count back to its slot: the slots are then whole."""
        if self.hour is not None:
            base = (self.hour % SLOTS) * 5
            self.slots[base + _SUM] = self.hour_sum
            self.slots[base + _COUNT] = self.hour_count

    def dump(self) -> list[Any]:
        slots = list(self.slots)
        if self.hour is not None:  # the current hour's sum and count, as `settle` would write
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
        state.baseline = math.nan if data[4] is None else float(data[4])
        return state


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value


ConditionState = DeltaState | BaselineState | ArrivalState | None


def new_state(rule: Rule) -> ConditionState:
    if isinstance(rule, DeltaRule):
        return DeltaState()
    if isinstance(rule, BaselineRule):
        return BaselineState()
    if isinstance(rule, ArrivalRule):
        return ArrivalState()
    return None


def load_state(rule: Rule, data: Any) -> ConditionState:
    if isinstance(rule, DeltaRule):
        return DeltaState.load(data)
    if isinstance(rule, BaselineRule):
        return BaselineState.load(data)
    if isinstance(rule, ArrivalRule):
        return ArrivalState.load(data)
    return None


Judge = Callable[[ConditionState, AnyReading, int, bool], tuple[Verdict, float]]
_ALARM: Final = Verdict.ALARM
_HOLD: Final = Verdict.HOLD
_CLEAR: Final = Verdict.CLEAR


def judge_for(rule: Rule) -> Judge:
    """The rule's judge: `judge(state, reading, ts, learning)` gives the verdict on this reading
    and the value the alert reports. Made once per rule (each tracker keeps its own), with the
    rule's settings bound, so a reading pays for no dispatch on the rule's kind and no lookup of
    its settings: a reading is judged by every rule of its device.

    `learning` is False while the rule is pending or raised, so a baseline does not learn
    from the episode it is judging.
    """
    if isinstance(rule, ThresholdRule):
        return _threshold_judge(rule)
    if isinstance(rule, BaselineRule):
        return _baseline_judge(rule)
    if isinstance(rule, DeltaRule):
        return _delta_judge(rule)
    if isinstance(rule, GeofenceRule | ArrivalRule):
        return _placed_judge(rule)
    raise TypeError(f"{rule.kind} rules are not judged per reading")


def judge(
    rule: Rule, state: ConditionState, reading: AnyReading, ts: int, learning: bool
) -> tuple[Verdict, float]:
    """`judge_for(rule)` applied once (for tests and tools; the engine keeps its judges)."""
    return judge_for(rule)(state, reading, ts, learning)


def _placed_judge(rule: GeofenceRule | ArrivalRule) -> Judge:
    """The kinds whose judging costs more than its dispatch: the generic functions of
    `place_conditions.py`."""

    def judge(
        state: ConditionState, reading: AnyReading, ts: int, _learning: bool
    ) -> tuple[Verdict, float]:
        if isinstance(rule, GeofenceRule):
            return geofence(rule, reading)
        assert isinstance(state, ArrivalState)
        return arrival(rule, state, reading)

    return judge


def _threshold_judge(rule: ThresholdRule) -> Judge:
    field, raise_at, clear_at = attrgetter(rule.field), rule.raise_at, rule.clear_at
    if rule.direction == "above":

        def above(
            _s: ConditionState, reading: AnyReading, _t: int, _: bool
        ) -> tuple[Verdict, float]:
            value = float(field(reading))
            return (_ALARM if value >= raise_at else _CLEAR if value < clear_at else _HOLD), value

        return above

    def below(_s: ConditionState, reading: AnyReading, _t: int, _: bool) -> tuple[Verdict, float]:
        value = float(field(reading))
        return (_ALARM if value < raise_at else _CLEAR if value >= clear_at else _HOLD), value

    return below


def _baseline_judge(rule: BaselineRule) -> Judge:
    field, recent_s, same_hour = attrgetter(rule.field), rule.recent_s, rule.baseline == "same_hour"
    ratio, above = rule.compare == "ratio", rule.direction == "above"
    raise_at, clear_at = rule.raise_at, rule.clear_at
    time_constant = rule.recent_s * 0.5e9  # the recent value's: half its span
    min_history = rule.min_history_s * 1e9

    def baseline_judge(
        condition: ConditionState, reading: AnyReading, ts: int, learning: bool
    ) -> tuple[Verdict, float]:
        state = condition
        assert isinstance(state, BaselineState)
        value = float(field(reading))
        if not state.first_ts:
            state.first_ts = ts
        # The recent value: an exponential moving average (NaN, not equal to itself: none yet).
        recent = previous = state.recent
        if recent_s and state.recent_ts and previous == previous:
            recent += (1.0 - math.exp(-(ts - state.recent_ts) / time_constant)) * (value - previous)
            state.recent = recent
        else:
            state.recent = recent = value
        state.recent_ts = ts

        hour = ts // HOUR_NS
        if hour != state.hour:
            _enter_hour(state, hour, same_hour)
        baseline = state.hour_baseline
        if learning:
            state.hour_sum += value
            state.hour_count += 1
        if baseline is None or ts - state.first_ts < min_history or (ratio and baseline <= 0):
            return _HOLD, 0.0
        state.baseline = baseline
        score = recent / baseline if ratio else recent - baseline
        if above:
            return (_ALARM if score >= raise_at else _CLEAR if score < clear_at else _HOLD), score
        return (_ALARM if score < raise_at else _CLEAR if score >= clear_at else _HOLD), score

    return baseline_judge


def _enter_hour(state: BaselineState, hour: int, same_hour: bool) -> None:
    """A reading of another hour than the last one judged: its slot starts afresh if it held
    another hour, and the baseline for the hour is taken (the usual for this hour of the day,
    or the median of the last 24 hours); both hold for every reading of the hour."""
    state.settle()  # the hour left behind
    slots = state.slots
    base = (hour % SLOTS) * 5
    dropped = _new_hour(state, base, hour) if slots[base] != hour else None
    if same_hour:
        state.hour_baseline = slots[base + _USUAL] if slots[base + _DAYS] else None
    elif state.median_hour != hour:
        state.hour_baseline = state.median = _rolling_median(state, hour, dropped)
        state.median_hour = hour
    else:
        state.hour_baseline = state.median
    state.hour = hour
    state.hour_sum, state.hour_count = slots[base + _SUM], slots[base + _COUNT]


def _new_hour(state: BaselineState, base: int, hour: int) -> float | None:
    """This hour of the day comes round again: the old hour's mean joins the usual. Returns that
    mean if the old hour was the one just out of the last 24 hours (else None)."""
    slots = state.slots
    dropped = None
    if slots[base + _COUNT]:
        mean = slots[base + _SUM] / slots[base + _COUNT]
        days = slots[base + _DAYS]
        usual = slots[base + _USUAL]
        slots[base + _USUAL] = mean if days == 0 else usual + _DAY_WEIGHT * (mean - usual)
        slots[base + _DAYS] = days + 1
        if slots[base + _HOUR] == hour - SLOTS:
            dropped = mean
    slots[base + _HOUR] = hour
    slots[base + _SUM] = 0.0
    slots[base + _COUNT] = 0.0
    return dropped


def _delta_judge(rule: DeltaRule) -> Judge:
    """As the threshold's judge, on the change over `window_s` (0: since the last reading)."""
    field, above, raise_at, clear_at = (
        attrgetter(rule.field), rule.direction == "above", rule.raise_at, rule.clear_at
    )  # fmt: skip
    flag = attrgetter(rule.while_field) if rule.while_field is not None else None
    window = int(rule.window_s * 1e9)
    step = window // _SAMPLES  # one sample kept per step

    def delta_judge(
        condition: ConditionState, reading: AnyReading, ts: int, _learning: bool
    ) -> tuple[Verdict, float]:
        assert isinstance(condition, DeltaState)
        samples = condition.samples
        if flag is not None and not flag(reading):
            samples.clear()  # the window starts again once the flag is back on
            return _CLEAR, 0.0
        value = float(field(reading))
        if window == 0:
            previous = samples[0][1] if samples else None
            samples.clear()
            samples.append((ts, value))
            if previous is None:
                return _HOLD, 0.0
            delta = value - previous
        else:
            if samples and ts - samples[-1][0] > window:
                samples.clear()  # a gap longer than the window: nothing to compare with
            if not samples or ts - samples[-1][0] >= step:
                samples.append((ts, value))
            while len(samples) > 1 and samples[1][0] <= ts - window:
                samples.popleft()
            if samples[0][0] > ts - window:
                return _HOLD, 0.0  # the window is not covered yet
            delta = value - samples[0][1]
        if above:
            return (_ALARM if delta >= raise_at else _CLEAR if delta < clear_at else _HOLD), delta
        return (_ALARM if delta < raise_at else _CLEAR if delta >= clear_at else _HOLD), delta

    return delta_judge


def _rolling_median(state: BaselineState, hour: int, dropped: float | None) -> float | None:
    """The median of the hourly means of the last 24 hours (this hour excluded).

    From one hour to the next (the usual case), only two slots changed since the last median
    was taken: the previous hour's, which now has its mean, and this hour's, started afresh,
    whose old mean (`dropped`) was the oldest of the 24 hours if it was not older still. So the
    sorted means move by one out and one in, instead of all 24 read and sorted again; anything
    else (a gap, a late reading, a restart) reads them all from the slots.
    """
    slots, means, previous = state.slots, state.means, hour - 1
    if means is not None and state.median_hour == previous:
        if dropped is not None:
            at = bisect_left(means, dropped)
            if at == len(means) or means[at] != dropped:
                return _median(state, hour)  # cannot happen; reading them all is always right
            del means[at]
        base = (previous % SLOTS) * 5
        if slots[base + _COUNT] and slots[base + _HOUR] == previous:
            insort(means, slots[base + _SUM] / slots[base + _COUNT])
        return _middle(means)
    return _median(state, hour)


def _median(state: BaselineState, hour: int) -> float | None:
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


def _middle(means: array[float]) -> float | None:
    if len(means) < SLOTS // 2:
        return None  # too few hours to call anything usual
    middle = len(means) // 2
    return means[middle] if len(means) % 2 else (means[middle - 1] + means[middle]) / 2
