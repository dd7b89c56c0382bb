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
import orjson
import pika
import pika.exceptions
import pytest

from access.registry import Credentials
from core.settings import Settings
from devices.catalogue import DEVICE_TYPES
from devices.topics import (
    COMMAND_RESULTS,
    acknowledgement_topic,
    alert_state_topic,
    telemetry_topic,
)
from ingest.engine_wiring import control_bindings
from ingest.partition_plan import FORWARDED_TOPIC, PARTITION_PREFIX, amqp_topic, forwarded_topic
from moclo.stack import InfluxServer
from tests.conftest import Engine, RunningServe
from tests.gateway_helpers import ScriptedDevice
from tests.helpers import wait_until
from tests.test_broker_access import Peer
from tests.test_engine_cluster import V311
from tests.test_engine_ingest import COW, PARTITIONS, TEMPERATURES, AlertWatch, Fleet

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


def start_two_workers(fleet: Fleet) -> None:
    """Workers 0/2 and 1/2, balanced: worker 0, first in front everywhere, has stepped back
    from worker 1's partitions (else a device's alert could move from one to the other)."""
    fleet.start_worker(0, 2)
    fleet.start_worker(1, 2)
    wait_until(
        lambda: fleet.log_text(0).count("stepped back from partition") == PARTITIONS // 2,
        timeout_s=15,
        what="worker 0 to step back from worker 1's partitions",
    )


def start_with_a_known_car(fleet: Fleet, car: ScriptedDevice) -> None:
    """Two workers, and a reading of the car stored (so the dashboard knows it)."""
    start_two_workers(fleet)
    send_reading(car)
    wait_until(lambda: fleet.influx.count("car", "seq", f"\"tenant\" = '{fleet.tenant}'"),
               what="the car's reading stored")  # fmt: skip


def operator_token(serve: RunningServe, fleet: Fleet) -> tuple[str, str]:
    """(name, token) of a new operator of the fleet's tenant (names are unique in the
    session's registry)."""
    name = f"ana-{uuid.uuid4().hex[:6]}"
    return name, serve.token([fleet.tenant], role="operator", name=name)


def api(serve: RunningServe, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=serve.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def test_serves_api_commands_a_device_at_another_node_and_sets_its_desired_state(
    fleet: Fleet, serve: RunningServe
) -> None:
    car = device(fleet, "car", "car-1")
    try:
        start_with_a_known_car(fleet, car)
        name, token = operator_token(serve, fleet)
        with api(serve, token) as client:
            path = f"/api/devices/{fleet.tenant}/car-1"
            done = client.post(f"{path}/commands", json={"name": "lock"}, params={"wait": 20})
            assert done.status_code == 200, done.text
            assert (done.json()["status"], done.json()["issuer"]) == ("succeeded", name)
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
    owners = [i for i in (0, 1) if "holding the control queue" in fleet.log_text(i)]
    assert len(owners) == 1, [fleet.log_text(i) for i in (0, 1)]


def raise_fevers(fleet: Fleet, watch: AlertWatch, devices: int) -> dict[str, str]:
    """Every device's fever raised (five readings: two normal, three hot) and stored; their
    alert ids by device."""
    fleet.publish(range(5), TEMPERATURES)
    wait_until(lambda: len(watch.raised_ids()) == devices, what="every fever raised")
    ids = {device: next(iter(found)) for device, found in watch.raised_ids().items()}
    wait_until(
        lambda: len(fleet.influx.query(
            f'SELECT "state" FROM "moclo_alerts" WHERE "tenant" = \'{fleet.tenant}\''
        )) >= devices,
        what="the fevers stored",
    )  # fmt: skip
    return ids


def acknowledged(watch: AlertWatch, alert_id: str) -> list[dict[str, object]]:
    return [c for c in watch.changes() if c["id"] == alert_id and c["state"] == "acknowledged"]


def sent_on(fleet: Fleet) -> int:
    """How many acknowledgements the workers' logs say they sent on to partitions."""
    marker = " acknowledgements sent on"
    return sum(
        int(line.split(marker)[0].rsplit(" ", 1)[1])
        for i in fleet.workers
        for line in fleet.log_text(i).splitlines()
        if marker in line
    )


def judged_by(fleet: Fleet, mark: str, alert_id: str) -> list[int]:
    """The workers whose log notifier logged the change `mark` (ALERT, ACK) of `alert_id`."""
    return [
        i
        for i in fleet.workers
        if any(f" {mark} " in line and f"(id {alert_id})" in line
               for line in fleet.log_text(i).splitlines())
    ]  # fmt: skip


def retained_state(fleet: Fleet, worker: int, device_id: str) -> dict[str, object]:
    """The retained alert-state of the device's fever at the node of the worker that judged
    it (RabbitMQ keeps a retained message at the node it was published at)."""
    login = fleet.engine.registry.add_account("serve", f"serve-{uuid.uuid4().hex[:8]}")
    node = fleet.engine.cluster.nodes[(worker + 1) % len(fleet.engine.cluster.nodes)]
    peer = Peer(node.ports.mqtt, "retained", (login.username, login.password),
                protocol=V311, client_id=login.username)  # fmt: skip
    try:
        assert peer.subscribe(
            alert_state_topic(fleet.engine.prefix, fleet.tenant, device_id, "fever")
        ) == [1]
        _, payload = wait_until(lambda: list(peer.messages), what="the retained state")[0]
        state: dict[str, object] = orjson.loads(payload)
        return state
    finally:
        peer.close()


def test_acknowledgements_reach_the_worker_owning_the_device_once_and_unknown_ids_are_refused(
    fleet: Fleet, serve: RunningServe
) -> None:
    fleet.add_devices(2)
    operator = fleet.engine.registry.add_account(
        "operator", f"op-{uuid.uuid4().hex[:6]}", tenant=fleet.tenant
    )
    watch = AlertWatch(fleet.engine, fleet.tenant)
    try:
        start_two_workers(fleet)
        ids = raise_fevers(fleet, watch, 2)
        # Through serve's API (unchanged), for the person its token names.
        name, token = operator_token(serve, fleet)
        with api(serve, token) as client:
            answer = client.post(f"/api/alerts/{ids['cow-0']}/ack", json={"note": "on it"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["acknowledged_by"] == name, answer.json()
        # Over MQTT by an operator, at r1 (its own topic says who).
        peer = Peer(fleet.engine.cluster.nodes[0].ports.mqtt, "operator",
                    (operator.username, operator.password), protocol=V311,
                    client_id=operator.username)  # fmt: skip
        try:
            topic = acknowledgement_topic(fleet.engine.prefix, fleet.tenant, operator.username)
            assert peer.publish(topic, orjson.dumps({"id": ids["cow-1"]})) == 0
            unknown = orjson.dumps({"id": "0123456789ab"})
            assert peer.publish(topic, unknown) == 0
        finally:
            peer.close()
        # Serve saw its own at r1; the watch there sees both.
        wait_until(lambda: all(acknowledged(watch, i) for i in ids.values()),
                   what="both acknowledgements taken")  # fmt: skip
        refused = wait_until(
            lambda: fleet.influx.query(
                'SELECT "error", "payload" FROM "moclo_rejected" '
                f"WHERE \"reason\" = 'bad_ack' AND \"tenant\" = '{fleet.tenant}'"
            ),
            what="the unknown id refused",
        )
        # Stopping the workers delivers nothing more: what is counted below is all there is.
        fleet.stop()
    finally:
        watch.peer.close()
    # Stored (the workers stored all they had before they stopped): each episode's newest
    # change is its acknowledgement.
    stored = {  # the newest change of each episode (rows come oldest first)
        row["alert_id"]: row
        for row in fleet.influx.query(
            'SELECT "state", "alert_id", "acknowledged_by" FROM "moclo_alerts" '
            f"WHERE \"tenant\" = '{fleet.tenant}'"
        )
    }
    assert [row["error"] for row in refused] == ["no open alert '0123456789ab' for tenant "
                                                 f"'{fleet.tenant}'"], refused  # fmt: skip
    assert {device: len(acknowledged(watch, i)) for device, i in ids.items()} == {
        "cow-0": 1, "cow-1": 1
    }, watch.changes()  # fmt: skip
    assert acknowledged(watch, ids["cow-0"])[0]["acknowledged_by"] == name
    assert acknowledged(watch, ids["cow-1"])[0]["acknowledged_by"] == operator.username
    # Both sent on by the control queue's owner to the partitions, none taken by its own engine.
    assert sent_on(fleet) == 2, [fleet.log_text(i) for i in fleet.workers]
    for device, alert_id in ids.items():
        assert stored[alert_id]["state"] == "acknowledged", stored
        # Taken by the worker that judges the device, whichever holds the control queue.
        [judge] = judged_by(fleet, "ALERT", alert_id)
        assert judged_by(fleet, "ACK  ", alert_id) == [judge]
        retained = retained_state(fleet, judge, device)
        assert (retained["id"], retained["state"]) == (alert_id, "acknowledged"), retained


def command_events(fleet: Fleet, command_id: str) -> list[str]:
    """The statuses recorded in moclo_commands for `command_id`, oldest first."""
    rows = fleet.influx.query(
        f'SELECT "status", "id" FROM "moclo_commands" WHERE "tenant" = \'{fleet.tenant}\''
    )
    return [str(row["status"]) for row in rows if row["id"] == command_id]


def test_an_automation_on_one_devices_alert_commands_another_once(
    fleet: Fleet, tmp_path: Path
) -> None:
    fleet.add_devices(2)
    automations = tmp_path / "automations.toml"
    automations.write_text(LIGHT_AUTOMATION.format(tenant=fleet.tenant))
    fleet.settings["MOCLO_AUTOMATIONS_FILE"] = str(automations)
    light = device(fleet, "light", "light-1")
    watch = AlertWatch(fleet.engine, fleet.tenant)
    try:
        start_two_workers(fleet)
        fleet.publish(range(len(TEMPERATURES)), TEMPERATURES)  # raised, then resolved
        wait_until(lambda: len(watch.resolved()) == 2, what="both fevers raised and resolved")
        [fever] = watch.raised_ids()["cow-0"]
        command = wait_until(lambda: light.commands, what="the light's command")[0]
        wait_until(lambda: "succeeded" in command_events(fleet, command["id"]),
                   what="the light's answer recorded")  # fmt: skip
        # Every change the workers made is in: the resolution came after the raise, and the
        # light answered. Stopped, the workers act no more.
        fleet.stop()
    finally:
        watch.peer.close()
        light.disconnect()
    assert (command["name"], command["args"]) == ("switch", {"state": "on"}), command
    assert command["issuer"] == "automation fever_light", command
    assert len(light.commands) == 1 and light.executed == [command["id"]], light.commands
    # Acted on once, by the control queue's owner alone: a partition worker acting too would
    # record a second `sent` (and the device would get the command twice).
    assert command_events(fleet, command["id"]) == ["sent", "succeeded"]
    recorded = fleet.influx.query(
        f'SELECT "alert", "id" FROM "moclo_commands" WHERE "tenant" = \'{fleet.tenant}\''
    )
    assert {row["alert"] for row in recorded if row["id"] == command["id"]} == {fever}


def test_the_control_queues_owner_killed_with_a_command_pending_another_worker_records_its_result(
    fleet: Fleet, serve: RunningServe
) -> None:
    car = device(fleet, "car", "car-1", answer=None)  # executes, answers later (below)
    try:
        start_with_a_known_car(fleet, car)
        _, token = operator_token(serve, fleet)
        with api(serve, token) as client:
            path = f"/api/devices/{fleet.tenant}/car-1"
            asked = client.post(f"{path}/commands", json={"name": "lock"})
            assert asked.status_code == 202, asked.text
            command_id = asked.json()["id"]
            wait_until(lambda: car.executed, what="the car to get the command")
            # The car asks for its pending commands, and gets it again: the owner handled a
            # control delivery after the request's, so the request is acknowledged (else it
            # would come again to the next owner, which would take it as new).
            car.ask_for_commands()
            wait_until(lambda: car.received(command_id) >= 2, what="the pending command again")
            [owner] = [i for i in fleet.workers if "holding the control queue" in fleet.log_text(i)]
            [other] = [i for i in fleet.workers if i != owner]
            fleet.workers[owner].kill()  # SIGKILL, with the command pending
            killed = time.monotonic()
            fleet.workers[owner].wait(10)
            car.publish(COMMAND_RESULTS, {"id": command_id, "status": "succeeded",
                                          "ts": time.time()})  # fmt: skip
            wait_until(
                lambda: "holding the control queue" in fleet.log_text(other),
                timeout_s=max(0.1, 10 - (time.monotonic() - killed)),
                what="another worker holding the control queue within 10 s of the kill",
            )

            def outcome() -> list[str]:
                events = client.get(f"{path}/command-history").json()["events"]
                return [e["status"] for e in events if e["id"] == command_id]

            wait_until(lambda: "succeeded" in outcome(), what="the late result recorded")
        fleet.stop()
    finally:
        car.disconnect()
    # The new owner restored the pending command from moclo_commands before handling the
    # result (without that, the result would be refused as an unknown id).
    assert "commands: 1 pending of 1" in fleet.log_text(other), fleet.log_text(other)
    assert command_events(fleet, command_id) == ["sent", "succeeded"]
    assert car.executed == [command_id], car.commands  # sent again maybe, executed once
    rejected = fleet.influx.query(
        f'SELECT "error" FROM "moclo_rejected" WHERE "tenant" = \'{fleet.tenant}\''
    )
    assert rejected == [], rejected


def test_only_ingest_can_send_an_acknowledgement_into_a_partition(fleet: Fleet) -> None:
    """The partitions believe the `moclo-topic` header, so who may publish to the partition
    exchange matters: a device (MQTT has no headers; its own telemetry topic is all it can
    reach), an operator and serve cannot; ingest's login can (the positive control)."""
    fleet.add_devices(1)
    operator = fleet.engine.registry.add_account(
        "operator", f"op-{uuid.uuid4().hex[:6]}", tenant=fleet.tenant
    )
    serve_login = fleet.engine.registry.add_account("serve", f"serve-{uuid.uuid4().hex[:8]}")
    ingest_login = fleet.engine.registry.add_account("ingest", f"ingest-{uuid.uuid4().hex[:8]}")
    watch = AlertWatch(fleet.engine, fleet.tenant)
    exchange = f"{PARTITION_PREFIX}{fleet.partition_set}"
    cow = telemetry_topic(fleet.engine.prefix, fleet.tenant, COW, "cow-0")
    acks = acknowledgement_topic(fleet.engine.prefix, fleet.tenant, operator.username)
    try:
        fleet.start_worker(0, 1)
        [fever] = raise_fevers(fleet, watch, 1).values()
        body = orjson.dumps({"id": fever})

        def publish_as(login: Credentials) -> None:
            """An acknowledgement into the cow's partition, as ingest forwards one."""
            credentials = pika.PlainCredentials(login.username, login.password)
            port = fleet.engine.cluster.nodes[0].ports.amqp
            parameters = pika.ConnectionParameters("127.0.0.1", port, "/", credentials)
            with pika.BlockingConnection(parameters) as connection:
                channel = connection.channel()
                channel.confirm_delivery()
                properties = pika.BasicProperties(headers={FORWARDED_TOPIC: acks})
                channel.basic_publish(exchange, amqp_topic(cow), body, properties, True)

        # An operator and serve: refused at the door (only ingest's logins speak AMQP).
        for attacker in (operator, serve_login):
            with pytest.raises(pika.exceptions.AMQPConnectionError):
                publish_as(attacker)
        # The cow itself, over MQTT: the body on its own topic is a bad reading, nothing more.
        fleet.publish_raw(0, body)
        # Positive control: ingest's login is let in and the partition's worker takes it.
        publish_as(ingest_login)
        wait_until(lambda: acknowledged(watch, fever), what="ingest's acknowledgement taken")
        rejected = wait_until(
            lambda: fleet.influx.query(
                f'SELECT "error" FROM "moclo_rejected" WHERE "tenant" = \'{fleet.tenant}\''
            ),
            what="the cow's message rejected",
        )
        fleet.stop()
    finally:
        watch.peer.close()
    # Judged in the partition's order: the cow's message before the control's, which alone
    # acknowledged, as the operator its topic names.
    [change] = acknowledged(watch, fever)
    assert change["acknowledged_by"] == operator.username, change
    assert len(rejected) == 1, rejected
    # In the auth service's terms: the partition exchange is ingest's alone.
    auth = fleet.engine.auth
    for login in (operator, serve_login):
        assert auth.vhost(login.username, "/", None) is not None
        assert auth.resource(login.username, "exchange", exchange, "write") is not None
    assert auth.vhost(ingest_login.username, "/", None) is None
    assert auth.resource(ingest_login.username, "exchange", exchange, "write") is None


@pytest.mark.parametrize(
    ("claimed", "believed"),
    [
        ("moclo/farm/acks/ana", True),
        ("moclo/farm/acks/serve-1/on-behalf", True),
        (b"moclo/farm/acks/ana", True),
        ("moclo/farm/acks", True),  # the older clients' topic: refused later, with its reason
        ("moclo/other-farm/acks/ana", False),  # another tenant's, into this tenant's partition
        ("moclo/farm/acksx/ana", False),
        ("moclo/farm/cow_tracker/cow-1/telemetry", False),  # another device's readings
        ("moclo/farm/command-requests/ana", False),
        (42, False),
    ],
    ids=["own", "on-behalf", "bytes", "older", "other-tenant", "not-acks", "telemetry",
         "request", "not-text"],
)  # fmt: skip
def test_the_forwarded_topic_header_is_believed_only_for_an_acknowledgement_of_its_tenant(
    claimed: object, believed: bool
) -> None:
    routed_by = "moclo/farm/cow_tracker/cow-0/telemetry"
    expected = claimed.decode() if isinstance(claimed, bytes) else claimed
    assert forwarded_topic(routed_by, claimed) == (expected if believed else routed_by)


def test_the_control_queue_takes_the_downlink_acknowledgements_and_alert_changes_only() -> None:
    settings = Settings(topic_prefix="moclo", ingest_tenants="farm,home")
    keys = control_bindings(settings)
    assert keys[:8] == (
        "moclo.farm.*.*.commands.get", "moclo.farm.*.*.command-results",
        "moclo.farm.*.*.desired.get", "moclo.farm.*.*.reported",
        "moclo.farm.command-requests.#", "moclo.farm.desired-requests.#",
        "moclo.farm.acks.#", "moclo.farm.alerts.*",
    )  # fmt: skip
    assert len(keys) == 16 and all(k.startswith("moclo.home.") for k in keys[8:])
    # Never telemetry: that is the partitions', hashed by device.
    assert not any(k.endswith("telemetry") for k in keys)
