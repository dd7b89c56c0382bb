"""What the alert engine keeps per device and per rule, of fixed size: a `Tracker` per rule (its
lifecycle and condition state), the `Episode` of a raised alert, and the `DeviceState` that
holds them with the device's newest time and learnt interval. `engine.py` moves them along;
`snapshot.py` carries them over a restart."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from devices.rules import AbsenceRule, Rule
from devices.topics import DeviceAddress
from ingest.alerts.conditions import ConditionState, Judge, judge_for, new_state

_NS: Final = 1_000_000_000
_ARMED_AFTER: Final = 3  # readings before a device's interval is trusted for absence


@dataclass(slots=True)
class Episode:
    """One raised alert: from its first reading to now."""

    alert_id: str
    first_seen: int
    last_seen: int
    value: float
    acknowledged_by: str = ""


class Tracker:
    """One rule's lifecycle on one device."""

    __slots__ = (
        "changed_at",
        "clear_count",
        "clear_since",
        "condition",
        "episode",
        "judge",
        "pending_count",
        "pending_since",
        "rule",
    )

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.condition: ConditionState = new_state(rule)
        # Shared by every device with this rule (an absence rule's refuses: the engine itself
        # judges it, from the device's silence).
        self.judge: Judge = judge_for(rule)
        self.pending_since = -1
        self.pending_count = 0
        self.clear_since = -1
        self.clear_count = 0
        self.episode: Episode | None = None
        self.changed_at = 0  # time of the last state change (ordering against stored ones)


class DeviceState:
    """What the engine keeps of one device: its newest reading time, its learnt interval, and a
    tracker per rule (the absence rule apart)."""

    __slots__ = ("absence", "address", "interval", "newest", "quiet_ns", "readings",
                 "trackers", "usual")  # fmt: skip

    def __init__(self, address: DeviceAddress, rules: tuple[Rule, ...]) -> None:
        self.address = address
        self.trackers = [Tracker(r) for r in rules if not isinstance(r, AbsenceRule)]
        absence = [Tracker(r) for r in rules if isinstance(r, AbsenceRule)]
        self.absence = absence[0] if absence else None
        # The shortest silence that can be one: gaps up to this need no look at the absence rule.
        rule = self.absence.rule if self.absence else None
        self.quiet_ns = int(rule.at_least_s * _NS) if isinstance(rule, AbsenceRule) else 0
        # Whether its baselines learn from its readings now: not while an alert of a rule judged
        # per reading is open (a device with a fever is not its usual self: see `BaselineRule`).
        # Kept by `episodes_changed`, so that a reading need not look at every tracker.
        self.usual = True
        self.newest = 0  # the newest reading time judged
        self.interval = 0  # learnt, ns
        self.readings = 0

    def episodes_changed(self) -> None:
        """To be called whenever an episode of this device opens or closes."""
        self.usual = all(t.episode is None for t in self.trackers)

    def silence_limit(self) -> int | None:
        """How long a silence may last before `silent` is raised; None until learnt."""
        if self.absence is None or self.readings < _ARMED_AFTER:
            return None
        rule = self.absence.rule
        assert isinstance(rule, AbsenceRule)
        return max(int(rule.after_intervals * self.interval), int(rule.at_least_s * _NS))


def find_tracker(device: DeviceState, rule_name: str) -> Tracker | None:
    for tracker in [*device.trackers, *([device.absence] if device.absence else [])]:
        if tracker.rule.name == rule_name:
            return tracker
    return None
