"""What an automation does is tied to the alert change that made it act: the stored command and
desired-state change carry the alert's id and what changed, command-status announces it, and
`moclo commands` says "by automation porch_light because near_home raised on car-0001". Real
Mosquitto and InfluxDB, a real ingest with a rules file and an automations file, the car's
readings crossing the 1 km geofence, two scripted lights."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import Settings
from tests.conftest import RunningIngest, RunningServe
from tests.gateway_helpers import ScriptedDevice, StatusWatch, registry_with
from tests.helpers import Influx, wait_until
from tests.test_automations import AUTOMATIONS, OPTIONS, RULES, drive
from tests.test_command_end_to_end import run

TENANT = "households"
HALL = """
[[automation]]
name = "hall_light"
tenant = "households"
device_type = "car"
rule = "near_home"
device = "car-0001"

[automation.desired]
device_type = "light"
device = "light-0002"
state = { on = true }
"""


@pytest.fixture
def home(settings: Settings, tmp_path: Path) -> Settings:
    devices = [(TENANT, "car", "car-0001")]
    devices += [(TENANT, "light", "light-0001"), (TENANT, "light", "light-0002")]
    registry_with(settings, devices, [("operator", "olga", TENANT)])
    rules, automations = tmp_path / "rules.toml", tmp_path / "automations.toml"
    rules.write_text(RULES)
    automations.write_text(AUTOMATIONS + HALL)
    return settings.model_copy(
        update={"rules_file": str(rules), "automations_file": str(automations)}
    )


@pytest.fixture
def lights(home: Settings) -> Iterator[tuple[ScriptedDevice, ScriptedDevice]]:
    porch = ScriptedDevice(home, TENANT, "light", "light-0001").connect()
    hall = ScriptedDevice(home, TENANT, "light", "light-0002").connect()
    yield porch, hall
    porch.disconnect()
    hall.disconnect()


def test_the_automations_command_and_desired_change_name_the_alert_that_triggered_them(
    home: Settings, lights: tuple[ScriptedDevice, ScriptedDevice], influx: Influx
) -> None:
    porch, hall = lights
    watch = StatusWatch(home)
    try:
        with (
            RunningIngest(home, OPTIONS),
            RunningServe(home.model_copy(update={"serve_listen": "127.0.0.1:0"})) as serve,
        ):
            drive(home, [(3, 50), (0.8, 30), (0.2, 10)], time.time() - 600)
            command = wait_until(lambda: porch.commands, what="the porch light's command")[0]
            wait_until(lambda: hall.desired, what="the hall light's desired state")
            [raised] = wait_until(
                lambda: influx.query(
                    'SELECT "alert_id" FROM "moclo_alerts" WHERE "rule" = \'near_home\' '
                    "AND \"state\" = 'raised'"
                ),
                what="near_home raised, stored",
            )
            alert = raised["alert_id"]
            sent = watch.wait_for(command["id"], "succeeded")
            assert sent["alert"] == alert  # command-status says why, each step
            desired = watch.wait_for("light-0002-desired-1", "sent")
            assert desired["alert"] == alert and desired["issuer"] == "automation hall_light"
            rows = influx.query(
                'SELECT "device_id", "kind", "issuer", "alert", "trigger" FROM "moclo_commands" '
                "WHERE \"status\" = 'sent' AND \"account\" = 'automation' AND \"kind\" != 'notice'"
            )
            assert sorted((r["device_id"], r["kind"], r["alert"], r["trigger"]) for r in rows) == [
                ("light-0001", "command", alert, "near_home raised on car-0001"),
                ("light-0002", "desired", alert, "near_home raised on car-0001"),
            ]
            # A person's change, the positive control: it names no alert.
            status, out, err = run(home, "olga", "desired", "set", TENANT, "light-0002", "on=false")
            assert status == 0, err
            status, out, err = run(home, "olga", "commands", TENANT, "light-0002")
            assert status == 0, err
            lines = out.splitlines()
            by_automation = [line for line in lines if "by automation hall_light" in line]
            assert by_automation and all(
                f"because near_home raised on car-0001 (alert {alert})" in line
                for line in by_automation
            ), out
            assert any("by olga" in line and "because" not in line for line in lines), out
            status, out, err = run(home, "olga", "commands", TENANT, "light-0001")
            assert "switch by automation porch_light because near_home raised on car-0001" in out
            # The car's map labels the alert with both, the desired change found by its alert.
            with serve.client(serve.token([TENANT], role="viewer")) as client:
                answer = client.get(
                    "/api/devices/households/car-0001/automation-actions", params={"since": "1d"}
                )
            assert answer.status_code == 200, answer.text
            acted = {(a["automation"], a["kind"], a["device_id"], a["alert_id"], a["on"])
                     for a in answer.json()["actions"] if a["kind"] != "notice"}  # fmt: skip
            assert acted == {
                ("porch_light", "command", "light-0001", alert, "raised"),
                ("hall_light", "desired", "light-0002", alert, "raised"),
            }
    finally:
        watch.close()
