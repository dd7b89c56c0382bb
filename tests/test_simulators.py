"""Simulators: valid, plausible, repeatable readings from one thread for thousands of devices."""

from __future__ import annotations

import statistics
import subprocess
import threading
from pathlib import Path

import orjson
import pytest

from access.credentials import CredentialsError, load_credentials
from core.settings import Settings
from devices.catalogue import DEVICE_TYPES
from moclo.stack import MosquittoServer, free_port
from simulators.catalogue import BEHAVIOURS
from simulators.clock import SimulatedClock
from simulators.fleet import FleetError, parse_fleet
from simulators.run import (
    ScriptedEvent,
    SimulationOptions,
    SimulationResult,
    build_fleet,
    run_simulation,
)
from tests.conftest import RunningIngest
from tests.helpers import Influx, log_since, moclo, simulate_cli, wait_until

DAY = 86_400
START = 1795305600.0  # 2026-11-22T00:00:00Z


def simulate(
    counts: dict[str, int],
    *,
    seed: int = 1,
    interval_s: float | None = 600,
    duration_s: float = DAY,
    incident_every_s: float | None = None,
    events: tuple[ScriptedEvent, ...] = (),
) -> list[tuple[str, dict[str, object]]]:
    options = SimulationOptions(
        devices=counts,
        tenant="farm",
        seed=seed,
        start=START,
        interval_s=interval_s,
        incident_every_s=incident_every_s,
        events=events,
    )
    fleet = build_fleet(options, "moclo", START)
    return [
        (device.topic, orjson.loads(payload))
        for device, payload, _ in fleet.messages(
            SimulatedClock(START), threading.Event(), duration_s=duration_s
        )
    ]


def test_every_simulated_type_is_in_the_catalogue() -> None:
    assert set(BEHAVIOURS) <= set(DEVICE_TYPES)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_simulated_reading_is_valid(seed: int) -> None:
    every_type = {name: 10 for name in BEHAVIOURS}
    for topic, reading in simulate(every_type, seed=seed, incident_every_s=DAY / 2):
        DEVICE_TYPES[topic.split("/")[2]].reading.model_validate(reading)


def test_the_same_seed_gives_the_same_readings_and_another_seed_does_not() -> None:
    fleet = {"cow_tracker": 5, "thermostat": 5}
    assert simulate(fleet, seed=42) == simulate(fleet, seed=42)
    assert simulate(fleet, seed=42) != simulate(fleet, seed=43)


def test_adding_devices_of_another_type_does_not_change_the_cows() -> None:
    alone = [r for t, r in simulate({"cow_tracker": 3}) if "cow_tracker" in t]
    mixed = [r for t, r in simulate({"cow_tracker": 3, "thermostat": 4}) if "cow_tracker" in t]
    assert sorted(alone, key=repr) == sorted(mixed, key=repr)


def test_healthy_cows_stay_around_38_6_and_ruminate_more_at_night() -> None:
    readings = [r for _, r in simulate({"cow_tracker": 30})]
    temps = [float(r["body_temp_c"]) for r in readings]  # type: ignore[arg-type]
    assert 38.4 < statistics.mean(temps) < 38.8
    assert max(temps) < 39.5  # no incidents asked for: no fever
    hour = lambda r: int((float(r["ts"]) - START) // 3600)  # noqa: E731  # type: ignore[arg-type]
    night = [r["rumination_min"] for r in readings if hour(r) in (0, 1, 2, 3)]
    day = [r["rumination_min"] for r in readings if hour(r) in (11, 12, 13, 14)]
    assert statistics.mean(night) > statistics.mean(day)  # type: ignore[type-var]


def test_incidents_give_cows_a_fever_that_passes() -> None:
    readings = simulate({"cow_tracker": 10}, interval_s=60, incident_every_s=DAY / 4)
    by_cow: dict[str, list[float]] = {}
    for topic, r in readings:
        by_cow.setdefault(topic, []).append(float(r["body_temp_c"]))  # type: ignore[arg-type]
    feverish = [temps for temps in by_cow.values() if max(temps) >= 39.5]
    assert feverish, "some cow fell ill"
    recovered = [temps for temps in feverish if min(temps[temps.index(max(temps)) :]) < 39.2]
    assert recovered, "and got better again"


def test_a_thermostat_follows_its_setpoint_and_a_failed_heater_lets_the_room_cool() -> None:
    healthy = simulate({"thermostat": 10}, interval_s=300)
    for _, r in healthy[len(healthy) // 4 :]:  # after the first hours of settling
        # The heater keeps up: never far below the setpoint (above it is the night setback,
        # when the room cools slowly toward the lowered setpoint).
        assert float(r["temp_c"]) > float(r["setpoint_c"]) - 1.5  # type: ignore[arg-type]
    one = [float(r["setpoint_c"]) for t, r in healthy if t.endswith("/thermostat-0001/telemetry")]  # type: ignore[arg-type]
    assert max(one) - min(one) == 2.0, "the schedule lowers the setpoint by 2 °C at night"
    failing = simulate({"thermostat": 10}, interval_s=300, duration_s=3 * DAY, incident_every_s=DAY)
    assert min(float(r["temp_c"]) for _, r in failing) < 10  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    ["cow_tracker", "cow_tracker=x", "toaster=3", "cow_tracker=0", ""],
    ids=["no-count", "bad-count", "unknown-type", "empty-fleet", "nothing"],
)
def test_bad_fleet_descriptions_are_explained(text: str) -> None:
    with pytest.raises(FleetError):
        parse_fleet(text)


def test_one_thread_drives_thousands_of_devices(settings: Settings) -> None:
    threads_seen: list[int] = []

    def progress(_: SimulationResult) -> None:
        threads_seen.append(threading.active_count())

    before = threading.active_count()
    result = run_simulation(
        settings.mqtt,
        settings.topic_prefix,
        SimulationOptions(
            devices={"cow_tracker": 4000, "thermostat": 1000},
            interval_s=60,
            duration_s=60,
            burst=True,
            qos=0,
        ),
        progress=progress,
        progress_every_s=0,
    )
    assert result.devices == 5000 and result.readings == 5000 and result.acknowledged
    assert max(threads_seen) <= before + 1  # paho's network thread, nothing per device


def test_moclo_simulate_command_publishes_exactly_what_it_says(
    settings: Settings, influx: Influx, ingest: RunningIngest
) -> None:
    result = moclo(
        "simulate",
        "--devices",
        "cow_tracker=50,thermostat=10",
        "--tenant",
        "demo-farm",
        "--interval",
        "1s",
        "--duration",
        "30s",
        "--burst",
        "--seed",
        "5",
        "--mqtt-url",
        settings.mqtt_url,
        "--topic-prefix",
        settings.topic_prefix,
    )
    assert result.returncode == 0, result.stderr
    assert "published 1800 readings in 1800 messages from 60 devices" in result.stdout
    assert "seed 5" in result.stderr
    wait_until(
        lambda: (
            influx.count("cow_tracker", "seq") == 1500 and influx.count("thermostat", "seq") == 300
        ),
        what="1800 readings stored",
    )


def test_a_cows_default_interval_makes_about_200_mb_a_year() -> None:
    factory = BEHAVIOURS["cow_tracker"]
    readings = simulate({"cow_tracker": 20}, interval_s=None, duration_s=6 * 3600)
    mqtt_framing = 8  # fixed header, topic length, packet id, properties length (MQTT 5)
    wire = statistics.mean(len(t) + len(orjson.dumps(r)) + mqtt_framing for t, r in readings)
    per_year = wire * 365 * 86_400 / factory.default_interval_s
    assert factory.default_interval_s == 30
    assert 180e6 <= per_year <= 220e6, per_year


def test_the_wire_contract_lists_every_device_type_with_its_fields(repo_root) -> None:  # type: ignore[no-untyped-def]
    readme = (repo_root / "docs" / "wire-contract.md").read_text()
    for name, device in DEVICE_TYPES.items():
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{name}` | `"))
        assert all(f"`{field}`" in row for field in device.reading.measurement_fields), name


def test_gateway_mode_spreads_the_fleet_over_several_connections(
    settings: Settings, mosquitto: MosquittoServer, influx: Influx, ingest: RunningIngest
) -> None:
    log_before = mosquitto.log_path.stat().st_size
    result = simulate_cli(
        settings,
        "--devices",
        "cow_tracker=30",
        "--interval",
        "1m",
        "--duration",
        "10m",
        "--burst",
        "--connections",
        "3",
    )
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout)["readings"] == 300
    wait_until(lambda: influx.count("cow_tracker", "seq") == 300, what="300 readings")
    connected = [
        line
        for line in log_since(mosquitto.log_path, log_before).splitlines()
        if "New client connected" in line and " as moclo-sim-" in line
    ]
    assert len(connected) == 3


def test_one_connection_per_device_with_the_device_as_client_id(
    settings: Settings, mosquitto: MosquittoServer, influx: Influx, ingest: RunningIngest
) -> None:
    log_before = mosquitto.log_path.stat().st_size
    result = simulate_cli(
        settings,
        "--devices",
        "cow_tracker=20,pacemaker=5",
        "--tenant",
        "farm",
        "--interval",
        "1m",
        "--duration",
        "10m",
        "--burst",
        "--connections",
        "device",
    )
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout)["readings"] == 250
    wait_until(
        lambda: influx.count("cow_tracker", "seq") + influx.count("pacemaker", "seq") == 250,
        what="250 readings",
    )
    clients = {
        line.split(" as ")[1].split(" ")[0]
        for line in log_since(mosquitto.log_path, log_before).splitlines()
        if "New client connected" in line
    }
    devices = {c for c in clients if c.startswith("farm.")}
    assert len(devices) == 25
    assert {"farm.cow-0001", "farm.cow-0020", "farm.pacemaker-0005"} <= devices


def test_each_device_logs_in_with_its_own_credentials(tmp_path: Path) -> None:
    # A broker that refuses anonymous clients and knows three devices' passwords.
    passwords = tmp_path / "passwords"
    for n in (1, 2, 3):
        subprocess.run(
            [
                "mosquitto_passwd",
                *(["-c"] if n == 1 else []),
                "-b",
                str(passwords),
                f"collar-{n}",
                f"secret-{n}",
            ],
            check=True,
            capture_output=True,
        )
    broker = MosquittoServer(tmp_path / "mq", free_port(), password_file=passwords)
    broker.start()
    try:
        rows = ["tenant,device_id,username,password"] + [
            f"farm,cow-{n:04d},collar-{n},secret-{n}" for n in (1, 2, 3)
        ]
        good = tmp_path / "devices.csv"
        good.write_text("\n".join(rows) + "\n")
        bad = tmp_path / "wrong.csv"
        bad.write_text("\n".join([*rows[:-1], "farm,cow-0003,collar-3,guess"]) + "\n")

        def simulate(credentials: Path) -> subprocess.CompletedProcess[str]:
            return moclo(
                "simulate",
                "--devices",
                "cow_tracker=3",
                "--tenant",
                "farm",
                "--interval",
                "1m",
                "--duration",
                "5m",
                "--burst",
                "--connections",
                "device",
                "--credentials",
                str(credentials),
                "--json",
                "--mqtt-url",
                broker.url,
            )

        ok = simulate(good)
        assert ok.returncode == 0, ok.stderr
        assert orjson.loads(ok.stdout)["acknowledged"] is True
        refused = simulate(bad)
        assert refused.returncode == 1
        assert "could not connect" in refused.stderr and "guess" not in refused.stderr
        log = broker.log_path.read_text()
        # Each device logged in with its own login; the broker names the connection by it
        # (use_username_as_clientid: no login can take another's client id).
        for n in (1, 2, 3):
            assert f"as collar-{n} (p5, c1, k60, u'collar-{n}')" in log
    finally:
        broker.stop()


def test_a_credentials_file_without_its_header_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "devices.csv"
    path.write_text("farm,cow-0001,collar-1,secret\n")
    with pytest.raises(CredentialsError, match="first line must be"):
        load_credentials(path)
