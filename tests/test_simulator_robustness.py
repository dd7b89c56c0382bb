"""The simulator when things go wrong: stopped early, broker gone or restarted, bad scenarios."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import orjson

from core.mqtt import MqttEndpoint
from core.settings import Settings
from moclo.stack import MosquittoServer, free_port
from simulators.clock import SimulatedClock
from simulators.faults import FaultRates
from simulators.fleet import FleetSpec
from simulators.run import SimulationOptions, SimulationResult, build_fleet, run_simulation
from simulators.scenario import load_scenario
from tests.helpers import moclo, wait_until


def test_stopping_early_still_sends_every_reading_the_devices_made(settings: Settings) -> None:
    stop = threading.Event()

    def stop_after_a_while(result: SimulationResult) -> None:
        if result.messages >= 40:
            stop.set()

    for options in (
        SimulationOptions(
            devices={"cow_tracker": 10},
            interval_s=60,
            duration_s=3600,
            burst=True,
            readings_per_message=7,
        ),
        SimulationOptions(
            devices={"cow_tracker": 10},
            interval_s=60,
            duration_s=3600,
            burst=True,
            faults=FaultRates(late=0.3, silence=0.1),
        ),
    ):
        stop.clear()
        result = run_simulation(
            settings.mqtt,
            settings.topic_prefix,
            options,
            stop=stop,
            progress=stop_after_a_while,
            progress_every_s=0,
        )
        assert stop.is_set() and result.acknowledged
        assert result.produced < 600  # it did stop early ...
        assert result.readings == result.produced  # ... and sent everything it had made


def test_devices_in_different_fleets_never_share_a_random_stream() -> None:
    options = SimulationOptions(
        fleets=(
            FleetSpec("farm", "cow_tracker", 1, id_pattern="barn-a-{n}"),
            FleetSpec("farm", "cow_tracker", 1, id_pattern="barn-b-{n}"),
        ),
        duration_s=600,
    )
    fleet = build_fleet(options, "m", 1795305600.0)
    readings = {
        d.device_id: p
        for d, p, _ in fleet.messages(
            SimulatedClock(1795305600.0), threading.Event(), duration_s=600
        )
    }
    assert readings["barn-a-1"] != readings["barn-b-1"]


def test_a_scenario_with_a_device_type_that_does_not_exist_names_the_file(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "toaster.toml"
    bad.write_text(
        "name = 'x'\nduration = '1h'\n[[fleet]]\ntenant = 'a'\ntype = 'toaster'\ncount = 1\n"
    )
    result = moclo("simulate", "--scenario", str(bad), "--mqtt-url", "mqtt://127.0.0.1:1")
    assert result.returncode == 2
    assert str(bad) in result.stderr and "toaster" in result.stderr
    assert "Traceback" not in result.stderr


def test_overriding_a_scenarios_speed_still_ends_it_at_the_present() -> None:
    now = 1795334400.0
    _, options = load_scenario("smart_street", now=now)  # speed 720, a day
    assert options.start is None  # chosen when it runs, after overrides
    as_burst = replace(options, burst=True)
    assert as_burst.resolved_start(now) == now - 86_400
    event = next(e for e in as_burst.events if e.kind == "door_left_open")
    start = as_burst.resolved_start(now)
    assert start <= event.starts_at(start) < start + 86_400


def test_two_ctrl_c_stop_a_run_whose_broker_has_gone(tmp_path: Path) -> None:
    broker = MosquittoServer(tmp_path / "mq", free_port())
    broker.start()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "moclo.cli",
            "simulate",
            "--devices",
            "cow_tracker=200",
            "--interval",
            "50ms",
            "--forever",
            "--mqtt-url",
            broker.url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout or []), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("published" in line for line in lines), what="publishing")
        broker.stop()
        process.send_signal(signal.SIGINT)
        wait_until(
            lambda: any("again to stop at once" in line for line in lines),
            what="the first Ctrl-C noticed",
        )
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        assert process.wait(30) == 1  # stopped, and says not everything was acknowledged
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(10)
        if process.stdout:
            process.stdout.close()
        broker.stop()
    assert any("NOT all acknowledged" in line for line in lines)


def test_per_device_connections_come_back_after_a_broker_restart(tmp_path: Path) -> None:
    broker = MosquittoServer(tmp_path / "mq", free_port())
    broker.start()
    log_start = broker.log_path.stat().st_size
    restarted = threading.Event()

    def restart_once(result: SimulationResult) -> None:
        if result.messages >= 20 and not restarted.is_set():
            restarted.set()
            broker.stop()
            broker.start()

    try:
        result = run_simulation(
            MqttEndpoint.from_url(broker.url),
            "moclo",
            SimulationOptions(
                devices={"cow_tracker": 5},
                interval_s=0.1,
                duration_s=4,
                per_device_connections=True,
                seed=3,
            ),
            progress=restart_once,
            progress_every_s=0,
        )
    finally:
        broker.stop()
    assert restarted.is_set() and result.acknowledged
    assert result.readings == result.produced == 200
    with broker.log_path.open("rb") as log:
        log.seek(log_start)
        text = log.read().decode()
    for n in range(1, 6):  # each device connected, and connected again after the restart
        assert text.count(f"as demo-farm.cow-000{n} ") == 2, os.linesep + text[-2000:]
    assert orjson.dumps(result.faults) == b"{}"
