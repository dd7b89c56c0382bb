"""Commands, desired state, automations and people's acknowledgements on the distributed engine
(issue 19, item 5): the control queue beside the partitions (ingest/control.py), on the
session's 3-node cluster.

Workers are processes of their own (tests/engine_worker.py) at nodes r2 and r3; devices, serve
and the people's clients connect at r1, so everything crosses the cluster. serve runs unchanged,
pointed at r1 with a serve login and MQTT 3.1.1.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import Settings
from devices.catalogue import DEVICE_TYPES
from moclo.stack import InfluxServer
from tests.conftest import Engine, RunningServe
from tests.gateway_helpers import ScriptedDevice
from tests.helpers import wait_until
from tests.test_engine_ingest import Fleet

LIGHT_AUTOMATION = """
[[automation]]
name = "fever_light"
tenant = "{tenant}"
device_type = "cow_tracker"
rule = "fever"
device = "cow-0"

[automation.command]
device_type = "light"
device = "light-1"
name = "switch"
args = {{ state = "on" }}
"""


@pytest.fixture
def fleet(engine: Engine, influxdb: InfluxServer, tmp_path: Path) -> Iterator[Fleet]:
    """Workers that run the gateway: the registry is the cluster's, so they know the devices."""
    fleet = Fleet(engine, influxdb, tmp_path)
    fleet.settings["MOCLO_REGISTRY"] = str(engine.registry.path)
    try:
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture
def serve(fleet: Fleet, tmp_path: Path) -> Iterator[RunningServe]:
    """`moclo serve` at r1, as a serve login of the cluster's registry (MQTT 3.1.1)."""
    login = fleet.engine.registry.add_account("serve", f"serve-{uuid.uuid4().hex[:8]}")
    settings = Settings(
        mqtt_url=fleet.engine.cluster.nodes[0].mqtt_url,
        mqtt_username=login.username,
        mqtt_password=login.password,
        mqtt_protocol="3.1.1",
        influx_url=fleet.influxdb.url,
        influx_db=fleet.database,
        topic_prefix=fleet.engine.prefix,
        registry=str(fleet.engine.registry.path),
        spool_dir=str(tmp_path / "serve-spool"),
        serve_listen="127.0.0.1:0",
        http_listen="off",
        unregistered="off",
    )
    with RunningServe(settings) as running:
        yield running


def device(fleet: Fleet, device_type: str, device_id: str, **kwargs: Any) -> ScriptedDevice:
    """A scripted device (MQTT 3.1.1, persistent session) registered and logged in at r1."""
    login = fleet.engine.registry.add_device(fleet.tenant, device_type, device_id)
    at_r1 = Settings(mqtt_url=fleet.engine.cluster.nodes[0].mqtt_url,
                     topic_prefix=fleet.engine.prefix)  # fmt: skip
    scripted = ScriptedDevice(at_r1, fleet.tenant, device_type, device_id,
                              login=(login.username, login.password), **kwargs)  # fmt: skip
    return scripted.connect()


def send_reading(scripted: ScriptedDevice) -> None:
    """One reading of the device's type, so the dashboard knows it (on its own connection: a
    second one with its client id would take the first's place)."""
    reading = {**DEVICE_TYPES[scripted.address[1]].example, "ts": time.time(), "seq": 1}
    scripted.publish("telemetry", reading)


def api(serve: RunningServe, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=serve.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def test_serves_api_commands_a_device_at_another_node_and_sets_its_desired_state(
    fleet: Fleet, serve: RunningServe
) -> None:
    car = device(fleet, "car", "car-1")
    try:
        fleet.start_worker(0, 2)
        fleet.start_worker(1, 2)
        send_reading(car)
        wait_until(lambda: fleet.influx.count("car", "seq", f"\"tenant\" = '{fleet.tenant}'"),
                   what="the car's reading stored")  # fmt: skip
        with api(serve, serve.token([fleet.tenant], role="operator", name="ana")) as client:
            path = f"/api/devices/{fleet.tenant}/car-1"
            done = client.post(f"{path}/commands", json={"name": "lock"}, params={"wait": 20})
            assert done.status_code == 200, done.text
            assert (done.json()["status"], done.json()["issuer"]) == ("succeeded", "ana")
            assert len(car.executed) == 1
            asked = client.put(f"{path}/desired", json={"state": {"locked": True}},
                               params={"wait": 2})  # fmt: skip
            assert asked.status_code == 202, asked.text
            document = wait_until(lambda: car.desired, what="the desired document")[-1]
            assert document["state"] == {"locked": True}
            car.report(document["version"], {"locked": True})
            closed = wait_until(
                lambda: (v := client.get(f"{path}/desired").json())["confirmed_version"] and v,
                what="the report stored",
            )
            assert closed["differences"] == {}, closed
            assert closed["reported"]["state"] == {"locked": True}, closed
    finally:
        car.disconnect()
    # One worker held the control queue, and it alone ran the gateway.
    owners = [i for i in (0, 1) if "control queue taken over" in fleet.log_text(i)]
    assert len(owners) == 1, [fleet.log_text(i) for i in (0, 1)]
