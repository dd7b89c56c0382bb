"""Acting on devices over `moclo serve`'s HTTP API against a real broker, database and ingest:
the catalogue a token sees, what serve publishes for a person (checked by a subscriber on the
real broker), the refusals serve decides itself (each tried from the attacker's side with the
legitimate request beside it), the bounds in a 422, and the outcome, waited for or streamed,
through the real gateway (ingest) to a scripted device and back, with the record it leaves."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from core.settings import Settings
from devices.rfc3339 import format_us
from devices.topics import (
    COMMAND_REQUESTS,
    command_status_topic,
    request_subscription,
    telemetry_topic,
)
from ingest.options import IngestOptions
from tests.conftest import RunningIngest, RunningServe
from tests.gateway_helpers import ScriptedDevice, registry_with
from tests.helpers import Subscriber, publish_all, wait_until
from tests.test_serve import NOW, StreamReader, pacemaker

CAR = {"ts": NOW, "seq": 1, "lat": 52.07, "lon": 4.3, "speed_kmh": 0.0, "locked": False,
       "energy_pct": 64.0}  # fmt: skip
METER = {"ts": NOW, "seq": 1, "power_w": 400.0, "energy_kwh": 100.0, "voltage_v": 230.0}


def car(settings: Settings, tenant: str, device_id: str) -> None:
    topic = telemetry_topic(settings.topic_prefix, tenant, "car", device_id)
    publish_all(settings.mqtt_url, [(topic, orjson.dumps(CAR))])


@pytest.fixture
def homes(settings: Settings, ingest: RunningIngest) -> RunningIngest:
    """A car and a smart meter at home, a pacemaker in the clinic, a car next door."""
    car(settings, "home", "car-1")
    car(settings, "next-door", "car-9")
    meter = telemetry_topic(settings.topic_prefix, "home", "smart_meter", "meter-1")
    publish_all(settings.mqtt_url, [(meter, orjson.dumps(METER))])
    pacemaker(settings, "clinic", "pm-1")
    wait_until(lambda: ingest.stats.readings_stored >= 4, what="the devices stored")
    return ingest


@pytest.fixture
def requests(settings: Settings) -> Iterator[Subscriber]:
    """Every command request published on the test's broker, whoever published it."""
    subscriber = Subscriber(
        settings.mqtt_url, request_subscription(settings.topic_prefix, COMMAND_REQUESTS)
    )
    yield subscriber
    subscriber.close()


def post(serve: RunningServe, token: str, path: str, body: Any, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.post(serve.url + path, json=body, params=params, headers=headers, timeout=20)


def catalogue(serve: RunningServe, token: str, tenant: str, device: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    answer = httpx.get(f"{serve.url}/api/devices/{tenant}/{device}/commands", headers=headers)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_the_catalogue_says_what_each_token_may_send(
    homes: RunningIngest, serve: RunningServe
) -> None:
    operator = serve.token(["home", "clinic"], role="operator")
    viewer = serve.token(["home"], role="viewer")

    mine = catalogue(serve, operator, "home", "car-1")
    assert mine["device_type"] == "car"
    assert [(c["name"], c["allowed"]) for c in mine["commands"]] == [
        ("lock", True), ("unlock", True), ("flash_lights", True)
    ]  # fmt: skip
    assert mine["desired"]["allowed"] and "locked" in mine["desired"]["state"]["properties"]

    looked_at = catalogue(serve, viewer, "home", "car-1")
    assert not any(c["allowed"] for c in looked_at["commands"])
    assert "an operator's" in looked_at["commands"][0]["reason"]

    heart = catalogue(serve, operator, "clinic", "pm-1")
    rate = next(c for c in heart["commands"] if c["name"] == "set_lower_rate")
    assert not rate["allowed"] and "a clinician's token" in rate["reason"]
    bounds = rate["arguments"]["properties"]["lower_rate_bpm"]
    assert (bounds["minimum"], bounds["maximum"]) == (40, 90)


def test_an_operators_command_is_asked_on_serves_on_behalf_topic(
    homes: RunningIngest, serve: RunningServe, settings: Settings, requests: Subscriber
) -> None:
    token = serve.token(["home"], role="operator", name="ana")
    answer = post(serve, token, "/api/devices/home/car-1/commands", {"name": "lock"})
    assert answer.status_code == 202, answer.text
    asked = answer.json()
    assert asked["status"] == "requested" and asked["device"] == "car-1"

    message = wait_until(lambda: requests.messages, what="the request on the broker")[0]
    assert message.topic == f"{settings.topic_prefix}/home/command-requests/serve/on-behalf"
    request = orjson.loads(message.payload)
    # Who asked is the token's name and role, whatever the body could have said.
    assert request == {
        "id": asked["id"], "device": "car-1", "name": "lock", "args": {}, "by": "ana",
        "role": "operator",
    }  # fmt: skip


REFUSED = [
    pytest.param("viewer", ["home"], "home", "car-1", {"name": "lock"}, "an operator's",
                 id="a viewer locks a car"),
    pytest.param("operator", ["next-door"], "home", "car-1", {"name": "unlock"}, "next-door",
                 id="the neighbour's operator unlocks my car"),
    pytest.param("operator", ["clinic"], "clinic", "pm-1",
                 {"name": "set_lower_rate", "args": {"lower_rate_bpm": 50}}, "a clinician's",
                 id="an operator paces a heart"),
    pytest.param("admin", None, "home", "car-1", {"name": "unlock"}, "an admin's",
                 id="an admin, who manages tokens, unlocks a car"),
]  # fmt: skip


@pytest.mark.parametrize(("role", "tenants", "tenant", "device", "body", "says"), REFUSED)
def test_who_may_not_act_is_refused_and_nothing_is_asked(
    homes: RunningIngest,
    serve: RunningServe,
    requests: Subscriber,
    role: Any,
    tenants: list[str] | None,
    tenant: str,
    device: str,
    body: dict[str, Any],
    says: str,
) -> None:
    attacker = serve.token(tenants, role=role)
    refused = post(serve, attacker, f"/api/devices/{tenant}/{device}/commands", body)
    assert refused.status_code == 403, refused.text
    assert says in refused.json()["error"]

    # The positive control: an operator of home locks the car; that request, and only that
    # one, reaches the broker.
    owner = serve.token(["home"], role="operator", name="owner")
    asked = post(serve, owner, "/api/devices/home/car-1/commands", {"name": "lock"})
    assert asked.status_code == 202, asked.text
    wait_until(lambda: requests.messages, what="the owner's request")
    assert [orjson.loads(m.payload)["by"] for m in requests.messages] == ["owner"]


@pytest.mark.parametrize(
    ("device", "body", "says"),
    [
        ("car-1", {"name": "honk"}, "its commands: lock, unlock, flash_lights"),
        ("car-1", {"name": "lock", "args": {"force": True}}, "takes no arguments"),
        (
            "meter-1",
            {"name": "switch", "args": {"appliance": "heater", "mode": "blast"}},
            "mode: on | off | standby",
        ),
        ("meter-1", {"name": "switch", "args": {"appliance": "heater"}}, "mode: Field required"),
    ],
    ids=["unknown command", "arguments to none", "mode out of bounds", "mode missing"],
)
def test_a_command_the_type_does_not_take_is_a_422_with_the_bounds(
    homes: RunningIngest,
    serve: RunningServe,
    requests: Subscriber,
    device: str,
    body: dict[str, Any],
    says: str,
) -> None:
    token = serve.token(["home"], role="operator")
    answer = post(serve, token, f"/api/devices/home/{device}/commands", body)
    assert answer.status_code == 422, answer.text
    assert says in answer.json()["error"]
    # Positive control: the same token switches the heater to standby.
    good = {"name": "switch", "args": {"appliance": "heater", "mode": "standby"}}
    assert post(serve, token, "/api/devices/home/meter-1/commands", good).status_code == 202
    wait_until(lambda: requests.messages, what="the good request")
    assert [orjson.loads(m.payload)["args"] for m in requests.messages] == [good["args"]]


def test_a_desired_change_is_checked_against_the_types_settings(
    homes: RunningIngest, serve: RunningServe, settings: Settings
) -> None:
    wanted = Subscriber(settings.mqtt_url, request_subscription(settings.topic_prefix, "+"))
    try:
        token = serve.token(["home"], role="operator", name="ana")
        headers = {"Authorization": f"Bearer {token}"}
        url = f"{serve.url}/api/devices/home/meter-1/desired"
        bad = httpx.put(url, json={"state": {"appliances": {"oven": "hot"}}}, headers=headers)
        assert bad.status_code == 422 and "on | off | standby" in bad.json()["error"]
        good = httpx.put(url, json={"state": {"appliances": {"oven": "off"}}}, headers=headers)
        assert good.status_code == 202, good.text
        message = wait_until(lambda: wanted.messages, what="the desired request")[0]
        assert message.topic == f"{settings.topic_prefix}/home/desired-requests/serve/on-behalf"
        assert orjson.loads(message.payload) == {
            "device": "meter-1", "state": {"appliances": {"oven": "off"}}, "by": "ana",
            "role": "operator", "request_id": good.json()["request_id"],
        }  # fmt: skip
        assert [m.topic.split("/")[2] for m in wanted.messages] == ["desired-requests"]
    finally:
        wanted.close()


# -- with the gateway: ingest checks, records and sends; a scripted device answers ----------


@pytest.fixture
def gateway(settings: Settings) -> Settings:
    """The registry the gateway decides from: the devices, and serve's account (the test
    broker checks no login, so serve asks as `serve`)."""
    registry_with(
        settings,
        [("home", "car", "car-1"), ("home", "smart_meter", "meter-1"),
         ("clinic", "pacemaker", "pm-1"), ("next-door", "car", "car-9")],
        [("serve", "serve", None)],
    )  # fmt: skip
    return settings


def test_waiting_answers_the_outcome_and_the_stream_shows_each_step(
    gateway: Settings, homes: RunningIngest, serve: RunningServe
) -> None:
    device = ScriptedDevice(
        gateway, "home", "car", "car-1",
        answer=lambda c: {"id": c["id"], "status": "failed", "reason": "the door is open",
                          "ts": time.time()},
    ).connect()  # fmt: skip
    token = serve.token(["home"], role="operator", name="ana")
    home = StreamReader(f"{serve.url}/api/stream?tenant=home&readings=false", token)
    neighbour = StreamReader(
        f"{serve.url}/api/stream?tenant=next-door&readings=false",
        serve.token(["next-door"], role="operator"),
    )
    try:
        wait_until(lambda: home.named("hello") and neighbour.named("hello"), what="streams")
        path = "/api/devices/home/car-1/commands"
        answer = post(serve, token, path, {"name": "lock", "id": "lock-1"}, wait=15)
        assert answer.status_code == 200, answer.text
        outcome = answer.json()
        assert (outcome["id"], outcome["status"], outcome["reason"], outcome["issuer"]) == (
            "lock-1", "failed", "the door is open", "ana"
        )  # fmt: skip
        assert device.executed == ["lock-1"]
        wait_until(
            lambda: [c["status"] for c in home.named("command")] == ["sent", "failed"],
            what="both steps on the home stream",
        )
        assert neighbour.named("command") == []  # another tenant's stream hears nothing

        # The same id again is the same command: its status again, not a second lock.
        again = post(serve, token, path, {"name": "lock", "id": "lock-1"}, wait=15)
        assert again.status_code == 200 and again.json()["status"] == "failed", again.text
        assert device.executed == ["lock-1"]

        # Its life, step by step, and the device's record, from moclo_commands.
        headers = {"Authorization": f"Bearer {token}"}
        life = wait_until(
            lambda: httpx.get(f"{serve.url}{path}/lock-1", headers=headers).json(),
            what="the command's life stored",
        )
        assert life["status"] == "failed" and [s["status"] for s in life["steps"]][:2] == [
            "sent", "failed"
        ]  # fmt: skip
        assert life["steps"][0]["issuer"] == "ana"
        missing = httpx.get(f"{serve.url}{path}/no-such-id", headers=headers)
        assert missing.status_code == 404
        history = httpx.get(f"{serve.url}/api/devices/home/car-1/command-history", headers=headers)
        assert {e["id"] for e in history.json()["events"]} == {"lock-1"}
        # Another tenant's operator learns nothing of it.
        other = {"Authorization": f"Bearer {serve.token(['next-door'], role='operator')}"}
        assert httpx.get(f"{serve.url}{path}/lock-1", headers=other).status_code == 403
    finally:
        device.disconnect()
        home.close()
        neighbour.close()


def test_a_desired_change_reaches_the_device_and_its_report_closes_the_difference(
    gateway: Settings, homes: RunningIngest, serve: RunningServe
) -> None:
    device = ScriptedDevice(gateway, "home", "car", "car-1").connect()
    token = serve.token(["home"], role="operator", name="ana")
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{serve.url}/api/devices/home/car-1/desired"
    try:
        asked = httpx.put(
            url, json={"state": {"locked": True}}, headers=headers, params={"wait": 2}
        )
        assert asked.status_code == 202 and asked.json()["status"] == "sent", asked.text
        document = wait_until(lambda: device.desired, what="the desired document")[-1]
        assert document["state"] == {"locked": True}
        view = wait_until(
            lambda: (v := httpx.get(url, headers=headers).json())["desired"] and v,
            what="the desired state stored",
        )
        assert view["differences"] == {"locked": {"desired": True, "reported": None}}
        device.report(document["version"], {"locked": True})
        closed = wait_until(
            lambda: (v := httpx.get(url, headers=headers).json())["confirmed_version"] and v,
            what="the report stored",
        )
        assert closed["differences"] == {} and closed["reported"]["state"] == {"locked": True}
        history = httpx.get(
            f"{serve.url}/api/devices/home/car-1/command-history",
            params={"kind": "desired"}, headers=headers,
        ).json()["events"]  # fmt: skip
        changed = next(e for e in history if e["status"] == "sent")
        assert changed["issuer"] == "ana" and changed["to"] == {"locked": True}

        # Waiting for the next change answers once the car has reported it applied.
        def apply_the_next() -> None:
            wait_until(lambda: len(device.desired) > 1, what="the second desired document")
            newer = device.desired[-1]
            device.report(newer["version"], newer["state"])

        applier = threading.Thread(target=apply_the_next)
        applier.start()
        unlock = {"state": {"locked": False}}
        done = httpx.put(url, json=unlock, headers=headers, params={"wait": 15}, timeout=20)
        applier.join(20)
        assert done.status_code == 200, done.text
        assert (done.json()["status"], done.json()["issuer"]) == ("succeeded", "ana")
    finally:
        device.disconnect()


def test_a_wait_nobody_answers_is_a_504_that_says_what_to_check(
    homes: RunningIngest, serve: RunningServe
) -> None:
    homes.stop()  # ingest, the gateway, is down: nobody answers
    token = serve.token(["home"], role="operator")
    answer = post(serve, token, "/api/devices/home/car-1/commands", {"name": "lock"}, wait=0.5)
    assert answer.status_code == 504
    assert "is `moclo ingest` running?" in answer.json()["error"]


def test_a_status_that_names_another_device_than_its_topic_is_not_shown(
    serve: RunningServe, settings: Settings
) -> None:
    """Only ingest may write command-status topics; should another writer slip through, the
    stream still shows nothing whose payload disagrees with its topic, nor a malformed one."""
    token = serve.token(["home", "next-door"], role="operator")
    reader = StreamReader(f"{serve.url}/api/stream?readings=false", token)
    try:
        wait_until(lambda: reader.named("hello"), what="the stream open")
        wait_until(
            lambda: httpx.get(serve.url + "/healthz", timeout=5).json()["live_stream"],
            what="live subscription",
        )
        prefix = settings.topic_prefix

        def status(device: str, command_id: str) -> bytes:
            return orjson.dumps({
                "id": command_id, "device": device, "device_type": "car", "name": "unlock",
                "status": "succeeded", "issuer": "someone", "ts": format_us(time.time_ns()),
            })  # fmt: skip

        publish_all(
            settings.mqtt_url,
            [
                # The neighbour's car's status, published on my car's topic: forged.
                (command_status_topic(prefix, "home", "car-1"), status("car-9", "forged")),
                (command_status_topic(prefix, "home", "car-1"), b'{"id": "half"}'),
                # Positive control, after them on the same connection: the real one.
                (command_status_topic(prefix, "home", "car-1"), status("car-1", "real")),
            ],
        )
        shown = wait_until(lambda: reader.named("command"), what="the real status shown")
        assert [(c["id"], c["tenant"], c["device"]) for c in shown] == [("real", "home", "car-1")]
    finally:
        reader.close()


def test_a_clinician_of_the_clinic_paces_the_heart_an_operator_may_not(
    homes: RunningIngest, serve: RunningServe, requests: Subscriber
) -> None:
    """The pacemaker case's own positive control: the same request an operator of the clinic
    is refused (403, above) is asked for a clinician of the clinic, with the clinician's role."""
    body = {"name": "set_lower_rate", "args": {"lower_rate_bpm": 50}}
    nurse = serve.token(["clinic"], role="operator", name="nurse")
    assert post(serve, nurse, "/api/devices/clinic/pm-1/commands", body).status_code == 403
    doctor = serve.token(["clinic"], role="clinician", name="dr-ana")
    asked = post(serve, doctor, "/api/devices/clinic/pm-1/commands", body)
    assert asked.status_code == 202, asked.text
    message = wait_until(lambda: requests.messages, what="the clinician's request")[0]
    request = orjson.loads(message.payload)
    assert (request["by"], request["role"], request["args"]) == (
        "dr-ana",
        "clinician",
        {"lower_rate_bpm": 50},
    )
    assert len(requests.messages) == 1  # the nurse's never left serve


def test_a_meter_that_applied_the_appliances_asked_shows_no_difference(
    gateway: Settings, homes: RunningIngest, serve: RunningServe
) -> None:
    """A meter reports the mode of every appliance it has, the desired state names only those a
    person set: once it reports the version with those modes, nothing is waiting for it."""
    device = ScriptedDevice(gateway, "home", "smart_meter", "meter-1").connect()
    headers = {"Authorization": f"Bearer {serve.token(['home'], role='operator')}"}
    url = f"{serve.url}/api/devices/home/meter-1/desired"
    try:
        asked = httpx.put(
            url, json={"state": {"appliances": {"kettle": "standby"}}}, headers=headers
        )
        assert asked.status_code == 202, asked.text
        document = wait_until(lambda: device.desired, what="the desired document")[-1]
        applied = {"appliances": {"kettle": "standby", "oven": "off", "heater": "on"}}
        device.report(document["version"], applied)
        view = wait_until(
            lambda: (v := httpx.get(url, headers=headers).json())["confirmed_version"] and v,
            what="the report of the version stored",
        )
        assert view["reported"]["state"] == applied
        assert view["differences"] == {}
    finally:
        device.disconnect()


def test_waiting_for_a_desired_change_is_not_answered_by_my_earlier_one_confirmed(
    gateway: Settings, homes: RunningIngest, serve: RunningServe
) -> None:
    """I lock the car, then ask it unlocked and wait: the car confirming my lock meanwhile is
    not the outcome of my unlock (the same person, the same device, an older version)."""
    device = ScriptedDevice(gateway, "home", "car", "car-1").connect()
    headers = {"Authorization": f"Bearer {serve.token(['home'], role='operator', name='ana')}"}
    url = f"{serve.url}/api/devices/home/car-1/desired"
    asked = Subscriber(gateway.mqtt_url, request_subscription(gateway.topic_prefix, "+"))
    answers: list[httpx.Response] = []
    try:
        lock = httpx.put(url, json={"state": {"locked": True}}, headers=headers)
        assert lock.status_code == 202, lock.text
        first = wait_until(lambda: device.desired, what="version 1 at the car")[-1]
        homes.stop()  # for a moment: what follows waits in ingest's session, in this order
        device.report(first["version"], {"locked": True})  # the car confirms my lock ...

        def unlock() -> None:
            unlocked = {"state": {"locked": False}}
            answers.append(
                httpx.put(url, json=unlocked, headers=headers, params={"wait": 8}, timeout=20)
            )

        waiter = threading.Thread(target=unlock)
        waiter.start()  # ... as I ask for it unlocked, and wait
        wait_until(
            lambda: [m.topic.split("/")[2] for m in asked.messages].count("desired-requests") == 2,
            what="the unlock asked",
        )
        with RunningIngest(gateway, IngestOptions(linger_s=0.05)):
            wait_until(lambda: len(device.desired) > 1, what="version 2 at the car")
            waiter.join(20)
        assert answers, "the unlock was not answered"
        outcome = answers[0].json()
        # Version 2 is sent, not applied: the car has not reported it.
        assert (outcome["id"], outcome["status"]) == ("car-1-desired-2", "sent"), outcome
        assert answers[0].status_code == 202
    finally:
        asked.close()
        device.disconnect()


def test_a_desired_change_ingest_refuses_for_serves_account_is_answered_with_the_reason(
    homes: RunningIngest, serve: RunningServe
) -> None:
    """With serve's account not in the registry, ingest refuses everything serve asks, naming
    the account (it cannot believe who serve says asks): a wait hears that, for a desired
    change as for a command, rather than 'is ingest running?'."""
    token = serve.token(["home"], role="operator", name="ana")
    command = post(serve, token, "/api/devices/home/car-1/commands", {"name": "lock"}, wait=10)
    assert command.status_code == 200 and command.json()["status"] == "refused", command.text
    desired = httpx.put(
        f"{serve.url}/api/devices/home/car-1/desired",
        json={"state": {"locked": True}},
        headers={"Authorization": f"Bearer {token}"},
        params={"wait": 10},
        timeout=20,
    )
    assert desired.status_code == 200, desired.text
    outcome = desired.json()
    assert outcome["status"] == "refused" and "not in the registry" in outcome["reason"]
