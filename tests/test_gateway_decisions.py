"""The gateway's decisions without a broker: messages in, lines, publications and rejections
out, on a real registry file and a clock the test moves (expiry is judged by it alone)."""

from __future__ import annotations

import functools
import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from access.registry import Registry
from ingest.downlink.directory import Directory
from ingest.downlink.gateway import Gateway
from ingest.downlink.outcome import Incoming, Outcome
from storage.schema import COMMANDS

P = "m"
T0 = 1_795_334_400 * 10**9


class Clock:
    def __init__(self) -> None:
        self.ns = T0

    def __call__(self) -> int:
        return self.ns


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    registry = Registry(tmp_path / "registry.sqlite")
    registry.add_device("home", "car", "car-1")
    registry.add_device("home", "car", "car-2")
    registry.add_device("cardio", "pacemaker", "pm-1")
    registry.add_account("operator", "olga", tenant="home")
    registry.add_account("serve", "web")
    return registry


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gateway(registry: Registry, clock: Clock) -> Gateway:
    directory = Directory(registry.path)
    directory.refresh()
    return Gateway(P, directory, clock=clock)


def message(topic: str, payload: bytes | dict[str, Any]) -> Incoming:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return Incoming(f"{P}/{topic}", body, time.time_ns())


def handle(gateway: Gateway, topic: str, payload: bytes | dict[str, Any]) -> Outcome:
    out = Outcome()
    gateway.handle(message(topic, payload), out)
    return out


def statuses(out: Outcome) -> list[tuple[str, str]]:
    """(id, status) of each command-status update in `out`."""
    return [
        (orjson.loads(p.payload)["id"], orjson.loads(p.payload)["status"])
        for p in out.publications
        if "/command-status/" in p.topic
    ]


def to_device(out: Outcome) -> list[str]:
    return [p.topic for p in out.publications if p.topic.endswith("/commands")]


def lock(gateway: Gateway, command_id: str = "c1", **extra: Any) -> Outcome:
    body = {"id": command_id, "device": "car-1", "name": "lock", **extra}
    return handle(gateway, "home/command-requests/olga", body)


def test_a_command_expires_by_the_clock_and_only_then(gateway: Gateway, clock: Clock) -> None:
    assert statuses(lock(gateway, expires_in_s=30)) == [("c1", "sent")]
    clock.ns += 29 * 10**9
    out = Outcome()
    gateway.expire(out)
    assert out.publications == [] and out.lines == []
    clock.ns += 1 * 10**9
    gateway.expire(out)
    assert statuses(out) == [("c1", "expired")]
    assert "status=expired" in out.lines[0]
    # A device that asks now gets nothing; the expired command stays expired.
    assert to_device(handle(gateway, "home/car/car-1/commands/get", b"")) == []
    assert statuses(lock(gateway)) == [("c1", "expired")]


def test_a_device_cannot_answer_for_another(gateway: Gateway) -> None:
    lock(gateway)
    result = {"id": "c1", "status": "succeeded", "ts": 1795334401}
    forged = handle(gateway, "home/car/car-2/command-results", result)  # car-2 for car-1
    assert [r.reason.value for r in forged.rejections] == ["bad_command_result"]
    assert "no command 'c1' was sent to this device" in forged.rejections[0].error
    assert forged.publications == [] and forged.lines == []
    # The positive control: car-1's own answer settles it.
    assert statuses(handle(gateway, "home/car/car-1/command-results", result)) == [
        ("c1", "succeeded")
    ]


def test_a_read_out_without_a_valid_report_is_failed(gateway: Gateway) -> None:
    ask = {"id": "r1", "device": "pm-1", "name": "read_out", "by": "dr-ana", "role": "clinician"}
    assert statuses(handle(gateway, "cardio/command-requests/web/on-behalf", ask)) == [
        ("r1", "sent")
    ]
    answer = {"id": "r1", "status": "succeeded", "output": {"battery_v": 9}, "ts": 1795334401}
    out = handle(gateway, "cardio/pacemaker/pm-1/command-results", answer)
    [update] = [orjson.loads(p.payload) for p in out.publications]
    assert update["status"] == "failed" and "read_out report is invalid" in update["reason"]
    assert [r.reason.value for r in out.rejections] == ["bad_command_result"]


def test_hostile_text_cannot_break_a_line_or_add_series(gateway: Gateway) -> None:
    body = {"id": "h1", "device": "car-1", "name": 'x,y=z "\n', "args": {"a": "\n\\"}}
    out = handle(gateway, "home/command-requests/olga", body)
    [line] = out.lines
    assert "\n" not in line
    assert line.startswith(
        "moclo_commands,device_id=car-1,device_type=car,kind=command,name=_unknown,"
        "status=refused,tenant=home "
    )
    assert "raw_name=" in line


def test_a_revoked_account_is_refused_once_the_registry_is_read_again(
    gateway: Gateway, registry: Registry
) -> None:
    assert statuses(lock(gateway, "a1")) == [("a1", "sent")]
    registry.revoke_account("olga")
    gateway.directory.refresh()
    out = lock(gateway, "a2")
    assert statuses(out) == [("a2", "refused")]
    assert to_device(out) == []


@functools.cache
def _fuzz_directory() -> Directory:
    """A registry for the property test (made once: hypothesis runs the test many times)."""
    registry = Registry(Path(tempfile.mkdtemp()) / "registry.sqlite")
    registry.add_device("home", "car", "car-1")
    registry.add_account("operator", "olga", tenant="home")
    registry.add_account("serve", "web")
    directory = Directory(registry.path)
    directory.refresh()
    return directory


TOPICS = [
    "home/command-requests/olga",
    "home/command-requests/web/on-behalf",
    "home/desired-requests/olga",
    "home/car/car-1/command-results",
    "home/car/car-1/reported",
    "home/car/car-1/commands/get",
    "home/car/car-1/desired/get",
    "home/command-requests",
    "home/car/car-1/command-results/x",
]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["id", "device", "name", "args", "status", "state", "version", "ts"])
            | st.text(max_size=5),
            children,
            max_size=6,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(TOPICS), st.binary(max_size=64) | JSON.map(lambda v: json.dumps(v).encode()))
def test_anything_on_any_downlink_topic_is_handled_without_raising(
    topic: str, payload: bytes
) -> None:
    """The only outcomes: lines, publications or rejections; never an exception (a bug would
    show as a rejection that says `please report it`)."""
    gateway = Gateway(P, _fuzz_directory(), clock=Clock())
    lock(gateway, "known")  # so answers can name a command that was sent
    out = Outcome()
    gateway.handle(message(topic, payload), out)
    assert not any("please report it" in r.error for r in out.rejections)
    assert all("\n" not in line for line in out.lines)


def test_each_step_carries_the_declared_tags_and_only_declared_fields(gateway: Gateway) -> None:
    lines = [*lock(gateway).lines]
    lines += handle(gateway, "home/car/car-1/reported", {"version": 0, "state": {}, "ts": 1}).lines
    lines += handle(gateway, "home/command-requests/olga", {"device": "x", "name": "y"}).lines
    field = re.compile(r'(?:^|,)([a-z_]+)=(?:"(?:[^"\\]|\\.)*"|[^,]*)')
    for line in lines:
        head, rest = line.split(" ", 1)  # tags hold no spaces here: checked identifiers
        measurement, *tags = head.split(",")
        assert measurement == COMMANDS.name
        assert {t.split("=")[0] for t in tags} == set(COMMANDS.tags)
        fields = field.findall(rest.rsplit(" ", 1)[0])
        assert fields and set(fields) <= set(COMMANDS.fields), fields


def test_desired_state_changes_only_what_it_names(gateway: Gateway) -> None:
    def want(**state: Any) -> Outcome:
        body = {"device": "pm-1", "state": state, "by": "dr-ana", "role": "clinician"}
        return handle(gateway, "cardio/desired-requests/web/on-behalf", body)

    assert statuses(want(lower_rate_bpm=None))[0][1] == "refused"  # nothing to set yet
    assert statuses(want(lower_rate_bpm=60)) == [("pm-1-desired-1", "sent")]
    unchanged = want(lower_rate_bpm=60)  # no new version; the asker hears it already is so
    assert statuses(unchanged) == [("pm-1-desired-1", "sent")] and unchanged.lines == []
    assert "nothing to change" in orjson.loads(unchanged.publications[0].payload)["reason"]
    out = want(lower_rate_bpm=None)  # null forgets the setting: a new version
    [document] = [orjson.loads(p.payload) for p in out.publications if p.topic.endswith("/desired")]
    assert (document["version"], document["state"]) == (2, {})
    assert 'from="{\\"lower_rate_bpm\\":60}"' in out.lines[0]


def test_the_ids_remembered_are_bounded_even_behind_a_pending_command(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ingest.downlink.ledger.MAX_REMEMBERED", 5)
    week = 7 * 24 * 3600
    body = {"id": "p0", "device": "car-2", "name": "lock", "expires_in_s": week}
    handle(gateway, "home/command-requests/olga", body)  # car-2 is away all week
    for n in range(10):
        lock(gateway, f"c{n}")
        result = {"id": f"c{n}", "status": "succeeded", "ts": 1795334401}
        handle(gateway, "home/car/car-1/command-results", result)
    gateway.expire(Outcome())
    assert len(gateway.ledger.commands) == 5
    assert gateway.ledger.get("home", "c0") is None and gateway.ledger.get("home", "c9")
    assert gateway.ledger.get("home", "p0") is not None  # pending: never forgotten


def test_a_command_expires_by_the_clock_even_after_the_clock_was_set_back(
    gateway: Gateway, clock: Clock
) -> None:
    lock(gateway, "c1")
    clock.ns -= 3600 * 10**9  # the host's clock was an hour fast, and is corrected
    out = handle(gateway, "home/command-requests/olga", {
        "id": "u1", "device": "car-1", "name": "unlock",
    })  # fmt: skip
    [command] = [orjson.loads(p.payload) for p in out.publications if p.topic.endswith("/commands")]
    # An unlock lives a minute from now, by the clock a device has too: not an hour more.
    assert command["expires"] == "2026-11-22T07:01:00Z"
    clock.ns += 61 * 10**9
    expired = Outcome()
    gateway.expire(expired)
    assert ("u1", "expired") in statuses(expired)


def test_a_refused_desired_request_is_announced_whatever_the_length_of_the_device_id(
    registry: Registry, gateway: Gateway
) -> None:
    long_id = "thermostat-in-the-upstairs-guest-bedroom-2"  # 42 characters, a valid id
    registry.add_device("home", "thermostat", long_id)
    gateway.directory.refresh()
    body = {"device": long_id, "state": {"setpoint_c": 99}}
    out = handle(gateway, "home/desired-requests/olga", body)
    [(command_id, status)] = statuses(out)
    assert status == "refused" and len(command_id) <= 64
    assert "less than or equal to 35" in orjson.loads(out.publications[0].payload)["reason"]


def desired_versions(out: Outcome) -> list[int]:
    """The versions of the desired documents sent to devices in `out`."""
    return [
        orjson.loads(p.payload)["version"] for p in out.publications if p.topic.endswith("/desired")
    ]


def test_a_report_beyond_the_versions_moclo_keeps_is_recorded_not_followed(
    gateway: Gateway,
) -> None:
    def want(rate: int) -> Outcome:
        body = {"device": "pm-1", "state": {"lower_rate_bpm": rate}, "by": "dr-ana",
                "role": "clinician"}  # fmt: skip
        return handle(gateway, "cardio/desired-requests/web/on-behalf", body)

    def report(version: int) -> Outcome:
        body = {"version": version, "state": {"lower_rate_bpm": 60}, "ts": 1_795_334_400}
        return handle(gateway, "cardio/pacemaker/pm-1/reported", body)

    assert report(7).lines and desired_versions(want(60)) == [8]  # above what it applied
    beyond = report(2**62)  # a device's word, as large as InfluxDB stores
    assert "version=4611686018427387904i" in beyond.lines[0]  # recorded as said
    assert desired_versions(beyond) == []  # nothing sent above it
    assert desired_versions(want(70)) == [9]


def test_commands_get_in_a_burst_is_answered_now_and_once_when_the_window_ends(
    gateway: Gateway, clock: Clock
) -> None:
    lock(gateway, "c1")
    lock(gateway, "c2")
    asks = [handle(gateway, "home/car/car-1/commands/get", b"") for _ in range(5)]
    assert [len(to_device(out)) for out in asks] == [2, 0, 0, 0, 0]  # now, then held
    clock.ns += 2 * 10**9
    out = Outcome()
    gateway.expire(out)
    assert to_device(out) == []  # the window (3 s) has not ended
    clock.ns += 1 * 10**9
    gateway.expire(out)
    assert len(to_device(out)) == 2  # the four held asks, answered once
    out = Outcome()
    gateway.expire(out)
    assert to_device(out) == []  # and only once
    clock.ns += 3 * 10**9
    assert len(to_device(handle(gateway, "home/car/car-1/commands/get", b""))) == 2


def test_a_device_cannot_push_the_versions_beyond_exact_integers(gateway: Gateway) -> None:
    """A device's reported version is its word: the largest it may say (or a restart reads
    back from its stored reports) still leaves moclo's next versions exact in JavaScript."""

    def want(rate: int) -> Outcome:
        body = {"device": "pm-1", "state": {"lower_rate_bpm": rate}, "by": "dr-ana",
                "role": "clinician"}  # fmt: skip
        return handle(gateway, "cardio/desired-requests/web/on-behalf", body)

    def report(version: int) -> None:
        body = {"version": version, "state": {"lower_rate_bpm": 60}, "ts": 1_795_334_400}
        handle(gateway, "cardio/pacemaker/pm-1/reported", body)

    report(2**40)  # positive control: a large version, followed
    assert desired_versions(want(60)) == [2**40 + 1]
    report(2**53 - 1)  # as large as the bound lets through today
    for rate in range(61, 64):
        [version] = desired_versions(want(rate))
        assert version <= 2**53 - 1
    # A restart reads back the highest version each device reported, whatever it was.
    gateway.restore([], [], {("cardio", "pm-1"): 2**63 - 1})
    [version] = desired_versions(want(70))
    assert version <= 2**53 - 1


def test_one_devices_asking_in_a_burst_holds_back_no_other_devices_commands(
    gateway: Gateway,
) -> None:
    """The window is each device's own: car-2 asking all it likes (as a hostile firmware
    would) leaves car-1's first ask answered at once, and a command to car-1 sent at once."""
    lock(gateway, "c1")
    for _ in range(20):
        handle(gateway, "home/car/car-2/commands/get", b"")
    assert len(to_device(handle(gateway, "home/car/car-1/commands/get", b""))) == 1
    assert to_device(lock(gateway, "c2")) == ["m/home/car/car-1/commands"]
