"""A scripted `offline` episode: any device can go dark for a while and come back, so the
absence ("deadman") rule can be tested end to end. While offline a device publishes nothing;
afterwards it carries on without a backlog, its `seq` continuing where it stopped."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from core.settings import Settings
from simulators.catalogue import BEHAVIOURS
from simulators.clock import SimulatedClock
from simulators.faults import FaultRates
from simulators.fleet import OFFLINE, episode_kinds
from simulators.run import ScriptedEvent, SimulationOptions, build_fleet
from simulators.scenario import ScenarioError, load_scenario
from tests.helpers import moclo, simulate_cli

HOUR = 3600.0
START = 1795305600.0 - 3600  # 2026-11-22 00:00 local (UTC+1)
NOW = START + 86_400  # only used for the default start, which these scenarios set themselves

SCENARIO = """
name = "a thermostat goes dark"
seed = 11
duration = "8h"
speed = "burst"
start = "2026-11-22T00:00:00+01:00"

[[fleet]]
tenant = "home"
type = "thermostat"
count = 2
"""
OFFLINE_EVENT = """
[[event]]
tenant = "home"
device = "thermostat-0001"
kind = "offline"
at = "02:00"
duration = "3h"
"""
DARK_FROM, DARK_UNTIL = START + 2 * HOUR, START + 5 * HOUR


def scenario(tmp_path: Path, text: str, name: str = "scenario") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def run(options: SimulationOptions) -> list[tuple[str, float, bytes, int]]:
    """(device id, simulated time it was sent, payload, readings in it), in the order sent."""
    start = options.resolved_start(NOW)
    fleet = build_fleet(options, "moclo", start)
    clock = SimulatedClock(start)
    return [
        (device.device_id, clock.now(), payload, readings)
        for device, payload, readings in fleet.messages(
            clock,
            threading.Event(),
            duration_s=options.duration_s,
            readings_per_message=options.readings_per_message,
        )
    ]


def readings_of(sent: list[tuple[str, float, bytes, int]], device_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for device, _, payload, _ in sent:
        if device == device_id:
            document = orjson.loads(payload)
            out.extend(document if isinstance(document, list) else [document])
    return out


def test_a_dark_thermostat_sends_nothing_in_its_window_and_resumes_after(tmp_path: Path) -> None:
    _, dark = load_scenario(str(scenario(tmp_path, SCENARIO + OFFLINE_EVENT)), now=NOW)
    readings = readings_of(run(dark), "thermostat-0001")
    assert [r for r in readings if DARK_FROM <= r["ts"] < DARK_UNTIL] == []
    before = [r for r in readings if r["ts"] < DARK_FROM]
    after = [r for r in readings if r["ts"] >= DARK_UNTIL]
    assert before and before[-1]["ts"] >= DARK_FROM - 60, "reports up to the outage"
    assert after and after[0]["ts"] < DARK_UNTIL + 60, "back at its interval, no later"
    # The pinned choice: seq counts readings made, so it continues without a gap.
    assert [r["seq"] for r in readings] == list(range(len(readings)))
    assert after[0]["seq"] == before[-1]["seq"] + 1


def test_outside_its_window_only_the_dark_devices_seq_changes(tmp_path: Path) -> None:
    _, plain = load_scenario(str(scenario(tmp_path, SCENARIO, "plain")), now=NOW)
    _, dark = load_scenario(str(scenario(tmp_path, SCENARIO + OFFLINE_EVENT, "dark")), now=NOW)
    plain_sent, dark_sent = run(plain), run(dark)
    # The other thermostat is untouched, byte for byte.
    assert readings_of(dark_sent, "thermostat-0002") == readings_of(plain_sent, "thermostat-0002")
    # The dark one: the same readings outside the window (the room went on while the device
    # was dark), with seq lower by the readings the outage cost.
    expected = readings_of(plain_sent, "thermostat-0001")
    missed = sum(DARK_FROM <= r["ts"] < DARK_UNTIL for r in expected)
    assert missed == 180  # 3 h at the thermostat's 60 s
    shifted = [
        {**r, "seq": r["seq"] - (missed if r["ts"] >= DARK_UNTIL else 0)}
        for r in expected
        if not DARK_FROM <= r["ts"] < DARK_UNTIL
    ]
    assert readings_of(dark_sent, "thermostat-0001") == shifted


def test_the_same_offline_scenario_repeats_byte_for_byte(tmp_path: Path) -> None:
    _, dark = load_scenario(str(scenario(tmp_path, SCENARIO + OFFLINE_EVENT)), now=NOW)
    first = run(dark)
    assert first == run(dark)
    assert first != run(replace(dark, seed=dark.seed + 1))


def test_the_fleet_counts_the_readings_an_outage_cost(tmp_path: Path) -> None:
    _, plain = load_scenario(str(scenario(tmp_path, SCENARIO, "plain")), now=NOW)
    _, dark = load_scenario(str(scenario(tmp_path, SCENARIO + OFFLINE_EVENT, "dark")), now=NOW)
    fleets = []
    for options in (plain, dark):
        fleet = build_fleet(options, "moclo", options.resolved_start(NOW))
        fleets.append(fleet)
        clock = SimulatedClock(fleet.start)
        for _ in fleet.messages(clock, threading.Event(), duration_s=options.duration_s):
            pass
    plain_fleet, dark_fleet = fleets
    assert [d.offline_skipped for d in dark_fleet.devices] == [180, 0]
    assert [d.offline_skipped for d in plain_fleet.devices] == [0, 0]
    assert sum(d.seq for d in dark_fleet.devices) + 180 == sum(d.seq for d in plain_fleet.devices)


def test_the_summary_reconciles_what_was_sent_with_what_the_outage_cost(
    settings: Settings, tmp_path: Path
) -> None:
    plain = simulate_cli(settings, "--scenario", str(scenario(tmp_path, SCENARIO, "plain")))
    dark_path = scenario(tmp_path, SCENARIO + OFFLINE_EVENT, "dark")
    dark = simulate_cli(settings, "--scenario", str(dark_path))
    assert plain.returncode == 0, plain.stderr
    assert dark.returncode == 0, dark.stderr
    plain_summary, dark_summary = orjson.loads(plain.stdout), orjson.loads(dark.stdout)
    assert plain_summary["offline_skipped"] == 0
    assert dark_summary["offline_skipped"] == 180
    assert dark_summary["readings"] == dark_summary["produced"] == 2 * 480 - 180
    assert dark_summary["readings"] + dark_summary["offline_skipped"] == plain_summary["readings"]
    # And for people, a line of its own.
    text = moclo(
        "simulate",
        "--scenario",
        str(dark_path),
        "--mqtt-url",
        settings.mqtt_url,
        "--topic-prefix",
        settings.topic_prefix,
    )
    assert text.returncode == 0, text.stderr
    assert "not made while offline (scripted): 180 readings" in text.stdout


@pytest.mark.parametrize("device_type", sorted(BEHAVIOURS))
def test_every_type_can_go_offline(device_type: str) -> None:
    probe = build_fleet(SimulationOptions(devices={device_type: 1}, tenant="t"), "m", START)
    device_id = probe.devices[0].device_id
    assert episode_kinds(device_type)[-1] == OFFLINE
    # Dark for the first day and a half; a blood-pressure meter needs days to say anything.
    event = ScriptedEvent("t", device_id, OFFLINE, START, 1.5 * 86_400)
    options = SimulationOptions(
        devices={device_type: 1}, tenant="t", events=(event,), duration_s=3 * 86_400, start=START
    )
    sent = run(options)
    assert all(at >= START + 1.5 * 86_400 for _, at, _, _ in sent)
    readings = readings_of(sent, device_id)
    assert readings, "it came back"
    assert [r["seq"] for r in readings] == list(range(len(readings)))


@pytest.mark.parametrize(
    "options",
    [
        SimulationOptions(readings_per_message=7),
        SimulationOptions(faults=FaultRates(silence=0.05, late=0.05, out_of_order=0.05)),
    ],
    ids=["batched", "faulty"],
)
def test_what_a_device_held_waits_until_it_is_back(options: SimulationOptions) -> None:
    event = ScriptedEvent("t", "thermostat-0001", OFFLINE, DARK_FROM, DARK_UNTIL - DARK_FROM)
    options = replace(
        options,
        devices={"thermostat": 1},
        tenant="t",
        events=(event,),
        duration_s=8 * HOUR,
        start=START,
    )
    start = options.resolved_start(NOW)
    fleet = build_fleet(options, "moclo", start)
    clock = SimulatedClock(start)
    sent_at = []
    for _ in fleet.messages(
        clock,
        threading.Event(),
        duration_s=options.duration_s,
        readings_per_message=options.readings_per_message,
    ):
        sent_at.append(clock.now())
    assert [t for t in sent_at if DARK_FROM <= t < DARK_UNTIL] == []
    assert any(t >= DARK_UNTIL for t in sent_at)
    assert fleet.devices[0].offline_skipped == 180


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (
            "[[event]]\ntenant = 'home'\ndevice = 'thermostat-0099'\nkind = 'offline'\n"
            "at = '02:00'\nduration = '3h'\n",
            "no device home/thermostat-0099 in the fleet",
        ),
        (
            "[[event]]\ntenant = 'elsewhere'\ndevice = 'thermostat-0001'\nkind = 'offline'\n"
            "at = '02:00'\nduration = '3h'\n",
            "no device elsewhere/thermostat-0001 in the fleet",
        ),
        (
            "[[event]]\ntenant = 'home'\ndevice = 'thermostat-0001'\nkind = 'offlne'\n"
            "at = '02:00'\nduration = '3h'\n",
            "thermostat has no event 'offlne'; it has: heater_failure, offline",
        ),
    ],
    ids=["unknown-device", "unknown-tenant", "misspelt-kind"],
)
def test_a_bad_offline_event_says_what_is_wrong(tmp_path: Path, event: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        load_scenario(str(scenario(tmp_path, SCENARIO + event)), now=NOW)


@pytest.mark.parametrize("device_type", ["thermostat", "fridge"])
@pytest.mark.parametrize("interval_s", [60.0, 3 * HOUR], ids=["1m", "3h"])
def test_a_long_gap_between_readings_keeps_a_room_and_a_fridge_plausible(
    device_type: str, interval_s: float
) -> None:
    """A model that integrates over the time since its last reading does so in steps, so a
    heater or a compressor does not run on for hours past its setting."""
    options = SimulationOptions(
        devices={device_type: 20}, tenant="t", interval_s=interval_s, duration_s=2 * 86_400
    )
    temps = [
        float(orjson.loads(payload)["temp_c"])
        for _, _, payload, _ in run(replace(options, start=START))
    ]
    low, high = (14.0, 24.0) if device_type == "thermostat" else (1.5, 6.5)
    assert low < min(temps) and max(temps) < high
