"""Automations through a real ingest: a car's readings on real Mosquitto and InfluxDB cross the
1 km geofence of the rules file, and the porch light (a scripted device by the contract) gets
one `switch on`, recorded as the automation's; an arrival estimate sends one notice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from core.settings import Settings
from devices.catalogue import DEVICE_TYPES
from devices.topics import notice_subscription, telemetry_topic
from ingest.automations.file import AutomationsFileError
from ingest.options import IngestOptions
from tests.conftest import RunningIngest
from tests.gateway_helpers import ScriptedDevice, StatusWatch, registry_with
from tests.helpers import Influx, Subscriber, publish_all, wait_until

HOME = (52.0705, 4.3007)
KM = 1 / 111.195  # degrees of latitude per kilometre
OPTIONS = IngestOptions(linger_s=0.02)

RULES = f"""
[[rule]]
device_type = "car"
tenant = "households"
device = "car-0001"
name = "near_home"
kind = "geofence"
where = "inside"
center = [{HOME[0]}, {HOME[1]}]
radius_m = 1000
severity = "info"
message = "near home"

[[rule]]
device_type = "car"
tenant = "households"
device = "car-0001"
name = "two_hours_from_home"
kind = "arrival"
center = [{HOME[0]}, {HOME[1]}]
within = "2h"
severity = "info"
message = "home around {{eta}}"
"""

AUTOMATIONS = """
[[automation]]
name = "porch_light"
tenant = "households"
device_type = "car"
rule = "near_home"
device = "car-0001"

[automation.command]
device_type = "light"
device = "light-0001"
name = "switch"
args = { state = "on" }

[[automation]]
name = "arrival_notice"
tenant = "households"
device_type = "car"
rule = "two_hours_from_home"
device = "car-0001"

[automation.notice]
message = "{device}: {message}"
"""


@pytest.fixture
def home(settings: Settings, tmp_path: Path) -> Settings:
    registry_with(
        settings,
        [("households", "car", "car-0001"), ("households", "light", "light-0001")],
        [],
    )
    rules, automations = tmp_path / "rules.toml", tmp_path / "automations.toml"
    rules.write_text(RULES)
    automations.write_text(AUTOMATIONS)
    return settings.model_copy(
        update={"rules_file": str(rules), "automations_file": str(automations)}
    )


@pytest.fixture
def light(home: Settings) -> Iterator[ScriptedDevice]:
    device = ScriptedDevice(home, "households", "light", "light-0001").connect()
    yield device
    device.disconnect()


def drive(settings: Settings, legs: list[tuple[float, float]], start: float) -> None:
    """Car readings a minute apart: (km from home, speed km/h) each."""
    car = DEVICE_TYPES["car"]
    topic = telemetry_topic(settings.topic_prefix, "households", "car", "car-0001")
    messages = []
    for i, (km, speed) in enumerate(legs):
        reading: dict[str, Any] = {
            **car.example, "ts": start + 60 * i, "seq": i, "lat": HOME[0] + km * KM,
            "lon": HOME[1], "speed_kmh": speed,
        }  # fmt: skip
        messages.append((topic, orjson.dumps(reading)))
    publish_all(settings.mqtt_url, messages)


def test_the_car_coming_home_switches_the_light_on_once(
    home: Settings, light: ScriptedDevice, influx: Influx
) -> None:
    watch = StatusWatch(home)
    notices = Subscriber(home.mqtt_url, notice_subscription(home.topic_prefix))
    try:
        with RunningIngest(home, OPTIONS):
            # Home at 50 km/h from 8 km, a stop at the door, a hop out across the boundary
            # (inside the geofence's 50 m margin) and back, then a second trip: two trips.
            trip = [(8, 50), (2, 50), (1.2, 50), (0.9, 40), (0.5, 30), (0.1, 0), (0.98, 20)]
            trip += [(0.95, 20), (0.3, 10), (0.05, 0)]
            start = time.time() - 3600
            drive(home, trip, start)
            command = wait_until(lambda: light.commands, what="the light's command")[0]
            assert command["name"] == "switch" and command["args"] == {"state": "on"}
            assert command["issuer"] == "automation porch_light"
            watch.wait_for(command["id"], "succeeded")
            # The second trip: out past 1 km + margin, then home again: one more command.
            drive(home, [(1.2, 50), (6.5, 60), (1.1, 50), (0.7, 40)], start + 60 * len(trip))
            wait_until(lambda: len(light.executed) == 2, what="the second trip's command")
            rows = wait_until(
                lambda: (
                    influx.query(
                        'SELECT * FROM "moclo_commands" WHERE "kind" = \'command\' '
                        "AND \"status\" = 'succeeded'"
                    )
                    if len(light.executed) == 2
                    else []
                ),
                what="both commands recorded",
            )
            assert len(rows) == 2
            assert {r["issuer"] for r in rows} == {"automation porch_light"}
            sent = influx.query(
                'SELECT "account", "issuer" FROM "moclo_commands" '
                "WHERE \"status\" = 'sent' AND \"kind\" = 'command'"
            )
            assert [(r["account"], r["issuer"]) for r in sent] == [
                ("automation", "automation porch_light")
            ] * 2
            # Readings of both trips are all in, and no third command came.
            wait_until(
                lambda: influx.count("car", "seq", "\"device_id\" = 'car-0001'") == 14,
                what="every reading stored",
            )
            assert len(light.commands) == 2 and len(set(light.executed)) == 2
            # Each trip home is also one arrival notice (raised on the way, resolved at the door);
            # the hop out to 980 m and back is not a trip. The broker confirmed each notice to
            # ingest before the readings were stored, but it reaches this subscriber on its
            # own connection, maybe a moment later: wait for it, then say exactly.
            wait_until(lambda: len(notices.messages) >= 2, what="both arrival notices")
            assert len(notices.messages) == 2
    finally:
        watch.close()
        notices.close()


def test_two_hours_from_home_sends_one_notice_with_the_arrival_time(
    home: Settings, light: ScriptedDevice, influx: Influx
) -> None:
    notices = Subscriber(home.mqtt_url, notice_subscription(home.topic_prefix))
    try:
        with RunningIngest(home, OPTIONS):
            # 200 km at 90 km/h (2 h 13 min), 170 km (1 h 53 min: the notice), 150 km.
            drive(home, [(200, 90), (170, 90), (150, 90)], time.time() - 3600)
            wait_until(lambda: notices.messages, what="the notice")
            [message] = notices.messages
            notice = orjson.loads(message.payload)
            assert notice["automation"] == "arrival_notice"
            assert notice["device"] == "car-0001" and notice["rule"] == "two_hours_from_home"
            assert notice["message"].startswith("car-0001: home around ")
            assert notice["message"].endswith(" UTC")
            rows = wait_until(
                lambda: influx.query('SELECT * FROM "moclo_commands" WHERE "kind" = \'notice\''),
                what="the notice recorded",
            )
            assert [r["name"] for r in rows] == ["arrival_notice"]
            assert rows[0]["reason"] == notice["message"]
            assert light.commands == []  # 150 km from home: no light
    finally:
        notices.close()


def test_an_automation_waiting_for_a_rule_nobody_has_stops_ingest_from_starting(
    home: Settings, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text(AUTOMATIONS.replace('rule = "near_home"', 'rule = "near_hoem"'))
    settings = home.model_copy(update={"automations_file": str(broken)})
    from ingest.rules_in_force import load_automations, load_rulebook

    with pytest.raises(
        AutomationsFileError,
        match=r"broken.toml:2: automation porch_light: "
        r"car car-0001 of tenant households have no rule 'near_hoem'",
    ):
        load_automations(settings, load_rulebook(settings))
    # The positive control: the file as written loads, both automations enabled.
    automations = load_automations(home, load_rulebook(home))
    assert automations is not None and automations.enabled == 2


def test_a_restart_inside_the_geofence_does_not_switch_the_light_again(
    home: Settings, light: ScriptedDevice, influx: Influx
) -> None:
    """One trigger, one action, also across a restart: the alert episode is restored (stored
    changes, snapshot), so readings after the restart inside 1 km raise nothing new; and the
    command's id is the alert's, so even a change judged again would be the same command."""
    start = time.time() - 3600
    with RunningIngest(home, OPTIONS):
        drive(home, [(8, 50), (2, 50), (0.9, 40)], start)
        wait_until(lambda: light.executed, what="the light's command")
        wait_until(
            lambda: influx.count("car", "seq", "\"device_id\" = 'car-0001'") == 3,
            what="the readings stored",
        )
    with RunningIngest(home, OPTIONS):
        drive(home, [(0.5, 30), (0.2, 10), (0.1, 0)], start + 180)
        wait_until(
            lambda: influx.count("car", "seq", "\"device_id\" = 'car-0001'") == 6,
            what="the readings after the restart stored",
        )
        states = influx.query('SELECT "state" FROM "moclo_alerts" WHERE "rule" = \'near_home\'')
        assert [s["state"] for s in states] == ["raised"]
    assert len(light.executed) == 1 and len(light.commands) == 1
