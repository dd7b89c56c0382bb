"""The device side of the downlink as logic (simulators/downlink.py): what a device answers to
what arrives, with the time given. No broker is involved, so none is mocked: tests/
test_obeying.py runs the same code on the real broker."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from simulators.behaviour import Outcome
from simulators.downlink import MAX_REMEMBERED, REMEMBER_S, DeviceDownlink
from simulators.light import LightBehaviour

T0 = 1_796_000_000.0
PREFIX = "p"


def _light() -> DeviceDownlink:
    behaviour = LightBehaviour(random.Random(1), T0, incident_every_s=None)
    return DeviceDownlink(PREFIX, "home", "light", "light-0001", behaviour)


def _command(id_: str = "c1", name: str = "switch", args: Any = None, **times: float) -> bytes:
    return orjson.dumps(
        {
            "id": id_,
            "name": name,
            "args": {"state": "on"} if args is None else args,
            "issuer": "someone",
            "created": times.get("created", T0),
            "expires": times.get("expires", T0 + 60),
        }
    )


def _answer(downlink: DeviceDownlink, payload: bytes, t: float = T0 + 1) -> dict[str, Any]:
    [(topic, answer)] = downlink.on_message(downlink.subscriptions()[0], payload, t)
    assert topic == "p/home/light/light-0001/command-results"
    parsed: dict[str, Any] = orjson.loads(answer)
    return parsed


@pytest.mark.parametrize(
    ("payload", "status", "reason"),
    [
        (_command(name="dim"), "rejected", "light has no command 'dim'; its commands: switch"),
        (_command(args={"state": "bright"}), "rejected", "invalid arguments for switch: state"),
        (_command(args={"state": "on", "x": 1}), "rejected", "x: Extra inputs"),
        (_command(expires=T0 + 0.5), "expired", None),
        (b'{"id": "c1", "name": "switch"}', "rejected", "not a command this device can read"),
    ],
    ids=["unknown-command", "bad-argument", "extra-argument", "expired", "unreadable-with-id"],
)
def test_what_a_device_will_not_do_is_answered_with_why(
    payload: bytes, status: str, reason: str | None
) -> None:
    downlink = _light()
    answer = _answer(downlink, payload)
    assert answer["status"] == status and answer["id"] == "c1"
    if reason is None:
        assert "reason" not in answer
    else:
        assert reason in answer["reason"]
    assert downlink.counts["executed"] == 0


@pytest.mark.parametrize("payload", [b"", b"{", b"[]", b'{"name": "switch"}'])
def test_a_command_with_no_id_to_answer_to_is_counted_and_dropped(payload: bytes) -> None:
    downlink = _light()
    assert downlink.on_message(downlink.subscriptions()[0], payload, T0) == []
    assert downlink.counts["unreadable"] == 1


def test_a_behaviour_that_raises_answers_failed_and_the_device_carries_on() -> None:
    downlink = _light()

    def broken(name: str, args: dict[str, Any], t: float) -> Outcome:
        raise ValueError("relay stuck")

    downlink.behaviour.command = broken  # type: ignore[method-assign]
    answer = _answer(downlink, _command())
    assert answer["status"] == "failed" and "relay stuck" in answer["reason"]


def test_an_answer_is_remembered_until_an_hour_past_expiry_then_a_repeat_is_expired() -> None:
    downlink = _light()
    first = _answer(downlink, _command(), T0 + 1)
    assert _answer(downlink, _command(), T0 + 60 + REMEMBER_S - 1) == first
    late = _answer(downlink, _command(), T0 + 60 + REMEMBER_S + 1)
    assert late["status"] == "expired"  # forgotten, but still not executed twice
    assert downlink.counts["executed"] == 1


def test_a_device_remembers_a_bounded_number_of_commands() -> None:
    downlink = _light()
    for n in range(MAX_REMEMBERED + 10):
        _answer(downlink, _command(id_=f"c{n}"))
    assert len(downlink._answers) == MAX_REMEMBERED


def test_a_desired_document_that_does_not_fit_the_type_changes_nothing() -> None:
    downlink = _light()
    desired = downlink.subscriptions()[1]
    assert (
        downlink.on_message(desired, b'{"version": 1, "state": {"on": "yes"}, "ts": 1}', T0) == []
    )
    assert downlink.on_message(desired, b"not json", T0) == []
    assert downlink.on_message(desired, b"", T0) == []  # a retained copy cleared
    assert downlink.desired_version == -1
    assert downlink.counts["bad_desired"] == 1 and downlink.counts["unreadable_desired"] == 1
    [(topic, report)] = downlink.on_message(
        desired, b'{"version": 1, "state": {"on": true}, "ts": 1}', T0
    )
    assert topic.endswith("/reported") and orjson.loads(report)["state"] == {"on": True}
