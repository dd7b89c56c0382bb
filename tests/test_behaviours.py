"""Each behaviour model does what its device does, and scripted episodes show in the data."""

from __future__ import annotations

import itertools
import statistics
import threading
from typing import Any

import orjson

from simulators.behaviour import hour_of_day
from simulators.clock import SimulatedClock
from simulators.run import ScriptedEvent, SimulationOptions, build_fleet

DAY = 86_400.0
START = 1795305600.0 - 3600  # 2026-11-22 00:00 local (UTC+1)
HOUR = 3600.0


def series(
    device_type: str,
    *,
    interval_s: float | None = 60,
    duration_s: float = DAY,
    event: tuple[str, float, float] | None = None,
    seed: int = 1,
) -> list[tuple[float, dict[str, Any]]]:
    """(local hour since START, reading) of device number 1 of `device_type`."""
    events = ()
    if event is not None:
        kind, at_h, hours = event
        fleet_probe = build_fleet(
            SimulationOptions(devices={device_type: 1}, tenant="t", seed=seed), "m", START
        )
        device_id = fleet_probe.devices[0].device_id
        events = (ScriptedEvent("t", device_id, kind, START + at_h * HOUR, hours * HOUR),)
    options = SimulationOptions(
        devices={device_type: 1}, tenant="t", seed=seed, interval_s=interval_s, events=events
    )
    fleet = build_fleet(options, "m", START)
    return [
        ((orjson.loads(p)["ts"] - START) / HOUR, orjson.loads(p))
        for _, p, _ in fleet.messages(
            SimulatedClock(START), threading.Event(), duration_s=duration_s
        )
    ]


def between(
    data: list[tuple[float, dict[str, Any]]], first_h: float, last_h: float, field: str
) -> list[float]:
    return [float(r[field]) for h, r in data if first_h <= h < last_h]


def test_a_scripted_fever_shows_as_a_temperature_rise() -> None:
    data = series("cow_tracker", event=("fever", 6, 6))
    assert max(between(data, 0, 6, "body_temp_c")) < 39.2
    assert statistics.mean(between(data, 7, 11, "body_temp_c")) >= 39.5
    assert max(between(data, 13, 24, "body_temp_c")) < 39.2
    assert statistics.mean(between(data, 7, 11, "rumination_min")) < statistics.mean(
        between(data, 13, 17, "rumination_min")
    )


def test_heat_multiplies_a_cows_activity() -> None:
    calm = series("cow_tracker")
    heat = series("cow_tracker", event=("heat", 8, 12))
    ratio = statistics.mean(between(heat, 10, 18, "activity")) / statistics.mean(
        between(calm, 10, 18, "activity")
    )
    assert 1.9 <= ratio <= 4.1


def test_a_still_cow_barely_moves_and_calving_lowers_temperature() -> None:
    still = series("cow_tracker", event=("still", 10, 3))
    assert max(between(still, 10.1, 13, "activity")) < 10
    calm = series("cow_tracker")
    calving = series("cow_tracker", event=("calving", 0, 24))
    drop = statistics.mean(between(calm, 8, 16, "body_temp_c")) - statistics.mean(
        between(calving, 8, 16, "body_temp_c")
    )
    assert 0.4 <= drop <= 0.6


def test_pacemaker_paces_a_slow_heart_and_reports_trouble() -> None:
    data = series("pacemaker")
    paced = [r["heart_rate_bpm"] for _, r in data if r["paced_pct"] == 100]
    assert paced and all(abs(rate - 60) <= 8 for rate in paced)  # the lower rate, ± jitter
    assert min(between(data, 0, 24, "heart_rate_bpm")) >= 50
    assert 2.0 < statistics.mean(between(data, 0, 24, "battery_v")) < 3.3
    slow = series("pacemaker", event=("bradycardia", 10, 2))
    assert max(between(slow, 10.3, 11.7, "heart_rate_bpm")) < 40
    assert {r["event"] for h, r in slow if 10.3 <= h < 11.7} == {"bradycardia"}
    lead = series("pacemaker", event=("lead_problem", 3, 1))
    assert min(between(lead, 3, 4, "lead_impedance_ohm")) > 2000
    assert max(between(lead, 5, 24, "lead_impedance_ohm")) < 1500


def test_a_meters_counter_integrates_power_and_never_goes_back() -> None:
    data = series("smart_meter", interval_s=10)
    energy = [float(r["energy_kwh"]) for _, r in data]
    assert all(b >= a for a, b in itertools.pairwise(energy))
    power = [float(r["power_w"]) for _, r in data]
    integrated = sum(power) * 10 / 3_600_000
    assert abs((energy[-1] - energy[0]) - integrated) < 0.05 * integrated
    assert max(power) - min(power) > 1000  # appliances switch on and off


def test_blood_pressure_is_measured_morning_and_evening() -> None:
    # Its own schedule (checks every 5 min): no --interval, which would apply to it as well.
    data = series("blood_pressure", interval_s=None, duration_s=3 * DAY)
    hours = [h % 24 for h, _ in data]
    assert len(data) == 6
    assert all(6.5 <= h <= 7.5 or 20.5 <= h <= 21.5 for h in hours)
    assert all(r["systolic_mmhg"] > r["diastolic_mmhg"] for _, r in data)


def test_a_car_commutes_and_is_locked_when_parked() -> None:
    data = series("car", interval_s=30)
    moving = [r for _, r in data if r["speed_kmh"] > 0]
    parked = [r for _, r in data if r["speed_kmh"] == 0]
    assert moving and parked
    assert all(not r["locked"] for r in moving) and all(r["locked"] for r in parked)
    assert len({(r["lat"], r["lon"]) for r in parked}) == 2  # home and work


def test_a_fridge_stays_cold_unless_the_door_is_left_open() -> None:
    data = series("fridge")
    assert min(between(data, 0, 24, "temp_c")) > 1.5 and max(between(data, 0, 24, "temp_c")) < 7
    open_door = series("fridge", event=("door_left_open", 12, 2))
    assert max(between(open_door, 12, 14, "temp_c")) >= 8


def test_a_bathroom_gets_humid_after_a_shower_and_dries_unless_the_fan_fails() -> None:
    data = series("humidity_meter")
    morning = [(h, float(r["humidity_pct"])) for h, r in data if 5 <= h < 11]
    peak_h, peak = max(morning, key=lambda x: x[1])
    assert peak >= 85
    assert max(v for h, v in morning if h > peak_h + 1) < 70
    damp = series("humidity_meter", event=("fan_failure", 0, 24))
    peak_h = max(
        ((h, float(r["humidity_pct"])) for h, r in damp if 5 <= h < 11), key=lambda x: x[1]
    )[0]
    assert min(between(damp, peak_h, peak_h + 2, "humidity_pct")) > 70


def test_local_hours_are_what_the_tests_assume() -> None:
    assert hour_of_day(START) == 0.0
