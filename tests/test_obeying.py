"""Simulated devices that obey, on the real broker: the test plays moclo's gateway, publishing
`Command`s and `DesiredDocument`s straight to the devices' own topics, and watches what the
devices answer (`command-results`, `reported`) and what their readings then say."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest

from core.mqtt import MqttEndpoint, make_client
from core.settings import Settings
from devices.commands import CommandResult, ReportedDocument
from devices.pacemaker import ReadOut
from devices.topics import device_topic
from simulators.downlink import CommandFaults
from simulators.run import ScriptedEvent, SimulationOptions, SimulationResult, run_simulation
from simulators.scenario import ScenarioError, load_scenario
from simulators.smart_meter import APPLIANCES
from tests.helpers import log_since, wait_until

TENANT = "home"


class PlaysGateway:
    """What moclo's gateway does on the wire, for one tenant: sends commands and desired
    documents to devices, and collects everything the devices publish."""

    def __init__(self, settings: Settings) -> None:
        self.prefix = settings.topic_prefix
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        endpoint = MqttEndpoint.from_url(settings.mqtt_url)
        self._client = make_client(endpoint, f"test-gateway-{uuid.uuid4().hex[:8]}")
        subscribed = threading.Event()
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *a: subscribed.set()
        self._client.on_connect = lambda c, *a: c.subscribe(f"{self.prefix}/{TENANT}/#", qos=1)
        self._client.connect(endpoint.host, endpoint.port)
        self._client.loop_start()
        assert subscribed.wait(10), "the test's gateway could not subscribe"

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload)))

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def topic(self, device: str, level: str) -> str:
        device_type = device.rsplit("-", 1)[0].replace("meter", "smart_meter")
        return device_topic(self.prefix, TENANT, device_type, device, level)

    def received(self, device: str, level: str) -> list[bytes]:
        topic = self.topic(device, level)
        with self._lock:
            return [payload for t, payload in self.messages if t == topic]

    def command(
        self, device: str, name: str, args: dict[str, Any] | None = None, **options: Any
    ) -> str:
        """Sends a command; returns its id. `expires_in` seconds from now (default 60)."""
        now = time.time()
        command_id = options.get("id") or uuid.uuid4().hex
        payload = {
            "id": command_id,
            "name": name,
            "args": args or {},
            "issuer": "test",
            "created": now,
            "expires": now + options.get("expires_in", 60.0),
        }
        self._publish(self.topic(device, "commands"), orjson.dumps(payload))
        return command_id

    def desired(self, device: str, version: int, state: dict[str, Any]) -> None:
        document = {"version": version, "state": state, "ts": time.time()}
        self._publish(self.topic(device, "desired"), orjson.dumps(document))

    def _publish(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=1).wait_for_publish(10)

    def results(self, device: str, command_id: str) -> list[dict[str, Any]]:
        answers = [orjson.loads(p) for p in self.received(device, "command-results")]
        return [a for a in answers if a["id"] == command_id]

    def result(self, device: str, command_id: str) -> dict[str, Any]:
        """The device's answer to a command, checked against the contract."""
        answers = wait_until(
            lambda: self.results(device, command_id), what=f"{device}'s answer to {command_id}"
        )
        CommandResult.model_validate(answers[0])
        return answers[0]

    def readings_after(self, device: str, ts: float) -> list[dict[str, Any]]:
        readings = [orjson.loads(p) for p in self.received(device, "telemetry")]
        return [r for r in readings if r["ts"] > ts]

    def reading_after(self, device: str, ts: float, *, count: int = 1) -> list[dict[str, Any]]:
        """`count` readings made after `ts` (after a command's answer: they show its effect)."""
        return wait_until(
            lambda: (r := self.readings_after(device, ts)) and len(r) >= count and r,
            what=f"{count} readings of {device} after {ts}",
        )

    def connected(self, *devices: str) -> None:
        """Waits until every device asked for its commands and desired state: subscribed."""
        for device in devices:
            wait_until(lambda d=device: self.received(d, "commands/get"), what=f"{device} up")
            wait_until(lambda d=device: self.received(d, "desired/get"), what=f"{device} up")


class Simulation:
    """A simulation running in a thread until the test ends; `result` is its latest progress."""

    def __init__(self, settings: Settings, options: SimulationOptions) -> None:
        self.result: SimulationResult | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=lambda: run_simulation(
                settings.mqtt,
                settings.topic_prefix,
                options,
                stop=self._stop,
                progress=self._progress,
                progress_every_s=0.05,
            ),
            daemon=True,
        )
        self._thread.start()

    def _progress(self, result: SimulationResult) -> None:
        self.result = replace(result, commands=dict(result.commands))

    def commands(self) -> dict[str, int]:
        return self.result.commands if self.result is not None else {}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def _options(devices: dict[str, int], **changes: Any) -> SimulationOptions:
    options = SimulationOptions(
        devices=devices,
        tenant=TENANT,
        interval_s=0.2,
        duration_s=None,
        seed=7,
        per_device_connections=True,
        obey=True,
    )
    return replace(options, **changes)


@pytest.fixture
def gateway(settings: Settings) -> Iterator[PlaysGateway]:
    player = PlaysGateway(settings)
    yield player
    player.close()


@contextmanager
def running(settings: Settings, options: SimulationOptions) -> Iterator[Simulation]:
    simulation = Simulation(settings, options)
    try:
        yield simulation
    finally:
        simulation.stop()


@pytest.fixture
def home(settings: Settings, gateway: PlaysGateway) -> Iterator[Simulation]:
    """One device of each type that obeys, in real time, each on its own connection."""
    devices = {t: 1 for t in ("car", "smart_meter", "light", "pacemaker", "thermostat")}
    with running(settings, _options(devices)) as simulation:
        yield simulation


def test_the_car_locks_and_unlocks_and_flashes(gateway: PlaysGateway, home: Simulation) -> None:
    gateway.connected("car-0001")
    for name, locked in (("unlock", False), ("lock", True), ("unlock", False)):
        answer = gateway.result("car-0001", gateway.command("car-0001", name))
        assert answer["status"] == "succeeded"
        readings = gateway.reading_after("car-0001", answer["ts"], count=3)
        assert [r["locked"] for r in readings] == [locked] * len(readings)
    flash = gateway.result("car-0001", gateway.command("car-0001", "flash_lights"))
    assert flash["status"] == "succeeded"


def test_appliances_switched_draw_what_their_mode_says(
    gateway: PlaysGateway, home: Simulation
) -> None:
    meter = "meter-0001"
    gateway.connected(meter)
    answer: dict[str, Any] = {}
    for name, *_ in APPLIANCES:
        answer = gateway.result(
            meter, gateway.command(meter, "switch", {"appliance": name, "mode": "standby"})
        )
        assert answer["status"] == "succeeded"
    # Everything on standby: the base load (80..250 W) and the standby draws, ±3 %.
    standby = sum(standby_w for _, _, standby_w, *_ in APPLIANCES)
    readings = gateway.reading_after(meter, answer["ts"], count=3)
    assert all(r["power_w"] <= (250 + standby) * 1.03 for r in readings), readings
    heat_pump = {"appliance": "heat-pump", "mode": "on"}
    answer = gateway.result(meter, gateway.command(meter, "switch", heat_pump))
    readings = gateway.reading_after(meter, answer["ts"], count=3)
    assert all(r["power_w"] >= (80 + 1500) * 0.97 for r in readings), readings
    sauna = gateway.result(
        meter, gateway.command(meter, "switch", {"appliance": "sauna", "mode": "off"})
    )
    assert sauna["status"] == "rejected"
    assert "sauna" in sauna["reason"] and "heat-pump" in sauna["reason"]


def test_the_light_switches_and_reports_its_power(gateway: PlaysGateway, home: Simulation) -> None:
    gateway.connected("light-0001")
    for state, on in (("on", True), ("off", False), ("on", True)):
        answer = gateway.result(
            "light-0001", gateway.command("light-0001", "switch", {"state": state})
        )
        assert answer["status"] == "succeeded"
        readings = gateway.reading_after("light-0001", answer["ts"], count=3)
        assert all(r["on"] is on for r in readings), readings
        assert all((r["power_w"] > 5) is on for r in readings), readings


def test_the_pacemaker_is_read_out_and_paces_at_its_new_lower_rate(
    gateway: PlaysGateway, home: Simulation
) -> None:
    pacemaker = "pacemaker-0001"
    gateway.connected(pacemaker)
    answer = gateway.result(
        pacemaker, gateway.command(pacemaker, "set_lower_rate", {"lower_rate_bpm": 88})
    )
    assert answer["status"] == "succeeded"
    readings = gateway.reading_after(pacemaker, answer["ts"], count=15)
    assert min(r["heart_rate_bpm"] for r in readings) >= 88, readings
    read_out = gateway.result(pacemaker, gateway.command(pacemaker, "read_out"))
    assert read_out["status"] == "succeeded"
    assert ReadOut.model_validate(read_out["output"]).lower_rate_bpm == 88
    too_low = gateway.result(
        pacemaker, gateway.command(pacemaker, "set_lower_rate", {"lower_rate_bpm": 30})
    )
    assert too_low["status"] == "rejected" and "lower_rate_bpm" in too_low["reason"]


def test_a_thermostat_reports_a_new_setpoint_and_heats(
    gateway: PlaysGateway, home: Simulation
) -> None:
    thermostat = "thermostat-0001"
    gateway.connected(thermostat)
    answer = gateway.result(
        thermostat, gateway.command(thermostat, "set_setpoint", {"setpoint_c": 30.0})
    )
    readings = gateway.reading_after(thermostat, answer["ts"], count=3)
    assert all(r["setpoint_c"] == 30.0 and r["heating"] for r in readings), readings


@pytest.mark.parametrize("per_device", [True, False], ids=["own-connection", "shared-connection"])
def test_a_command_delivered_twice_is_executed_once_and_desired_only_when_newer(
    settings: Settings, gateway: PlaysGateway, per_device: bool
) -> None:
    options = _options({"thermostat": 1}, per_device_connections=per_device)
    with running(settings, options) as simulation:
        device = "thermostat-0001"
        gateway.connected(device)
        command_id = gateway.command(device, "set_setpoint", {"setpoint_c": 23.5})
        gateway.result(device, command_id)
        gateway.command(device, "set_setpoint", {"setpoint_c": 23.5}, id=command_id)
        answers = wait_until(
            lambda: len(r := gateway.received(device, "command-results")) == 2 and r,
            what="the answer to the repeat",
        )
        assert answers[0] == answers[1]  # the first answer, sent again unchanged
        wait_until(lambda: simulation.commands().get("repeated") == 1, what="the repeat counted")
        assert simulation.commands()["executed"] == 1

        gateway.desired(device, 2, {"setpoint_c": 24.0})
        # An old copy arriving late is not applied, and the device says again what it applied
        # (so a moclo that lost its records continues above it); asked again: reported again.
        gateway.desired(device, 1, {"setpoint_c": 18.0})
        gateway.desired(device, 2, {"setpoint_c": 24.0})
        reports = wait_until(
            lambda: len(r := gateway.received(device, "reported")) >= 3 and r,
            what="three reports",
        )
        assert len(reports) == 3 and reports[0] == reports[1] == reports[2], reports
        report = ReportedDocument.model_validate_json(reports[0])
        assert (report.version, report.state) == (2, {"setpoint_c": 24.0})
        readings = gateway.reading_after(device, orjson.loads(reports[0])["ts"], count=3)
        assert all(r["setpoint_c"] == 24.0 for r in readings), readings
        wait_until(lambda: simulation.commands().get("stale_desired") == 1, what="stale counted")
        assert simulation.commands()["desired_applied"] == 1


@pytest.mark.parametrize("per_device", [True, False], ids=["own-connection", "shared-connection"])
def test_an_offline_device_gets_its_commands_when_back_or_answers_expired(
    settings: Settings, gateway: PlaysGateway, mosquitto: Any, per_device: bool
) -> None:
    device = "car-0001"
    offset = mosquitto.log_path.stat().st_size
    away = ScriptedEvent(TENANT, device, "offline", "+1s", 4.0)
    # The light reports on meanwhile, so the run's progress (offline_skipped) keeps coming.
    fleet = {"car": 1, "light": 1}
    options = _options(fleet, events=(away,), per_device_connections=per_device)
    with running(settings, options) as simulation:
        gateway.connected(device)
        wait_until(
            lambda: simulation.result and simulation.result.offline_skipped > 0,
            what="the car to go offline",
        )
        if per_device:  # its own connection goes down with it
            log = f"Client {TENANT}.{device} disconnected"
            wait_until(lambda: log in log_since(mosquitto.log_path, offset), what=log)
        sent = time.time()
        kept = gateway.command(device, "unlock", expires_in=60)
        lapsed = gateway.command(device, "lock", expires_in=0.5)
        # Back after its outage, the car gets both: one done then, one too late.
        done = gateway.result(device, kept)
        assert done["status"] == "succeeded" and done["ts"] > sent + 0.5
        assert gateway.result(device, lapsed)["status"] == "expired"
        readings = gateway.reading_after(device, done["ts"], count=3)
        assert all(not r["locked"] for r in readings), readings
        # Back, it asked again for what it missed (moclo would send what is still pending).
        assert len(gateway.received(device, "commands/get")) == 2


def test_command_faults_reject_or_ignore(settings: Settings, gateway: PlaysGateway) -> None:
    faults = CommandFaults(reject=0.5, ignore=0.5)
    options = _options({"light": 1}, command_faults=faults, obey=False)
    with running(settings, options) as simulation:
        gateway.connected("light-0001")
        ids = [gateway.command("light-0001", "switch", {"state": "on"}) for _ in range(20)]
        counts = wait_until(
            lambda: (
                (c := simulation.commands()).get("ignored", 0) + c.get("fault_rejected", 0) == 20
                and c
            ),
            what="20 commands faulted",
        )
        assert counts["ignored"] > 0 and counts["fault_rejected"] > 0 and "executed" not in counts
        answers = [gateway.results("light-0001", i) for i in ids]
        assert sum(len(a) for a in answers) == counts["fault_rejected"]
        for answer in (a[0] for a in answers if a):
            assert answer["status"] == "rejected" and "simulated fault" in answer["reason"]


def test_command_faults_are_parsed_with_errors_that_say_what_to_write() -> None:
    assert CommandFaults.parse("reject=0.1,ignore=0.2") == CommandFaults(0.1, 0.2)
    with pytest.raises(ValueError, match="known: ignore, reject"):
        CommandFaults.parse("explode=0.1")
    with pytest.raises(ValueError, match="at most 1"):
        CommandFaults.parse("reject=0.6,ignore=0.6")


def test_a_new_setpoint_is_heated_and_cooled_towards(
    settings: Settings, gateway: PlaysGateway
) -> None:
    # Fifty simulated minutes a second, so the room and the fridge get there while we watch;
    # the commands' expiry is far ahead, since the devices' clock runs ahead too.
    options = _options({"thermostat": 1, "fridge": 1}, interval_s=60.0, speed=3000.0)
    with running(settings, options):
        gateway.connected("thermostat-0001", "fridge-0001")
        set_room = {"setpoint_c": 30.0}
        heat = gateway.command("thermostat-0001", "set_setpoint", set_room, expires_in=86_400)
        before = gateway.result("thermostat-0001", heat)
        start = gateway.reading_after("thermostat-0001", before["ts"])[0]["temp_c"]
        gateway.reading_after("thermostat-0001", before["ts"], count=2)
        warmer = wait_until(
            lambda: [
                r
                for r in gateway.readings_after("thermostat-0001", before["ts"])
                if r["temp_c"] >= start + 2.0
            ],
            what="the room 2 °C warmer",
        )
        assert warmer[0]["heating"] and warmer[0]["setpoint_c"] == 30.0
        freeze = {"setpoint_c": -18.0}
        cool = gateway.command("fridge-0001", "set_temperature", freeze, expires_in=86_400)
        answer = gateway.result("fridge-0001", cool)
        assert answer["status"] == "succeeded"
        wait_until(
            lambda: any(
                r["temp_c"] < -10 for r in gateway.readings_after("fridge-0001", answer["ts"])
            ),
            timeout_s=60,
            what="the fridge below -10 °C",
        )


def test_moclo_simulate_obeys_and_counts_what_its_devices_did(
    settings: Settings, gateway: PlaysGateway
) -> None:
    command = [sys.executable, "-m", "moclo.cli", "simulate", "--devices", "light=1"]
    flags = ["--tenant", TENANT, "--interval", "200ms", "--forever", "--obey", "--json"]
    where = ["--mqtt-url", settings.mqtt_url, "--topic-prefix", settings.topic_prefix]
    process = subprocess.Popen([*command, *flags, *where], stdout=subprocess.PIPE, text=True)
    try:
        gateway.connected("light-0001")
        answer = gateway.result(
            "light-0001", gateway.command("light-0001", "switch", {"state": "on"})
        )
        assert answer["status"] == "succeeded"
    finally:
        process.send_signal(signal.SIGINT)  # the first Ctrl-C: stop, send what is held
        out, _ = process.communicate(timeout=60)
    assert orjson.loads(out)["commands"] == {"executed": 1}


def test_a_scenario_turns_obeying_and_command_faults_on(tmp_path: Path) -> None:
    fleet = '[[fleet]]\ntenant = "home"\ntype = "light"\ncount = 1\n'
    path = tmp_path / "home.toml"
    path.write_text(
        f'name = "home"\nduration = "1h"\nobey = true\n{fleet}[command_faults]\nreject = 0.25\n'
    )
    _, options = load_scenario(str(path))
    assert options.obey and options.command_faults == CommandFaults(reject=0.25)
    path.write_text(f'name = "home"\nduration = "1h"\n{fleet}[command_faults]\nexplode = 1\n')
    with pytest.raises(ScenarioError, match=r"home\.toml: unknown command fault 'explode'"):
        load_scenario(str(path))
