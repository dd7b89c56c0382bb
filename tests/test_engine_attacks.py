"""The engine's access control tried from the attacker's side on the 3-node cluster of the
`engine` fixture (an adversarial review of access/engine_auth.py); each attack has its
positive control beside it: the same client doing the allowed thing succeeds."""

from __future__ import annotations

import uuid

import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from access.registry import Credentials, RegistryError
from core.mqtt import connection_login
from devices.topics import alert_subscription, alert_topic
from tests.conftest import Engine
from tests.helpers import wait_until
from tests.test_broker_access import Peer

V311 = MQTTProtocolVersion.MQTTv311  # RabbitMQ 3.10 drops MQTT 5 clients without a CONNACK


def new_tenant() -> str:
    return f"farm-{uuid.uuid4().hex[:8]}"


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
