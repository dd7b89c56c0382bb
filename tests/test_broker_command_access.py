"""The downlink's rights on a real Mosquitto configured from the registry (the password and ACL
files of access/broker.py): every claim is tried from the attacker's side, and beside each
refusal the same topic is used by the identity that may, which works.

How a refusal is proven (as in tests/test_broker_access.py): a forbidden PUBLISH gets PUBACK
0x87 (MQTT 5), and the identity allowed to publish there publishes a control next, which an
observer allowed to read the topic receives: the broker routes in the order it takes messages,
so once the control is in, the refused one would have been too. A forbidden read: the
attacker and an allowed reader both subscribe, an allowed publisher publishes, the reader gets
it, and the attacker's UNSUBACK (answered after anything queued for it) comes with nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from access.broker import write_broker_auth
from access.registry import Credentials, Registry
from core.mqtt import connection_login
from devices.topics import (
    COMMAND_REQUESTS,
    COMMAND_RESULTS,
    COMMANDS,
    COMMANDS_GET,
    DESIRED,
    DESIRED_GET,
    DESIRED_REQUESTS,
    REPORTED,
    command_status_topic,
    device_topic,
    notice_topic,
    on_behalf_request_topic,
    request_topic,
)
from moclo.stack import MosquittoServer, free_port
from tests.helpers import wait_until
from tests.test_broker_access import Peer

P = "moclo"
HOME, HOSPITAL, FARM = "home", "hospital", "farm"
NOT_AUTHORISED = 0x87


@dataclass
class Broker:
    """A broker that knows only the registry's logins, and one connection per login (the
    broker allows one), opened when first used."""

    server: MosquittoServer
    logins: dict[str, Credentials]
    peers: dict[str, Peer] = field(default_factory=dict)

    def peer(self, login: str) -> Peer:
        """`NAME` or `NAME~purpose` (that account's second login, same password)."""
        if login not in self.peers:
            account, _, purpose = login.partition("~")
            secret = self.logins[account].password
            username = self.logins[account].username
            name = connection_login(username, purpose) if purpose else username
            peer = Peer(self.server.port, login, (name, secret))
            assert peer.logged_in, f"{login} could not log in: {peer.connack}"
            self.peers[login] = peer
        return self.peers[login]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    directory = tmp_path_factory.mktemp("command-access")
    registry = Registry(directory / "registry.sqlite")
    logins = {
        "th-a": registry.add_device(HOME, "thermostat", "th-a"),
        "th-b": registry.add_device(HOME, "thermostat", "th-b"),
        "pm-1": registry.add_device(HOSPITAL, "pacemaker", "pm-1"),
        "ingest": registry.add_account("ingest", "ingest"),
        # Another ingest account, only to watch what ingest would receive.
        "ingest-eye": registry.add_account("ingest", "ingest-eye"),
        "dash": registry.add_account("serve", "dash"),
        "owner": registry.add_account("operator", "owner", tenant=HOME),
        "neighbour": registry.add_account("operator", "neighbour", tenant=HOME),
        "home-app": registry.add_account("app", "home-app", tenant=HOME),
        "dr-lee": registry.add_account("clinician", "dr-lee", tenant=HOSPITAL),
        "farmer": registry.add_account("operator", "farmer", tenant=FARM),
    }
    auth = write_broker_auth(registry, directory / "broker-auth", prefix=P)
    server = MosquittoServer(
        directory / "mq", free_port(), password_file=auth.password_file, acl_file=auth.acl_file
    )
    server.start()
    state = Broker(server, logins)
    try:
        yield state
    finally:
        for peer in state.peers.values():
            peer.close()
        server.stop()


def own(device: str, level: str) -> str:
    tenant, kind = {"th-a": (HOME, "thermostat"), "th-b": (HOME, "thermostat")}.get(
        device, (HOSPITAL, "pacemaker")
    )
    return device_topic(P, tenant, kind, device, level)


def _payload(what: str) -> bytes:
    return f'{{"probe": "{what}", "n": "{uuid.uuid4().hex}"}}'.encode()


# -- publishing ------------------------------------------------------------------------------


def req(tenant: str, account: str, level: str = COMMAND_REQUESTS) -> str:
    return request_topic(P, tenant, level, account)


def behalf(tenant: str, account: str, level: str = COMMAND_REQUESTS) -> str:
    return on_behalf_request_topic(P, tenant, level, account)


@dataclass(frozen=True)
class Publish:
    attacker: str
    topic: str
    control: str  # the login that may publish where the attacker tried
    observer: str  # a login that may read both topics
    control_topic: str | None = None  # where the control publishes, if not `topic` (a topic
    # that names the asker names the control's own account)


PUBLISH_REFUSED = {
    # A device writes only its own answers, reports and asks...
    "device writes another's results": Publish(
        "th-a", own("th-b", COMMAND_RESULTS), "th-b", "ingest-eye"
    ),
    "device writes another's reported": Publish(
        "th-a", own("th-b", REPORTED), "th-b", "ingest-eye"
    ),
    "device asks for another's commands": Publish(
        "th-a", own("th-b", COMMANDS_GET), "th-b", "ingest-eye"
    ),
    "device asks for another's desired": Publish(
        "th-a", own("th-b", DESIRED_GET), "th-b", "ingest-eye"
    ),
    # ...and no command or desired state, not even its own: only ingest, which checked who
    # asked, sends those.
    "device commands itself": Publish("th-a", own("th-a", COMMANDS), "ingest~commands", "th-a"),
    "device sets its own desired": Publish("th-a", own("th-a", DESIRED), "ingest~commands", "th-a"),
    "device commands another": Publish("th-a", own("th-b", COMMANDS), "ingest~commands", "th-b"),
    "device announces a status": Publish(
        "th-a", command_status_topic(P, HOME, "th-a"), "ingest~commands", "owner"
    ),
    # A person never publishes to a device, from any of their logins.
    "operator commands a device": Publish(
        "owner", own("th-a", COMMANDS), "ingest~commands", "th-a"
    ),
    "operator~commands commands a device": Publish(
        "owner~commands", own("th-a", COMMANDS), "ingest~commands", "th-a"
    ),
    "operator sets a desired state": Publish(
        "owner", own("th-a", DESIRED), "ingest~commands", "th-a"
    ),
    "clinician commands a pacemaker": Publish(
        "dr-lee", own("pm-1", COMMANDS), "ingest~commands", "pm-1"
    ),
    "clinician~commands sets a pacemaker": Publish(
        "dr-lee~commands", own("pm-1", DESIRED), "ingest~commands", "pm-1"
    ),
    "operator fakes a status": Publish(
        "owner", command_status_topic(P, HOME, "th-a"), "ingest~commands", "home-app"
    ),
    # An operator asks only in its own tenant, under its own name, never "on behalf".
    "farmer asks in the hospital": Publish(
        "farmer", req(HOSPITAL, "farmer"), "dr-lee", "ingest-eye", req(HOSPITAL, "dr-lee")
    ),
    "operator asks as another account": Publish(
        "owner", req(HOME, "neighbour"), "neighbour", "ingest-eye"
    ),
    "operator~commands asks as another": Publish(
        "owner~commands",
        req(HOME, "neighbour", DESIRED_REQUESTS),
        "neighbour~commands",
        "ingest-eye",
    ),
    "operator claims on-behalf": Publish(
        "owner", behalf(HOME, "owner"), "dash~commands", "ingest-eye", behalf(HOME, "dash")
    ),
    # An app watches and never asks.
    "app asks for a command": Publish(
        "home-app", req(HOME, "home-app"), "owner", "ingest-eye", req(HOME, "owner")
    ),
    "app asks for a desired state": Publish(
        "home-app",
        req(HOME, "home-app", DESIRED_REQUESTS),
        "owner",
        "ingest-eye",
        req(HOME, "owner", DESIRED_REQUESTS),
    ),
    # Serve asks only for the people it signed in, and only from its `~commands` login.
    "serve's main login asks": Publish("dash", behalf(HOME, "dash"), "dash~commands", "ingest-eye"),
    "serve's main login sets desired": Publish(
        "dash", behalf(HOME, "dash", DESIRED_REQUESTS), "dash~commands", "ingest-eye"
    ),
    "serve asks as itself": Publish(
        "dash~commands", req(HOME, "dash"), "owner", "ingest-eye", req(HOME, "owner")
    ),
    "ingest's main login commands": Publish(
        "ingest", own("th-a", COMMANDS), "ingest~commands", "th-a"
    ),
    "ingest's announcer commands": Publish(
        "ingest~alerts", own("th-a", COMMANDS), "ingest~commands", "th-a"
    ),
}


@pytest.mark.parametrize("case", PUBLISH_REFUSED.values(), ids=PUBLISH_REFUSED.keys())
def test_a_publish_the_design_forbids_is_dropped_and_the_allowed_one_beside_it_arrives(
    broker: Broker, case: Publish
) -> None:
    allowed = case.control_topic or case.topic
    eye = broker.peer(case.observer)
    assert eye.subscribe(case.topic) == [1] and eye.subscribe(allowed) == [1]
    attack = _payload(f"attack by {case.attacker}")
    legitimate = _payload(f"control by {case.control}")
    refused = broker.peer(case.attacker).publish(case.topic, attack)
    accepted = broker.peer(case.control).publish(allowed, legitimate)
    wait_until(lambda: eye.received(legitimate), timeout_s=10, what=f"{case.control}'s control")
    assert accepted == 0, f"the control {case.control} may not publish {allowed}"
    assert not eye.received(attack), f"{case.attacker} published {case.topic}"
    assert refused == NOT_AUTHORISED


# -- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Read:
    attacker: str
    topic_filter: str  # what the attacker subscribes to
    topic: str  # where the publisher publishes
    publisher: str  # a login that may publish there
    reader: str  # a login that may read it


READ_REFUSED = {
    "device reads another's commands": Read(
        "th-a", own("th-b", COMMANDS), own("th-b", COMMANDS), "ingest~commands", "th-b"
    ),
    "device reads another's desired": Read(
        "th-a", own("th-b", DESIRED), own("th-b", DESIRED), "ingest~commands", "th-b"
    ),
    "device reads every command": Read(
        "th-a", f"{P}/+/+/+/{COMMANDS}", own("pm-1", COMMANDS), "ingest~commands", "pm-1"
    ),
    "device reads another's results": Read(
        "th-a", own("th-b", COMMAND_RESULTS), own("th-b", COMMAND_RESULTS), "th-b", "ingest-eye"
    ),
    "device reads the requests": Read(
        "th-a", f"{P}/{HOME}/{COMMAND_REQUESTS}/#", req(HOME, "owner"), "owner", "ingest-eye"
    ),
    "farmer reads the hospital's status": Read(
        "farmer",
        f"{P}/{HOSPITAL}/command-status/+",
        command_status_topic(P, HOSPITAL, "pm-1"),
        "ingest~commands",
        "dr-lee",
    ),
    "farmer~commands reads the hospital's status": Read(
        "farmer~commands",
        "#",
        command_status_topic(P, HOSPITAL, "pm-1"),
        "ingest~commands",
        "dr-lee~commands",
    ),
    "operator reads another's requests": Read(
        "owner",
        f"{P}/{HOME}/{COMMAND_REQUESTS}/+",
        req(HOME, "neighbour"),
        "neighbour",
        "ingest-eye",
    ),
    "operator reads a device's commands": Read(
        "owner", "#", own("th-a", COMMANDS), "ingest~commands", "th-a"
    ),
    "app reads a device's reported": Read(
        "home-app", "#", own("th-a", REPORTED), "th-a", "ingest-eye"
    ),
    "serve reads the requests": Read(
        "dash", "#", req(HOME, "owner", DESIRED_REQUESTS), "owner", "ingest-eye"
    ),
}


@pytest.mark.parametrize("case", READ_REFUSED.values(), ids=READ_REFUSED.keys())
def test_a_read_the_design_forbids_gets_nothing_while_the_allowed_reader_gets_it(
    broker: Broker, case: Read
) -> None:
    spy, allowed = broker.peer(case.attacker), broker.peer(case.reader)
    assert spy.subscribe(case.topic_filter) == [1] and allowed.subscribe(case.topic) == [1]
    payload = _payload(f"read probe for {case.attacker}")
    assert broker.peer(case.publisher).publish(case.topic, payload) == 0, case.publisher
    wait_until(lambda: allowed.received(payload), timeout_s=10, what=f"{case.reader} to get it")
    spy.unsubscribe(case.topic_filter)  # the barrier: see the module's docstring
    assert not spy.received(payload), f"{case.attacker} read {case.topic}"


def test_each_reader_of_command_status_sees_its_own_tenant_only(broker: Broker) -> None:
    """The people's side: operators, clinicians, apps (and their `~commands` logins) follow
    their tenant's command status, serve follows every tenant's; nobody else's."""
    readers = ["owner~commands", "home-app", "dr-lee~commands", "farmer~commands", "dash"]
    for login in readers:
        assert broker.peer(login).subscribe(f"{P}/+/command-status/+") == [1]
    sent = {}
    for tenant, device in ((HOME, "th-a"), (HOSPITAL, "pm-1")):
        sent[tenant] = _payload(f"status of {device}")
        topic = command_status_topic(P, tenant, device)
        assert broker.peer("ingest~commands").publish(topic, sent[tenant]) == 0
    wait_until(lambda: all(broker.peer("dash").received(p) for p in sent.values()), timeout_s=10)
    seen = {}
    for login in readers:
        broker.peer(login).unsubscribe(f"{P}/+/command-status/+")
        seen[login] = {t for t, p in sent.items() if broker.peer(login).received(p)}
    assert seen == {
        "owner~commands": {HOME},
        "home-app": {HOME},
        "dr-lee~commands": {HOSPITAL},
        "farmer~commands": set(),
        "dash": {HOME, HOSPITAL},
    }


def test_notices_reach_their_tenant_only_and_only_ingest_sends_them(broker: Broker) -> None:
    """An automation's notice (`{p}/{t}/notices/{device}`): the tenant's operators, clinicians
    and apps and serve read it; nobody else; and only `ingest~commands` may publish one (a
    device or an operator forging one is dropped, beside ingest's that arrives)."""
    readers = ["owner", "home-app", "dr-lee", "farmer", "dash"]
    for login in readers:
        assert broker.peer(login).subscribe(f"{P}/+/notices/+") == [1]
    # The forgeries first: each publish is answered before the next is sent, so by the time
    # the readers have ingest's notices, the broker has dealt with the forgeries.
    forged = {login: _payload(f"forged by {login}") for login in ("th-a", "owner", "ingest")}
    for login, payload in forged.items():
        broker.peer(login).publish(notice_topic(P, HOME, "th-a"), payload)
    sent = {}
    for tenant, device in ((HOME, "th-a"), (HOSPITAL, "pm-1")):
        sent[tenant] = _payload(f"notice about {device}")
        topic = notice_topic(P, tenant, device)
        assert broker.peer("ingest~commands").publish(topic, sent[tenant]) == 0
    wait_until(lambda: all(broker.peer("dash").received(p) for p in sent.values()), timeout_s=10)
    seen = {}
    for login in readers:
        broker.peer(login).unsubscribe(f"{P}/+/notices/+")
        seen[login] = {t for t, p in sent.items() if broker.peer(login).received(p)}
        assert not any(broker.peer(login).received(p) for p in forged.values()), login
    assert seen == {
        "owner": {HOME},
        "home-app": {HOME},
        "dr-lee": {HOSPITAL},
        "farmer": set(),
        "dash": {HOME, HOSPITAL},
    }


def test_a_retained_desired_state_is_handed_to_its_own_device_only(broker: Broker) -> None:
    """The desired document is retained (a convenience): the broker hands retained messages
    out on SUBSCRIBE by a path of its own, and the ACL must hold there too."""
    document = _payload("desired of th-b")
    info = broker.peer("ingest~commands").client.publish(
        own("th-b", DESIRED), document, qos=1, retain=True
    )
    info.wait_for_publish(10)
    try:
        for login, topic_filter, expected in (
            ("th-b", own("th-b", DESIRED), True),  # the control: it is retained
            ("th-a", f"{P}/+/+/+/{DESIRED}", False),
            ("owner", "#", False),
        ):
            peer = broker.peer(login)
            assert peer.subscribe(topic_filter) == [1]
            peer.unsubscribe(topic_filter)  # retained messages come before the UNSUBACK
            assert peer.received(document) is expected, login
    finally:
        broker.peer("ingest~commands").client.publish(
            own("th-b", DESIRED), b"", qos=1, retain=True
        ).wait_for_publish(10)


def test_a_device_receives_its_own_commands_and_desired_state(broker: Broker) -> None:
    """The positive side of the device's rights, end to end on the broker: ingest's sender
    reaches it, and its answers, reports and asks reach ingest."""
    device, eye = broker.peer("pm-1"), broker.peer("ingest-eye")
    sender = broker.peer("ingest~commands")
    for level in (COMMANDS, DESIRED):
        assert device.subscribe(own("pm-1", level)) == [1]
        payload = _payload(level)
        assert sender.publish(own("pm-1", level), payload) == 0
        wait_until(lambda p=payload: device.received(p), timeout_s=10, what=level)  # type: ignore[misc]
    for level in (COMMAND_RESULTS, COMMANDS_GET, DESIRED_GET, REPORTED):
        assert eye.subscribe(own("pm-1", level)) == [1]
        payload = _payload(level)
        assert device.publish(own("pm-1", level), payload) == 0
        wait_until(lambda p=payload: eye.received(p), timeout_s=10, what=level)  # type: ignore[misc]
