"""The automations file: what it accepts, and every mistake told at its FILE:LINE."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.automations.file import (
    AutomationsFileError,
    CommandAction,
    DesiredAction,
    NoticeAction,
    load_automations_file,
    parse_automations,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "automations.example.toml"

LIGHTS = """\
[[automation]]
name = "lights"
tenant = "households"
device_type = "car"
rule = "near_home"
device = "car-0001"

[automation.command]
device_type = "light"
device = "light-0001"
name = "switch"
args = { state = "on" }
"""


def test_the_example_file_loads_with_both_seed_automations_switched_off() -> None:
    automations = load_automations_file(EXAMPLE)
    assert [a.name for a in automations] == ["porch_light_when_near_home", "arrival_notice"]
    assert not any(a.enabled for a in automations)
    lights, notice = automations
    assert lights.action == CommandAction("light", "light-0001", "switch", {"state": "on"})
    assert isinstance(notice.action, NoticeAction)


def test_a_command_automation_matches_its_alert_change_only() -> None:
    (lights,) = parse_automations(LIGHTS, "a.toml")
    assert lights.enabled and lights.on == "raised"
    assert lights.matches("households", "car", "car-0001", "near_home", "raised")
    assert not lights.matches("households", "car", "car-0001", "near_home", "resolved")
    assert not lights.matches("households", "car", "car-0002", "near_home", "raised")
    assert not lights.matches("other", "car", "car-0001", "near_home", "raised")
    assert not lights.matches("households", "car", "car-0001", "low_energy", "raised")


def test_a_desired_state_action_keeps_only_the_named_settings() -> None:
    text = LIGHTS.replace("[automation.command]", "[automation.desired]").replace(
        'name = "switch"\nargs = { state = "on" }', "state = { on = true }"
    )
    (automation,) = parse_automations(text, "a.toml")
    assert automation.action == DesiredAction("light", "light-0001", {"on": True})


def _error(text: str) -> str:
    with pytest.raises(AutomationsFileError) as caught:
        parse_automations(text, "a.toml")
    return str(caught.value)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            'args = { state = "on" }',
            'args = { state = "dim" }',
            "a.toml:12: automation lights: command: state: Input should be 'on' or 'off'",
        ),
        (
            'name = "switch"',
            'name = "explode"',
            "a.toml:11: automation lights: command: light "
            "has no command 'explode'; its commands: switch",
        ),
        ('rule = "near_home"\n', "", "a.toml:1: automation lights: rule is required"),
        (
            'tenant = "households"',
            'tenant = "House Holds"',
            "a.toml:3: automation lights: tenant is required",
        ),
        (
            'device_type = "car"',
            'device_type = "boat"',
            "a.toml:4: automation lights: device_type is required, one of",
        ),
        (
            'device = "car-0001"',
            'device = "car-0001"\non = "sometimes"',
            "a.toml:7: automation lights: on must be one of raised, resolved",
        ),
        (
            'device = "car-0001"',
            'device = "car-0001"\nenabled = "yes"',
            "a.toml:7: automation lights: enabled must be true or false",
        ),
        (
            'device = "car-0001"',
            'device = "car-0001"\ncolour = "red"',
            "a.toml:7: automation lights: unknown key 'colour'",
        ),
        (
            'device = "light-0001"',
            'device = "Light 1"',
            "a.toml:10: automation lights: command: device is required",
        ),
        (
            "[automation.command]",
            "[automation.order]",
            "a.toml:1: automation lights: give exactly one action",
        ),
    ],
)
def test_each_mistake_is_told_at_its_line(old: str, new: str, expected: str) -> None:
    assert old in LIGHTS
    assert expected in _error(LIGHTS.replace(old, new, 1))


def test_an_automation_cannot_act_with_a_clinicians_clearance() -> None:
    text = LIGHTS.replace('device_type = "light"', 'device_type = "pacemaker"').replace(
        'name = "switch"\nargs = { state = "on" }',
        'name = "set_lower_rate"\nargs = { lower_rate_bpm = 50 }',
    )
    assert (
        "pacemaker set_lower_rate needs a clinician's clearance; an automation acts as an "
        "operator, so a person must send it" in _error(text)
    )
    # The positive control: the same entry with an operator's command is accepted.
    assert parse_automations(LIGHTS, "a.toml")


def test_a_notice_may_name_only_the_alerts_words() -> None:
    text = LIGHTS.split("[automation.command]")[0] + '[automation.notice]\nmessage = "{owner}"\n'
    assert "a.toml:9: automation lights: notice: message names {owner}; it may use" in _error(text)


def test_every_problem_is_told_at_once_and_names_used_twice_too() -> None:
    text = LIGHTS + "\n" + LIGHTS + "\n" + LIGHTS.replace('"on" }', "1 }")
    message = _error(text)
    assert "a.toml:15: automation lights: the name is used twice" in message
    assert "a.toml:38: automation lights: command: state:" in message
    assert message.index("a.toml:15:") < message.index("a.toml:38:")


def test_a_syntax_error_and_an_unreadable_file_say_where(tmp_path: Path) -> None:
    assert _error("[[automation]\n").startswith("a.toml:1: ")
    with pytest.raises(AutomationsFileError, match="cannot read the automations file"):
        load_automations_file(tmp_path / "missing.toml")
