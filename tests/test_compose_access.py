"""docker-compose is closed like `moclo up`: the broker refuses anonymous clients, every service
logs in with its own account, whose secret only it (and `provision`) can read, and every
simulated device logs in as itself.

No Docker engine runs here, so the wiring is checked twice: statically (who mounts which
volume, which names and paths agree), and for real, by running the compose services' own
commands and environments here, with each named volume a folder and each container path mapped
onto it: `provision` (twice: the second run keeps everything), a real Mosquitto with the shipped
mosquitto.conf reading the files provision wrote, `moclo ingest` with the registry check on, and
the simulator logged in device by device. Every reading must be stored and none rejected.
"""

from __future__ import annotations

import grp
import json
import os
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from access.credentials import load_credentials
from devices.catalogue import DEVICE_TYPES
from moclo.stack import InfluxServer, MosquittoServer, free_port
from tests.helpers import Influx, connack_code, wait_until

AUTH_DIR_IN_BROKER = "/mosquitto/auth"


@pytest.fixture
def compose(repo_root: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    return document


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Container path → (volume name or ./repo path, read-only)."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *options = volume.split(":")
        found[target] = (source, "ro" in options)
    return found


def provision_plan(compose: dict[str, Any]) -> dict[str, Any]:
    """What compose's `provision` command asks for: accounts by role, the devices, the group."""
    command = compose["services"]["provision"]["command"]
    assert command[0] == "provision"
    accounts = {}
    devices = group = None
    args = iter(command[1:])
    for arg in args:
        if arg == "--account":
            role, name, file = next(args), next(args), next(args)
            accounts[role] = (name, file)
        elif arg == "--devices":
            devices = (next(args), next(args))
        elif arg == "--group":
            group = next(args)
        else:
            raise AssertionError(f"unexpected provision argument {arg}")
    return {"accounts": accounts, "devices": devices, "group": group}


def volume_holding(service: dict[str, Any], path: str) -> tuple[str, bool]:
    """The mount (volume, read-only) that holds `path` in `service`'s container."""
    inside = [t for t in mounts(service) if path == t or path.startswith(t.rstrip("/") + "/")]
    assert inside, f"nothing is mounted at {path}"
    best = max(inside, key=len)
    return mounts(service)[best]


def broker_config(repo_root: Path) -> list[str]:
    return (repo_root / "deploy/mosquitto/mosquitto.conf").read_text().splitlines()


# -- statically ------------------------------------------------------------------------------


def test_every_shipped_broker_config_refuses_anonymous_clients(repo_root: Path) -> None:
    for path in repo_root.glob("deploy/**/*.conf"):
        lines = [line.strip() for line in path.read_text().splitlines()]
        assert "allow_anonymous true" not in lines, path
    lines = broker_config(repo_root)
    assert "allow_anonymous false" in lines
    assert f"password_file {AUTH_DIR_IN_BROKER}/passwords" in lines
    assert f"acl_file {AUTH_DIR_IN_BROKER}/acl" in lines


def test_each_service_logs_in_with_a_secret_only_it_can_read(compose: dict[str, Any]) -> None:
    services = compose["services"]
    plan = provision_plan(compose)
    assert set(plan["accounts"]) == {"ingest", "serve", "notify"}
    for role in ("ingest", "serve", "notify"):
        name, file = plan["accounts"][role]
        env = services[role]["environment"]
        assert env["MOCLO_MQTT_USERNAME"] == name
        assert env["MOCLO_MQTT_PASSWORD_FILE"] == file
        assert "MOCLO_MQTT_PASSWORD" not in env
        volume, read_only = volume_holding(services[role], file)
        assert read_only, f"{role} may only read its secret"
        assert volume_holding(services["provision"], file) == (volume, False)
        holders = {n for n, s in services.items() if volume in (v for v, _ in mounts(s).values())}
        assert holders == {"provision", role}, f"{volume} is mounted by {holders}"

    scenario, credentials = plan["devices"]
    simulator = services["simulator"]["command"]
    assert simulator[simulator.index("--scenario") + 1] == scenario
    assert simulator[simulator.index("--connections") + 1] == "device"
    assert simulator[simulator.index("--credentials") + 1] == credentials
    volume, read_only = volume_holding(services["simulator"], credentials)
    assert read_only and volume_holding(services["provision"], credentials) == (volume, False)
    holders = {n for n, s in services.items() if volume in (v for v, _ in mounts(s).values())}
    assert holders == {"provision", "simulator"}
    assert volume_holding(services["simulator"], scenario) == volume_holding(
        services["provision"], scenario
    )


def test_the_broker_reads_the_files_provision_writes(
    compose: dict[str, Any], repo_root: Path
) -> None:
    services = compose["services"]
    auth_dir = services["provision"]["environment"]["MOCLO_BROKER_AUTH_DIR"]
    provision_volume = mounts(services["provision"])[auth_dir]
    broker_volume = mounts(services["mosquitto"])[AUTH_DIR_IN_BROKER]
    assert provision_volume == (broker_volume[0], False) and broker_volume[1]
    # The broker runs as the image's `mosquitto` (gid 1883); the files are 0640 and that group.
    assert provision_plan(compose)["group"] == "mosquitto"
    dockerfile = (repo_root / "Dockerfile").read_text()
    assert "groupadd --system --gid 1883 mosquitto" in dockerfile
    assert "--groups mosquitto moclo" in dockerfile


def test_ingest_checks_the_registry_provision_fills(compose: dict[str, Any]) -> None:
    services = compose["services"]
    registry = services["provision"]["environment"]["MOCLO_REGISTRY"]
    for name in ("ingest", "serve"):
        assert services[name]["environment"]["MOCLO_REGISTRY"] == registry
        assert volume_holding(services[name], registry) == volume_holding(
            services["provision"], registry
        )
    assert services["ingest"]["environment"]["MOCLO_UNREGISTERED"] == "reject"
    # Its client id is its login, the broker's name for its session (use_username_as_clientid).
    assert "MOCLO_INGEST_CLIENT_ID" not in services["ingest"]["environment"]


def test_everything_that_logs_in_waits_for_provision(compose: dict[str, Any]) -> None:
    for name in ("mosquitto", "ingest", "serve", "simulator"):
        depends = compose["services"][name]["depends_on"]
        assert depends["provision"] == {"condition": "service_completed_successfully"}, name


# -- for real --------------------------------------------------------------------------------


class ComposeHere:
    """The compose services' commands and environments with their container paths mapped onto
    folders here: a folder per named volume, the repository for bind mounts."""

    def __init__(self, compose: dict[str, Any], repo_root: Path, root: Path) -> None:
        self.compose = compose
        self.repo_root = repo_root
        self.root = root

    def host_path(self, service: str, path: str) -> str:
        for target, (source, _) in sorted(
            mounts(self.compose["services"][service]).items(), key=lambda m: -len(m[0])
        ):
            if path == target or path.startswith(target.rstrip("/") + "/"):
                if source.startswith("./"):
                    base = self.repo_root / source
                else:
                    base = self.root / "volumes" / source
                    base.mkdir(parents=True, exist_ok=True)
                return str(base) + path[len(target) :]
        return path

    def command(self, service: str) -> list[str]:
        return [
            self.host_path(service, arg) for arg in self.compose["services"][service]["command"]
        ]

    def environment(self, service: str, **overrides: str) -> dict[str, str]:
        env = {
            k: self.host_path(service, str(v))
            for k, v in self.compose["services"][service]["environment"].items()
            if not str(v).startswith("${")  # .env secrets: not needed by InfluxDB 1.x here
        }
        return {**os.environ, **env, **overrides}


class ComposeBroker(MosquittoServer):
    """Mosquitto with the shipped deploy/mosquitto/mosquitto.conf, its paths mapped here."""

    def __init__(self, directory: Path, port: int, shipped: list[str], auth_dir: str) -> None:
        super().__init__(directory, port)
        self.shipped = shipped
        self.auth_dir = auth_dir

    def write_config(self) -> None:
        data = self.directory / "data"
        data.mkdir(exist_ok=True)
        lines = []
        for line in self.shipped:
            if line.startswith("listener "):
                line = f"listener {self.port} {self.host}"
            elif line == "log_dest stdout":
                line = f"log_dest file {self.log_path}"
            line = line.replace(AUTH_DIR_IN_BROKER, self.auth_dir)
            lines.append(line.replace("/mosquitto/data/", f"{data}/"))
        lines.append("user root" if os.geteuid() == 0 else f"user {os.getlogin()}")
        self.config_path.write_text("\n".join(lines) + "\n")


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moclo.cli", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def here(compose: dict[str, Any], repo_root: Path, tmp_path: Path) -> ComposeHere:
    return ComposeHere(compose, repo_root, tmp_path)


@pytest.fixture
def broker(here: ComposeHere, repo_root: Path, tmp_path: Path) -> Iterator[ComposeBroker]:
    provision = here.environment("provision")
    done = run(here.command("provision"), provision)
    assert done.returncode == 0, done.stderr
    assert "issued" in done.stdout
    auth_dir = provision["MOCLO_BROKER_AUTH_DIR"]
    server = ComposeBroker(tmp_path / "mosquitto", free_port(), broker_config(repo_root), auth_dir)
    server.start()
    yield server
    server.stop()


def test_provision_keeps_what_exists_and_writes_files_the_broker_group_can_read(
    here: ComposeHere, broker: ComposeBroker
) -> None:
    env = here.environment("provision")
    again = run(here.command("provision"), env)
    assert again.returncode == 0, again.stderr
    assert "account compose-ingest (ingest): kept" in again.stdout
    assert "account compose-serve (serve): kept" in again.stdout
    assert ": 130 kept, 0 issued, 0 issued again" in again.stdout
    gid = grp.getgrnam("mosquitto").gr_gid
    for name in ("passwords", "acl"):
        status = (Path(env["MOCLO_BROKER_AUTH_DIR"]) / name).stat()
        assert (stat.S_IMODE(status.st_mode), status.st_gid) == (0o640, gid)
    # A lost secret file: that account's login is issued again, the old one revoked.
    plan = provision_plan(here.compose)
    lost = Path(here.host_path("provision", plan["accounts"]["serve"][1]))
    old = lost.read_text()
    lost.unlink()
    third = run(here.command("provision"), env)
    assert "account compose-serve (serve): reissued" in third.stdout, third.stdout
    assert stat.S_IMODE(lost.stat().st_mode) == 0o600 and lost.read_text() != old
    # Nothing secret is printed.
    for output in (again.stdout + again.stderr, third.stdout + third.stderr):
        assert lost.read_text().strip() not in output and old.strip() not in output


def test_the_compose_services_log_in_and_every_reading_is_stored(
    here: ComposeHere, broker: ComposeBroker, influxdb: InfluxServer, tmp_path: Path
) -> None:
    assert connack_code(broker.port, None, None) == 135  # anonymous
    assert connack_code(broker.port, "compose-ingest", "not-the-password") == 135

    database = f"compose_{uuid.uuid4().hex[:8]}"
    local = {
        "MOCLO_MQTT_URL": broker.url,
        "MOCLO_INFLUX_URL": influxdb.url,
        "MOCLO_INFLUX_DB": database,
        "MOCLO_HTTP_LISTEN": "127.0.0.1:0",
    }
    ingest_env = here.environment("ingest", **local)
    assert ingest_env["MOCLO_UNREGISTERED"] == "reject"
    log = (tmp_path / "ingest.log").open("w")
    ingest = subprocess.Popen(
        [sys.executable, "-m", "moclo.cli", *here.command("ingest")],
        env=ingest_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(
            lambda: " ingesting " in (tmp_path / "ingest.log").read_text() or ingest.poll(),
            timeout_s=30,
            what="ingest to subscribe",
        )
        assert ingest.poll() is None, (tmp_path / "ingest.log").read_text()
        # The last 10 minutes of the fleet at once, not forever in real time (where a
        # blood-pressure meter's first reading may be hours away).
        command = here.command("simulator")
        command[command.index("--forever") : command.index("--forever") + 1] = [
            "--burst",
            "--duration",
            "10m",
        ]
        simulated = run([*command, "--json"], here.environment("simulator", **local))
        assert simulated.returncode == 0, simulated.stderr
        summary = json.loads(simulated.stdout)
        assert summary["connections"] == summary["devices"] == 130
        influx = Influx(influxdb.url, database)
        wait_until(
            lambda: sum(influx.count(t, "seq") for t in DEVICE_TYPES) >= summary["readings"],
            timeout_s=30,
            what=f"{summary['readings']} readings in InfluxDB",
        )
        assert sum(influx.count(t, "seq") for t in DEVICE_TYPES) == summary["readings"]
        assert influx.count("moclo_rejected", "error") == 0
        spoof = _publish_as_device_elsewhere(here, broker)
        assert spoof == 135  # PUBACK: not authorised
        # The broker named ingest's session by its login, which is also its spool folder.
        assert " as compose-ingest (p5," in broker.log_path.read_text()
        spool = Path(ingest_env["MOCLO_SPOOL_DIR"])
        assert [p.name for p in spool.iterdir()] == ["compose-ingest"]
    finally:
        ingest.terminate()
        ingest.wait(30)
        log.close()
    password_file = Path(ingest_env["MOCLO_MQTT_PASSWORD_FILE"])
    assert password_file.read_text().strip() not in (tmp_path / "ingest.log").read_text()


def _publish_as_device_elsewhere(here: ComposeHere, broker: ComposeBroker) -> int:
    """A simulated device's login publishing to another device's topic: the PUBACK code."""
    _, credentials = provision_plan(here.compose)["devices"]
    logins = load_credentials(Path(here.host_path("provision", credentials)))
    client_id, (username, password) = next(iter(logins.items()))
    tenant, _, _ = client_id.partition(".")
    codes: list[int] = []
    done = threading.Event()
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"spoof-{time.monotonic_ns()}", protocol=paho.MQTTv5
    )
    client.username_pw_set(username, password)

    def on_publish(c: paho.Client, u: object, mid: int, reason: Any, p: object) -> None:
        codes.append(reason.value)
        done.set()

    client.on_publish = on_publish
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        client.publish(f"moclo/{tenant}/pacemaker/someone-else/telemetry", b"{}", qos=1)
        assert done.wait(10), "no PUBACK within 10 s"
    finally:
        client.disconnect()
        client.loop_stop()
    return codes[0]
