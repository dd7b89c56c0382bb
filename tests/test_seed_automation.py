"""The MOCLO article's automation end to end, on real Mosquitto and InfluxDB with a real ingest
and simulated devices that obey: the simulated car drives home from work, and the house light
switches on once, when the car crosses 1 km of home (the `near_home` geofence of the rules
file, the `porch_light` automation of the automations file)."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import orjson

from core.settings import Settings
from ingest.alerts.place_conditions import haversine_m
from ingest.options import IngestOptions
from simulators.car import CarBehaviour
from simulators.run import SimulationOptions
from tests.conftest import RunningIngest
from tests.gateway_helpers import StatusWatch, registry_with
from tests.helpers import Influx, Subscriber, wait_until
from tests.test_obeying import running

SEED = 7
TENANT = "home"
SPEED = 100.0  # simulated seconds per second: the drive home takes a few seconds

AUTOMATIONS = """
[[automation]]
name = "porch_light"
tenant = "home"
device_type = "car"
rule = "near_home"
device = "car-0001"

[automation.command]
device_type = "light"
device = "light-0001"
name = "switch"
args = { state = "on" }
"""


def the_drive_home(day: float) -> tuple[tuple[float, float], float, float]:
    """(home, when the car is 3 km from home on its way back, when it crosses 1 km): read off
    the simulated car itself, seeded as the fleet seeds it (by its identity)."""
    car = CarBehaviour(random.Random(f"{SEED}:{TENANT}:car-0001"), day, incident_every_s=None)
    night = car.fields(day + 3 * 3600)
    home = (night["lat"], night["lon"])
    approach = crossing = None
    for t in range(int(day) + 12 * 3600, int(day) + 24 * 3600, 5):
        fields = car.fields(t)
        distance = haversine_m(fields["lat"], fields["lon"], *home)
        if approach is None and distance <= 3000 and fields["speed_kmh"] > 0:
            approach = float(t)
        if approach is not None and distance <= 1000:
            crossing = float(t)
            break
    assert approach is not None and crossing is not None, "the simulated car never came home"
    return home, approach, crossing


def test_the_simulated_car_drives_home_and_the_light_switches_on_once(
    settings: Settings, tmp_path: Path, influx: Influx
) -> None:
    day = (time.time() // 86400 - 2) * 86400  # midnight UTC two days ago: all in the past
    home, approach, crossing = the_drive_home(day)
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rule]]\ndevice_type = "car"\ntenant = "home"\ndevice = "car-0001"\n'
        'name = "near_home"\nkind = "geofence"\nwhere = "inside"\n'
        f"center = [{home[0]}, {home[1]}]\nradius_m = 1000\n"
        'severity = "info"\nmessage = "near home"\n'
    )
    automations = tmp_path / "automations.toml"
    automations.write_text(AUTOMATIONS)
    registry_with(settings, [(TENANT, "car", "car-0001"), (TENANT, "light", "light-0001")], [])
    settings = settings.model_copy(
        update={"rules_file": str(rules), "automations_file": str(automations)}
    )
    start = approach - 60
    # From a minute before the approach to ten minutes after the crossing: the car parks at
    # home, inside the geofence, and must not switch the light on again.
    options = SimulationOptions(
        devices={"car": 1, "light": 1}, tenant=TENANT, seed=SEED, start=start,
        duration_s=crossing - start + 600, speed=SPEED, per_device_connections=True,
        obey=True,
    )  # fmt: skip
    light = Subscriber(settings.mqtt_url, f"{settings.topic_prefix}/{TENANT}/light/+/telemetry")
    watch = StatusWatch(settings)
    try:
        with RunningIngest(settings, IngestOptions(linger_s=0.02)), running(settings, options):
            done = wait_until(
                lambda: [u for u in watch.updates() if u["status"] == "succeeded"],
                timeout_s=60,
                what="the light's answer to the automation's command",
            )
            [update] = done
            assert update["device"] == "light-0001" and update["name"] == "switch"
            assert update["issuer"] == "automation porch_light"
            # The light says it is on in its readings once it obeyed.
            wait_until(
                lambda: any(_reading(m)["on"] for m in list(light.messages)),
                timeout_s=30,
                what="a light reading with on: true",
            )
            # The geofence's alert was raised by the first reading within 1 km.
            raised = wait_until(
                lambda: influx.query(
                    'SELECT "state" FROM "moclo_alerts" WHERE "rule" = \'near_home\''
                ),
                what="the near_home alert stored",
            )
            assert [r["state"] for r in raised] == ["raised"]
            assert abs(raised[0]["time"] / 1e9 - crossing) <= 10  # the car reads every 5 s
            # The run ends with the car parked at home for ten minutes: still one command.
            wait_until(
                lambda: _simulated_until(light) >= crossing + 540,
                timeout_s=60,
                what="ten simulated minutes at home",
            )
        commands = [u for u in watch.updates() if u["name"] == "switch"]
        assert {u["id"] for u in commands} == {update["id"]}
        assert [u["status"] for u in commands] == ["sent", "succeeded"]
        lights_before = [r for r in map(_reading, light.messages) if r["ts"] < crossing]
        assert lights_before and not any(r["on"] for r in lights_before)  # 15:54 UTC: off
    finally:
        watch.close()
        light.close()


def _reading(message: Any) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(message.payload)
    return document


def _simulated_until(light: Subscriber) -> float:
    return max((_reading(m)["ts"] for m in list(light.messages)), default=0.0)
