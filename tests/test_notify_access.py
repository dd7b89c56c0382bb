"""The notifier's broker account (role `notify`), from the attacker's side on a real Mosquitto
with the generated password and ACL files: a `notify` login receives alert changes and notices
of every tenant, and no reading; whatever it publishes is refused. Beside each refusal, a
positive control: an account allowed to do the same thing does it, seen by the same observer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from access.broker import acl_text, write_broker_auth
from access.registry import Registry
from core.settings import Settings
from devices.topics import (
    acknowledgement_topic,
    alert_topic,
    notice_topic,
    telemetry_topic,
)
from moclo.stack import MosquittoServer, free_port
from tests.helpers import cow_json
from tests.test_broker_access import NOT_AUTHORISED, Peer, Secured

T1, T2 = "farm-one", "clinic-two"


@pytest.fixture
def secured(settings: Settings, tmp_path: Path) -> Iterator[Secured]:
    registry = Registry(settings.registry)
    logins = {
        "cow": registry.add_device(T1, "cow_tracker", "cow-a"),
        "ingest": registry.add_account("ingest", "ingest"),
        "serve": registry.add_account("serve", "dash"),
        "notify": registry.add_account("notify", "notifier"),
        "operator": registry.add_account("operator", "vet", tenant=T1),
    }
    directory = tmp_path / "broker-auth"
    auth = write_broker_auth(registry, directory, prefix=settings.topic_prefix)
    broker = MosquittoServer(
        tmp_path / "mq", free_port(), password_file=auth.password_file, acl_file=auth.acl_file
    )
    broker.start()
    try:
        yield Secured(broker, registry, directory, settings.topic_prefix, logins)
    finally:
        broker.stop()


def test_the_acl_gives_notify_two_read_lines_and_nothing_else(settings: Settings) -> None:
    registry = Registry(settings.registry)
    registry.add_account("notify", "notifier")
    text = acl_text(registry.mqtt_logins(), "p")
    block = text.split("user notifier\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert block == ["topic read p/+/alerts/+", "topic read p/+/notices/+"]


def test_a_notify_login_reads_alerts_and_notices_of_every_tenant_and_no_telemetry(
    secured: Secured,
) -> None:
    port, p = secured.broker.port, secured.prefix
    notifier = Peer(port, "notifier", secured.creds("notify"))
    serve = Peer(port, "serve-eye", secured.creds("serve"))  # the positive control's observer
    cow = Peer(port, "cow", secured.creds("cow"))
    alerter = Peer(port, "alerts", secured.second("ingest", "alerts"))
    gateway = Peer(port, "gateway", secured.second("ingest", "commands"))
    try:
        for peer in (notifier, serve):
            assert peer.subscribe(f"{p}/#") == [1]  # granted: the ACL filters at delivery
        reading = cow_json(1_795_327_200, 1)
        assert cow.publish(telemetry_topic(p, T1, "cow_tracker", "cow-a"), reading) == 0
        alerts = [b'{"probe": "alert one"}', b'{"probe": "alert two"}']
        assert alerter.publish(alert_topic(p, T1, "cow-a"), alerts[0]) == 0
        assert alerter.publish(alert_topic(p, T2, "pm-1"), alerts[1]) == 0
        notice = b'{"probe": "notice"}'
        assert gateway.publish(notice_topic(p, T1, "cow-a"), notice) == 0
        # Everything is queued for a subscriber before its PUBACK; an UNSUBACK on the same
        # connection comes after what was queued for it.
        for peer in (notifier, serve):
            peer.unsubscribe(f"{p}/#")
        got = {payload for _, payload in notifier.take()}
        assert got == {*alerts, notice}, "the notifier must see both tenants' alerts, a notice"
        assert reading in {payload for _, payload in serve.take()}, "positive control"
    finally:
        for peer in (notifier, serve, cow, alerter, gateway):
            peer.close()


def test_a_notify_login_cannot_publish_anything(secured: Secured) -> None:
    port, p = secured.broker.port, secured.prefix
    notifier = Peer(port, "notifier", secured.creds("notify"))
    serve = Peer(port, "serve-eye", secured.creds("serve"))
    ingest = Peer(port, "ingest-eye", secured.creds("ingest"))
    alerter = Peer(port, "alerts", secured.second("ingest", "alerts"))
    operator = Peer(port, "vet", secured.creds("operator"))
    try:
        assert serve.subscribe(f"{p}/#") == [1]
        assert ingest.subscribe(f"{p}/#") == [1]
        attempts = {
            "telemetry": telemetry_topic(p, T1, "cow_tracker", "cow-a"),
            "alert": alert_topic(p, T1, "cow-a"),
            "notice": notice_topic(p, T1, "cow-a"),
            "acknowledgement": acknowledgement_topic(p, T1, "notifier"),
            "another's acknowledgement": acknowledgement_topic(p, T1, "vet"),
            "command": f"{p}/{T1}/cow_tracker/cow-a/commands",
        }
        for what, topic in attempts.items():
            assert notifier.publish(topic, f"forged {what}".encode()) == NOT_AUTHORISED, what
        # Positive controls: the accounts allowed to publish these are delivered.
        assert alerter.publish(alert_topic(p, T1, "cow-a"), b"real alert") == 0
        assert operator.publish(acknowledgement_topic(p, T1, "vet"), b"real ack") == 0
        for peer in (serve, ingest):
            peer.unsubscribe(f"{p}/#")
        seen = {payload for peer in (serve, ingest) for _, payload in peer.take()}
        assert {b"real alert", b"real ack"} <= seen
        assert not [payload for payload in seen if payload.startswith(b"forged")]
    finally:
        for peer in (notifier, serve, ingest, alerter, operator):
            peer.close()
