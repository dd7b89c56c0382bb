"""`moclo command`, `moclo desired` and `moclo commands` end to end: the real command, a real
ingest (the gateway) on the real Mosquitto and InfluxDB, scripted devices, and an operator's
and a clinician's accounts in the registry. The exit status is the outcome; each refusal is
tried beside the same request by someone who may.

The test broker checks no login, so the asker is $USER (what `moclo command` does without a
login, and what the broker's ACL guarantees with one: tests/test_command_cli.py and
tests/test_broker_command_access.py try that side)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from core.settings import Settings
from ingest.options import IngestOptions
from tests.conftest import RunningIngest
from tests.gateway_helpers import ScriptedDevice, registry_with
from tests.helpers import wait_until

HOME, HOSPITAL = "home", "hospital"
OPTIONS = IngestOptions(linger_s=0.02)


@pytest.fixture
def gateway(settings: Settings) -> Iterator[Settings]:
    registry_with(
        settings,
        [(HOME, "thermostat", "th-1"), (HOME, "car", "car-1"), (HOSPITAL, "pacemaker", "pm-1")],
        [
            ("operator", "owner", HOME),
            ("operator", "nurse", HOSPITAL),
            ("clinician", "dr-lee", HOSPITAL),
        ],
    )
    with RunningIngest(settings, OPTIONS):
        yield settings


def run(settings: Settings, user: str, *args: str) -> tuple[int, str, str]:
    """`moclo ARGS` as the person `user` (the test broker checks no login: $USER asks)."""
    flags = ["--mqtt-url", settings.mqtt_url, "--influx-url", settings.influx_url]
    flags += ["--influx-db", settings.influx_db, "--topic-prefix", settings.topic_prefix]
    result = subprocess.run(
        [sys.executable, "-m", "moclo.cli", *args, *flags],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env={**os.environ, "USER": user, "MOCLO_REGISTRY": settings.registry},
    )
    return result.returncode, result.stdout, result.stderr


def updates(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_a_command_with_wait_exits_0_once_the_device_succeeded(gateway: Settings) -> None:
    device = ScriptedDevice(gateway, HOME, "thermostat", "th-1").connect()
    try:
        status, out, err = run(
            gateway, "owner", "command", HOME, "th-1", "set_setpoint", "setpoint_c=21.5",
            "--wait", "--json", "--id", "cli-e2e-1",
        )  # fmt: skip
        assert status == 0, err
        steps = updates(out)
        assert [u["status"] for u in steps] == ["sent", "succeeded"]
        assert {u["issuer"] for u in steps} == {"owner"} and steps[0]["id"] == "cli-e2e-1"
        [command] = device.commands
        assert command["args"] == {"setpoint_c": 21.5} and command["issuer"] == "owner"

        # The same id again is the same command: its status, no second execution.
        status, out, err = run(
            gateway, "owner", "command", HOME, "th-1", "set_setpoint", "setpoint_c=21.5",
            "--wait", "--json", "--id", "cli-e2e-1",
        )  # fmt: skip
        assert status == 0, err
        assert updates(out)[-1]["status"] == "succeeded"
        assert device.executed == ["cli-e2e-1"]

        # And the history shows it, from InfluxDB.
        def listed() -> str:
            code, text, _ = run(gateway, "owner", "commands", HOME, "th-1")
            return text if code == 0 and "succeeded" in text else ""

        history = wait_until(listed, timeout_s=20, what="the history")
        assert "set_setpoint by owner" in history and "(id cli-e2e-1)" in history
    finally:
        device.disconnect()


def test_only_a_clinician_sets_a_pacemaker_and_the_refusal_exits_3_saying_why(
    gateway: Settings,
) -> None:
    pacemaker = ScriptedDevice(gateway, HOSPITAL, "pacemaker", "pm-1").connect()
    try:
        ask = ("command", HOSPITAL, "pm-1", "set_lower_rate", "lower_rate_bpm=60", "--wait")
        status, out, err = run(gateway, "nurse", *ask)
        assert status == 3, (out, err)
        assert "refused" in out and "clinician" in out
        status, out, err = run(gateway, "dr-lee", *ask)  # the positive control
        assert status == 0, (out, err)
        assert [c["issuer"] for c in pacemaker.commands] == ["dr-lee"]
        # A person of another tenant: refused, and the device never hears of it.
        status, out, _ = run(gateway, "owner", *ask)
        assert status == 3 and "refused" in out
        assert len(pacemaker.commands) == 1
    finally:
        pacemaker.disconnect()


def test_an_id_already_taken_answers_only_its_own_asker_with_its_own_arguments(
    gateway: Settings,
) -> None:
    # The pacemaker is away: the clinician's command waits, `sent`, under its id.
    ask = ("command", HOSPITAL, "pm-1", "set_lower_rate", "lower_rate_bpm=60", "--json")
    status, out, err = run(gateway, "dr-lee", *ask, "--id", "rate-1")
    assert status == 0, (out, err)
    assert [(u["status"], u["issuer"]) for u in updates(out)] == [("sent", "dr-lee")]
    # The same id again from its asker is a retry: its status again (the positive control).
    status, out, err = run(gateway, "dr-lee", *ask, "--id", "rate-1")
    assert status == 0, (out, err)
    # A nurse may not send it: reusing the clinician's id is no way round that, nor a way to
    # hear "sent" for a command she is not cleared for.
    status, out, err = run(gateway, "nurse", *ask, "--id", "rate-1", "--timeout", "3s")
    assert status != 0 and "sent" not in out, (out, err)
    # Other arguments under the same id are another command: not answered as if sent.
    other = ("command", HOSPITAL, "pm-1", "set_lower_rate", "lower_rate_bpm=90", "--json")
    status, out, err = run(gateway, "dr-lee", *other, "--id", "rate-1", "--timeout", "3s")
    assert status != 0 and "sent" not in out, (out, err)


def test_the_exit_status_is_the_devices_answer(gateway: Settings) -> None:
    answers = {
        "rejected": {"status": "rejected", "reason": "the door is open"},
        "failed": {"status": "failed", "reason": "the lock is jammed"},
    }

    def answer(command: dict[str, Any]) -> dict[str, Any]:
        return {"id": command["id"], "ts": time.time(), **answers[command["id"].split("-")[0]]}

    car = ScriptedDevice(gateway, HOME, "car", "car-1", answer=answer).connect()
    try:
        for outcome, code in (("rejected", 4), ("failed", 5)):
            command_id = f"{outcome}-{uuid.uuid4().hex[:8]}"
            status, out, err = run(
                gateway, "owner", "command", HOME, "car-1", "lock", "--wait", "--id", command_id
            )
            assert status == code, (out, err)
            assert answers[outcome]["reason"] in out
    finally:
        car.disconnect()


def test_what_a_device_says_reaches_a_terminal_without_control_characters(
    gateway: Settings,
) -> None:
    # A device's reason is its own text: escape sequences in it would retitle, clear or
    # rewrite the terminal of whoever follows its commands.
    hostile = "jammed\x1b]0;owned\x07\x1b[2J\x1b[1A\r\u202eok"

    def answer(command: dict[str, Any]) -> dict[str, Any]:
        return {"id": command["id"], "ts": time.time(), "status": "failed", "reason": hostile}

    car = ScriptedDevice(gateway, HOME, "car", "car-1", answer=answer).connect()
    try:
        status, out, err = run(gateway, "owner", "command", HOME, "car-1", "lock", "--wait")
        assert status == 5, (out, err)
        assert "jammed" in out and not any(c in out for c in "\x1b\x07\r\u202e"), repr(out)

        def listed() -> str:
            code, text, _ = run(gateway, "owner", "commands", HOME, "car-1")
            return text if code == 0 and "jammed" in text else ""

        history = wait_until(listed, timeout_s=20, what="the history")
        assert not any(c in history for c in "\x1b\x07\r\u202e"), repr(history)
        # JSON, for programs, keeps the reason (JSON escapes what it must itself).
        status, out, _ = run(gateway, "owner", "commands", HOME, "car-1", "--json")
        reasons = [json.loads(line).get("reason") or "" for line in out.splitlines()]
        assert status == 0 and any(r.startswith("jammed") for r in reasons)
    finally:
        car.disconnect()


def test_a_command_nobody_answers_expires_and_exits_6(gateway: Settings) -> None:
    car = ScriptedDevice(gateway, HOME, "car", "car-1", answer=None).connect()
    try:
        status, out, err = run(
            gateway, "owner", "command", HOME, "car-1", "flash_lights", "--wait",
            "--expires-in", "1s", "--timeout", "30s",
        )  # fmt: skip
        assert status == 6, (out, err)
        assert "expired" in out
    finally:
        car.disconnect()


def test_desired_set_waits_for_the_device_to_apply_it_and_show_tells(gateway: Settings) -> None:
    thermostat = ScriptedDevice(gateway, HOME, "thermostat", "th-1").connect()
    try:

        def report_when_told() -> None:
            document = wait_until(lambda: thermostat.desired and thermostat.desired[-1])
            thermostat.report(document["version"], document["state"])

        reporter = threading.Thread(target=report_when_told, daemon=True)
        reporter.start()
        status, out, err = run(
            gateway, "owner", "desired", "set", HOME, "th-1", "setpoint_c=19", "--wait", "--json"
        )
        reporter.join(30)
        assert status == 0, (out, err)
        assert [u["status"] for u in updates(out)] == ["sent", "succeeded"]
        assert thermostat.desired[-1]["state"] == {"setpoint_c": 19.0}

        def shown() -> dict[str, Any] | None:
            code, text, _ = run(gateway, "owner", "desired", "show", HOME, "th-1", "--json")
            document = json.loads(text) if code == 0 and text.strip() else None
            return document if document and document.get("applied") else None

        document = wait_until(shown, timeout_s=20, what="the desired state stored")
        assert document["state"] == {"setpoint_c": 19.0} and document["issuer"] == "owner"
    finally:
        thermostat.disconnect()


def test_commands_follow_lists_the_stored_steps_then_the_live_ones(gateway: Settings) -> None:
    car = ScriptedDevice(gateway, HOME, "car", "car-1").connect()
    try:
        status, _, err = run(gateway, "owner", "command", HOME, "car-1", "lock", "--wait")
        assert status == 0, err
        wait_until(lambda: "lock by owner" in run(gateway, "owner", "commands", HOME, "car-1")[1])
        flags = ["--mqtt-url", gateway.mqtt_url, "--influx-url", gateway.influx_url]
        flags += ["--influx-db", gateway.influx_db, "--topic-prefix", gateway.topic_prefix]
        follower = subprocess.Popen(
            [sys.executable, "-m", "moclo.cli", "commands", HOME, "car-1", "--follow", "--json",
             "--count", "1", *flags],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "USER": "owner"},
        )  # fmt: skip
        try:
            assert follower.stderr is not None
            assert "watching" in follower.stderr.readline()  # subscribed, history printed
            status, _, err = run(gateway, "owner", "command", HOME, "car-1", "unlock")
            assert status == 0, err
            out, _ = follower.communicate(timeout=30)
        finally:
            follower.kill()
        steps = [json.loads(line) for line in out.splitlines()]
        assert [(s["name"], s["status"]) for s in steps[:2]] == [
            ("lock", "sent"),
            ("lock", "succeeded"),
        ]
        assert (steps[-1]["name"], steps[-1]["status"]) == ("unlock", "sent")  # live
        assert follower.returncode == 0
    finally:
        car.disconnect()
