"""No login can take another login's client id, on every broker configuration moclo ships or
generates: `moclo up`'s (moclo/stack.py with the registry's files), the lines `moclo broker-auth
write` tells people to put in their mosquitto.conf, and docker-compose's
deploy/mosquitto/mosquitto.conf.

The attack, from the intruder's side: ingest is stopped (a crash, a deploy) with readings of
both tenants queued for its persistent session; a valid login of every other role (a device, a
tenant's app and operator, serve, a second ingest account) connects with ingest's client id,
clean start false and true, MQTT 3.1.1 and 5, and disconnects. Without a defence the first
intruder takes the session (and with it the queued readings) and the others wipe it: when
ingest is back, nothing queued is ever stored. The positive control runs the same stop, queue
and restart without intruders, and must store everything.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from paho.mqtt.enums import MQTTProtocolVersion
from pydantic import SecretStr

from access.broker import BrokerAuth, write_broker_auth
from access.registry import Credentials, Registry
from access.tls import LocalTls
from core.settings import Settings
from devices.topics import alert_subscription, telemetry_topic
from ingest.options import IngestOptions
from moclo.stack import MosquittoServer, free_port
from tests.conftest import RunningIngest, RunningServe
from tests.helpers import Influx, connack_code, cow_json, log_since, wait_until
from tests.test_broker_access import Peer
from tests.test_compose_access import ComposeBroker, broker_config

T1, T2 = "farm-one", "farm-two"
COW = "cow_tracker"
INGEST = "ingest"
INTRUDERS = ("device", "app", "operator", "serve", "ingest")
_seq = itertools.count(1)


class AuthLinesBroker(MosquittoServer):
    """Mosquitto with only a listener, logging and what `moclo broker-auth write` prints: the
    configuration of someone who follows that command's advice on a broker of their own."""

    def __init__(self, directory: Path, port: int, auth: BrokerAuth) -> None:
        super().__init__(directory, port)
        self.auth = auth

    def write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            *self.auth.config_lines(),
            f"log_dest file {self.log_path}",
            *(f"log_type {kind}" for kind in ("error", "warning", "notice", "information")),
            "user root" if os.geteuid() == 0 else f"user {os.getlogin()}",
        ]
        self.config_path.write_text("\n".join(lines) + "\n")


@dataclass
class Closed:
    """A broker on one of the shipped configurations, with the registry's logins."""

    broker: MosquittoServer
    prefix: str
    logins: dict[str, Credentials]

    def creds(self, name: str) -> tuple[str, str]:
        return self.logins[name].username, self.logins[name].password


@pytest.fixture(params=["moclo up", "broker-auth write", "compose"])
def closed(
    request: pytest.FixtureRequest, settings: Settings, tmp_path: Path, repo_root: Path
) -> Iterator[Closed]:
    registry = Registry(settings.registry)
    logins = {
        "device": registry.add_device(T1, COW, "cow-a"),
        "device B": registry.add_device(T1, COW, "cow-b"),
        "device D": registry.add_device(T2, COW, "cow-d"),
        "the ingest": registry.add_account("ingest", INGEST),
        "ingest": registry.add_account("ingest", "ingest-two"),
        "serve": registry.add_account("serve", "dash"),
        "app": registry.add_account("app", "farm-one-app", tenant=T1),
        "operator": registry.add_account("operator", "vet", tenant=T1),
    }
    directory = tmp_path / "broker-auth"
    auth = write_broker_auth(registry, directory, prefix=settings.topic_prefix)
    port = free_port()
    broker: MosquittoServer
    if request.param == "moclo up":
        broker = MosquittoServer(
            tmp_path / "mq", port, password_file=auth.password_file, acl_file=auth.acl_file
        )
    elif request.param == "broker-auth write":
        broker = AuthLinesBroker(tmp_path / "mq", port, auth)
    else:
        broker = ComposeBroker(tmp_path / "mq", port, broker_config(repo_root), str(directory))
    broker.start()
    try:
        yield Closed(broker, settings.topic_prefix, logins)
    finally:
        broker.stop()


def queue_readings(closed: Closed) -> set[tuple[str, int]]:
    """Three readings of a device of each tenant, acknowledged by the broker while ingest is
    away (so queued for its session); returns their (device_id, seq)."""
    sent = set()
    now = int(time.time())
    for who, tenant, device in (("device B", T1, "cow-b"), ("device D", T2, "cow-d")):
        peer = Peer(closed.broker.port, who, closed.creds(who))
        try:
            for _ in range(3):
                seq = next(_seq)
                topic = telemetry_topic(closed.prefix, tenant, COW, device)
                assert peer.publish(topic, cow_json(now - 600 + seq, seq)) == 0
                sent.add((device, seq))
        finally:
            peer.close()
    return sent


def logged_connections(broker: MosquittoServer, offset: int, username: str) -> list[str]:
    """The broker's "New client connected" lines for `username` after `offset` in its log."""
    return [
        line
        for line in log_since(broker.log_path, offset).splitlines()
        if "New client connected" in line and f"u'{username}'" in line
    ]


def stored(influx: Influx) -> set[tuple[str, int]]:
    if influx.count(COW, "seq") == 0:
        return set()
    rows = influx.query(f'SELECT seq FROM "{COW}" GROUP BY device_id')
    return {(row["device_id"], int(row["seq"])) for row in rows}


def test_no_login_can_take_ingests_session_and_every_queued_reading_is_stored(
    closed: Closed, settings: Settings, influx: Influx
) -> None:
    broker = closed.broker
    assert connack_code(broker.port, None, None) == 0x87, "anonymous clients must be refused"
    user, password = closed.creds("the ingest")
    service = settings.model_copy(
        update={
            "mqtt_url": broker.url,
            "mqtt_username": user,
            "mqtt_password": SecretStr(password),
            "ingest_client_id": None,  # the default: its username, the broker's name for it
            "unregistered": "reject",
        }
    )
    options = IngestOptions(linger_s=0.05)
    with RunningIngest(service, options):
        pass  # its persistent session now exists at the broker, with its subscriptions

    # The positive control: stopped, readings queued, back: every one stored.
    expected = queue_readings(closed)
    with RunningIngest(service, options):
        wait_until(lambda: stored(influx) == expected, what="the queued readings (control)")

    # The attack: the same, with every other role's login taking ingest's client id meanwhile.
    attacked = queue_readings(closed)
    expected |= attacked
    received: dict[str, list[tuple[str, bytes]]] = {}
    named: dict[str, str] = {}  # how the broker's log names each intruder's connection
    for role, clean, protocol in itertools.product(
        INTRUDERS, (False, True), (MQTTProtocolVersion.MQTTv311, MQTTProtocolVersion.MQTTv5)
    ):
        name = f"{role}, clean {clean}, MQTT {'5' if protocol == 5 else '3.1.1'}"
        offset = broker.log_path.stat().st_size
        intruder = Peer(
            broker.port,
            name,
            closed.creds(role),
            protocol=protocol,
            client_id=INGEST,
            clean_start=clean,
        )
        assert intruder.logged_in, f"{name}: its own valid login was refused ({intruder.connack})"
        # A session taken over is handed its queue right after CONNACK, before the broker
        # reads the next packet: once this SUBACK is in, anything queued would be too.
        assert intruder.subscribe(f"{closed.prefix}/nothing-here") == [1]
        received[name] = intruder.take()
        intruder.close()
        # The broker names the connection by the intruder's username, whatever id it sent.
        username = closed.creds(role)[0]
        level = "p5" if protocol == MQTTProtocolVersion.MQTTv5 else "p2"  # as the log says
        connected = wait_until(
            lambda: logged_connections(broker, offset, username),  # noqa: B023 (called here)
            what=f"the broker's log of {name}",
        )
        named[name] = connected[-1].split(" as ", 1)[1].split(" (", 1)[0] + f" ({level})"
    assert received == {name: [] for name in received}, "an intruder received queued messages"

    with RunningIngest(service, options):
        now_stored: set[tuple[str, int]] = set()

        def all_stored() -> bool:
            now_stored.clear()
            now_stored.update(stored(influx))
            return now_stored == expected

        with contextlib.suppress(AssertionError):  # judged below, with the numbers
            wait_until(all_stored, timeout_s=15, what="every queued reading")
    assert now_stored == expected, (
        f"{len(now_stored & attacked)} of the {len(attacked)} readings queued before the "
        "intruders came were stored"
    )
    # The broker used each intruder's username as its client id, over MQTT 3.1.1 and 5.
    assert named == {
        name: f"{closed.creds(name.split(',')[0])[0]} ({'p5' if 'MQTT 5' in name else 'p2'})"
        for name in named
    }


def listener_sections(lines: list[str]) -> list[list[str]]:
    """A config's `listener` sections, each with its settings (up to the next listener)."""
    sections: list[list[str]] = []
    for line in (line.strip() for line in lines):
        if line.startswith("listener "):
            sections.append([])
        elif sections and line and not line.startswith("#"):
            sections[-1].append(line)
    return sections


def test_every_listener_of_every_closed_config_names_clients_by_their_login(
    tmp_path: Path, repo_root: Path
) -> None:
    """Mosquitto 2.0.11 applies `use_username_as_clientid` to the listener it follows only
    (before the first one it opens a listener on port 1883 instead), so each listener
    section must carry it: a TLS listener without it would leave the takeover open there."""
    auth = BrokerAuth(tmp_path / "passwords", tmp_path / "acl")
    tls = LocalTls(*(tmp_path / name for name in ("tls", "ca.crt", "ca.key", "s.crt", "s.key")))
    up = MosquittoServer(
        tmp_path / "up",
        1883,
        password_file=auth.password_file,
        acl_file=auth.acl_file,
        tls=tls,
        tls_port=8883,
    )
    up.directory.mkdir()
    up.write_config()
    configs = {
        "moclo up": up.config_path.read_text().splitlines(),
        "compose": broker_config(repo_root),
        "broker-auth write": ["listener 1883", *auth.config_lines()],
    }
    for name, lines in configs.items():
        sections = listener_sections(lines)
        assert sections, name
        for section in sections:
            assert "use_username_as_clientid true" in section, (name, section)
    assert len(listener_sections(configs["moclo up"])) == 2  # the TLS listener is checked too
    # An open broker (the tests' own, `moclo up` against no registry) has no username to use.
    open_broker = MosquittoServer(tmp_path / "open", 1883)
    open_broker.directory.mkdir()
    open_broker.write_config()
    assert "use_username_as_clientid" not in open_broker.config_path.read_text()


@pytest.mark.parametrize("closed", ["moclo up"], indirect=True)
def test_ingest_and_serve_keep_their_connections_while_acknowledging(
    closed: Closed, settings: Settings
) -> None:
    """One connection per login: ingest (consumer and alert publisher) and serve (live stream
    and acknowledgements) each hold two, under two logins, so nothing of theirs is pushed off.
    Two acknowledgements at once through serve both succeed, while an operator watching the
    tenant's alerts with its own login keeps its connection and sees both."""
    broker = closed.broker
    offset = broker.log_path.stat().st_size

    def logged_in(settings: Settings, who: str) -> Settings:
        user, password = closed.creds(who)
        update = {"mqtt_username": user, "mqtt_password": SecretStr(password)}
        return settings.model_copy(update={"mqtt_url": broker.url, **update})

    service = logged_in(settings, "the ingest").model_copy(update={"ingest_client_id": None})
    web = logged_in(settings, "serve").model_copy(update={"serve_listen": "127.0.0.1:0"})
    with RunningIngest(service, IngestOptions(linger_s=0.05)), RunningServe(web) as serve:
        watcher = Peer(broker.port, "operator watching", closed.creds("operator"))
        assert watcher.subscribe(alert_subscription(closed.prefix, T1)) == [1]
        now = int(time.time()) // 60 * 60
        for who, device in (("device", "cow-a"), ("device B", "cow-b")):
            peer = Peer(broker.port, who, closed.creds(who))
            fever = [cow_json(now - 600 + 300 * i, i, body_temp_c=40.5) for i in range(3)]
            topic = telemetry_topic(closed.prefix, T1, COW, device)
            assert peer.publish(topic, b"[" + b",".join(fever) + b"]") == 0
            peer.close()

        def open_alerts() -> list[dict[str, str]]:
            with serve.client() as api:
                found: list[dict[str, str]] = api.get("/api/alerts", params={"tenant": T1}).json()[
                    "alerts"
                ]
            return found if len(found) == 2 else []

        alerts = wait_until(open_alerts, what="two fever alerts")
        token = serve.token([T1], role="operator", name="vet-ana")

        def acknowledge(alert_id: str) -> httpx.Response:
            with serve.client(token) as api:
                return api.post(f"/api/alerts/{alert_id}/ack", json={"note": "on it"})

        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(acknowledge, [a["id"] for a in alerts]))
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        wait_until(
            lambda: sum(b'"acknowledged"' in p for _, p in watcher.messages) == 2,
            what="the watcher to see both acknowledgements",
        )
        assert not watcher.disconnected.is_set()
        watcher.close()
    # Nobody was pushed off: the broker closes an old connection of a login that connects
    # again with "Client ID already connected, closing old connection".
    assert "already connected" not in log_since(broker.log_path, offset)
