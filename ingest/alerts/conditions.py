"""Each rule kind's condition, judged on one reading: alarm, clear, or neither (hold).

`HOLD` means "no change": between a rule's raise and clear levels (hysteresis), or not yet
judgeable (a window not yet covered, a baseline still learning). Conditions that need history
keep it in a small, fixed-size state object per device and rule; nothing grows with time:

- delta: at most 34 samples (one kept per 1/32 of the window), or one for "since last reading";
- baseline: 24 hourly slots of 5 numbers, plus a smoothed recent value (`baselines.py`);
- threshold and geofence: nothing; arrival: two distances (`place_conditions.py`).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Final

from devices.fast import AnyReading
from devices.place_rules import ArrivalRule, GeofenceRule
from devices.rules import BaselineRule, DeltaRule, Rule, ThresholdRule
from ingest.alerts.baselines import HOUR_NS, BaselineState, enter_hour
from ingest.alerts.place_conditions import ArrivalState, arrival, geofence
from ingest.alerts.verdict import ALARM, CLEAR, HOLD, Verdict

_SAMPLES: Final = 32


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


class Judge:
    """A rule's condition, judged on one reading: `judge(state, reading, ts, learning)` gives
    the verdict (`verdict.py`'s ints) and the value the alert reports.

    One per rule, with the rule's settings as plain attributes, shared by every device the rule
    applies to (the device's own history is the state it is given): a reading pays for no
    dispatch on the rule's kind and no lookup of its settings. Compiled (`compiled.py`), the
    call is a native one: the time, the flag and the answer travel unboxed.

    `learning` is False while the rule is pending or raised, so a baseline does not learn
    from the episode it is judging.
    """

    def judge(
        self, state: ConditionState, reading: AnyReading, ts: int, learning: bool
    ) -> tuple[int, float]:
        raise TypeError("an absence rule is judged from the device's silence, not per reading")


# By the rule object's id, the rule kept with its judge (so the id is not reused meanwhile):
# the rule book hands every device of a type and tenant the same rule objects.
_JUDGES: dict[int, tuple[Rule, Judge]] = {}


def judge_for(rule: Rule) -> Judge:
    """The rule's judge, made once per rule object."""
    found = _JUDGES.get(id(rule))
    if found is None:
        if len(_JUDGES) > 10_000:  # rules reloaded many times: forget the old ones' judges
            _JUDGES.clear()
        found = _JUDGES[id(rule)] = (rule, _new_judge(rule))
    return found[1]


def _new_judge(rule: Rule) -> Judge:
    if isinstance(rule, ThresholdRule):
        return ThresholdJudge(rule)
    if isinstance(rule, BaselineRule):
        return BaselineJudge(rule)
    if isinstance(rule, DeltaRule):
        return DeltaJudge(rule)
    if isinstance(rule, GeofenceRule | ArrivalRule):
        return PlacedJudge(rule)
    return Judge()  # absence: judged by the engine itself, from the device's silence


def judge(
    rule: Rule, state: ConditionState, reading: AnyReading, ts: int, learning: bool
) -> tuple[Verdict, float]:
    """`judge_for(rule)` applied once (for tests and tools; the engine keeps its judges)."""
    verdict, value = judge_for(rule).judge(state, reading, ts, learning)
    return Verdict(verdict), value


class PlacedJudge(Judge):
    """The kinds whose judging costs more than its dispatch: the generic functions of
    `place_conditions.py`."""

    def __init__(self, rule: GeofenceRule | ArrivalRule) -> None:
        self.rule = rule

    def judge(
        self, state: ConditionState, reading: AnyReading, ts: int, learning: bool
    ) -> tuple[int, float]:
        rule = self.rule
        if isinstance(rule, GeofenceRule):
            verdict, value = geofence(rule, reading)
        else:
            assert isinstance(state, ArrivalState)
            verdict, value = arrival(rule, state, reading)
        return int(verdict), value


class ThresholdJudge(Judge):
    def __init__(self, rule: ThresholdRule) -> None:
        self.field = rule.field
        self.above = rule.direction == "above"
        self.raise_at = float(rule.raise_at)
        self.clear_at = float(rule.clear_at)

    def judge(
        self, state: ConditionState, reading: AnyReading, ts: int, learning: bool
    ) -> tuple[int, float]:
        value = float(getattr(reading, self.field))
        if self.above:
            return (ALARM if value >= self.raise_at else
                    CLEAR if value < self.clear_at else HOLD), value  # fmt: skip
        return (ALARM if value < self.raise_at else
                CLEAR if value >= self.clear_at else HOLD), value  # fmt: skip


class BaselineJudge(Judge):
    def __init__(self, rule: BaselineRule) -> None:
        self.field = rule.field
        self.smoothed = bool(rule.recent_s)
        self.same_hour = rule.baseline == "same_hour"
        self.ratio = rule.compare == "ratio"
        self.above = rule.direction == "above"
        self.raise_at = float(rule.raise_at)
        self.clear_at = float(rule.clear_at)
        self.time_constant = rule.recent_s * 0.5e9  # the recent value's: half its span
        self.min_history = rule.min_history_s * 1e9

    def judge(
        self, state: ConditionState, reading: AnyReading, ts: int, learning: bool
    ) -> tuple[int, float]:
        assert isinstance(state, BaselineState)
        value = float(getattr(reading, self.field))
        if not state.first_ts:
            state.first_ts = ts
        # The recent value: an exponential moving average (NaN, not equal to itself: none yet).
        recent = previous = state.recent
        if self.smoothed and state.recent_ts and previous == previous:
            recent += (1.0 - math.exp(-(ts - state.recent_ts) / self.time_constant)) * (
                value - previous
            )
            state.recent = recent
        else:
            state.recent = recent = value
        state.recent_ts = ts

        hour = ts // HOUR_NS
        if hour != state.hour:
            enter_hour(state, hour, self.same_hour)
        baseline = state.hour_baseline
        if learning:
            state.hour_sum += value
            state.hour_count += 1.0
        if (
            baseline != baseline  # NaN: no baseline (yet) for this hour
            or ts - state.first_ts < self.min_history
            or (self.ratio and baseline <= 0.0)
        ):
            return HOLD, 0.0
        score = recent / baseline if self.ratio else recent - baseline
        if self.ratio and math.isinf(score):
            # A baseline next to zero (a few denormal readings): no more a ratio to judge than
            # one of zero, and an inf value is one InfluxDB refuses to store.
            return HOLD, 0.0
        state.baseline = baseline
        if self.above:
            return (ALARM if score >= self.raise_at else
                    CLEAR if score < self.clear_at else HOLD), score  # fmt: skip
        return (ALARM if score < self.raise_at else
                CLEAR if score >= self.clear_at else HOLD), score  # fmt: skip


class DeltaJudge(Judge):
    """As the threshold's judge, on the change over `window_s` (0: since the last reading)."""

    def __init__(self, rule: DeltaRule) -> None:
        self.field = rule.field
        self.flag = rule.while_field or ""  # "": no flag
        self.above = rule.direction == "above"
        self.raise_at = float(rule.raise_at)
        self.clear_at = float(rule.clear_at)
        self.window = int(rule.window_s * 1e9)
        self.step = self.window // _SAMPLES  # one sample kept per step

    def judge(
        self, state: ConditionState, reading: AnyReading, ts: int, learning: bool
    ) -> tuple[int, float]:
        assert isinstance(state, DeltaState)
        samples = state.samples
        if self.flag and not getattr(reading, self.flag):
            samples.clear()  # the window starts again once the flag is back on
            return CLEAR, 0.0
        value = float(getattr(reading, self.field))
        window = self.window
        if window == 0:
            previous = samples[0][1] if samples else None
            samples.clear()
            samples.append((ts, value))
            if previous is None:
                return HOLD, 0.0
            delta = value - previous
        else:
            if samples and ts - samples[-1][0] > window:
                samples.clear()  # a gap longer than the window: nothing to compare with
            if not samples or ts - samples[-1][0] >= self.step:
                samples.append((ts, value))
            while len(samples) > 1 and samples[1][0] <= ts - window:
                samples.popleft()
            if samples[0][0] > ts - window:
                return HOLD, 0.0  # the window is not covered yet
            delta = value - samples[0][1]
        if self.above:
            return (ALARM if delta >= self.raise_at else
                    CLEAR if delta < self.clear_at else HOLD), delta  # fmt: skip
        return (ALARM if delta < self.raise_at else
                CLEAR if delta >= self.clear_at else HOLD), delta  # fmt: skip
