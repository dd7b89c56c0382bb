"""docker-compose.yml, checked statically: no Docker engine runs on our machines."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from moclo.cli import build_parser
from moclo.settings import ENVIRONMENT


@pytest.fixture
def compose(repo_root: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    return document


def test_the_four_services_and_their_images(compose: dict[str, Any], repo_root: Path) -> None:
    services = compose["services"]
    assert set(services) == {"mosquitto", "influxdb", "ingest", "simulator"}
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2")
    assert re.fullmatch(r"influxdb:2\.\d+", services["influxdb"]["image"])
    for name in ("ingest", "simulator"):
        assert services[name]["build"] == "."
    assert (repo_root / "Dockerfile").is_file()
    assert 'ENTRYPOINT ["moclo"]' in (repo_root / "Dockerfile").read_text()


def test_influxdb_is_initialised_with_the_bucket_ingest_writes_to(compose: dict[str, Any]) -> None:
    influx_env = compose["services"]["influxdb"]["environment"]
    ingest_env = compose["services"]["ingest"]["environment"]
    assert influx_env["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    for key in ("USERNAME", "PASSWORD", "ORG", "BUCKET", "ADMIN_TOKEN"):
        assert influx_env[f"DOCKER_INFLUXDB_INIT_{key}"]
    assert influx_env["DOCKER_INFLUXDB_INIT_BUCKET"] == ingest_env["MOCLO_INFLUX_DB"]
    assert ingest_env["MOCLO_INFLUX_TOKEN"].startswith("${INFLUXDB_TOKEN")
    assert influx_env["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"].startswith("${INFLUXDB_TOKEN")


def test_services_reach_each_other_by_name(compose: dict[str, Any]) -> None:
    for name in ("ingest", "simulator"):
        env = compose["services"][name]["environment"]
        assert env["MOCLO_MQTT_URL"] == "mqtt://mosquitto:1883"
        assert set(env) <= set(ENVIRONMENT.values())
    assert (
        compose["services"]["ingest"]["environment"]["MOCLO_INFLUX_URL"] == "http://influxdb:8086"
    )


def test_every_service_command_is_a_valid_moclo_command(compose: dict[str, Any]) -> None:
    parser = build_parser()
    for name in ("ingest", "simulator"):
        parser.parse_args(compose["services"][name]["command"])  # exits on an invalid one


def test_secrets_come_from_an_uncommitted_env_file(
    compose: dict[str, Any], repo_root: Path
) -> None:
    text = (repo_root / "docker-compose.yml").read_text()
    referenced = set(re.findall(r"\$\{(\w+)", text))
    example = (repo_root / ".env.example").read_text()
    assert referenced and all(f"{name}=" in example for name in referenced)
    assert ".env" in (repo_root / ".gitignore").read_text().splitlines()


def test_published_ports_are_loopback_only(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:")


def test_broker_config_has_the_settings_ingest_relies_on(
    compose: dict[str, Any], repo_root: Path
) -> None:
    mounts = compose["services"]["mosquitto"]["volumes"]
    config = next(m.split(":")[0] for m in mounts if m.endswith("mosquitto.conf:ro"))
    lines = set((repo_root / config).read_text().splitlines())
    assert {
        "listener 1883 0.0.0.0",
        "persistence true",
        "max_inflight_messages 1000",
        "max_queued_messages 1000000",
    } <= lines


def test_ingest_keeps_its_spool_and_alert_state_on_a_volume(compose: dict[str, Any]) -> None:
    ingest = compose["services"]["ingest"]
    spool = ingest["environment"]["MOCLO_SPOOL_DIR"]
    mounts = [volume.split(":")[1] for volume in ingest["volumes"]]
    assert any(spool.startswith(mount + "/") for mount in mounts)
    assert all(volume.split(":")[0] in compose["volumes"] for volume in ingest["volumes"])
