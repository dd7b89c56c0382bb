"""Simulated devices that obey, behind the real gateway: a real ingest between a person's
request and the device, on a real Mosquitto and InfluxDB. The seed's cases end to end: the
car locks when told, the light goes on by desired state and says so, a car away in a garage
gets its command when it is back, and a device that never answers is marked expired."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from core.settings import Settings
from devices.base import parse_timestamp
from devices.commands import desired_command_id
from devices.topics import telemetry_subscription
from ingest.options import IngestOptions
from simulators.downlink import CommandFaults
from simulators.run import ScriptedEvent
from tests.conftest import RunningIngest
from tests.gateway_helpers import StatusWatch, ask, registry_with
from tests.helpers import Subscriber, log_since, wait_until
from tests.test_obeying import TENANT, _options, running

DEVICES = [
    (TENANT, "car", "car-0001"),
    (TENANT, "light", "light-0001"),
    (TENANT, "smart_meter", "meter-0001"),
]
OPTIONS = IngestOptions(linger_s=0.02)


@pytest.fixture
def acting(settings: Settings) -> Iterator[tuple[Settings, StatusWatch, Subscriber]]:
    """The registry (the devices, and olga, an operator of the home), ingest with its
    gateway, a watch on command-status and one on the devices' readings."""
    registry_with(settings, DEVICES, [("operator", "olga", TENANT)])
    readings = Subscriber(settings.mqtt_url, telemetry_subscription(settings.topic_prefix))
    watch = StatusWatch(settings)
    with RunningIngest(settings, OPTIONS):
        yield settings, watch, readings
    watch.close()
    readings.close()


def command(settings: Settings, device: str, name: str, **fields: Any) -> str:
    """olga asks for a command, as her client would; returns its id."""
    command_id = uuid.uuid4().hex[:12]
    ask(settings, TENANT, "olga", {"id": command_id, "device": device, "name": name, **fields})
    return command_id


def readings_of(readings: Subscriber, device: str, after_ns: int) -> list[dict[str, Any]]:
    found = [orjson.loads(m.payload) for m in list(readings.messages) if f"/{device}/" in m.topic]
    return [r for r in found if r["ts"] * 1e9 > after_ns]


def answered_at(update: dict[str, Any]) -> int:
    """When command-status told of it, in epoch nanoseconds."""
    return parse_timestamp(update["ts"])


def test_the_car_locks_and_the_meter_switches_when_a_person_asks(
    acting: tuple[Settings, StatusWatch, Subscriber],
) -> None:
    settings, watch, readings = acting
    devices = {"car": 1, "light": 1, "smart_meter": 1}
    with running(settings, _options(devices)):
        for name, locked in (("unlock", False), ("lock", True)):
            done = watch.wait_for(command(settings, "car-0001", name), "succeeded")
            after = answered_at(done)
            states = wait_until(
                lambda a=after: len(r := readings_of(readings, "car-0001", a)) >= 3 and r,
                what=f"the car's readings after {name}",
            )
            assert {r["locked"] for r in states} == {locked}
        sauna = {"appliance": "sauna", "mode": "off"}
        refused = watch.wait_for(command(settings, "meter-0001", "switch", args=sauna), "rejected")
        assert "heat-pump" in refused["reason"]  # the device says which appliances it has


def test_a_light_wanted_on_goes_on_and_its_report_confirms_the_desired_state(
    acting: tuple[Settings, StatusWatch, Subscriber],
) -> None:
    settings, watch, readings = acting
    with running(settings, _options({"light": 1})):
        ask(settings, TENANT, "olga", {"device": "light-0001", "state": {"on": True}}, desired=True)
        # version 1: the gateway's first change; the device's report confirms it
        confirmed = watch.wait_for(desired_command_id("light-0001", 1), "succeeded")
        states = wait_until(
            lambda: (
                len(r := readings_of(readings, "light-0001", answered_at(confirmed))) >= 3 and r
            ),
            what="the light's readings",
        )
        assert all(r["on"] and r["power_w"] > 5 for r in states), states
        ask(
            settings, TENANT, "olga", {"device": "light-0001", "state": {"on": False}}, desired=True
        )
        watch.wait_for(desired_command_id("light-0001", 2), "succeeded")


def test_a_car_away_gets_the_command_sent_meanwhile_and_does_it_once(
    acting: tuple[Settings, StatusWatch, Subscriber], mosquitto: Any
) -> None:
    settings, watch, readings = acting
    offset = mosquitto.log_path.stat().st_size
    garage = ScriptedEvent(TENANT, "car-0001", "offline", "+1s", 4.0)
    with running(settings, _options({"car": 1}, events=(garage,))) as simulation:
        log = f"Client {TENANT}.car-0001 disconnected"
        wait_until(lambda: log in log_since(mosquitto.log_path, offset), what=log)
        unlock = command(settings, "car-0001", "unlock")
        watch.wait_for(unlock, "sent")
        done = watch.wait_for(unlock, "succeeded")
        # It may come twice (by its session, and from the gateway answering its commands/get
        # if that comes first): it is done once either way.
        wait_until(lambda: simulation.commands().get("executed") == 1, what="executed once")
        assert watch.statuses(unlock).count("succeeded") == 1
        states = wait_until(
            lambda: len(r := readings_of(readings, "car-0001", answered_at(done))) >= 3 and r,
            what="the car's readings",
        )
        assert not any(r["locked"] for r in states)


def test_a_command_a_device_never_answers_is_marked_expired(
    acting: tuple[Settings, StatusWatch, Subscriber],
) -> None:
    settings, watch, _ = acting
    faults = CommandFaults(ignore=1.0)  # the light never answers
    with running(settings, _options({"light": 1}, command_faults=faults)) as simulation:
        silent = command(settings, "light-0001", "switch", args={"state": "on"}, expires_in_s=1.0)
        watch.wait_for(silent, "sent")
        expired = watch.wait_for(silent, "expired")
        assert expired["reason"]
        # Ignored once, and not done when delivered again (the gateway answering commands/get).
        assert simulation.commands()["ignored"] == 1 and "executed" not in simulation.commands()
