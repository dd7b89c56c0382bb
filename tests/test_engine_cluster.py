"""Issue 19, "What must hold" 1, on the 3-node RabbitMQ cluster of the `engine` fixture: devices
log in over MQTT at any node with their registry credentials and keep today's ACL guarantees.

Each refusal is tried from the attacker's side with a positive control beside it: the same
client doing the allowed thing through the same node succeeds, so a refusal cannot come from
a cluster that simply does not work.
"""

from __future__ import annotations

import uuid

import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from access.registry import Credentials
from core.mqtt import connection_login
from devices.topics import COMMANDS, device_topic, telemetry_subscription, telemetry_topic
from tests.conftest import Engine
from tests.helpers import cow_json, wait_until
from tests.test_broker_access import Peer

COW = "cow_tracker"
V311 = MQTTProtocolVersion.MQTTv311  # RabbitMQ 3.10 drops MQTT 5 clients without a CONNACK
BAD_LOGIN = 134  # paho's reason code for MQTT 3.1.1's CONNACK 4, bad user name or password
NOT_AUTHORISED = 135  # and for CONNACK 5, not authorised


def new_tenant() -> str:
    return f"farm-{uuid.uuid4().hex[:8]}"


def device_peer(
    engine: Engine, node: int, credentials: Credentials, *, client_id: str | None = None
) -> Peer:
    """A device's MQTT 3.1.1 connection to node `node`, by default with its username as id."""
    return Peer(
        engine.cluster.nodes[node].ports.mqtt,
        f"device {credentials.username} at r{node + 1}",
        (credentials.username, credentials.password),
        protocol=V311,
        client_id=client_id or credentials.username,
    )


def consumer(engine: Engine, node: int, tenant: str) -> Peer:
    """Ingest's login subscribed to the tenant's telemetry at node `node`."""
    login = engine.registry.add_account("ingest", f"ingest-{uuid.uuid4().hex[:8]}")
    peer = Peer(
        engine.cluster.nodes[node].ports.mqtt,
        f"ingest at r{node + 1}",
        (login.username, login.password),
        protocol=V311,
        client_id=login.username,
    )
    assert peer.logged_in, f"ingest's login refused: CONNACK {peer.connack}"
    assert peer.subscribe(telemetry_subscription(engine.prefix, tenant)) == [1]
    return peer


def test_devices_publish_at_every_node_and_a_consumer_on_another_node_gets_it(
    engine: Engine,
) -> None:
    tenant = new_tenant()
    devices = [engine.registry.add_device(tenant, COW, f"cow-{n}") for n in range(3)]
    reader = consumer(engine, 0, tenant)
    expected = set()
    try:
        for node, credentials in enumerate(devices):  # r1, r2 and r3: one device at each
            peer = device_peer(engine, node, credentials)
            assert peer.logged_in, f"{peer.name} refused: CONNACK {peer.connack}"
            payload = cow_json(1795327200 + node, node + 1)
            topic = telemetry_topic(engine.prefix, tenant, COW, f"cow-{node}")
            assert peer.publish(topic, payload) == 0, f"{peer.name}: no PUBACK"
            expected.add((topic, payload))
            peer.close()
        wait_until(lambda: expected <= set(reader.messages), what="every node's reading at r1")
    finally:
        reader.close()


def test_a_device_cannot_publish_another_devices_telemetry(engine: Engine) -> None:
    tenant = new_tenant()
    attacker = engine.registry.add_device(tenant, COW, "intruder")
    victim = engine.registry.add_device(tenant, COW, "victim")
    reader = consumer(engine, 2, tenant)
    forged = cow_json(1795327200, 1, body_temp_c=41.9)  # a fever the victim never had
    try:
        # Positive control: the attacker's own telemetry, through the same node, arrives.
        peer = device_peer(engine, 1, attacker)
        own = cow_json(1795327200, 1)
        assert peer.publish(telemetry_topic(engine.prefix, tenant, COW, "intruder"), own) == 0
        wait_until(lambda: reader.received(own), what="the attacker's own reading")
        refused_before = engine.auth.refusals["topic"]
        # The attack: the same login publishes on the victim's topic. RabbitMQ asks the
        # registry's ACL, is refused, and closes the connection without a PUBACK.
        victims_topic = telemetry_topic(engine.prefix, tenant, COW, "victim")
        assert peer.publish(victims_topic, forged) == -1, "the forged reading was acknowledged"
        assert engine.auth.refusals["topic"] > refused_before
        peer.close()
        # Another control: the victim itself, on that same topic, is delivered (so the forged
        # reading missing below is the refusal, not a topic nobody reads).
        victim_peer = device_peer(engine, 1, victim)
        genuine = cow_json(1795327201, 2)
        assert victim_peer.publish(victims_topic, genuine) == 0
        wait_until(lambda: reader.received(genuine), what="the victim's own reading")
        victim_peer.close()
        assert not reader.received(forged), "the forged reading reached the consumer"
    finally:
        reader.close()


def test_a_wrong_password_or_unknown_login_is_refused_at_every_node(engine: Engine) -> None:
    device = engine.registry.add_device(new_tenant(), COW, "cow-1")
    wrong = Credentials(device.username, device.password[::-1])
    stranger = Credentials("nobody.cow-1", device.password)
    for node in range(3):
        refused = [
            device_peer(engine, node, login, client_id=device.username)
            for login in (wrong, stranger)
        ]
        # MQTT 3.1.1's CONNACK 4, "bad user name or password" (paho's reason code 134).
        assert [peer.connack for peer in refused] == [BAD_LOGIN, BAD_LOGIN]
        control = device_peer(engine, node, device)
        assert control.logged_in, f"the right password was refused at r{node + 1}"
        control.close()


@pytest.mark.parametrize("clean_session", [True, False], ids=["clean", "persistent"])
def test_no_login_can_take_another_devices_client_id_across_nodes(
    engine: Engine, clean_session: bool
) -> None:
    tenant = new_tenant()
    victim = engine.registry.add_device(tenant, COW, "victim")
    attacker = engine.registry.add_device(tenant, COW, "intruder")
    reader = consumer(engine, 1, tenant)
    victims_topic = telemetry_topic(engine.prefix, tenant, COW, "victim")
    held = device_peer(engine, 0, victim)  # the victim, connected at r1
    try:
        assert held.logged_in
        # The attack, from r3: a valid login presents the victim's client id.
        refused_before = engine.auth.refusals["vhost"]
        intruder = Peer(
            engine.cluster.nodes[2].ports.mqtt,
            "intruder with the victim's id",
            (attacker.username, attacker.password),
            protocol=V311,
            client_id=victim.username,
            clean_start=clean_session,
        )
        assert intruder.connack == NOT_AUTHORISED, f"intruder's CONNACK: {intruder.connack}"
        assert engine.auth.refusals["vhost"] == refused_before + 1  # refused for the id
        # The victim's connection is untouched: it still publishes and is delivered.
        payload = cow_json(1795327200, 1)
        assert held.publish(victims_topic, payload) == 0
        wait_until(lambda: reader.received(payload), what="the victim's reading after the attack")
        assert not held.disconnected.is_set()
        # Positive control: the attacker under its own id is let in at that node, and the
        # engine does hand an id over across nodes (the victim's own login at r3 takes its
        # id from r1), so it is the id check that stopped the intruder.
        own = device_peer(engine, 2, attacker)
        assert own.logged_in
        own.close()
        held.client.reconnect_delay_set(min_delay=60, max_delay=60)  # stay taken over
        again = device_peer(engine, 2, victim)
        assert again.logged_in
        wait_until(held.disconnected.is_set, what="r1's connection handed over to r3's")
        again.close()
    finally:
        held.close()
        reader.close()


def test_a_node_killed_with_sigkill_leaves_two_serving_and_rejoins_on_restart(
    engine: Engine,
) -> None:
    """The supervisor's fault injection, which the broker-fault tests build on."""
    tenant = new_tenant()
    device = engine.registry.add_device(tenant, COW, "cow-1")
    reader = consumer(engine, 0, tenant)
    cluster = engine.cluster
    try:
        cluster.nodes[2].kill()
        assert not cluster.nodes[2].running()
        # The two left keep serving: a device at r2 is delivered to the consumer at r1.
        peer = device_peer(engine, 1, device)
        payload = cow_json(1795327200, 1)
        assert peer.publish(telemetry_topic(engine.prefix, tenant, COW, "cow-1"), payload) == 0
        wait_until(lambda: reader.received(payload), what="a reading with r3 down")
        peer.close()
        cluster.restart(2)
        cluster.wait_running(3)
        again = device_peer(engine, 2, device)
        assert again.logged_in, f"no login at the restarted r3: CONNACK {again.connack}"
        again.close()
    finally:
        reader.close()
        if not cluster.nodes[2].running():
            cluster.restart(2)


def test_a_device_cannot_read_another_devices_commands(engine: Engine) -> None:
    tenant = new_tenant()
    attacker = engine.registry.add_device(tenant, COW, "intruder")
    engine.registry.add_device(tenant, COW, "victim")
    ingest = engine.registry.add_account("ingest", f"ingest-{uuid.uuid4().hex[:8]}")
    sender_login = connection_login(ingest.username, "commands")  # the gateway's sender
    sender = Peer(
        engine.cluster.nodes[0].ports.mqtt,
        "ingest's command sender at r1",
        (sender_login, ingest.password),
        protocol=V311,
        client_id=sender_login,
    )
    spy = device_peer(engine, 2, attacker)
    try:
        # Positive control: its own commands, subscribed and delivered across nodes.
        own = device_topic(engine.prefix, tenant, COW, "intruder", COMMANDS)
        assert spy.subscribe(own) == [1]
        assert sender.publish(own, b'{"id":"c-1"}') == 0
        wait_until(lambda: spy.received(b'{"id":"c-1"}'), what="the device's own command")
        # The attack: the victim's commands. RabbitMQ asks the registry's ACL and refuses
        # the subscription by closing the connection (no SUBACK).
        refused_before = engine.auth.refusals["topic"]
        victims = device_topic(engine.prefix, tenant, COW, "victim", COMMANDS)
        assert spy.subscribe(victims) == [-1]
        assert engine.auth.refusals["topic"] == refused_before + 1
    finally:
        spy.close()
        sender.close()


def test_a_devices_queued_commands_survive_a_kill_of_the_node_holding_its_session(
    engine: Engine,
) -> None:
    """Persistent sessions are quorum queues (`mqtt.durable_queue_type = quorum`): replicated,
    so the commands queued for an offline device survive the loss of the node it used."""
    tenant = new_tenant()
    device = engine.registry.add_device(tenant, COW, "cow-1")
    ingest = engine.registry.add_account("ingest", f"ingest-{uuid.uuid4().hex[:8]}")
    topic = device_topic(engine.prefix, tenant, COW, "cow-1", COMMANDS)
    cluster = engine.cluster

    def session_at(node: int) -> Peer:
        return Peer(
            cluster.nodes[node].ports.mqtt,
            f"{device.username} at r{node + 1}",
            (device.username, device.password),
            protocol=V311,
            client_id=device.username,
            clean_start=False,
        )

    sender_login = connection_login(ingest.username, "commands")
    try:
        first = session_at(1)  # its session queue is led by r2, where it subscribed
        assert first.subscribe(topic) == [1]
        first.close()
        sender = Peer(
            cluster.nodes[0].ports.mqtt,
            "ingest's command sender at r1",
            (sender_login, ingest.password),
            protocol=V311,
            client_id=sender_login,
        )
        commands = [b'{"id":"c-%d"}' % n for n in range(5)]
        assert [sender.publish(topic, command) for command in commands] == [0] * 5
        sender.close()
        cluster.nodes[1].kill()
        back = session_at(0)
        assert back.logged_in
        wait_until(lambda: len(back.messages) >= 5, what="the queued commands at r1")
        assert [payload for _, payload in back.messages] == commands
        back.close()
    finally:
        if not cluster.nodes[1].running():
            cluster.restart(1)
            cluster.wait_running(3)
