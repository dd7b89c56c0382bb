"""A pacemaker patient: resting and active heart rate, a slowly draining battery, rare trouble.

The device paces when the heart's own rate falls below its lower rate (60 bpm), so the paced
share rises at night. Episodes: `bradycardia` (rate falls to 30–35), `tachycardia` (rate rises
to 160–190), `lead_problem` (impedance jumps above 2,500 ohm, noise on the lead) and
`battery_depletion` (the battery falls to its replacement level).

Commands (devices/pacemaker.py): `read_out` answers a `ReadOut` (settings, battery, lead, the
events since the last read-out); `set_lower_rate` and the desired `lower_rate_bpm` change the
lower rate, and while pacing works (no lead problem, no bradycardia episode, which is the
pacing failing) the heart rate never goes below it.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from devices.pacemaker import ReadOut
from simulators.behaviour import SUCCEEDED, Episodes, Outcome, clamp, daily_wave, ramp, rejected

LOWER_RATE = 60


class PacemakerBehaviour:
    id_prefix = "pacemaker"
    default_interval_s = 60.0
    episode_kinds = ("bradycardia", "tachycardia", "lead_problem", "battery_depletion")

    def __init__(
        self, rng: random.Random, start: float, *, incident_every_s: float | None = None
    ) -> None:
        self._rng = rng
        self._resting = rng.uniform(52, 72)  # the heart's own resting rate
        self._battery = rng.uniform(2.75, 3.05)
        self._impedance = rng.uniform(350, 900)
        self._slow_rate = rng.uniform(30, 35)  # clearly below the 40 bpm alarm, jitter and all
        self._fast_rate = rng.uniform(160, 190)
        self._last_t = start
        self._lower_rate = LOWER_RATE
        self._last: dict[str, Any] = {}  # the last reading's fields, for a read-out
        self._events: Counter[str] = Counter()  # arrhythmia events since the last read-out
        self.episodes = Episodes(
            rng,
            start,
            incident_every_s,
            {"bradycardia": 0.4, "tachycardia": 0.4, "lead_problem": 0.2},
        )

    def command(self, name: str, args: dict[str, Any], t: float) -> Outcome:
        if name == "set_lower_rate":
            self._lower_rate = int(args["lower_rate_bpm"])
            return SUCCEEDED
        if name == "read_out":
            return Outcome("succeeded", output=self._read_out(t))
        return rejected(f"the pacemaker has no command {name!r}")

    def apply_desired(self, state: dict[str, Any], t: float) -> dict[str, Any]:
        if state.get("lower_rate_bpm") is not None:
            self._lower_rate = int(state["lower_rate_bpm"])
        return {"lower_rate_bpm": self._lower_rate}

    def _read_out(self, t: float) -> dict[str, Any]:
        last = self._last or self.fields(t)  # interrogated before its first reading
        report = ReadOut(
            lower_rate_bpm=self._lower_rate,
            heart_rate_bpm=last["heart_rate_bpm"],
            paced_pct=last["paced_pct"],
            battery_v=last["battery_v"],
            lead_impedance_ohm=last["lead_impedance_ohm"],
            events_since_last=dict(self._events),
        )
        self._events.clear()
        return report.model_dump()

    def fields(self, t: float) -> dict[str, Any]:
        rng = self._rng
        dt = max(0.0, t - self._last_t)
        self._last_t = t
        episodes = self.episodes
        active = max(0.0, daily_wave(t, peak_hour=14))  # walks and chores by day
        intrinsic = self._resting * (0.9 + 0.1 * daily_wave(t, 14)) + 35 * active * rng.random()
        event = "none"
        slow = ramp(episodes.progress("bradycardia", t), 0.05)
        fast = ramp(episodes.progress("tachycardia", t), 0.05)
        if slow:
            intrinsic += (self._slow_rate - intrinsic) * slow
            event = "bradycardia"
        if fast:
            intrinsic += (self._fast_rate - intrinsic) * fast
            event = "tachycardia"
        lead = episodes.progress("lead_problem", t) is not None
        # Pacing keeps the rate at the lower rate, unless the lead fails to deliver.
        paced = intrinsic < self._lower_rate and not lead
        pacing = paced and not slow  # a bradycardia episode is the pacing failing
        rate = self._lower_rate if pacing else intrinsic
        if lead:
            event = "lead_noise" if event == "none" else event
        self._battery = max(2.0, self._battery - dt / (8 * 365 * 86_400) * 0.5)  # ~8 years
        battery = self._battery
        if (drop := episodes.progress("battery_depletion", t)) is not None:
            battery = max(2.0, battery - (battery - 2.45) * min(1.0, drop / 0.2))
        heart_rate = rate + rng.gauss(0, 1.5)
        if not lead and not slow:
            heart_rate = max(heart_rate, self._lower_rate)  # a pacemaker paces: never below
        fields = {
            "heart_rate_bpm": int(clamp(heart_rate, 20, 250)),
            "paced_pct": round(clamp(100.0 if paced else rng.uniform(0, 8), 0, 100), 1),
            "battery_v": round(battery, 3),
            "lead_impedance_ohm": int(
                clamp(
                    (rng.uniform(2500, 3500) if lead else self._impedance) + rng.gauss(0, 15),
                    100,
                    5000,
                )
            ),
            "event": event,
        }
        if event != "none":
            self._events[event] += 1
        self._last = fields
        return fields
