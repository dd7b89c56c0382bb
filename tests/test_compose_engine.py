"""docker-compose.yml's `engine` profile (issue 19, item 6), checked statically like the rest
of the file (no Docker engine runs on our machines): three RabbitMQ nodes with the MQTT and
consistent-hash plugins, logins from the registry through `moclo engine-auth`, two ingest
workers over the partitions, serve and a simulator on MQTT 3.1.1; Mosquitto stays the
default profile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from core.settings import ENVIRONMENT, SECRET_FILES, Settings
from moclo.cli import build_parser
from moclo.engine_auth_cli import SECRET_VARIABLE
from tests.test_compose import BUILT, ENGINE_BUILT, ENGINE_NODES


@pytest.fixture
def compose(repo_root: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    return document


def test_mosquitto_stays_the_default_and_the_engine_is_a_profile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("mosquitto", "influxdb", *[b for b in BUILT if b != "notify"]):
        assert "profiles" not in services[name], f"{name} must start with a plain `up`"
    for name in (*ENGINE_BUILT, *ENGINE_NODES):
        assert services[name]["profiles"] == ["engine"], name
        # Nothing of the engine's stack talks to Mosquitto.
        assert "mosquitto" not in str(services[name].get("environment", {})), name


def test_the_nodes_run_the_plugins_and_settings_moclo_relies_on(
    compose: dict[str, Any], repo_root: Path
) -> None:
    services = compose["services"]
    mounted: dict[str, set[str]] = {}
    for name in ENGINE_NODES:
        node = services[name]
        assert node["hostname"] == name
        for volume in node["volumes"]:
            source, target = volume.split(":")[:2]
            mounted.setdefault(target, set()).add(source)
    (plugins,) = mounted["/etc/rabbitmq/enabled_plugins"]  # the same file for all three
    text = (repo_root / plugins).read_text()
    for plugin in (
        "rabbitmq_mqtt",
        "rabbitmq_consistent_hash_exchange",
        "rabbitmq_auth_backend_http",
    ):
        assert plugin in text
    (config,) = mounted["/etc/rabbitmq/rabbitmq.conf"]
    lines = set((repo_root / config).read_text().splitlines())
    assert {
        "mqtt.allow_anonymous = false",
        "mqtt.exchange = amq.topic",
        "mqtt.durable_queue_type = quorum",
        "auth_backends.1 = http",
        "auth_http.http_method = post",
        *(f"cluster_formation.classic_config.nodes.{n[-1]} = rabbit@{n}" for n in ENGINE_NODES),
    } <= lines
    # Nodes 2 and 3 join node 1 once it runs (together, each could start a cluster alone).
    for name in ENGINE_NODES[1:]:
        assert services[name]["depends_on"]["rabbitmq-1"]["condition"] == "service_healthy"


def test_the_auth_services_secret_path_is_nowhere_in_the_repository(
    compose: dict[str, Any], repo_root: Path
) -> None:
    services = compose["services"]
    assert services["engine-auth"]["command"] == ["engine-auth", "--listen", "0.0.0.0:8099"]
    assert services["engine-auth"]["environment"][SECRET_VARIABLE].startswith(
        f"${{{SECRET_VARIABLE}:?"
    )
    for name in ENGINE_NODES:
        script = services[name]["command"][-1]
        # Compose leaves `$${X}` to the container's shell, which reads it from .env's value.
        assert f"http://engine-auth:8099/$${{{SECRET_VARIABLE}}}" in script
        assert "umask 077" in script and "exec docker-entrypoint.sh rabbitmq-server" in script
        assert services[name]["environment"][SECRET_VARIABLE].startswith(f"${{{SECRET_VARIABLE}:?")
    assert "auth_http.user_path" not in (repo_root / "deploy/rabbitmq/rabbitmq.conf").read_text()


def _settings_of(service: dict[str, Any]) -> Settings:
    """The service's settings as moclo reads them (the password file left out: it is made
    by provision-engine at run time)."""
    environment = {
        k: str(v)
        for k, v in service["environment"].items()
        if k in ENVIRONMENT.values() and not str(v).startswith("${")
    }
    return Settings.load(environment)


def test_the_workers_share_the_partitions_each_with_its_own_login(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    workers = [_settings_of(services[f"ingest-engine-{i}"]) for i in (0, 1)]
    assert [w.worker for w in workers] == [(0, 2), (1, 2)]
    assert len({w.mqtt.username for w in workers}) == 2
    assert len({w.engine_partitions for w in workers}) == 1
    for worker in workers:
        assert worker.engine_url is not None
        assert {node.split(":")[0] for node in worker.engine_url[7:].split(",")} == set(
            ENGINE_NODES
        )
    # One state volume: a partition's new owner finds the snapshot the previous one left.
    mounts = [
        {v for v in services[f"ingest-engine-{i}"]["volumes"] if v.endswith(":/var/lib/moclo")}
        for i in (0, 1)
    ]
    assert mounts[0] == mounts[1] == {"engine-ingest-state:/var/lib/moclo"}


def test_serve_and_the_simulator_speak_mqtt311_to_the_engine(compose: dict[str, Any]) -> None:
    for name in ("serve-engine", "simulator-engine"):
        settings = _settings_of(compose["services"][name])
        assert settings.mqtt.protocol_version == 4, name
        assert settings.mqtt.host in ENGINE_NODES
    spread = compose["services"]["simulator-engine"]["command"]
    nodes = spread[spread.index("--spread-over") + 1].split(",")
    assert nodes == [f"{node}:1883" for node in ENGINE_NODES]
    # The Mosquitto stack keeps MQTT 5.
    assert _settings_of(compose["services"]["serve"]).mqtt.protocol_version == 5


def test_every_engine_service_command_and_variable_is_moclos(compose: dict[str, Any]) -> None:
    parser = build_parser()
    for name in ENGINE_BUILT:
        service = compose["services"][name]
        parser.parse_args(service["command"])  # exits on an invalid one
        allowed = {*ENVIRONMENT.values(), *SECRET_FILES.values(), SECRET_VARIABLE}
        assert set(service["environment"]) <= allowed, name
