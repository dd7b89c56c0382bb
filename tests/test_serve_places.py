"""`GET …/places` and `GET …/automation-actions` against a real broker, database, ingest (with a
rules file and an automations file) and `moclo serve`: a car drives into the 1 km `near_home`
geofence of home, the `porch_light` automation switches the light on, and the car's places
and the automation's action are answered to a token of its tenant and to nobody else's."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from core.settings import Settings
from devices.topics import telemetry_topic
from ingest.alerts.rulesfile import RulesFileError
from ingest.options import IngestOptions
from tests.conftest import RunningIngest, RunningServe
from tests.gateway_helpers import ScriptedDevice, registry_with
from tests.helpers import publish_all, wait_until
from tests.test_serve import NOW
from tests.test_serve_commands import CAR

HOME = (52.1, 4.4)
TRACK = 12  # positions, ten minutes apart, the last two within 1 km of home
CROSSING = TRACK - 2  # the first reading within 1 km: 0.005° of latitude is 556 m

RULES = f"""
[[rule]]
device_type = "car"
tenant = "home"
device = "car-1"
name = "near_home"
kind = "geofence"
where = "inside"
center = [{HOME[0]}, {HOME[1]}]
radius_m = 1000
severity = "info"
message = "near home"

[[rule]]
device_type = "car"
tenant = "home"
name = "home_in_two_hours"
kind = "arrival"
center = [{HOME[0]}, {HOME[1]}]
within = "2h"
severity = "info"
message = "home at {{eta}}"
"""

AUTOMATIONS = """
[[automation]]
name = "porch_light"
tenant = "home"
device_type = "car"
rule = "near_home"
device = "car-1"

[automation.command]
device_type = "light"
device = "light-1"
name = "switch"
args = { state = "on" }
"""


@dataclass
class Drive:
    settings: Settings
    serve: RunningServe
    light: ScriptedDevice


def drive_home(settings: Settings) -> None:
    """car-1 drives north towards home over the last two hours, ending 0 m from it; car-9 of
    another tenant stands still."""
    topic = telemetry_topic(settings.topic_prefix, "home", "car", "car-1")
    readings = [
        {**CAR, "ts": NOW - 600 * (TRACK - i), "seq": i + 1, "speed_kmh": 30.0,
         "lat": HOME[0] - 0.005 * (TRACK - 1 - i), "lon": HOME[1]}
        for i in range(TRACK)
    ]  # fmt: skip
    other = telemetry_topic(settings.topic_prefix, "next-door", "car", "car-9")
    messages = [(topic, orjson.dumps(r)) for r in readings]
    publish_all(settings.mqtt_url, [*messages, (other, orjson.dumps(CAR))])


@contextmanager
def with_places(
    settings: Settings, tmp_path: Path
) -> Iterator[tuple[Settings, RunningIngest, RunningServe, ScriptedDevice]]:
    """Ingest and serve with the rules and automations files, and the porch light (a scripted
    device) that the automation switches; no reading of the car yet."""
    (tmp_path / "rules.toml").write_text(RULES)
    (tmp_path / "automations.toml").write_text(AUTOMATIONS)
    registry_with(
        settings,
        [("home", "car", "car-1"), ("home", "light", "light-1"), ("next-door", "car", "car-9")],
        [],
    )
    settings = settings.model_copy(
        update={
            "rules_file": str(tmp_path / "rules.toml"),
            "automations_file": str(tmp_path / "automations.toml"),
            "serve_listen": "127.0.0.1:0",
        }
    )
    light = ScriptedDevice(settings, "home", "light", "light-1").connect()
    try:
        with (
            RunningIngest(settings, IngestOptions(linger_s=0.02)) as ingest,
            RunningServe(settings) as serve,
        ):
            yield settings, ingest, serve, light
    finally:
        light.disconnect()


@pytest.fixture
def drive(settings: Settings, tmp_path: Path) -> Iterator[Drive]:
    """`with_places`, the drive home stored, the light's answer to the automation's command
    recorded."""
    with with_places(settings, tmp_path) as (settings, ingest, serve, light):
        drive_home(settings)
        wait_until(lambda: ingest.stats.readings_stored >= TRACK + 1, what="the drive stored")
        wait_until(lambda: light.commands, what="the automation's command at the light")
        wait_until(lambda: _light_answered(serve), what="the light's answer recorded")
        yield Drive(settings, serve, light)


def _light_answered(serve: RunningServe) -> bool:
    """Whether the light's answer to the automation's command is recorded."""
    with serve.client(serve.admin_token) as client:
        answer = client.get("/api/devices/home/car-1/automation-actions", params={"since": "24h"})
    return any(a["status"] == "succeeded" for a in answer.json()["actions"])


def test_places_and_the_automations_action_for_the_cars_tenant_only(drive: Drive) -> None:
    serve = drive.serve
    with (
        serve.client(serve.token(["home"], role="viewer")) as home,
        serve.client(serve.token(["next-door"], role="admin")) as neighbour,
    ):
        check_places(home, neighbour)
        check_actions(home, drive)
        check_scope(home, neighbour)


def check_places(home: httpx.Client, neighbour: httpx.Client) -> None:
    answer = home.get("/api/devices/home/car-1/places")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["rules_file"].endswith("rules.toml")
    by_rule = {p["rule"]: p for p in body["places"]}
    assert set(by_rule) == {"near_home", "home_in_two_hours"}
    near = by_rule["near_home"]
    assert (near["kind"], near["shape"], near["where"]) == ("geofence", "circle", "inside")
    assert (near["center"], near["radius_m"]) == (list(HOME), 1000.0)
    arrival = by_rule["home_in_two_hours"]
    assert (arrival["kind"], arrival["shape"], arrival["center"]) == (
        "arrival",
        "point",
        list(HOME),
    )
    assert arrival["within_s"] == 7200.0
    # Both rules are tenant home's: car-9 of the other tenant has no place at all.
    others = neighbour.get("/api/devices/next-door/car-9/places")
    assert others.status_code == 200 and others.json()["places"] == []


def check_actions(home: httpx.Client, drive: Drive) -> None:
    answer = home.get("/api/devices/home/car-1/automation-actions", params={"since": "24h"})
    assert answer.status_code == 200, answer.text
    [action] = answer.json()["actions"]
    assert action["status"] == "succeeded"
    assert action["automation"] == "porch_light" and action["rule"] == "near_home"
    assert (action["kind"], action["name"], action["device_id"], action["on"]) == (
        "command", "switch", "light-1", "raised",
    )  # fmt: skip
    assert action["id"] == drive.light.commands[0]["id"]
    episodes = home.get("/api/episodes", params={"tenant": "home", "device": "car-1"}).json()
    near_home = [e for e in episodes["episodes"] if e["rule"] == "near_home"]
    assert [e["id"] for e in near_home] == [action["alert_id"]]


def check_scope(home: httpx.Client, neighbour: httpx.Client) -> None:
    # The other tenant's token: its own device answers (the positive control), home's is
    # refused like every device route refuses it, and a device it does not have is a 404.
    for path in ("places", "automation-actions"):
        assert neighbour.get(f"/api/devices/next-door/car-9/{path}").status_code == 200
        assert neighbour.get(f"/api/devices/home/car-1/{path}").status_code == 403
        assert neighbour.get(f"/api/devices/next-door/car-1/{path}").status_code == 404
        assert home.get(f"/api/devices/home/car-1/{path}").status_code == 200
    assert neighbour.get("/api/devices/home/car-1").status_code == 403  # as today's route does


def test_serve_refuses_to_start_with_a_rules_file_ingest_would_refuse(
    settings: Settings, tmp_path: Path
) -> None:
    bad = tmp_path / "rules.toml"
    bad.write_text(RULES.replace('where = "inside"', 'where = "nearby"'))
    settings = settings.model_copy(update={"rules_file": str(bad), "serve_listen": "127.0.0.1:0"})
    with pytest.raises(RulesFileError, match=r"rules.toml:\d+: .*where"), RunningServe(settings):
        pytest.fail("serve started with a rules file that ingest refuses")
