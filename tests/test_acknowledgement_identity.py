"""Who acknowledged an alert comes from the broker, not from the payload: tried from the
attacker's side on a real Mosquitto configured with the registry's password and ACL files,
with a real ingest (logged in as its account) and, for the HTTP path, a real `moclo serve`
logged in as its serve account.

Each refused attempt sits beside its positive control: the legitimate acknowledgement next
to it is taken and stored with the verified name. Order proves the refusal was not merely
late: every attempt is answered by the broker (PUBACK 0x87 over MQTT 5) before its control
is published, the broker hands ingest messages in the order it took them, and an alert can
be acknowledged once; so had an attempt got through, its control would have been refused as
"already acknowledged" and the stored acknowledger would be the attacker's choice.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from access.broker import write_broker_auth
from access.registry import Credentials, Registry
from core.settings import Settings
from devices.topics import telemetry_topic
from ingest.options import IngestOptions
from moclo.stack import MosquittoServer, free_port
from tests.conftest import RunningIngest, RunningServe
from tests.helpers import Influx, cow_json, moclo, wait_until
from tests.test_broker_access import NOT_AUTHORISED, Peer

T1, T2 = "farm-one", "farm-two"
COW = "cow_tracker"
FEVER = [38.6, 39.6, 40.1, 40.3]  # raised on the fourth reading
COWS = {"cow-1": T1, "cow-2": T1, "cow-3": T1, "cow-4": T1, "cow-9": T2}
ACCOUNTS: dict[str, tuple[str, str | None]] = {
    "ingest": ("ingest", None),
    # Another ingest account, for the attempts: the broker allows one connection per login,
    # so a peer logged in as `ingest` would take the running ingest's place.
    "ingest-b": ("ingest", None),
    "dash": ("serve", None),
    "ana": ("operator", T1),
    "ben": ("operator", T1),
    "cleo": ("operator", T2),
    "farm-one-app": ("app", T1),
}


@dataclass
class Acking:
    """A secured broker and an ingest on it, with a raised fever per cow of COWS."""

    settings: Settings  # ingest's, logged in as the ingest account
    broker: MosquittoServer
    logins: dict[str, Credentials]
    influx: Influx
    alert_ids: dict[str, str]  # cow → its fever's alert id

    @property
    def prefix(self) -> str:
        return self.settings.topic_prefix

    def peer(self, name: str) -> Peer:
        login = self.logins[name]
        peer = Peer(self.broker.port, name, (login.username, login.password))
        assert peer.logged_in, f"{name} could not log in"
        return peer

    def acknowledged(self, cow: str) -> list[dict[str, Any]]:
        """The stored `acknowledged` changes of this cow's fever."""
        return self.influx.query(
            'SELECT * FROM "moclo_alerts" WHERE "state" = \'acknowledged\' '
            f"AND \"alert_id\" = '{self.alert_ids[cow]}'"
        )

    def wait_acknowledged(self, cow: str) -> dict[str, Any]:
        [row] = wait_until(lambda: self.acknowledged(cow), what=f"{cow}'s fever acknowledged")
        return row

    def ack(self, cow: str, **body: str) -> bytes:
        return orjson.dumps({"id": self.alert_ids[cow], **body})


def raise_fevers(s: Acking) -> None:
    start = int(time.time()) // 60 * 60 - 3600
    for cow, tenant in COWS.items():
        device = s.peer(cow)
        try:
            for i, temp in enumerate(FEVER):
                payload = cow_json(start + 60 * i, i + 1, body_temp_c=temp)
                assert device.publish(telemetry_topic(s.prefix, tenant, COW, cow), payload) == 0
        finally:
            device.close()

    def raised() -> dict[str, str]:
        rows = s.influx.query('SELECT * FROM "moclo_alerts" WHERE "state" = \'raised\'')
        found = {str(r["device_id"]): str(r["alert_id"]) for r in rows}
        return found if len(found) == len(COWS) else {}

    s.alert_ids.update(wait_until(raised, what="every cow's fever raised and stored"))


@pytest.fixture
def acking(settings: Settings, influx: Influx, tmp_path: Path) -> Iterator[Acking]:
    registry = Registry(settings.registry)
    logins = {cow: registry.add_device(tenant, COW, cow) for cow, tenant in COWS.items()}
    for name, (role, tenant) in ACCOUNTS.items():
        logins[name] = registry.add_account(role, name, tenant=tenant)  # type: ignore[arg-type]
    auth = write_broker_auth(registry, tmp_path / "broker-auth", prefix=settings.topic_prefix)
    broker = MosquittoServer(
        tmp_path / "mq", free_port(), password_file=auth.password_file, acl_file=auth.acl_file
    )
    broker.start()
    service = settings.model_copy(
        update={
            "mqtt_url": broker.url,
            "mqtt_username": "ingest",
            "mqtt_password": SecretStr(logins["ingest"].password),
        }
    )
    try:
        with RunningIngest(service, IngestOptions(linger_s=0.05)):
            s = Acking(service, broker, logins, influx, {})
            raise_fevers(s)
            yield s
    finally:
        broker.stop()


def test_an_operator_cannot_acknowledge_in_another_name(acking: Acking) -> None:
    s, p = acking, acking.prefix
    ana = s.peer("ana")
    try:
        # Another account's topic, the serve accounts' topic for people, and the topic without
        # a name that older versions used: each refused by the broker.
        attempts = [
            (f"{p}/{T1}/acks/ben", s.ack("cow-1")),
            (f"{p}/{T1}/acks/ben", s.ack("cow-1", by="ben")),
            (f"{p}/{T1}/acks/ana/on-behalf", s.ack("cow-1", by="ben")),
            (f"{p}/{T1}/acks/dash/on-behalf", s.ack("cow-1", by="ben")),
            (f"{p}/{T1}/acks", s.ack("cow-1", by="ben")),
        ]
        for topic, payload in attempts:
            assert ana.publish(topic, payload) == NOT_AUTHORISED, topic
        # The control: ana's own topic works, and is stored as ana.
        assert ana.publish(f"{p}/{T1}/acks/ana", s.ack("cow-1", note="on my way")) == 0
        row = s.wait_acknowledged("cow-1")
        assert (row["acknowledged_by"], row["note"]) == ("ana", "on my way")

        # A name in the payload does not change who acknowledged: ana, on her own topic.
        assert ana.publish(f"{p}/{T1}/acks/ana", s.ack("cow-2", by="ben", note="x")) == 0
        row = s.wait_acknowledged("cow-2")
        assert row["acknowledged_by"] == "ana"
        assert "ben" in str(row["note"]) and "not verified" in str(row["note"])
    finally:
        ana.close()
    assert s.influx.count("moclo_rejected", "error") == 0  # the broker stopped them all


def test_an_operator_of_one_tenant_cannot_acknowledge_in_another(acking: Acking) -> None:
    s, p = acking, acking.prefix
    ana, cleo = s.peer("ana"), s.peer("cleo")
    try:
        for topic in (f"{p}/{T2}/acks/ana", f"{p}/{T2}/acks/cleo", f"{p}/{T2}/acks"):
            assert ana.publish(topic, s.ack("cow-9")) == NOT_AUTHORISED, topic
        assert cleo.publish(f"{p}/{T2}/acks/cleo", s.ack("cow-9")) == 0  # the control
        assert s.wait_acknowledged("cow-9")["acknowledged_by"] == "cleo"
    finally:
        ana.close()
        cleo.close()


@pytest.mark.parametrize("who", ["farm-one-app", "cow-3", "ingest-b", "dash"])
def test_an_app_a_device_ingest_or_serve_cannot_acknowledge_under_a_name(
    acking: Acking, who: str
) -> None:
    """An app, a device and ingest cannot acknowledge at all; serve's account (`dash`) not
    under any name, its own or an operator's: it may write only its on-behalf topic."""
    s, p = acking, acking.prefix
    name = s.logins[who].username
    peer, ben = s.peer(who), s.peer("ben")
    try:
        for topic in (f"{p}/{T1}/acks/{name}", f"{p}/{T1}/acks/ben", f"{p}/{T1}/acks"):
            assert peer.publish(topic, s.ack("cow-3", by="ben")) == NOT_AUTHORISED, topic
        assert ben.publish(f"{p}/{T1}/acks/ben", s.ack("cow-3")) == 0  # the control
        assert s.wait_acknowledged("cow-3")["acknowledged_by"] == "ben"
    finally:
        peer.close()
        ben.close()


def test_through_the_api_the_acknowledger_is_the_tokens_name(
    acking: Acking, tmp_path: Path
) -> None:
    """serve logs in as its serve account and acknowledges on behalf of the token's holder;
    what the request body says about who it is changes nothing."""
    s = acking
    serving = s.settings.model_copy(
        update={
            "mqtt_username": "dash",
            "mqtt_password": SecretStr(s.logins["dash"].password),
            "serve_listen": "127.0.0.1:0",
        }
    )
    with RunningServe(serving) as serve:
        vet = serve.token([T1], role="operator", name="dr-vos")
        viewer = serve.token([T1], role="viewer", name="vic")
        with serve.client(viewer) as client:  # the control beside it: a viewer cannot
            answer = client.post(f"/api/alerts/{s.alert_ids['cow-4']}/ack", json={})
            assert answer.status_code == 403
        with serve.client(vet) as client:
            answer = client.post(
                f"/api/alerts/{s.alert_ids['cow-4']}/ack",
                json={"by": "ben", "acknowledged_by": "ben", "note": "calling the vet"},
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["acknowledged_by"] == "dr-vos"
            # Not an alert of the token's tenants: as unknown as one that does not exist.
            other = client.post(f"/api/alerts/{s.alert_ids['cow-9']}/ack", json={})
            assert other.status_code == 404
    row = s.wait_acknowledged("cow-4")
    assert (row["acknowledged_by"], row["note"]) == ("dr-vos", "calling the vet")
    assert s.acknowledged("cow-9") == []


def test_moclo_alerts_ack_acknowledges_as_the_login_and_refuses_another_by(
    acking: Acking, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = acking
    monkeypatch.setenv("MOCLO_MQTT_USERNAME", "ben")
    monkeypatch.setenv("MOCLO_MQTT_PASSWORD", s.logins["ben"].password)
    flags = [
        *("--mqtt-url", s.broker.url, "--influx-url", s.settings.influx_url),
        *("--influx-db", s.settings.influx_db, "--topic-prefix", s.prefix),
    ]
    alert_id = s.alert_ids["cow-1"]
    # Another name than the login's: refused before anything is published (exit 2).
    other = moclo("alerts", "ack", alert_id, "--by", "ana", *flags)
    assert other.returncode == 2
    assert "--by 'ana' is not your MQTT login 'ben'" in other.stderr
    # The control: no --by (or --by the login itself) acknowledges as the login. Had the
    # refused command published anything, this one would find the alert acknowledged already.
    done = moclo("alerts", "ack", alert_id, "--note", "on my way", *flags)
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("by ben\n")
    row = s.wait_acknowledged("cow-1")
    assert (row["acknowledged_by"], row["note"]) == ("ben", "on my way")
    same = moclo("alerts", "ack", s.alert_ids["cow-2"], "--by", "ben", *flags)
    assert same.returncode == 0, same.stderr
    assert s.wait_acknowledged("cow-2")["acknowledged_by"] == "ben"
    assert s.logins["ben"].password not in other.stderr + done.stdout + done.stderr
