"""`moclo command`, `moclo desired set`, `moclo commands` and the catalogue in `moclo devices
types`: arguments parsed by each command's own model (what is sent is what the gateway's
strict check accepts), errors that list what a command takes with nothing sent, and the request
as it goes on the real broker, under the login's own name."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from access.registry import Registry
from core.settings import Settings
from devices.catalogue import DEVICE_TYPES
from devices.commands import CommandRequest, CommandUpdate, DesiredRequest
from devices.topics import COMMAND_REQUESTS, DESIRED_REQUESTS, request_topic
from moclo.command_checks import ArgumentsError, assignments, command_arguments, desired_fields
from moclo.command_cli import desired_follower
from moclo.stack import MosquittoServer
from tests.helpers import moclo, wait_until
from tests.test_broker_access import Peer

GOOD_COMMANDS = {
    "thermostat setpoint": (
        "thermostat",
        "set_setpoint",
        ["setpoint_c=21.5"],
        {"setpoint_c": 21.5},
    ),
    "whole-degree setpoint": (
        "thermostat",
        "set_setpoint",
        ["setpoint_c=20"],
        {"setpoint_c": 20.0},
    ),
    "meter switch": (
        "smart_meter",
        "switch",
        ["appliance=washer", "mode=standby"],
        {"appliance": "washer", "mode": "standby"},
    ),
    "pacemaker rate": (
        "pacemaker",
        "set_lower_rate",
        ["lower_rate_bpm=60"],
        {"lower_rate_bpm": 60},
    ),
    "car lock": ("car", "lock", [], {}),
    "light on": ("light", "switch", ["state=on"], {"state": "on"}),
    "fridge": ("fridge", "set_temperature", ["setpoint_c=-18"], {"setpoint_c": -18.0}),
}


@pytest.mark.parametrize(
    ("device_type", "name", "items", "expected"), GOOD_COMMANDS.values(), ids=GOOD_COMMANDS.keys()
)
def test_arguments_are_parsed_by_the_commands_model_into_what_the_gateway_accepts(
    device_type: str, name: str, items: list[str], expected: dict[str, Any]
) -> None:
    spec, arguments = command_arguments(DEVICE_TYPES[device_type], name, items)
    assert arguments == expected
    assert all(type(arguments[k]) is type(v) for k, v in expected.items())
    # The gateway's own check (strict: no strings for numbers), on what travels: JSON.
    travelled = orjson.loads(orjson.dumps(arguments))
    assert spec.arguments.model_validate(travelled).model_dump(mode="json") == expected


GOOD_DESIRED = {
    "setpoint": ("thermostat", ["setpoint_c=19.5"], {"setpoint_c": 19.5}),
    "two appliances": (
        "smart_meter",
        ["appliances.washer=off", "appliances.dryer=standby"],
        {"appliances": {"washer": "off", "dryer": "standby"}},
    ),
    "car locked": ("car", ["locked=true"], {"locked": True}),
    "light off": ("light", ["on=false"], {"on": False}),
    "pacemaker": ("pacemaker", ["lower_rate_bpm=55"], {"lower_rate_bpm": 55}),
}


@pytest.mark.parametrize(
    ("device_type", "items", "expected"), GOOD_DESIRED.values(), ids=GOOD_DESIRED.keys()
)
def test_desired_fields_name_only_what_changes(
    device_type: str, items: list[str], expected: dict[str, Any]
) -> None:
    state = desired_fields(DEVICE_TYPES[device_type], items)
    assert state == expected  # the fields not named are not sent, so they stay as they are
    desired = DEVICE_TYPES[device_type].desired
    assert desired is not None
    assert desired.state.model_validate(orjson.loads(orjson.dumps(state)))


BAD = {
    "above the bound": (
        "thermostat",
        "set_setpoint",
        ["setpoint_c=99"],
        "thermostat set_setpoint takes setpoint_c=NUMBER (5..35); setpoint_c: must be less "
        "than or equal to 35",
    ),
    "missing": ("thermostat", "set_setpoint", [], "setpoint_c: missing"),
    "not a number": ("thermostat", "set_setpoint", ["setpoint_c=warm"], "must be a valid number"),
    "NaN": ("thermostat", "set_setpoint", ["setpoint_c=nan"], "setpoint_c: must be"),
    "unknown argument": (
        "thermostat",
        "set_setpoint",
        ["setpoint_c=20", "speed=3"],
        "speed: not an argument of it",
    ),
    "unknown command": (
        "thermostat",
        "dance",
        [],
        "thermostat has no command 'dance'; its commands: set_setpoint",
    ),
    "unknown mode": (
        "smart_meter",
        "switch",
        ["appliance=washer", "mode=sleep"],
        "takes appliance=TEXT, mode=on|off|standby; mode: must be 'on', 'off' or 'standby'",
    ),
    "bad appliance name": (
        "smart_meter",
        "switch",
        ["appliance=Washer/1", "mode=on"],
        "appliance: String should match pattern",
    ),
    "rate too low": (
        "pacemaker",
        "set_lower_rate",
        ["lower_rate_bpm=30"],
        "lower_rate_bpm=INTEGER (40..90); lower_rate_bpm: must be greater than or equal to 40",
    ),
    "rate not whole": ("pacemaker", "set_lower_rate", ["lower_rate_bpm=60.5"], "valid integer"),
    "arguments to none": ("car", "lock", ["force=1"], "car lock takes no arguments; force"),
    "no equals sign": ("thermostat", "set_setpoint", ["setpoint_c"], "is not ARG=VALUE"),
    "twice": ("thermostat", "set_setpoint", ["setpoint_c=20", "setpoint_c=21"], "given twice"),
}


@pytest.mark.parametrize(("device_type", "name", "items", "words"), BAD.values(), ids=BAD.keys())
def test_bad_arguments_say_what_the_command_takes(
    device_type: str, name: str, items: list[str], words: str
) -> None:
    with pytest.raises(ArgumentsError, match=re.escape(words)):
        command_arguments(DEVICE_TYPES[device_type], name, items)


def test_bad_desired_fields_say_what_the_type_takes() -> None:
    with pytest.raises(ArgumentsError, match=re.escape("appliances.NAME=on|off|standby")):
        desired_fields(DEVICE_TYPES["smart_meter"], ["appliances.washer=sleep"])
    with pytest.raises(ArgumentsError, match="cow_tracker has no desired state"):
        desired_fields(DEVICE_TYPES["cow_tracker"], ["x=1"])
    with pytest.raises(ArgumentsError, match="given a value and fields at once"):
        assignments(["a=1", "a.b=2"])


# -- on the broker ---------------------------------------------------------------------------


@contextmanager
def closed_broker(registry: Registry, tmp_path: Path, prefix: str) -> Iterator[tuple[str, Peer]]:
    """A Mosquitto with the registry's password and ACL files (as moclo configures it), its
    URL, and what ingest's account would receive: a peer of an ingest account subscribed to
    every tenant's command and desired-state requests."""
    from access.broker import write_broker_auth
    from moclo.stack import free_port

    eye = registry.add_account("ingest", "ingest-eye")
    auth = write_broker_auth(registry, tmp_path / "auth", prefix=prefix)
    broker = MosquittoServer(
        tmp_path / "mq", free_port(), password_file=auth.password_file, acl_file=auth.acl_file
    )
    broker.start()
    ingest_eye = Peer(broker.port, "ingest-eye", (eye.username, eye.password))
    try:
        for level in (COMMAND_REQUESTS, DESIRED_REQUESTS):
            assert ingest_eye.subscribe(f"{prefix}/+/{level}/#") == [1]
        yield broker.url, ingest_eye
    finally:
        ingest_eye.close()
        broker.stop()


def _flags(settings: Settings) -> list[str]:
    return [
        "--mqtt-url",
        settings.mqtt_url,
        "--influx-url",
        settings.influx_url,
        "--influx-db",
        settings.influx_db,
        "--topic-prefix",
        settings.topic_prefix,
    ]


@pytest.fixture
def observer(mosquitto: MosquittoServer, settings: Settings) -> Any:
    peer = Peer(mosquitto.port, "observer", None)
    assert peer.subscribe(f"{settings.topic_prefix}/#") == [1]
    yield peer
    peer.close()


def _marker(settings: Settings, peer: Peer) -> None:
    """Everything published before this has reached `peer` (one broker, in order)."""
    payload = uuid.uuid4().hex.encode()
    assert peer.publish(f"{settings.topic_prefix}/marker", payload) == 0
    wait_until(lambda: peer.received(payload), timeout_s=10, what="the marker")


def test_bad_arguments_exit_2_and_send_nothing(
    settings: Settings, observer: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USER", "owner")
    flags = _flags(settings)
    for args, words in (
        (["home", "th-1", "set_setpoint", "setpoint_c=99", "--type", "thermostat"], "5..35"),
        (["hospital", "pm-1", "set_lower_rate", "lower_rate_bpm=9", "--type", "pacemaker"], "40"),
        (["home", "th-1", "set_setpoint", "setpoint_c=20"], "give --type"),  # type unknown
        (["home", "car-1", "lock", "--type", "car", "--expires-in", "30d"], "at most 7d"),
    ):
        result = moclo("command", *args, *flags, timeout_s=60)
        assert result.returncode == 2, result.stderr
        assert words in result.stderr and "Traceback" not in result.stderr
    result = moclo("desired", "set", "home", "car-1", "locked=maybe", "--type", "car", *flags)
    assert result.returncode == 2 and "locked=true|false" in result.stderr
    _marker(settings, observer)
    assert [t for t, _ in observer.take() if not t.endswith("/marker")] == []


def test_the_request_goes_under_the_asker_and_without_ingest_times_out_saying_so(
    settings: Settings, observer: Peer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No ingest runs here: the request is published, nobody answers, exit 7. The device's
    type comes from the registry, so no --type is needed."""
    monkeypatch.setenv("USER", "owner")  # a broker without logins: $USER names the asker
    registry = tmp_path / "registry.sqlite"
    Registry(registry).add_device("home", "thermostat", "th-1")
    monkeypatch.setenv("MOCLO_REGISTRY", str(registry))
    flags = _flags(settings)
    result = moclo(
        "command", "home", "th-1", "set_setpoint", "setpoint_c=21.5", "--id", "my-id-1",
        "--expires-in", "2m", "--timeout", "1s", *flags,
    )  # fmt: skip
    assert result.returncode == 7, result.stderr
    assert "is `moclo ingest` running?" in result.stderr
    result = moclo("desired", "set", "home", "th-1", "setpoint_c=19", "--timeout", "1s", *flags)
    assert result.returncode == 7, result.stderr
    _marker(settings, observer)
    sent = {topic: payload for topic, payload in observer.take()}
    p = settings.topic_prefix
    command = CommandRequest.model_validate_json(
        sent[request_topic(p, "home", COMMAND_REQUESTS, "owner")]
    )
    assert command == CommandRequest(
        id="my-id-1",
        device="th-1",
        name="set_setpoint",
        args={"setpoint_c": 21.5},
        expires_in_s=120,
    )
    desired = DesiredRequest.model_validate_json(
        sent[request_topic(p, "home", DESIRED_REQUESTS, "owner")]
    )
    assert desired.request_id  # its own, echoed by command-status
    assert desired == DesiredRequest(
        device="th-1", state={"setpoint_c": 19.0}, request_id=desired.request_id
    )
    # Nothing else: no by or role (believed only on serve's on-behalf topic), nothing to a device.
    assert set(sent) == {
        request_topic(p, "home", COMMAND_REQUESTS, "owner"),
        request_topic(p, "home", DESIRED_REQUESTS, "owner"),
        f"{p}/marker",
    }


def test_devices_types_lists_each_types_commands_and_who_may_send_them() -> None:
    listed = moclo("devices", "types")
    assert listed.returncode == 0, listed.stderr
    assert "command set_lower_rate lower_rate_bpm=INTEGER (40..90)" in listed.stdout
    assert "(clinicians only; expires in 10m)" in listed.stdout
    assert "command switch appliance=TEXT mode=on|off|standby" in listed.stdout
    assert "desired appliances.NAME=on|off|standby (operators and clinicians)" in listed.stdout
    types = {t["type"]: t for t in json.loads(moclo("devices", "types", "--json").stdout)}
    pacemaker = {c["name"]: c for c in types["pacemaker"]["commands"]}
    assert pacemaker["set_lower_rate"]["clearance"] == "clinician"
    assert pacemaker["set_lower_rate"]["arguments"]["properties"]["lower_rate_bpm"]["maximum"] == 90
    assert types["cow_tracker"]["commands"] == [] and types["cow_tracker"]["desired"] is None


@pytest.mark.parametrize("command", [["command"], ["commands"], ["desired", "set"]])
def test_help_has_examples_and_the_exit_statuses(command: list[str]) -> None:
    result = moclo(*command, "--help")
    assert result.returncode == 0 and "examples:" in result.stdout
    if command != ["commands"]:
        assert "3  refused by moclo" in result.stdout and "7  no answer within" in result.stdout


def test_on_a_closed_broker_an_operator_asks_as_its_commands_login_and_an_app_cannot(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker as moclo configures it: `moclo command` logs in as `LOGIN~commands` and
    publishes under the account's name, where ingest's account reads it; an app's login has
    no `~commands` and is told so, and nothing of its reaches ingest."""
    registry = Registry(tmp_path / "closed.sqlite")
    owner = registry.add_account("operator", "owner", tenant="home")
    app = registry.add_account("app", "home-app", tenant="home")
    p = settings.topic_prefix
    with closed_broker(registry, tmp_path, p) as (url, ingest_eye):
        closed = [*_flags(settings)]
        closed[1] = url
        ask = ["command", "home", "car-1", "lock", "--type", "car", "--timeout", "1s", *closed]
        for login, expected in ((app, 1), (owner, 7)):  # the app first: nothing may arrive
            monkeypatch.setenv("MOCLO_MQTT_USERNAME", login.username)
            monkeypatch.setenv("MOCLO_MQTT_PASSWORD", login.password)
            result = moclo(*ask)
            assert result.returncode == expected, result.stderr
            assert login.password not in result.stdout + result.stderr
            if login is app:
                assert "refused the login 'home-app~commands'" in result.stderr
        topic = request_topic(p, "home", COMMAND_REQUESTS, "owner")
        wait_until(lambda: any(t == topic for t, _ in ingest_eye.messages), timeout_s=10)
        assert {t for t, _ in ingest_eye.take()} == {topic}  # the operator's, and only it


def test_a_command_whose_connection_is_taken_after_asking_says_its_id_not_to_ask_again(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker allows one connection per login: a second `moclo command` of the same
    account takes the first one's connection. The first had already asked: its command may
    well run, so it must say which (its id) and not to run it again, which would be a second
    command (flash the lights twice, read out a pacemaker twice)."""
    import subprocess
    import sys

    registry = Registry(tmp_path / "closed.sqlite")
    owner = registry.add_account("operator", "owner", tenant="home")
    first: subprocess.Popen[str] | None = None
    with closed_broker(registry, tmp_path, settings.topic_prefix) as (url, ingest_eye):
        closed = [*_flags(settings)]
        closed[1] = url
        monkeypatch.setenv("MOCLO_MQTT_USERNAME", owner.username)
        monkeypatch.setenv("MOCLO_MQTT_PASSWORD", owner.password)
        ask = ["command", "home", "car-1", "--type", "car", *closed]
        try:
            first = subprocess.Popen(
                [sys.executable, "-m", "moclo.cli", *ask, "flash_lights", "--wait", "--timeout",
                 "60s"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            asked = wait_until(ingest_eye.take, timeout_s=20, what="the first request")
            first_id = orjson.loads(asked[0][1])["id"]
            second = moclo(*ask, "lock", "--timeout", "1s")  # the same login, meanwhile
            assert second.returncode == 7, second.stderr
            _, err = first.communicate(timeout=30)
            assert first.returncode == 7, err
            assert first_id in err and "run the command again" not in err, err
        finally:
            if first is not None and first.poll() is None:
                first.kill()
                first.communicate()


def _desired_update(version: int, status: str, reason: str | None = None) -> CommandUpdate:
    return CommandUpdate(
        id=f"th-1-desired-{version}", device="th-1", device_type="thermostat", name="desired",
        status=status, reason=reason, issuer="owner", ts="2026-12-06T16:00:00Z",
    )  # fmt: skip


def test_desired_set_follows_its_own_change_not_an_earlier_one_confirmed_meanwhile() -> None:
    """`moclo desired set` cannot know its version in advance: the device confirming the same
    account's earlier version (a bare `succeeded`) between subscribing and asking is not the
    answer; ingest's answer (`sent`, `refused`, or with a reason) is, and then only its id."""
    mine = desired_follower("owner")
    assert not mine(_desired_update(3, "succeeded"))  # version 3, set earlier, applied now
    assert mine(_desired_update(4, "sent"))  # ingest's answer to this request
    assert not mine(_desired_update(3, "succeeded"))
    assert mine(_desired_update(4, "succeeded"))
    # "Nothing to change" answers with a reason, whatever the status: that is the answer.
    nothing = desired_follower("owner")
    assert nothing(_desired_update(3, "succeeded", "nothing to change: version 3 says so"))
    # Another account's change is never this one.
    assert not desired_follower("someone-else")(_desired_update(4, "sent"))
    # With a request id, the echo decides: the same account's other request is not this one.
    mine = desired_follower("owner", "req-b")
    assert not mine(_desired_update(4, "sent").model_copy(update={"request_id": "req-a"}))
    assert mine(_desired_update(5, "sent").model_copy(update={"request_id": "req-b"}))


def test_desired_set_is_not_answered_by_another_accounts_request_under_its_id() -> None:
    """The request id is echoed to the whole tenant, so another account can ask under it (a
    refusal is final): only an update naming this account as its asker is this request's."""
    mine = desired_follower("owner", "req-b")
    stolen = _desired_update(0, "refused", "state is empty").model_copy(
        update={"id": "th-1-desired-refused-1", "issuer": "mallory", "request_id": "req-b"}
    )
    assert not mine(stolen)
    assert mine(_desired_update(5, "sent").model_copy(update={"request_id": "req-b"}))


def test_a_command_waits_for_its_own_asker_not_anothers_command_under_its_id(
    settings: Settings, observer: Peer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`--id` may be guessed and taken first by another account of the tenant: ingest then
    sends this request nowhere (the id is another person's), while the other's command goes
    on being announced under that id. Those updates (as ingest publishes them) are not this
    command's outcome: no ingest runs here, so it times out, exit 7; the same update naming
    this account is the positive control."""
    import subprocess
    import sys

    monkeypatch.setenv("USER", "ana")
    registry = tmp_path / "registry.sqlite"
    Registry(registry).add_device("home", "car", "car-1")
    monkeypatch.setenv("MOCLO_REGISTRY", str(registry))
    status = f"{settings.topic_prefix}/home/command-status/car-1"

    def lock(issuer: str) -> subprocess.CompletedProcess[str]:
        waiting = subprocess.Popen(
            [sys.executable, "-m", "moclo.cli", "command", "home", "car-1", "lock", "--id",
             "morning-lock", "--wait", "--timeout", "5s", *_flags(settings)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        wait_until(
            lambda: any("command-requests/ana" in t for t, _ in observer.messages),
            what="ana's request on the broker",
        )
        update = {"id": "morning-lock", "device": "car-1", "device_type": "car",
                  "name": "unlock", "status": "succeeded", "issuer": issuer,
                  "ts": "2026-12-06T19:00:00Z"}  # fmt: skip
        assert observer.publish(status, orjson.dumps(update)) == 0
        out, err = waiting.communicate(timeout=30)
        observer.take()
        return subprocess.CompletedProcess(waiting.args, waiting.returncode, out, err)

    taken = lock("mallory")
    assert taken.returncode == 7, taken.stdout + taken.stderr
    assert "succeeded" not in taken.stdout
    own = lock("ana")
    assert own.returncode == 0, own.stdout + own.stderr
