"""A pacemaker patient: resting and active heart rate, a slowly draining battery, rare trouble.

The device paces when the heart's own rate falls below its lower rate (60 bpm), so the paced
share rises at night. Episodes: `bradycardia` (rate falls to 30–35), `tachycardia` (rate rises
to 160–190), `lead_problem` (impedance jumps above 2,500 ohm, noise on the lead) and
`battery_depletion` (the battery falls to its replacement level).
"""

from __future__ import annotations

import random
from typing import Any

from simulators.behaviour import Episodes, clamp, daily_wave, ramp

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
        self.episodes = Episodes(
            rng,
            start,
            incident_every_s,
            {"bradycardia": 0.4, "tachycardia": 0.4, "lead_problem": 0.2},
        )

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
        paced = intrinsic < LOWER_RATE and not lead
        rate = LOWER_RATE if paced and not slow else intrinsic
        if lead:
            event = "lead_noise" if event == "none" else event
        self._battery = max(2.0, self._battery - dt / (8 * 365 * 86_400) * 0.5)  # ~8 years
        battery = self._battery
        if (drop := episodes.progress("battery_depletion", t)) is not None:
            battery = max(2.0, battery - (battery - 2.45) * min(1.0, drop / 0.2))
        return {
            "heart_rate_bpm": int(clamp(rate + rng.gauss(0, 1.5), 20, 250)),
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
