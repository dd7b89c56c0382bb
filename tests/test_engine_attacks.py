"""The engine's access control tried from the attacker's side on the 3-node cluster of the
`engine` fixture (an adversarial review of access/engine_auth.py); each attack has its
positive control beside it: the same client doing the allowed thing succeeds."""

from __future__ import annotations

import logging
import socket
import stat
import uuid

import paho.mqtt.client as paho
import pika
import pika.exceptions
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from access.registry import Credentials, RegistryError
from core.mqtt import connection_login
from devices.topics import (
    COMMANDS,
    alert_subscription,
    alert_topic,
    device_topic,
    telemetry_topic,
)
from tests.conftest import Engine
from tests.helpers import cow_json, wait_until
from tests.test_broker_access import Peer
from tests.test_engine_cluster import consumer, new_tenant

V311 = MQTTProtocolVersion.MQTTv311  # RabbitMQ 3.10 drops MQTT 5 clients without a CONNACK
COW = "cow_tracker"
BAD_LOGIN, NOT_AUTHORISED = 134, 135  # paho's codes for MQTT 3.1.1's CONNACK 4 and 5


def peer(engine: Engine, node: int, login: Credentials, *, persistent: bool = False) -> Peer:
    """`login`'s MQTT 3.1.1 connection at node `node`, its username as client id."""
    return Peer(
        engine.cluster.nodes[node].ports.mqtt,
        f"{login.username} at r{node + 1}",
        (login.username, login.password),
        protocol=V311,
        client_id=login.username,
        clean_start=not persistent,
    )


def attempt(engine: Engine, node: int, login: Credentials, client_id: str) -> int | None:
    """The CONNACK `login` gets at node `node` presenting `client_id`."""
    attempt = Peer(
        engine.cluster.nodes[node].ports.mqtt,
        f"{login.username} as {client_id!r}",
        (login.username, login.password),
        protocol=V311,
        client_id=client_id,
    )
    attempt.close()
    return attempt.connack


def announcer(engine: Engine, node: int) -> Peer:
    """Ingest's alert announcer (`ingest~alerts`), which publishes every tenant's alerts."""
    ingest = engine.registry.add_account("ingest", f"ingest-{uuid.uuid4().hex[:8]}")
    login = Credentials(connection_login(ingest.username, "alerts"), ingest.password)
    sender = peer(engine, node, login)
    assert sender.logged_in, f"ingest's announcer refused: CONNACK {sender.connack}"
    return sender


def test_an_account_name_given_to_another_tenant_does_not_inherit_its_subscriptions(
    engine: Engine,
) -> None:
    """RabbitMQ checks a subscription once, when it binds the session's queue; Mosquitto
    checks every delivery. A persistent session outlives its login's revocation (24 h), so the
    next holder of the name must not be someone the old subscriptions would leak to. Before
    the registry refused that, the rival tenant's app below resumed the session and received
    the farm's alert (tried: "another tenant's alert leaked")."""
    farm, rival = new_tenant(), new_tenant()
    name = f"watch-{uuid.uuid4().hex[:8]}"
    sender = announcer(engine, 0)
    try:
        old = engine.registry.add_account("app", name, tenant=farm)
        holder = peer(engine, 1, old, persistent=True)
        assert holder.subscribe(alert_subscription(engine.prefix, farm)) == [1]
        assert sender.publish(alert_topic(engine.prefix, farm, "cow-1"), b"farm alert 1") == 0
        wait_until(lambda: holder.received(b"farm alert 1"), what="the farm's app's alert")
        holder.close()
        engine.registry.revoke_account(name)
        # The attack: the name issued to the rival tenant's app, which would resume the
        # session with the farm's subscription in it.
        for role in ("app", "operator", "serve"):
            tenant = None if role == "serve" else rival
            with pytest.raises(RegistryError, match=f"only to an account of {farm}"):
                engine.registry.add_account(role, name, tenant=tenant)  # type: ignore[arg-type]
        # Positive control: the farm gets its name back (as an operator now), resumes the
        # session and receives the farm's alert sent while it was away.
        assert sender.publish(alert_topic(engine.prefix, farm, "cow-1"), b"farm alert 2") == 0
        again = engine.registry.add_account("operator", name, tenant=farm)
        back = peer(engine, 2, again, persistent=True)
        assert back.logged_in
        wait_until(lambda: back.received(b"farm alert 2"), what="the alert queued meanwhile")
        back.close()
    finally:
        sender.close()


def test_rabbitmqs_topic_spellings_reach_no_other_devices_topic(engine: Engine) -> None:
    """RabbitMQ turns an MQTT topic into a routing key (`/` → `.`, `+` → `*`): a `.` or a `*`
    in an MQTT topic, ordinary characters to MQTT, are separators and wildcards to it."""
    tenant = new_tenant()
    me = engine.registry.add_device(tenant, COW, "me")
    engine.registry.add_device(tenant, COW, "victim")
    ingest = engine.registry.add_account("ingest", f"ingest-{uuid.uuid4().hex[:8]}")
    sender = peer(
        engine, 0, Credentials(connection_login(ingest.username, "commands"), ingest.password)
    )
    reader = consumer(engine, 2, tenant)
    own_commands = device_topic(engine.prefix, tenant, COW, "me", COMMANDS)
    try:
        # Positive control: its own commands under RabbitMQ's spelling are its own.
        spy = peer(engine, 1, me)
        assert spy.subscribe(own_commands.replace("/", ".")) == [1]
        assert sender.publish(own_commands, b'{"id":"c-1"}') == 0
        wait_until(lambda: spy.received(b'{"id":"c-1"}'), what="its own command")
        spy.close()
        victims = device_topic(engine.prefix, tenant, COW, "victim", COMMANDS)
        for spelling in (
            victims.replace("/", "."),  # the victim's routing key itself
            f"{engine.prefix}/{tenant}/{COW}/victim.{COMMANDS}",
            f"{engine.prefix}/{tenant}/{COW}/*/{COMMANDS}",  # `*`: every device's commands
            f"{engine.prefix}/{tenant}/#",  # (paho will not send `.#`, MQTT has no such filter)
            f"{engine.prefix}/{tenant}/{COW}/me/{COMMANDS}/#",
        ):
            spy = peer(engine, 1, me)
            assert spy.subscribe(spelling) == [-1], f"subscribed to {spelling!r}"
            spy.close()
        forged = cow_json(1795327200, 1, body_temp_c=41.9)
        victims_telemetry = telemetry_topic(engine.prefix, tenant, COW, "victim")
        for spelling in (
            victims_telemetry.replace("/", "."),
            f"{engine.prefix}/{tenant}/{COW}/*/telemetry",
        ):
            forger = peer(engine, 1, me)
            assert forger.publish(spelling, forged) == -1, f"published on {spelling!r}"
            forger.close()
        own = cow_json(1795327200, 2)  # published after the attempts, by the same login
        forger = peer(engine, 1, me)
        own_telemetry = telemetry_topic(engine.prefix, tenant, COW, "me")
        assert forger.publish(own_telemetry.replace("/", "."), own) == 0
        wait_until(lambda: reader.received(own), what="its own reading, spelled with dots")
        forger.close()
        assert not reader.received(forged), "a forged reading reached ingest"
        assert (own_telemetry, own) in reader.messages  # delivered under MQTT's spelling
    finally:
        sender.close()
        reader.close()


def will_of(engine: Engine, node: int, login: Credentials, topic: str, payload: bytes) -> None:
    """`login` connects with a last will on `topic`, then its connection drops unannounced."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=login.username, protocol=V311, clean_session=True
    )
    client.username_pw_set(login.username, login.password)
    client.will_set(topic, payload, qos=1)
    client.connect("127.0.0.1", engine.cluster.nodes[node].ports.mqtt)
    connected = client.loop(timeout=5.0) == paho.MQTT_ERR_SUCCESS and client.is_connected()
    assert connected, f"{login.username} did not connect"
    sock = client.socket()
    assert isinstance(sock, socket.socket)
    sock.shutdown(socket.SHUT_RDWR)  # no DISCONNECT: the broker sends the will
    sock.close()


def test_a_last_will_cannot_land_on_another_devices_topic(engine: Engine) -> None:
    tenant = new_tenant()
    me = engine.registry.add_device(tenant, COW, "me")
    engine.registry.add_device(tenant, COW, "victim")
    reader = consumer(engine, 0, tenant)
    try:
        # Positive control: a will on its own telemetry topic is delivered.
        own_will = cow_json(1795327200, 1)
        will_of(engine, 1, me, telemetry_topic(engine.prefix, tenant, COW, "me"), own_will)
        wait_until(lambda: reader.received(own_will), what="its own will")
        refused_before = engine.auth.refusals["topic"]
        forged = cow_json(1795327200, 2, body_temp_c=41.9)
        will_of(engine, 2, me, telemetry_topic(engine.prefix, tenant, COW, "victim"), forged)
        # RabbitMQ asks when it would send the will (not at CONNECT), and sends nothing
        # once refused.
        wait_until(
            lambda: engine.auth.refusals["topic"] > refused_before, what="the will's refusal"
        )
        later = cow_json(1795327200, 3)
        will_of(engine, 2, me, telemetry_topic(engine.prefix, tenant, COW, "me"), later)
        wait_until(lambda: reader.received(later), what="a later will of its own")
        assert not reader.received(forged), "the forged will reached ingest"
    finally:
        reader.close()


def test_logins_that_must_fail_do_at_every_node(engine: Engine) -> None:
    """An empty or missing password, RabbitMQ's default guest, a revoked device, and client
    ids that differ from the login only in case, an invisible character or a vhost prefix."""
    tenant = new_tenant()
    device = engine.registry.add_device(tenant, COW, "cow-1")
    revoked = engine.registry.add_device(tenant, COW, "cow-2")
    name = device.username
    for node in range(3):
        assert attempt(engine, node, revoked, revoked.username) == 0  # before it is revoked
    engine.registry.revoke_device(tenant, "cow-2")
    for node in range(3):
        assert attempt(engine, node, device, name) == 0  # positive control, at each node
        assert attempt(engine, node, Credentials(name, ""), name) == BAD_LOGIN
        assert attempt(engine, node, Credentials("guest", "guest"), "guest") == BAD_LOGIN
        assert attempt(engine, node, revoked, revoked.username) == BAD_LOGIN
        for client_id in (name.upper(), f"{name}\u200b", f"{name} ", f"/:{name}"):
            assert attempt(engine, node, device, client_id) == NOT_AUTHORISED, client_id
    # The username with RabbitMQ's `vhost:` prefix is the same login, under the same id.
    assert attempt(engine, 0, Credentials(f"/:{name}", device.password), name) == 0
    no_password = paho.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=V311)
    no_password.username_pw_set(name, None)
    codes: list[int] = []
    no_password.on_connect = lambda c, u, f, reason, p: codes.append(reason.value)
    no_password.connect("127.0.0.1", engine.cluster.nodes[0].ports.mqtt)
    wait_until(lambda: codes or no_password.loop(timeout=0.2) != 0, what="CONNACK")
    no_password.disconnect()
    assert codes == [BAD_LOGIN]


def amqp_login(engine: Engine, login: Credentials) -> str:
    """'open', or why the AMQP port refused `login`."""
    credentials = pika.PlainCredentials(login.username, login.password)
    port = engine.cluster.nodes[1].ports.amqp
    parameters = pika.ConnectionParameters("127.0.0.1", port, "/", credentials)
    try:
        pika.BlockingConnection(parameters).close()
    except pika.exceptions.ProbableAuthenticationError:
        return "bad login"
    except pika.exceptions.ProbableAccessDeniedError:
        return "vhost refused"
    return "open"


def test_only_ingest_speaks_amqp(engine: Engine) -> None:
    """AMQP has no client id and reaches every queue and exchange by name: the engine's
    consumers only."""
    tenant = new_tenant()
    ingest = engine.registry.add_account("ingest", f"ingest-{uuid.uuid4().hex[:8]}")
    assert amqp_login(engine, ingest) == "open"  # positive control
    device = engine.registry.add_device(tenant, COW, "cow-1")
    app = engine.registry.add_account("app", f"app-{uuid.uuid4().hex[:8]}", tenant=tenant)
    serve = engine.registry.add_account("serve", f"serve-{uuid.uuid4().hex[:8]}")
    for login in (device, app, serve):
        assert amqp_login(engine, login) == "vhost refused", login.username
    assert amqp_login(engine, Credentials("guest", "guest")) == "bad login"
    assert amqp_login(engine, Credentials(ingest.username, "")) == "bad login"


def test_a_failing_auth_service_refuses_logins(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail closed: RabbitMQ turns an auth service that answers nothing into a refusal."""
    device = engine.registry.add_device(new_tenant(), COW, "cow-1")

    def broken(username: str, password: str) -> str | None:
        raise RuntimeError("the auth service failed")  # its thread dies, no answer is sent

    with monkeypatch.context() as patch:
        patch.setattr(engine.auth, "user", broken)
        assert attempt(engine, 0, device, device.username) == BAD_LOGIN
    assert attempt(engine, 0, device, device.username) == 0  # positive control, restored


def test_the_auth_services_secret_url_is_readable_by_the_nodes_owner_only(
    engine: Engine,
) -> None:
    """rabbitmq.conf holds the URL whose path is the auth service's secret."""
    for node in engine.cluster.nodes:
        assert "/user" in node.config_path.read_text()
        assert stat.S_IMODE(node.config_path.stat().st_mode) == 0o600, node.node


def test_no_password_or_auth_secret_reaches_a_log(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = new_tenant()
    device = engine.registry.add_device(tenant, COW, "cow-1")
    wrong = device.password[::-1]
    config = engine.cluster.nodes[0].config_path.read_text()
    user_path = next(line for line in config.splitlines() if "auth_http.user_path" in line)
    secret = user_path.rsplit("/", 2)[1]  # …/SECRET/user
    with caplog.at_level(logging.INFO, logger="access.engine_auth"):
        for node in range(3):
            assert attempt(engine, node, device, device.username) == 0
            assert attempt(engine, node, Credentials(device.username, wrong), device.username)
            # Positive control: the refusals are logged, with the login's name, at each node
            # and by the auth service, so these are the logs that would hold a leak.
            wait_until(
                lambda n=node: (
                    f"MQTT login failed for user '{device.username}'"
                    in engine.cluster.nodes[n].log_since_start()
                ),
                what=f"r{node + 1}'s log of the refusal",
            )
    assert f"engine refused user for '{device.username}': wrong password" in caplog.text
    for text in (caplog.text, *(node.log_since_start() for node in engine.cluster.nodes)):
        assert device.password not in text and wrong not in text
        assert secret not in text


def outside_address() -> str | None:
    """This machine's address on its network (not loopback), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))  # TEST-NET-2; no packet is sent, a route is picked
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError:
        return False
    return True


def test_the_cluster_listens_on_loopback_only(engine: Engine) -> None:
    """Erlang's port mapper, the distribution ports (with the cookie: the whole cluster),
    AMQP, MQTT and the auth service, from another machine: nothing answers."""
    outside = outside_address()
    if outside is None:
        pytest.skip("this machine has no address but loopback")
    cluster = engine.cluster
    config = cluster.nodes[0].config_path.read_text()
    auth_url = next(line for line in config.splitlines() if "auth_http.user_path" in line)
    ports = {"epmd": cluster.epmd.port, "auth service": int(auth_url.split(":")[-1].split("/")[0])}
    for node in cluster.nodes:
        name = node.node.split("@")[0]
        ports |= {f"{name} {kind}": getattr(node.ports, kind) for kind in ("amqp", "mqtt", "dist")}
    assert all(answers("127.0.0.1", port) for port in ports.values())  # positive control
    assert [name for name, port in ports.items() if answers(outside, port)] == []


def test_ingests_amqp_login_cannot_reach_a_devices_session_queue(engine: Engine) -> None:
    """AMQP names queues directly: through the default exchange, a publish whose routing key
    is a device's session queue would put a command in it without any topic check; reading
    or deleting that queue would take the device's commands."""
    tenant = new_tenant()
    device = engine.registry.add_device(tenant, COW, "cow-1")
    session = peer(engine, 1, device, persistent=True)  # its commands' queue now exists
    assert session.subscribe(device_topic(engine.prefix, tenant, COW, "cow-1", COMMANDS)) == [1]
    session.close()
    queue = f"mqtt-subscription-{device.username}qos1"
    ingest = engine.registry.add_account("ingest", f"ingest-{uuid.uuid4().hex[:8]}")
    credentials = pika.PlainCredentials(ingest.username, ingest.password)
    port = engine.cluster.nodes[0].ports.amqp
    own = f"moclo.partition.review-{uuid.uuid4().hex[:8]}"
    with pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", port, "/", credentials)
    ) as amqp:
        # Positive control: its own partition-named exchange and queue, written and read.
        channel = amqp.channel()
        channel.confirm_delivery()
        channel.exchange_declare(own, "fanout")
        channel.queue_declare(own)
        channel.queue_bind(own, own)
        channel.basic_publish(own, "", b"own")
        got = wait_until(lambda: channel.basic_get(own, auto_ack=True)[2], what="its own message")
        assert got == b"own"
        channel.queue_delete(own)
        channel.exchange_delete(own)
        attacks = {
            "publish through the default exchange": lambda ch: ch.basic_publish(
                "", queue, b'{"id":"forged"}'
            ),
            "read": lambda ch: ch.basic_get(queue, auto_ack=True),
            "delete": lambda ch: ch.queue_delete(queue),
            "bind": lambda ch: ch.queue_bind(queue, "amq.topic", routing_key="moclo.#"),
        }
        for what, attack in attacks.items():
            channel = amqp.channel()
            channel.confirm_delivery()
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
                attack(channel)
            assert refused.value.reply_code == 403, what
    # The device's session is untouched: a genuine command, sent after the attacks, is the
    # only one in it when the device resumes it.
    sender = peer(
        engine, 0, Credentials(connection_login(ingest.username, "commands"), ingest.password)
    )
    topic = device_topic(engine.prefix, tenant, COW, "cow-1", COMMANDS)
    assert sender.publish(topic, b'{"id":"c-1"}') == 0
    sender.close()
    back = peer(engine, 2, device, persistent=True)
    wait_until(lambda: back.received(b'{"id":"c-1"}'), what="the genuine command")
    back.close()
    assert [payload for _, payload in back.messages] == [b'{"id":"c-1"}']
