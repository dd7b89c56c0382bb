"""Who may do what on a real Mosquitto configured by the project (`allow_anonymous false`, the
password and ACL files generated from the registry), with ingest running against it as the
`ingest` account and checking the registry.

The matrix: identities × actions, each cell judged by what a client with the rights to see it
actually receives, never by the absence of an error:

- a publish cell is "delivered" if an observer that may read the topic receives it. Absence is
  proven with a marker: after the cell's PUBACK, an allowed identity publishes a marker that the
  same observer receives; the broker routes messages in the order it takes them, so once the
  marker is in, a delivered message would be too.
- a subscribe cell lists which probes (telemetry and alerts of both tenants, published by
  allowed identities) reached the subscriber. The marker here is the subscriber's own
  UNSUBACK, requested after every probe's PUBACK: the broker queues a probe for a subscriber
  before it acknowledges the probe, and answers the UNSUBSCRIBE after, on the same connection.
  The cells where something is expected prove that this ordering holds.

And what got into InfluxDB is exactly what was allowed: the allowed telemetry (each reading
has its own `seq`) and the allowed acknowledgements (stored as `bad_ack`, since they name no
alert); nothing refused, and no unregistered_device rejection.

What Mosquitto 2.0.11 does, as asserted here: a refused login gets CONNACK 0x87 (not
authorised; also for a wrong password or unknown user); every SUBSCRIBE is granted (SUBACK
with the granted QoS, also for `#`) and what the ACL does not allow is filtered at delivery; a
PUBLISH the ACL does not allow is dropped, answered over MQTT 5 with PUBACK 0x87 and over MQTT
3.1.1 with a plain PUBACK; a SIGHUP after a revocation disconnects the revoked device at once.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from pydantic import SecretStr

from access.broker import reload_broker, write_broker_auth
from access.registry import Credentials, Registry
from core.mqtt import CONNECTION_SEPARATOR, connection_login
from core.settings import Settings
from devices.topics import (
    acknowledgement_topic,
    alert_subscription,
    alert_topic,
    on_behalf_acknowledgement_topic,
    telemetry_topic,
)
from ingest.options import IngestOptions
from moclo.stack import MosquittoServer, free_port
from tests.conftest import RunningIngest
from tests.helpers import Influx, cow_json, wait_until

T1, T2 = "farm-one", "farm-two"
COW = "cow_tracker"
NO_LOGIN = "no login"
NOT_AUTHORISED = 0x87
_seq = itertools.count(1)


class Peer:
    """A paho MQTT client driven synchronously: every call waits for the broker's answer."""

    def __init__(
        self,
        port: int,
        name: str,
        credentials: tuple[str, str] | None,
        *,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
        client_id: str | None = None,
        clean_start: bool = True,
    ) -> None:
        self.name = name
        v5 = protocol == MQTTProtocolVersion.MQTTv5
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"{name.replace(' ', '-')}-{uuid.uuid4().hex[:6]}",
            protocol=protocol,
            clean_session=None if v5 else clean_start,  # MQTT 3.1.1 says it here, 5 at connect
        )
        if credentials is not None:
            self.client.username_pw_set(*credentials)
        self.connack: int | None = None
        self.disconnected = threading.Event()
        self.messages: list[tuple[str, bytes]] = []
        self._answers: dict[int, list[int]] = {}
        self._lock = threading.Lock()
        self._answered = threading.Condition(self._lock)  # an answer came, or the connection went
        c = self.client
        c.on_connect = self._on_connect
        c.on_disconnect = lambda *a: self._gone()
        c.on_message = lambda cl, u, m: self._keep(m)
        c.on_publish = lambda cl, u, mid, rc, p: self._answer(mid, [rc.value])
        c.on_subscribe = lambda cl, u, mid, rcs, p: self._answer(mid, [r.value for r in rcs])
        c.on_unsubscribe = lambda cl, u, mid, rcs, p: self._answer(mid, [r.value for r in rcs])
        first_only = paho.MQTT_CLEAN_START_FIRST_ONLY  # what 3.1.1 must pass
        c.connect("127.0.0.1", port, clean_start=clean_start if v5 else first_only)
        c.loop_start()
        wait_until(lambda: self.connack is not None, timeout_s=10, what=f"CONNACK for {name}")
        if self.connack != 0:
            self.close()  # or paho would keep retrying

    @property
    def logged_in(self) -> bool:
        return self.connack == 0

    def publish(self, topic: str, payload: bytes) -> int | None:
        """QoS 1; the PUBACK's reason code, or None if the broker closed the connection."""
        info = self.client.publish(topic, payload, qos=1)
        return self._wait(info.mid, f"PUBACK of {topic}")[0]

    def subscribe(self, topic_filter: str) -> list[int]:
        _, mid = self.client.subscribe(topic_filter, qos=1)
        assert mid is not None
        return self._wait(mid, f"SUBACK of {topic_filter}")

    def unsubscribe(self, topic_filter: str) -> None:
        _, mid = self.client.unsubscribe(topic_filter)
        assert mid is not None
        self._wait(mid, f"UNSUBACK of {topic_filter}")

    def received(self, payload: bytes) -> bool:
        with self._lock:
            return any(p == payload for _, p in self.messages)

    def take(self) -> list[tuple[str, bytes]]:
        with self._lock:
            taken, self.messages = self.messages, []
        return taken

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _wait(self, mid: int, what: str) -> list[int]:
        with self._answered:
            done = self._answered.wait_for(
                lambda: mid in self._answers or self.disconnected.is_set(), timeout=10
            )
            assert done, f"{self.name}: no {what} within 10 s"
            # Closed by the broker without an answer: -1.
            return self._answers.pop(mid, [-1])

    def _on_connect(self, c: object, u: object, flags: object, reason: object, p: object) -> None:
        self.connack = reason.value  # type: ignore[attr-defined]

    def _answer(self, mid: int, codes: list[int]) -> None:
        with self._answered:
            self._answers[mid] = codes
            self._answered.notify_all()

    def _gone(self) -> None:
        with self._answered:
            self.disconnected.set()
            self._answered.notify_all()

    def _keep(self, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload)))


@dataclass
class Identity:
    name: str
    credentials: tuple[str, str] | None
    home: str  # its tenant (for a device, its own)
    device: str | None = None  # a device's own id


@dataclass
class Secured:
    """A broker that knows only the registry's logins, with the registry and its logins."""

    broker: MosquittoServer
    registry: Registry
    directory: Path
    prefix: str
    logins: dict[str, Credentials]

    def creds(self, name: str) -> tuple[str, str]:
        login = self.logins[name]
        return login.username, login.password

    def second(self, name: str, purpose: str) -> tuple[str, str]:
        """The login of that account's second connection (`USER~purpose`, same password)."""
        login = self.logins[name]
        return connection_login(login.username, purpose), login.password

    def regenerate_and_reload(self) -> None:
        write_broker_auth(self.registry, self.directory, prefix=self.prefix)
        assert self.broker.pid is not None
        reload_broker(self.broker.pid)


@pytest.fixture
def secured(settings: Settings, tmp_path: Path) -> Iterator[Secured]:
    registry = Registry(settings.registry)
    logins = {
        "device A": registry.add_device(T1, COW, "cow-a"),
        "device B": registry.add_device(T1, COW, "cow-b"),
        "device C": registry.add_device(T1, COW, "cow-c"),
        "device D": registry.add_device(T2, COW, "cow-d"),
        "device E": registry.add_device(T2, COW, "cow-e"),
        "ingest": registry.add_account("ingest", "ingest"),
        "serve": registry.add_account("serve", "dash"),
        "app farm-one": registry.add_account("app", "farm-one-app", tenant=T1),
        "app farm-two": registry.add_account("app", "farm-two-app", tenant=T2),
        "operator farm-one": registry.add_account("operator", "vet", tenant=T1),
        # The broker allows one connection per login: the matrix's observers, markers and
        # probes, and the identities it tries, each log in as someone of their own.
        "device M": registry.add_device(T1, COW, "cow-m"),
        "ingest B": registry.add_account("ingest", "ingest-b"),
        "ingest eye": registry.add_account("ingest", "ingest-eye"),
        "serve eye": registry.add_account("serve", "dash-eye"),
        "operator M": registry.add_account("operator", "vet-m", tenant=T1),
    }
    directory = tmp_path / "broker-auth"
    auth = write_broker_auth(registry, directory, prefix=settings.topic_prefix)
    broker = MosquittoServer(
        tmp_path / "mq", free_port(), password_file=auth.password_file, acl_file=auth.acl_file
    )
    broker.start()
    try:
        assert "allow_anonymous false" in broker.config_path.read_text().splitlines()
        yield Secured(broker, registry, directory, settings.topic_prefix, logins)
    finally:
        broker.stop()


DEVICES = {"device A": "cow-a", "device B": "cow-b", "device C": "cow-c"}
OTHER_DEVICE = {"cow-a": "cow-b", "cow-b": "cow-a", "cow-c": "cow-a"}
TENANT_DEVICES = {T1: ("cow-a", "cow-b"), T2: ("cow-d", "cow-e")}
ACTIONS = [
    "pub own telemetry",
    "pub other device",
    "pub other tenant",
    "pub alert",
    "pub ack",
    "sub #",
    "sub own alerts",
    "sub other alerts",
]
PROBES = ["telemetry farm-one", "telemetry farm-two", "alert farm-one", "alert farm-two"]
_DENIED = {a: "dropped" if a.startswith("pub") else "nothing" for a in ACTIONS}


def expected_matrix() -> dict[str, dict[str, str]]:
    no_login = dict.fromkeys(ACTIONS, NO_LOGIN)
    device = {**_DENIED, "pub own telemetry": "delivered"}
    app_one = {**_DENIED, "sub #": "alert farm-one", "sub own alerts": "received"}
    return {
        "anonymous": no_login,
        "wrong password": no_login,
        "device A": device,
        "device B": device,
        "revoked device C": no_login,
        "username #": no_login,
        "username +": no_login,
        "app farm-one": app_one,
        "app farm-two": {**_DENIED, "sub #": "alert farm-two", "sub own alerts": "received"},
        "operator farm-one": {**app_one, "pub ack": "delivered"},
        "operator farm-one acks": {**app_one, "pub ack": "delivered"},
        "ingest": {**_DENIED, "sub #": "telemetry farm-one, telemetry farm-two"},
        "ingest alerts": {**_DENIED, "pub alert": "delivered"},
        "serve": {
            **_DENIED,
            "sub #": ", ".join(sorted(PROBES)),
            "sub own alerts": "received",
            "sub other alerts": "received",
        },
        "serve acks": {
            **_DENIED,
            "pub ack": "delivered",
            "sub #": "alert farm-one, alert farm-two",
            "sub own alerts": "received",
            "sub other alerts": "received",
        },
    }


class Matrix:
    """Runs the cells and keeps what the broker and InfluxDB must agree with."""

    def __init__(self, secured: Secured) -> None:
        self.s = secured
        self.prefix = secured.prefix
        port = secured.broker.port
        # Observers with the rights to see what a cell tries: serve reads telemetry and
        # alerts of every tenant, ingest's account reads acknowledgements.
        self.serve_eye = Peer(port, "observer-serve", secured.creds("serve eye"))
        self.ingest_eye = Peer(port, "observer-ingest", secured.creds("ingest eye"))
        for eye in (self.serve_eye, self.ingest_eye):
            assert eye.subscribe(f"{self.prefix}/#") == [1]
        self.device_m = Peer(port, "marker-m", secured.creds("device M"))
        self.device_d = Peer(port, "probe-d", secured.creds("device D"))
        self.alerter = Peer(port, "probe-ingest", secured.second("ingest eye", "alerts"))
        self.operator = Peer(port, "marker-vet", secured.creds("operator M"))
        self.base_ts = int(time.time()) - 300
        self.stored: set[tuple[str, int]] = set()  # (device_id, seq) that must be in InfluxDB
        self.acks_delivered = 0
        self.pubacks: dict[tuple[str, str], int | None] = {}
        self.subacks: dict[tuple[str, str], list[int]] = {}

    def close(self) -> None:
        for peer in (self.serve_eye, self.ingest_eye, self.device_m, self.device_d, self.alerter):
            peer.close()
        self.operator.close()

    # -- messages --------------------------------------------------------------------------

    def reading(self) -> tuple[int, bytes]:
        """A healthy cow's reading with a `seq` (and `ts`) of its own, in the past minutes."""
        seq = next(_seq)
        return seq, cow_json(self.base_ts + seq, seq)

    def marker(self) -> None:
        """Device M's own reading, seen by the serve observer: everything published before it
        has been routed."""
        seq, payload = self.reading()
        topic = telemetry_topic(self.prefix, T1, COW, "cow-m")
        assert self.device_m.publish(topic, payload) == 0
        self.stored.add(("cow-m", seq))
        wait_until(lambda: self.serve_eye.received(payload), timeout_s=10, what="a marker")

    def ack_marker(self) -> None:
        payload = orjson.dumps({"id": "0" * 12, "by": "marker", "note": uuid.uuid4().hex})
        assert self.operator.publish(acknowledgement_topic(self.prefix, T1, "vet-m"), payload) == 0
        self.acks_delivered += 1
        wait_until(lambda: self.ingest_eye.received(payload), timeout_s=10, what="an ack marker")

    # -- cells -----------------------------------------------------------------------------

    def row(self, who: Identity) -> dict[str, str]:
        peer = Peer(self.s.broker.port, who.name, who.credentials)
        if not peer.logged_in:
            self.pubacks[(who.name, "connect")] = peer.connack
            return dict.fromkeys(ACTIONS, NO_LOGIN)
        try:
            return {action: self.cell(peer, who, action) for action in ACTIONS}
        finally:
            peer.close()

    def cell(self, peer: Peer, who: Identity, action: str) -> str:
        other = T2 if who.home == T1 else T1
        p = self.prefix
        own_device = who.device or TENANT_DEVICES[who.home][0]
        if action.startswith("pub"):
            target_device = {
                "pub own telemetry": (who.home, own_device),
                "pub other device": (
                    who.home,
                    OTHER_DEVICE[who.device] if who.device else TENANT_DEVICES[who.home][1],
                ),
                "pub other tenant": (other, TENANT_DEVICES[other][0]),
            }.get(action)
            if target_device is not None:
                tenant, device_id = target_device
                seq, payload = self.reading()
                topic = telemetry_topic(p, tenant, COW, device_id)
                self.pubacks[(who.name, action)] = peer.publish(topic, payload)
                self.marker()
                if self.serve_eye.received(payload):
                    self.stored.add((device_id, seq))
                    return "delivered"
                return "dropped"
            if action == "pub alert":
                payload = orjson.dumps({"id": uuid.uuid4().hex[:12], "state": "raised"})
                self.pubacks[(who.name, action)] = peer.publish(
                    alert_topic(p, who.home, own_device), payload
                )
                self.marker()
                return "delivered" if self.serve_eye.received(payload) else "dropped"
            # Under its account's name (what an operator may do, also as `NAME~acks`), or
            # serve's topic for people.
            payload = orjson.dumps({"id": "f" * 12, "by": who.name, "note": uuid.uuid4().hex})
            login = who.credentials[0] if who.credentials else "anonymous"
            account = login.split(CONNECTION_SEPARATOR)[0]
            on_behalf = who.name.startswith("serve")
            topic = (on_behalf_acknowledgement_topic if on_behalf else acknowledgement_topic)(
                p, who.home, account
            )
            self.pubacks[(who.name, action)] = peer.publish(topic, payload)
            self.ack_marker()
            if self.ingest_eye.received(payload):
                self.acks_delivered += 1
                return "delivered"
            return "dropped"

        topic_filter, probes = {
            "sub #": ("#", PROBES),
            "sub own alerts": (alert_subscription(p, who.home), [f"alert {who.home}"]),
            "sub other alerts": (alert_subscription(p, other), [f"alert {other}"]),
        }[action]
        self.subacks[(who.name, action)] = peer.subscribe(topic_filter)
        sent = {name: self.probe(name) for name in probes}
        peer.unsubscribe(topic_filter)  # the barrier: see the module's docstring
        got = {payload for _, payload in peer.take()}
        received = sorted(name for name, payload in sent.items() if payload in got)
        if action == "sub #":
            return ", ".join(received) or "nothing"
        return "received" if received else "nothing"

    def probe(self, name: str) -> bytes:
        """Publishes one probe as an identity allowed to; returns its payload once the serve
        observer (who may read every probe) has it."""
        kind, tenant = name.split()
        if kind == "telemetry":
            seq, payload = self.reading()
            publisher, device_id = (self.device_m, "cow-m") if tenant == T1 else (
                self.device_d, "cow-d"
            )  # fmt: skip
            topic = telemetry_topic(self.prefix, tenant, COW, device_id)
            self.stored.add((device_id, seq))
        else:
            payload = orjson.dumps({"id": uuid.uuid4().hex[:12], "probe": name})
            publisher, topic = self.alerter, alert_topic(self.prefix, tenant, "cow-a")
        assert publisher.publish(topic, payload) == 0, f"the probe {name} was refused"
        wait_until(lambda: self.serve_eye.received(payload), timeout_s=10, what=f"probe {name}")
        return payload


def show(matrix: dict[str, dict[str, str]], expected: dict[str, dict[str, str]]) -> str:
    lines = []
    for who, cells in matrix.items():
        wrong = [
            f"{action}: {cells[action]!r} (expected {expected[who][action]!r})"
            for action in ACTIONS
            if cells[action] != expected[who][action]
        ]
        lines.append(f"{who}: " + ("ok" if not wrong else "; ".join(wrong)))
    return "\n".join(lines)


def test_only_the_allowed_cells_of_the_access_matrix_succeed(
    secured: Secured, settings: Settings, influx: Influx, caplog: pytest.LogCaptureFixture
) -> None:
    s = secured
    service = settings.model_copy(
        update={
            "mqtt_url": s.broker.url,
            "mqtt_username": "ingest",
            "mqtt_password": SecretStr(s.logins["ingest"].password),
            "unregistered": "reject",
        }
    )
    port = s.broker.port
    with RunningIngest(service, IngestOptions(linger_s=0.05)) as running:
        matrix = Matrix(s)
        try:
            # Device C speaks while registered, then is revoked while the broker runs: the
            # registry, the regenerated files and a SIGHUP take it off at once.
            device_c = Peer(port, "device C before", s.creds("device C"))
            seq, payload = matrix.reading()
            assert device_c.publish(telemetry_topic(s.prefix, T1, COW, "cow-c"), payload) == 0
            matrix.stored.add(("cow-c", seq))
            wait_until(
                lambda: influx.count(COW, "seq", "device_id = 'cow-c'") == 1,
                what="device C's reading stored while it was registered",
            )
            s.registry.revoke_device(T1, "cow-c")
            s.regenerate_and_reload()
            assert device_c.disconnected.wait(10), "the broker kept the revoked device connected"
            device_c.close()

            identities = [
                Identity("anonymous", None, T1),
                Identity("wrong password", (s.logins["device A"].username, "not-it"), T1),
                *(Identity(n, s.creds(n), T1, DEVICES[n]) for n in ("device A", "device B")),
                Identity("revoked device C", s.creds("device C"), T1, "cow-c"),
                Identity("username #", ("#", s.logins["device A"].password), T1),
                Identity("username +", ("+", s.logins["device A"].password), T1),
                Identity("app farm-one", s.creds("app farm-one"), T1),
                Identity("app farm-two", s.creds("app farm-two"), T2),
                Identity("operator farm-one", s.creds("operator farm-one"), T1),
                Identity("operator farm-one acks", s.second("operator farm-one", "acks"), T1),
                # Another ingest account: this one's logins are the running ingest's.
                Identity("ingest", s.creds("ingest B"), T1),
                Identity("ingest alerts", s.second("ingest B", "alerts"), T1),
                Identity("serve", s.creds("serve"), T1),
                Identity("serve acks", s.second("serve", "acks"), T1),
            ]
            actual = {who.name: matrix.row(who) for who in identities}
            expected = expected_matrix()
            assert actual == expected, "\n" + show(actual, expected)

            # What Mosquitto answered: logins refused with 0x87; every SUBSCRIBE granted at
            # QoS 1 (the ACL filters at delivery); a refused PUBLISH answered with 0x87.
            connacks = {k[0]: v for k, v in matrix.pubacks.items() if k[1] == "connect"}
            assert connacks == {
                "anonymous": NOT_AUTHORISED,
                "wrong password": NOT_AUTHORISED,
                "revoked device C": NOT_AUTHORISED,
                "username #": NOT_AUTHORISED,
                "username +": NOT_AUTHORISED,
            }
            assert set(map(tuple, matrix.subacks.values())) == {(1,)}
            for (who, action), code in matrix.pubacks.items():
                if action != "connect":
                    allowed = actual[who][action] == "delivered"
                    assert code == (0 if allowed else NOT_AUTHORISED), (who, action, code)

            # Nothing refused reached InfluxDB: a last marker of each kind, then exactly the
            # allowed readings and acknowledgements, and no other rejection.
            matrix.marker()
            matrix.ack_marker()
            wait_until(
                lambda: (
                    influx.count(COW, "seq") == len(matrix.stored)
                    and influx.count("moclo_rejected", "error") == matrix.acks_delivered
                ),
                what=f"{len(matrix.stored)} readings and {matrix.acks_delivered} acks stored",
            )
            rows = influx.query(f'SELECT seq FROM "{COW}" GROUP BY device_id')
            stored = {(row["device_id"], row["seq"]) for row in rows}
            assert stored == matrix.stored
            reasons = {r["reason"] for r in influx.query('SELECT * FROM "moclo_rejected"')}
            assert reasons == {"bad_ack"}
            # Ingest counts a batch's rejections once its write is answered, a moment after
            # the rows are readable: wait until the count has come that far, then say exactly.
            wait_until(
                lambda: running.stats.rejected >= matrix.acks_delivered,
                what="ingest to count the rejections it stored",
            )
            assert running.stats.rejected == matrix.acks_delivered

            # No secret in the logs (ingest's and the broker's), the rejected store or /metrics.
            assert running.ingest is not None and running.ingest.http_port
            metrics = httpx.get(f"http://127.0.0.1:{running.ingest.http_port}/metrics").text
            rejected = str(influx.query('SELECT * FROM "moclo_rejected"'))
            seen = caplog.text + s.broker.log_path.read_text() + metrics + rejected
            for credentials in s.logins.values():
                assert credentials.password not in seen
        finally:
            matrix.close()


def test_mqtt_3_clients_get_a_plain_puback_for_a_refused_publish_and_qos_0_is_dropped(
    secured: Secured,
) -> None:
    s = secured
    port = s.broker.port
    eye = Peer(port, "observer", s.creds("serve"))
    assert eye.subscribe(f"{s.prefix}/#") == [1]
    old = Peer(port, "device A 3.1.1", s.creds("device A"), protocol=MQTTProtocolVersion.MQTTv311)
    try:
        forbidden = telemetry_topic(s.prefix, T1, COW, "cow-b")
        qos1, qos0, marker = (cow_json(1795327200, n) for n in (1, 2, 3))
        assert old.publish(forbidden, qos1) == 0  # MQTT 3.1.1 has no way to say no
        old.client.publish(forbidden, qos0, qos=0)
        assert old.publish(telemetry_topic(s.prefix, T1, COW, "cow-a"), marker) == 0
        wait_until(lambda: eye.received(marker), timeout_s=10, what="the marker")
        assert not eye.received(qos1) and not eye.received(qos0)
        assert not old.disconnected.is_set()  # refused quietly, not cut off
    finally:
        old.close()
        eye.close()


def test_retained_alert_state_reaches_only_its_own_tenant(secured: Secured) -> None:
    """Retained messages are handed out when a client subscribes, by a path of their own in
    the broker: the ACL must hold there too."""
    s = secured
    port = s.broker.port
    p = s.prefix
    ingest = Peer(port, "ingest", s.second("ingest", "alerts"))
    states = {
        tenant: orjson.dumps({"id": uuid.uuid4().hex[:12], "tenant": tenant}) for tenant in (T1, T2)
    }
    for tenant, device in ((T1, "cow-a"), (T2, "cow-d")):
        info = ingest.client.publish(
            f"{p}/{tenant}/alert-state/{device}/fever", states[tenant], qos=1, retain=True
        )
        info.wait_for_publish(10)
    everything = f"{p}/+/alert-state/#"

    def retained_for(name: str, topic_filter: str = everything) -> set[str]:
        peer = Peer(port, name, s.creds(name))
        try:
            assert peer.subscribe(topic_filter) == [1]
            peer.unsubscribe(topic_filter)  # retained messages come before the UNSUBACK
            got = {payload for _, payload in peer.take()}
            return {tenant for tenant, state in states.items() if state in got}
        finally:
            peer.close()

    try:
        assert retained_for("serve") == {T1, T2}  # the control: both are retained
        assert retained_for("app farm-one") == {T1}
        assert retained_for("app farm-two") == {T2}
        assert retained_for("operator farm-one", "#") == {T1}
        assert retained_for("device A", "#") == set()
        assert retained_for("ingest", "#") == set()
    finally:
        ingest.close()  # the retained states go with this test's broker


def test_a_share_group_of_ingest_accounts_receives_through_the_acl(
    secured: Secured, settings: Settings, influx: Influx
) -> None:
    """Mosquitto 2.0.11 applies the ACL to a `$share/GROUP/...` subscription's topics: two
    ingests, each logged in as an ingest account of its own (the broker allows one connection
    per login), share the devices' telemetry, and together store every reading once."""
    s = secured
    members = [
        settings.model_copy(
            update={
                "mqtt_url": s.broker.url,
                "mqtt_username": s.logins[account].username,
                "mqtt_password": SecretStr(s.logins[account].password),
                "ingest_client_id": None,  # its username: the broker's name for it anyway
                "ingest_share_group": "ingest",
            }
        )
        for account in ("ingest", "ingest B")
    ]
    with (
        RunningIngest(members[0], IngestOptions()) as one,
        RunningIngest(members[1], IngestOptions()) as two,
    ):
        device = Peer(s.broker.port, "device A", s.creds("device A"))
        try:
            now = int(time.time())
            for seq in range(40):
                payload = cow_json(now - 60 * (40 - seq), seq)
                assert device.publish(telemetry_topic(s.prefix, T1, COW, "cow-a"), payload) == 0
        finally:
            device.close()
        wait_until(lambda: influx.count(COW, "seq") == 40, what="40 readings stored")
        # A member counts a batch once its write is answered, a moment after InfluxDB has it.
        wait_until(
            lambda: one.stats.readings_stored + two.stats.readings_stored == 40,
            what="the members to count what they stored",
        )
        assert one.stats.readings_stored and two.stats.readings_stored
