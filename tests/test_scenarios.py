"""Scenario files: the shipped ones run, the same seed repeats byte for byte, errors are clear,
and a scripted event reaches InfluxDB as the alert it should cause."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from core.settings import Settings
from devices.catalogue import DEVICE_TYPES
from simulators.clock import SimulatedClock
from simulators.run import SimulationOptions, build_fleet
from simulators.scenario import ScenarioError, load_scenario, shipped
from tests.conftest import RunningIngest
from tests.helpers import Influx, simulate_cli, wait_until

NOW = 1795334400.0  # a fixed "now", so runs can be compared byte for byte


def published(options: SimulationOptions, duration_s: float | None = None) -> list[bytes]:
    start = options.resolved_start(NOW)
    fleet = build_fleet(options, "moclo", start)
    return [
        device.topic.encode() + b" " + payload
        for device, payload, _ in fleet.messages(
            SimulatedClock(start), threading.Event(), duration_s=duration_s or options.duration_s
        )
    ]


def test_the_shipped_scenarios() -> None:
    assert set(shipped()) >= {"dairy_farm", "cardiology_ward", "smart_street", "everything"}


@pytest.mark.parametrize("name", sorted(shipped()))
def test_each_shipped_scenario_runs_and_every_reading_is_valid(name: str) -> None:
    _, options = load_scenario(name, now=NOW)
    lines = published(options, duration_s=3 * 3600)  # the first three hours
    assert lines
    for line in lines:
        topic, payload = line.split(b" ", 1)
        DEVICE_TYPES[topic.split(b"/")[2].decode()].reading.model_validate_json(payload)


def test_everything_has_every_device_type() -> None:
    _, options = load_scenario("everything", now=NOW)
    assert {spec.device_type for spec in options.fleet_specs()} == set(DEVICE_TYPES)


def test_the_same_seed_and_scenario_repeat_byte_for_byte() -> None:
    _, options = load_scenario("smart_street", now=NOW)
    first = published(options, duration_s=2 * 3600)
    assert first == published(options, duration_s=2 * 3600)
    assert first != published(replace(options, seed=options.seed + 1), duration_s=2 * 3600)


def test_a_scripted_fever_shows_in_the_published_readings() -> None:
    _, options = load_scenario("dairy_farm", now=NOW)
    sick_event = next(e for e in options.events if e.kind == "fever")
    sick_at = sick_event.starts_at(options.resolved_start(NOW))
    temps = [
        orjson.loads(line.split(b" ", 1)[1]) for line in published(options) if b"/cow-0007/" in line
    ]
    during = [r["body_temp_c"] for r in temps if sick_at + 3600 <= r["ts"] < sick_at + 6 * 3600]
    before = [r["body_temp_c"] for r in temps if r["ts"] < sick_at]
    assert during and min(during) >= 39.5
    assert before and max(before) < 39.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name = 'x'\nduration = ", "not valid TOML"),
        ("name = 'x'\nduration = '1h'\n", "fleet: Field required"),
        (
            "name = 'x'\nduration = '1h'\ncolour = 'red'\n[[fleet]]\ntenant = 'a'\ntype = "
            "'car'\ncount = 1\n",
            "colour: Extra inputs are not permitted",
        ),
        (
            "name = 'x'\nduration = '1h'\n[[fleet]]\ntenant = 'a'\ntype = 'car'\ncount = 0\n",
            "fleet.0.count",
        ),
        (
            "name = 'x'\nduration = '1h'\n[[fleet]]\ntenant = 'a'\ntype = 'car'\ncount = 1\n"
            "[[event]]\ntenant = 'a'\ndevice = 'car-0001'\nkind = 'fever'\nat = '+1m'\n"
            "duration = '1m'\n",
            "car has no event 'fever'; it has: battery_drain, offline",
        ),
        (
            "name = 'x'\nduration = '1h'\n[[fleet]]\ntenant = 'a'\ntype = 'car'\ncount = 1\n"
            "[[event]]\ntenant = 'a'\ndevice = 'car-0001'\nkind = 'battery_drain'\nat = '25:00'\n"
            "duration = '1m'\n",
            "event time '25:00'",
        ),
    ],
    ids=["syntax", "no-fleet", "unknown-key", "zero-count", "wrong-kind", "bad-time"],
)
def test_a_bad_scenario_says_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises((ScenarioError, ValueError), match=message):
        _, options = load_scenario(str(path), now=NOW)
        published(options)


def test_a_scenario_run_end_to_end_raises_the_scripted_alert(
    settings: Settings, influx: Influx, ingest: RunningIngest, tmp_path: Path
) -> None:
    scenario = tmp_path / "sick_cow.toml"
    scenario.write_text(
        "name = 'one sick cow'\nseed = 5\nduration = '6h'\nspeed = 'burst'\n"
        "[[fleet]]\ntenant = 'farm'\ntype = 'cow_tracker'\ncount = 3\ninterval = '10m'\n"
        "[[event]]\ntenant = 'farm'\ndevice = 'cow-0002'\nkind = 'fever'\nat = '+2h'\n"
        "duration = '3h'\n"
    )
    result = simulate_cli(
        settings,
        "--scenario",
        str(scenario),
    )
    assert result.returncode == 0, result.stderr
    summary = orjson.loads(result.stdout)
    assert summary["readings"] == 3 * 36 and summary["acknowledged"] is True
    wait_until(lambda: influx.count("cow_tracker", "seq") == 3 * 36, what="all readings")
    wait_until(lambda: influx.count("moclo_alerts", "state") == 2, what="raised and resolved")
    rows = influx.query('SELECT * FROM "moclo_alerts"')
    assert [(r["device_id"], r["rule"], r["state"]) for r in rows] == [
        ("cow-0002", "fever", "raised"),
        ("cow-0002", "fever", "resolved"),
    ]
