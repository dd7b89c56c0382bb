"""The command gateway end to end: a real Mosquitto and InfluxDB, a real ingest, scripted
devices (paho clients playing devices by the contract) and requests as clients send them.

The test broker checks no login, so here the topic is believed as the broker's ACL would make
it believable; what the broker itself refuses is tested from the attacker's side in the
access part's tests. What the gateway decides from the registry (roles, tenants, devices,
clearances, bounds) is tried here, each refusal beside a positive control."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from access.registry import Registry
from core.settings import Settings
from devices.topics import COMMAND_RESULTS, acknowledgement_topic, alert_subscription
from ingest.downlink.unapplied import RULE
from ingest.options import IngestOptions
from storage.commands import CommandEvent, command_life, device_history
from storage.influx import InfluxClient, InfluxRefused
from tests.conftest import RunningIngest
from tests.gateway_helpers import ScriptedDevice, StatusWatch, ask, registry_with
from tests.helpers import Influx, Subscriber, cow_json, publish_all, wait_until

HOME, CARDIO = "home", "cardio"
DEVICES = [
    (HOME, "car", "car-1"),
    (HOME, "light", "light-1"),
    (CARDIO, "pacemaker", "pm-1"),
]
ACCOUNTS: list[tuple[str, str, str | None]] = [
    ("operator", "olga", HOME),
    ("operator", "otto", CARDIO),
    ("app", "cardio-app", CARDIO),
    ("serve", "web", None),
]
OPTIONS = IngestOptions(linger_s=0.02)


@pytest.fixture
def registered(settings: Settings) -> Settings:
    registry_with(settings, DEVICES, ACCOUNTS)
    return settings


@pytest.fixture
def watch(registered: Settings) -> Iterator[StatusWatch]:
    status = StatusWatch(registered)
    yield status
    status.close()


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def commands_rows(influx: Influx, where: str = "") -> list[dict[str, Any]]:
    clause = f" WHERE {where}" if where else ""
    try:
        return influx.query(f'SELECT * FROM "moclo_commands"{clause}')
    except InfluxRefused:  # a database not written yet holds no rows
        return []


def want(settings: Settings, account: str, device: str, **state: Any) -> None:
    """A desired-state request of `account` of tenant home."""
    ask(settings, HOME, account, {"device": device, "state": state}, desired=True)


def read(settings: Settings, reader: Any, *args: Any, **kwargs: Any) -> Any:
    async def run() -> Any:
        client = InfluxClient(settings.influx_url, settings.influx_db)
        try:
            return await reader(client, *args, **kwargs)
        finally:
            await client.close()

    return asyncio.run(run())


def test_a_command_reaches_the_device_and_its_answer_is_recorded_and_announced(
    registered: Settings, watch: StatusWatch, influx: Influx
) -> None:
    car = ScriptedDevice(registered, HOME, "car", "car-1").connect()
    try:
        with RunningIngest(registered, OPTIONS):
            command_id = new_id()
            ask(registered, HOME, "olga", {"id": command_id, "device": "car-1", "name": "lock"})
            succeeded = watch.wait_for(command_id, "succeeded")
            assert succeeded["issuer"] == "olga" and succeeded["device_type"] == "car"
            assert watch.statuses(command_id)[0] == "sent"
            [command] = car.commands
            assert command["name"] == "lock" and command["args"] == {}
            assert command["issuer"] == "olga" and command["expires"] > command["created"]
            life = wait_until(
                lambda: (
                    [e.status for e in read(registered, command_life, command_id)]
                    == ["sent", "succeeded"]
                    and read(registered, command_life, command_id)
                ),
                what="the command's life stored",
            )
            assert life[0].account == "olga" and life[0].expires_ns and life[0].created_ns
            history = read(registered, device_history, HOME, "car-1", limit=5)
            assert [e.status for e in history] == ["succeeded", "sent"]  # newest first
    finally:
        car.disconnect()


REFUSALS = [
    # (label, tenant, account, on behalf, body, what the reason says)
    ("device of another tenant", HOME, "olga", False,
     {"device": "pm-1", "name": "read_out"}, "no device 'pm-1' in tenant 'home'"),
    ("unknown device", HOME, "olga", False,
     {"device": "ghost", "name": "lock"}, "no device 'ghost'"),
    ("unknown command", HOME, "olga", False,
     {"device": "car-1", "name": "self_destruct"}, "car has no command 'self_destruct'"),
    ("operator sends a clinician command", CARDIO, "otto", False,
     {"device": "pm-1", "name": "set_lower_rate", "args": {"lower_rate_bpm": 60}},
     "is for clinicians of cardio; 'otto' is an operator"),
    ("an app acts", CARDIO, "cardio-app", False,
     {"device": "pm-1", "name": "read_out"}, "'cardio-app' is an app"),
    ("a viewer through serve", CARDIO, "web", True,
     {"device": "pm-1", "name": "read_out", "by": "vic", "role": "viewer"}, "'vic' is a viewer"),
    ("arguments out of bounds", CARDIO, "web", True,
     {"device": "pm-1", "name": "set_lower_rate", "args": {"lower_rate_bpm": 30},
      "by": "dr-ana", "role": "clinician"}, "greater than or equal to 40"),
    ("an unregistered account", HOME, "mallory", False,
     {"device": "car-1", "name": "unlock"}, "account 'mallory' is not in the registry"),
    ("on behalf, not a serve account", HOME, "olga", True,
     {"device": "car-1", "name": "unlock", "by": "x", "role": "operator"},
     "only serve accounts ask on behalf"),
]  # fmt: skip


def test_each_refusal_says_why_and_never_reaches_the_device(
    registered: Settings, watch: StatusWatch, influx: Influx
) -> None:
    pacemaker = ScriptedDevice(registered, CARDIO, "pacemaker", "pm-1").connect()
    car = ScriptedDevice(registered, HOME, "car", "car-1").connect()
    try:
        with RunningIngest(registered, OPTIONS):
            refused = {}
            for label, tenant, account, on_behalf, body, reason in REFUSALS:
                command_id = new_id()
                ask(registered, tenant, account, {"id": command_id, **body}, on_behalf=on_behalf)
                refused[command_id] = (label, reason)
            # The positive controls, sent after every attempt: the same commands, by those
            # who may, reach the devices.
            allowed = new_id()
            ask(registered, CARDIO, "web", {
                "id": allowed, "device": "pm-1", "name": "set_lower_rate",
                "args": {"lower_rate_bpm": 60}, "by": "dr-ana", "role": "clinician",
            }, on_behalf=True)  # fmt: skip
            unlock = new_id()
            ask(registered, HOME, "olga", {"id": unlock, "device": "car-1", "name": "unlock"})
            watch.wait_for(allowed, "succeeded")
            watch.wait_for(unlock, "succeeded")
            for command_id, (label, reason) in refused.items():
                update = watch.wait_for(command_id, "refused")
                assert reason in update["reason"], (label, update["reason"])
                assert watch.statuses(command_id) == ["refused"], label
            assert pacemaker.executed == [allowed]
            assert car.executed == [unlock]
            assert pacemaker.commands[0]["args"] == {"lower_rate_bpm": 60}
            assert pacemaker.commands[0]["issuer"] == "dr-ana"
            rows = wait_until(
                lambda: (
                    len(rows := commands_rows(influx, "\"status\" = 'refused'")) == len(REFUSALS)
                    and rows
                ),
                what="every refusal stored",
            )
            assert {row["id"] for row in rows} == set(refused)
            assert all(row["reason"] for row in rows)
            # Invented names add no series: the unregistered device is tagged _unknown.
            ghost = next(r for r in rows if refused[r["id"]][0] == "unknown device")
            assert (ghost["device_id"], ghost["device"]) == ("_unknown", "ghost")
    finally:
        pacemaker.disconnect()
        car.disconnect()


def test_the_same_id_twice_is_one_command(registered: Settings, watch: StatusWatch) -> None:
    car = ScriptedDevice(registered, HOME, "car", "car-1").connect()
    try:
        with RunningIngest(registered, OPTIONS):
            command_id = new_id()
            request = {"id": command_id, "device": "car-1", "name": "lock"}
            ask(registered, HOME, "olga", request)
            watch.wait_for(command_id, "succeeded")
            ask(registered, HOME, "olga", request)  # a client retrying
            wait_until(
                lambda: watch.statuses(command_id) == ["sent", "succeeded", "succeeded"],
                what="the status announced again",
            )
            assert car.received(command_id) == 1 and car.executed == [command_id]
            life = read(registered, command_life, command_id)
            assert [e.status for e in life] == ["sent", "succeeded"]
    finally:
        car.disconnect()


def test_a_command_to_an_offline_device_arrives_when_it_reconnects(
    registered: Settings, watch: StatusWatch
) -> None:
    car = ScriptedDevice(registered, HOME, "car", "car-1").connect()
    car.disconnect()  # its persistent session stays at the broker
    with RunningIngest(registered, OPTIONS):
        command_id = new_id()
        ask(registered, HOME, "olga", {"id": command_id, "device": "car-1", "name": "lock"})
        watch.wait_for(command_id, "sent")
        assert "succeeded" not in watch.statuses(command_id)
        car.connect()
        try:
            watch.wait_for(command_id, "succeeded")
            assert car.executed == [command_id]
        finally:
            car.disconnect()


def test_commands_get_sends_the_pending_ones_again_and_a_passed_expiry_is_expired(
    registered: Settings, watch: StatusWatch
) -> None:
    with RunningIngest(registered, OPTIONS):
        pending, short = new_id(), new_id()
        ask(registered, HOME, "olga", {"id": pending, "device": "car-1", "name": "lock"})
        ask(registered, HOME, "olga", {
            "id": short, "device": "car-1", "name": "flash_lights", "expires_in_s": 0.5,
        })  # fmt: skip
        watch.wait_for(pending, "sent")
        expired = watch.wait_for(short, "expired", timeout_s=10)
        assert "expired" in expired["reason"]
        # A device that lost its session (a clean one, a new broker node) asks on connect.
        car = ScriptedDevice(registered, HOME, "car", "car-1").connect(clean=True)
        try:
            car.ask_for_commands()
            watch.wait_for(pending, "succeeded")
            assert car.executed == [pending]  # the expired one is not sent
        finally:
            car.disconnect()


def test_a_restart_restores_pending_commands_ids_and_desired_state(
    registered: Settings, watch: StatusWatch
) -> None:
    command_id = new_id()
    request = {"id": command_id, "device": "car-1", "name": "lock"}
    with RunningIngest(registered, OPTIONS):
        ask(registered, HOME, "olga", request)
        want(registered, "olga", "light-1", on=True)
        watch.wait_for(command_id, "sent")
        watch.wait_for("light-1-desired-1", "sent")
    with RunningIngest(registered, OPTIONS):
        ask(registered, HOME, "olga", request)  # the same id: the same command, not a new one
        car = ScriptedDevice(registered, HOME, "car", "car-1").connect(clean=True)
        light = ScriptedDevice(registered, HOME, "light", "light-1").connect(clean=True)
        try:
            car.ask_for_commands()
            watch.wait_for(command_id, "succeeded")
            light.ask_for_desired()
            wait_until(lambda: light.desired, what="the desired document")
            assert light.desired[-1]["version"] == 1 and light.desired[-1]["state"] == {"on": True}
            want(registered, "olga", "light-1", on=False)
            watch.wait_for("light-1-desired-2", "sent")
        finally:
            car.disconnect()
            light.disconnect()
        life = read(registered, command_life, command_id)
        assert [e.status for e in life] == ["sent", "succeeded"]


def test_desired_state_is_merged_versioned_recorded_and_confirmed(
    registered: Settings, watch: StatusWatch, influx: Influx
) -> None:
    light = ScriptedDevice(registered, HOME, "light", "light-1").connect()
    try:
        with RunningIngest(registered, OPTIONS):
            want(registered, "olga", "light-1", on=True)
            watch.wait_for("light-1-desired-1", "sent")
            document = wait_until(lambda: light.desired and light.desired[-1], what="desired")
            assert (document["version"], document["state"]) == (1, {"on": True})
            light.report(1, {"on": True})
            confirmed = watch.wait_for("light-1-desired-1", "succeeded")
            assert confirmed["name"] == "desired" and confirmed["issuer"] == "olga"
            # Refused (otto is of another tenant; 3 is not a yes or no): nothing sent, the
            # version stays; then a valid change.
            want(registered, "otto", "light-1", on=False)
            want(registered, "olga", "light-1", on=3)
            want(registered, "olga", "light-1", on=False)
            watch.wait_for("light-1-desired-2", "sent")
            refusals = [u for u in watch.updates() if u["status"] == "refused"]
            assert len(refusals) == 2
            assert "belongs to tenant 'cardio'" in refusals[0]["reason"]
            assert "on:" in refusals[1]["reason"]
            wait_until(lambda: light.desired[-1]["version"] == 2, what="version 2")
        # Who changed this light, when, from what to what: one query (docs/acting.md).
        rows = influx.query(
            'SELECT "issuer", "from", "to", "version" FROM "moclo_commands" '
            "WHERE \"kind\" = 'desired' AND \"status\" = 'sent' AND \"tenant\" = 'home' "
            "AND \"device_id\" = 'light-1'"
        )
        assert [(r["issuer"], r["from"], r["to"], r["version"]) for r in rows] == [
            ("olga", '{"on":null}', '{"on":true}', 1),
            ("olga", '{"on":true}', '{"on":false}', 2),
        ]
    finally:
        light.disconnect()


GARBAGE = [
    ("command-requests/olga", b"not json", "bad_command_request"),
    ("command-requests/olga", b'{"device": "car-1"}', "bad_command_request"),
    ("command-requests", b'{"device": "car-1", "name": "lock"}', "bad_command_request"),
    ("desired-requests/olga", b"[1, 2]", "bad_desired_request"),
    ("car/car-1/command-results", b"\xff\xfe", "bad_command_result"),
    ("car/car-1/command-results", b'{"id": "nope", "status": "succeeded", "ts": 1}',
     "bad_command_result"),
    ("car/car-1/reported", b'{"version": -1, "state": {}, "ts": 1}', "bad_reported"),
    # A version InfluxDB cannot store (beyond 64 bits): said here, not lost as a refused line.
    ("car/car-1/reported", b'{"version": 9223372036854775808, "state": {}, "ts": 1}',
     "bad_reported"),
    ("rocket/r-1/reported", b"{}", "bad_reported"),
]  # fmt: skip


def test_garbage_on_every_downlink_topic_is_recorded_and_readings_go_on(
    registered: Settings, influx: Influx
) -> None:
    prefix = registered.topic_prefix
    with RunningIngest(registered, OPTIONS) as running:
        publish_all(
            registered.mqtt_url,
            [(f"{prefix}/{HOME}/{level}", payload) for level, payload, _ in GARBAGE]
            + [(f"{prefix}/{HOME}/car/car-1/commands/get", b"anything")]  # answered, not refused
            + [(f"{prefix}/farm/cow_tracker/cow-1/telemetry", cow_json(1795327200, 1))],
        )
        wait_until(lambda: influx.count("cow_tracker", "seq") == 1, what="the reading stored")
        rows = wait_until(
            lambda: len(r := commands_rows_rejected(influx)) == len(GARBAGE) and r,
            what="every piece of garbage recorded",
        )
        assert sorted(r["reason"] for r in rows) == sorted(reason for _, _, reason in GARBAGE)
        assert all(r["error"] for r in rows)
        publish_all(
            registered.mqtt_url,
            [(f"{prefix}/farm/cow_tracker/cow-1/telemetry", cow_json(1795327260, 2))],
        )
        wait_until(lambda: influx.count("cow_tracker", "seq") == 2, what="ingest goes on")
        assert running.error is None


def commands_rows_rejected(influx: Influx) -> list[dict[str, Any]]:
    try:
        return influx.query('SELECT "error", "reason" FROM "moclo_rejected" GROUP BY "reason"')
    except InfluxRefused:  # not written yet
        return []


def test_a_desired_state_not_applied_in_time_raises_an_alert_resolved_when_applied(
    registered: Settings, watch: StatusWatch, influx: Influx
) -> None:
    quick = registered.model_copy(update={"desired_grace": 1.0})
    prefix = quick.topic_prefix
    alerts = Subscriber(quick.mqtt_url, alert_subscription(prefix))
    try:
        with RunningIngest(quick, OPTIONS):
            want(quick, "olga", "light-1", on=True)  # the light is offline
            watch.wait_for("light-1-desired-1", "sent")

            def changes(state: str) -> list[dict[str, Any]]:
                documents = [orjson.loads(m.payload) for m in list(alerts.messages)]
                return [d for d in documents if d["rule"] == RULE and d["state"] == state]

            [raised] = wait_until(lambda: changes("raised"), what="desired_not_applied raised")
            assert raised["device_id"] == "light-1" and "version 1" in raised["message"]
            # Acknowledged like any other alert, by the account the topic names.
            publish_all(
                quick.mqtt_url,
                [(acknowledgement_topic(prefix, HOME, "olga"), orjson.dumps({"id": raised["id"]}))],
            )
            wait_until(lambda: changes("acknowledged"), what="acknowledged")
        # Across a restart the episode stays open, and the device's report resolves it.
        with RunningIngest(quick, OPTIONS):
            light = ScriptedDevice(quick, HOME, "light", "light-1").connect(clean=True)
            try:
                light.ask_for_desired()
                wait_until(lambda: light.desired, what="the desired document")
                light.report(1, {"on": True})
                [resolved] = wait_until(lambda: changes("resolved"), what="resolved")
                assert resolved["id"] == raised["id"]
                assert len(changes("raised")) == 1  # the restart raised no second episode
            finally:
                light.disconnect()
        stored = influx.query(f'SELECT "state" FROM "moclo_alerts" WHERE "rule" = \'{RULE}\'')
        assert [row["state"] for row in stored] == ["raised", "acknowledged", "resolved"]
    finally:
        alerts.close()


def test_an_answer_moclo_cannot_store_is_refused_and_ingest_outlives_the_expiry(
    registered: Settings, watch: StatusWatch, influx: Influx
) -> None:
    # An integer beyond 64 bits is valid JSON, but neither InfluxDB nor moclo's own messages
    # can carry it: an answer with one must be refused, not half taken (it once left the
    # command holding it, and announcing its expiry stopped ingest).
    car = ScriptedDevice(registered, HOME, "car", "car-1", answer=None).connect()
    try:
        with RunningIngest(registered, OPTIONS) as running:
            command_id = new_id()
            ask(registered, HOME, "olga", {
                "id": command_id, "device": "car-1", "name": "lock", "expires_in_s": 1,
            })  # fmt: skip
            wait_until(lambda: car.executed, what="the command delivered")
            car.publish(
                COMMAND_RESULTS,
                b'{"id": "%s", "status": "accepted", "output": {"n": %d}, "ts": %d}'
                % (command_id.encode(), 10**30, int(time.time())),
            )
            expired = watch.wait_for(command_id, "expired")
            assert "output" not in expired or expired["output"] is None
            assert "accepted" not in watch.statuses(command_id)
            rows = wait_until(
                lambda: [r for r in commands_rows_rejected(influx)
                         if r["reason"] == "bad_command_result"],
                what="the answer recorded as rejected",
            )  # fmt: skip
            assert "64-bit" in rows[0]["error"]
            publish_all(
                registered.mqtt_url,
                [(f"{registered.topic_prefix}/farm/cow_tracker/cow-1/telemetry",
                  cow_json(1795327200, 1))],
            )  # fmt: skip
            wait_until(lambda: influx.count("cow_tracker", "seq") == 1, what="readings go on")
            assert running.error is None
    finally:
        car.disconnect()


def rejected_requests(influx: Influx) -> list[str]:
    try:
        rows = influx.query(
            'SELECT "error" FROM "moclo_rejected" WHERE "reason" = \'bad_command_request\''
        )
    except InfluxRefused:  # not written yet
        return []
    return [row["error"] for row in rows]


def test_an_id_asked_again_is_checked_again_who_asks_and_what(
    registered: Settings, watch: StatusWatch, influx: Influx
) -> None:
    # The same id is the same command only for a request that may send it and says the same:
    # an operator repeating a clinician's id, or an id repeated with other arguments, is
    # refused, and nothing more reaches the device.
    pacemaker = ScriptedDevice(registered, CARDIO, "pacemaker", "pm-1", answer=None).connect()
    light = ScriptedDevice(registered, HOME, "light", "light-1", answer=None).connect()
    try:
        with RunningIngest(registered, OPTIONS):
            paced, switched, barrier = new_id(), new_id(), new_id()
            clinician = {"by": "dr-ana", "role": "clinician"}
            pace = {"device": "pm-1", "name": "set_lower_rate", "args": {"lower_rate_bpm": 60}}
            ask(registered, CARDIO, "web", {"id": paced, **pace, **clinician}, on_behalf=True)
            ask(registered, HOME, "olga", {
                "id": switched, "device": "light-1", "name": "switch", "args": {"state": "on"},
            })  # fmt: skip
            wait_until(lambda: pacemaker.executed and light.executed, what="both delivered")
            ask(registered, CARDIO, "otto", {"id": paced, **pace})  # an operator, same id
            ask(registered, HOME, "olga", {
                "id": switched, "device": "light-1", "name": "switch", "args": {"state": "off"},
            })  # fmt: skip
            # The positive control, and a barrier: what came after reaches the devices.
            ask(registered, CARDIO, "web", {
                "id": barrier, "device": "pm-1", "name": "read_out", **clinician,
            }, on_behalf=True)  # fmt: skip
            ask(registered, HOME, "olga", {"id": barrier, "device": "light-1", "name": "switch",
                                           "args": {"state": "off"}})  # fmt: skip
            wait_until(
                lambda: pacemaker.received(barrier) and light.received(barrier),
                what="the later commands delivered",
            )
            assert pacemaker.received(paced) == 1 and light.received(switched) == 1
            assert [c["args"] for c in light.commands] == [{"state": "on"}, {"state": "off"}]
            assert watch.statuses(paced) == ["sent"] and watch.statuses(switched) == ["sent"]
            errors = wait_until(
                lambda: len(e := rejected_requests(influx)) == 2 and e,
                what="both refusals recorded",
            )
            assert any("clinicians" in e and "'otto' is an operator" in e for e in errors)
            assert any("other arguments" in e for e in errors)
    finally:
        pacemaker.disconnect()
        light.disconnect()


def test_a_desired_change_recorded_but_never_sent_is_sent_when_asked_again(
    registered: Settings, watch: StatusWatch, influx: Influx
) -> None:
    # Recorded, then sent: a crash in between leaves version 1 stored and the request
    # unacknowledged, so the broker delivers it again. A device already connected does not
    # ask (it asks on connect), so the request's second coming must send the document.
    now = time.time_ns()
    recorded = CommandEvent(
        HOME, "light", "light-1", "desired", "desired", "sent", "light-1-desired-1", now,
        "olga", "olga", from_state={"on": None}, to_state={"on": True}, state={"on": True},
        version=1,
    )  # fmt: skip
    influx.write([recorded.to_line()])
    light = ScriptedDevice(registered, HOME, "light", "light-1").connect()
    try:
        with RunningIngest(registered, OPTIONS):
            want(registered, "olga", "light-1", on=True)  # delivered again
            documents = wait_until(lambda: light.desired, what="the desired document sent")
            assert documents[-1]["version"] == 1 and documents[-1]["state"] == {"on": True}
            assert watch.statuses("light-1-desired-1") == ["sent"]
    finally:
        light.disconnect()


def test_a_device_id_given_to_a_device_of_another_type_starts_a_desired_state_of_its_own(
    registered: Settings, watch: StatusWatch
) -> None:
    # light-1 is replaced by a thermostat under the same id: the light's settings are not
    # the thermostat's, and must not be merged into its desired state (it would refuse the
    # whole document, every version after, with no request able to remove the light's).
    with RunningIngest(registered, OPTIONS):
        want(registered, "olga", "light-1", on=True)
        watch.wait_for("light-1-desired-1", "sent")
        registry = Registry(registered.registry)
        registry.revoke_device(HOME, "light-1")
        registry.add_device(HOME, "thermostat", "light-1")
        thermostat = ScriptedDevice(registered, HOME, "thermostat", "light-1").connect()
        try:
            # The registry is read again within seconds: ask until the thermostat's is taken.
            def sent() -> dict[str, Any] | None:
                want(registered, "olga", "light-1", setpoint_c=20.0)
                return next(iter(thermostat.desired), None) or None

            document = wait_until(sent, what="a desired document sent to the thermostat")
            assert document["state"] == {"setpoint_c": 20.0}
            assert document["version"] == 2  # versions go on: never one a device applied
            thermostat.ask_for_desired()
            wait_until(lambda: len(thermostat.desired) >= 2, what="the answer to desired/get")
            assert thermostat.desired[-1]["state"] == {"setpoint_c": 20.0}
        finally:
            thermostat.disconnect()


def test_after_a_restart_the_desired_state_is_the_newest_devices_of_that_id(
    registered: Settings, watch: StatusWatch
) -> None:
    registry = Registry(registered.registry)
    registry.revoke_device(HOME, "light-1")
    registry.add_device(HOME, "thermostat", "light-1")
    with RunningIngest(registered, OPTIONS):
        want(registered, "olga", "light-1", setpoint_c=20.0)
        watch.wait_for("light-1-desired-1", "sent")
    registry.revoke_device(HOME, "light-1")
    registry.add_device(HOME, "light", "light-1")  # the id's device now: a light again
    with RunningIngest(registered, OPTIONS):
        want(registered, "olga", "light-1", on=True)
        watch.wait_for("light-1-desired-2", "sent")
    with RunningIngest(registered, OPTIONS):
        light = ScriptedDevice(registered, HOME, "light", "light-1").connect(clean=True)
        try:
            wait_until(lambda: light.desired, what="the retained document")  # a convenience
            light.ask_for_desired()
            wait_until(lambda: len(light.desired) == 2, what="the answer to desired/get")
            assert light.desired[-1]["version"] == 2
            assert light.desired[-1]["state"] == {"on": True}
        finally:
            light.disconnect()


def test_a_command_recorded_but_never_sent_is_sent_when_ingest_starts_again(
    registered: Settings, influx: Influx
) -> None:
    # Recorded, then sent: a stop in between leaves the command stored as `sent` and never
    # published. An automation's is asked for by nobody again, and a connected device asks
    # only on connect: ingest sends its unanswered commands once it is connected.
    now = time.time_ns()
    recorded = CommandEvent(
        HOME, "light", "light-1", "command", "switch", "sent", "auto-recorded-1", now,
        "automation porch", "automation", args={"state": "on"}, created_ns=now,
        expires_ns=now + 300 * 10**9,
    )  # fmt: skip
    lapsed = CommandEvent(
        HOME, "light", "light-1", "command", "switch", "sent", "auto-lapsed-1", now - 10**9,
        "automation porch", "automation", args={"state": "off"}, created_ns=now - 10**9,
        expires_ns=now - 1,
    )  # fmt: skip
    influx.write([lapsed.to_line(), recorded.to_line()])
    light = ScriptedDevice(registered, HOME, "light", "light-1").connect()
    try:
        with RunningIngest(registered, OPTIONS):
            wait_until(lambda: light.executed, what="the recorded command sent")
            assert [c["id"] for c in light.commands] == ["auto-recorded-1"]  # not the lapsed
            assert light.commands[0]["args"] == {"state": "on"}
    finally:
        light.disconnect()
