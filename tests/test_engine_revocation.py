"""A login revoked in the registry while connected to the engine: its open connections are
closed on every node (access/engine_revocation.py), not only its next login refused. RabbitMQ
checks a subscription once, when its queue is bound, so without this a revoked app went on
receiving its tenant's alerts (and both tests below fail: the connections stay open). Each
attack has its positive control: a login not revoked, connected the same way, goes on."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

from access.engine_auth import EngineAuth
from access.engine_revocation import RevokedLogins
from access.registry import Registry
from devices.topics import alert_subscription, alert_topic, telemetry_topic
from moclo.stack import ServerError
from tests.conftest import Engine
from tests.helpers import cow_json, wait_until
from tests.test_engine_attacks import BAD_LOGIN, NOT_AUTHORISED, announcer, attempt, peer
from tests.test_engine_cluster import consumer, device_peer, new_tenant

COW = "cow_tracker"


def test_a_revoked_device_connected_at_another_node_is_cut_off_and_publishes_nothing_more(
    engine: Engine,
) -> None:
    tenant = new_tenant()
    revoked = engine.registry.add_device(tenant, COW, "cow-revoked")
    kept = engine.registry.add_device(tenant, COW, "cow-kept")
    reader = consumer(engine, 0, tenant)  # what ingest would store
    attacker, control = device_peer(engine, 1, revoked), device_peer(engine, 2, kept)
    topic = {d: telemetry_topic(engine.prefix, tenant, COW, d) for d in ("cow-revoked", "cow-kept")}
    try:
        # Both publish and are stored before (RabbitMQ now holds their topic decisions).
        assert attacker.publish(topic["cow-revoked"], cow_json(1795327200, 1)) == 0
        assert control.publish(topic["cow-kept"], cow_json(1795327200, 1)) == 0
        wait_until(lambda: len(reader.messages) == 2, what="both devices' first readings")

        engine.registry.revoke_device(tenant, "cow-revoked")
        wait_until(
            attacker.disconnected.is_set,
            timeout_s=15,
            what="the revoked device's open connection at r2 closed",
        )
        # The attack: it publishes on its connection, and logs in again at every node.
        late = cow_json(1795327260, 2)
        assert attacker.publish(topic["cow-revoked"], late) == -1  # no PUBACK: closed
        for node in range(3):
            assert attempt(engine, node, revoked, revoked.username) in (BAD_LOGIN, NOT_AUTHORISED)
        # Positive control: the device not revoked is still connected and its reading stored.
        after = cow_json(1795327260, 2, body_temp_c=38.7)
        assert not control.disconnected.is_set()
        assert control.publish(topic["cow-kept"], after) == 0
        wait_until(lambda: reader.received(after), what="the kept device's next reading")
        assert not reader.received(late)
        assert revoked.username in engine.revoked.closed
        assert kept.username not in engine.revoked.closed
    finally:
        for client in (attacker, control, reader):
            client.close()


def test_a_revoked_app_stops_receiving_alerts_where_another_goes_on(engine: Engine) -> None:
    """An app's subscription is checked once, when its queue is bound: revoking the app must
    end the connection that holds it."""
    tenant = new_tenant()
    logins = {
        name: engine.registry.add_account("app", f"{name}-{uuid.uuid4().hex[:8]}", tenant=tenant)
        for name in ("revoked", "kept")
    }
    apps = {name: peer(engine, 2, login) for name, login in logins.items()}
    sender = announcer(engine, 0)
    try:
        for app in apps.values():
            assert app.subscribe(alert_subscription(engine.prefix, tenant)) == [1]
        engine.registry.revoke_account(logins["revoked"].username)
        wait_until(
            apps["revoked"].disconnected.is_set,
            timeout_s=15,
            what="the revoked app's open connection closed",
        )
        assert sender.publish(alert_topic(engine.prefix, tenant, "cow-1"), b"fever") == 0
        wait_until(lambda: apps["kept"].received(b"fever"), what="the kept app's alert")
        assert not apps["revoked"].received(b"fever")
        assert not apps["kept"].disconnected.is_set()
    finally:
        for client in (*apps.values(), sender):
            client.close()


def test_a_close_that_fails_is_tried_again_until_it_succeeds_and_a_kept_login_never_closed(
    tmp_path: Path,
) -> None:
    """No cluster: the engine's answer is a function that fails twice (a node down)."""
    registry = Registry(tmp_path / "registry.sqlite")
    registry.add_device("farm", COW, "gone")
    registry.add_device("farm", COW, "kept")
    answers = iter([ServerError("r2 is down"), ServerError("r2 is down"), 1])
    asked: list[str] = []

    def close(usernames: Sequence[str], reason: str) -> int:
        asked.extend(usernames)
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    revoked = RevokedLogins(EngineAuth(registry.path, prefix="moclo", check_every_s=0.0), close)
    assert revoked.check() == []  # nothing revoked yet
    registry.revoke_device("farm", "gone")
    assert revoked.check() == [] and revoked.check() == []  # failed: kept to try again
    assert revoked.check() == ["farm.gone"]
    assert revoked.check() == []  # closed once, then never asked again
    assert asked == ["farm.gone"] * 3


def test_a_registry_briefly_missing_closes_no_one_that_was_not_revoked(tmp_path: Path) -> None:
    """The registry moved aside for a moment (a backup, a restore, a mistake): new logins are
    refused meanwhile, but nobody was revoked, so no open connection is closed. Read as "every
    login gone", it closed every device, ingest worker and serve (found in review)."""
    registry = Registry(tmp_path / "registry.sqlite")
    registry.add_device("farm", COW, "kept")
    registry.add_device("farm", COW, "gone")
    registry.add_account("ingest", "worker-0")
    asked: list[str] = []

    def close(usernames: Sequence[str], reason: str) -> int:
        asked.extend(usernames)
        return len(usernames)

    revoked = RevokedLogins(EngineAuth(registry.path, prefix="moclo", check_every_s=0.0), close)
    assert revoked.check() == []
    aside = tmp_path / "registry.sqlite.moved"
    registry.path.rename(aside)
    assert revoked.check() == []
    aside.rename(registry.path)
    assert revoked.check() == [] and asked == []
    # Control: a login revoked once the registry is back is closed, and only it.
    registry.revoke_device("farm", "gone")
    assert revoked.check() == ["farm.gone"] and asked == ["farm.gone"]
