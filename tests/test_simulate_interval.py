"""`--interval` applies to every device type, as its help says: also to a blood-pressure
meter, which on its own measures only mornings and evenings."""

from __future__ import annotations

from collections import Counter

import pytest

from core.settings import Settings
from tests.helpers import Subscriber, simulate_cli, wait_until


@pytest.mark.parametrize("mode", [[], ["--burst"]], ids=["real-time", "burst"])
def test_every_type_in_a_run_publishes_about_duration_over_interval_readings(
    settings: Settings, mode: list[str]
) -> None:
    subscriber = Subscriber(settings.mqtt_url, f"{settings.topic_prefix}/+/+/+/telemetry")
    try:
        result = simulate_cli(
            settings,
            "--devices",
            "blood_pressure=3,pacemaker=2",
            "--interval",
            "1s",
            "--duration",
            "6s",
            *mode,
        )
        assert result.returncode == 0, result.stderr
        # 6 s at 1 s: about 6 turns per device (a real-time run may lose one at either end).
        expected = {"blood_pressure": 3, "pacemaker": 2}

        def per_type() -> Counter[str]:
            return Counter(m.topic.split("/")[-3] for m in list(subscriber.messages))

        wait_until(
            lambda: all(per_type()[t] >= 5 * n for t, n in expected.items()),
            what="about 6 readings from each device of each type",
        )
        counts = per_type()
        for device_type, devices in expected.items():
            assert 5 * devices <= counts[device_type] <= 7 * devices, counts
    finally:
        subscriber.close()


def test_control_without_interval_a_meter_keeps_its_own_schedule() -> None:
    """The types' own schedule still holds when no --interval is given: a meter's 5 min checks
    over 30 min outside 07:00 and 21:00 measure nothing."""
    from simulators.fleet import Fleet, FleetSpec

    start = 1795305600.0 + 11 * 3600  # 12:00 local, far from both measurements
    fleet = Fleet([FleetSpec("clinic", "blood_pressure", 3)], prefix="moclo", seed=1, start=start)
    assert [d.interval_s for d in fleet.devices] == [300.0] * 3
    turns = [d.behaviour.fields(start + k * 300) for d in fleet.devices for k in range(6)]
    assert turns == [None] * 18
