"""docker-compose.yml and the config files its services mount, checked statically: no Docker
engine runs on our machines."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.settings import ENVIRONMENT, SECRET_FILES, Settings
from moclo.cli import build_parser


@pytest.fixture
def compose(repo_root: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    return document


BUILT = ("provision", "ingest", "serve", "notify", "simulator")
# The `engine` profile (docker compose --profile engine up): the distributed engine's stack.
ENGINE_BUILT = (
    "provision-engine", "engine-auth", "ingest-engine-0", "ingest-engine-1", "serve-engine",
    "simulator-engine",
)  # fmt: skip
ENGINE_NODES = ("rabbitmq-1", "rabbitmq-2", "rabbitmq-3")


def test_the_services_and_their_images(compose: dict[str, Any], repo_root: Path) -> None:
    services = compose["services"]
    assert set(services) == {
        "mosquitto", "influxdb", "prometheus", "grafana", *BUILT, *ENGINE_BUILT, *ENGINE_NODES
    }  # fmt: skip
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2")
    assert re.fullmatch(r"influxdb:2\.\d+", services["influxdb"]["image"])
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", services["prometheus"]["image"])
    assert re.fullmatch(r"grafana/grafana-oss:\d+\.\d+\.\d+", services["grafana"]["image"])
    for name in (*BUILT, *ENGINE_BUILT):
        assert services[name]["build"] == "."
    for name in ENGINE_NODES:
        assert re.fullmatch(r"rabbitmq:3\.10\.\d+", services[name]["image"])  # 3.10: tested
    assert (repo_root / "Dockerfile").is_file()
    assert 'ENTRYPOINT ["moclo"]' in (repo_root / "Dockerfile").read_text()


def test_every_image_is_pinned_to_a_version(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if "image" in service:
            _, _, tag = service["image"].rpartition(":")
            assert re.fullmatch(r"v?\d+(\.\d+)+", tag), f"{name}: pin a version, not {tag!r}"


def test_every_bind_mount_is_in_the_repository(compose: dict[str, Any], repo_root: Path) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (repo_root / source).exists(), f"{name} mounts {source}, which is missing"
            else:
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"


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
    for name in BUILT:
        env = compose["services"][name]["environment"]
        if name != "provision":  # it only writes files
            assert env["MOCLO_MQTT_URL"] == "mqtt://mosquitto:1883"
        # Every variable is one of moclo's settings, but for uvicorn's own list of proxies
        # whose X-Forwarded-Proto serve believes (its cookie is Secure behind a TLS proxy).
        uvicorn = {"FORWARDED_ALLOW_IPS"} if name == "serve" else set()
        assert set(env) <= {*ENVIRONMENT.values(), *SECRET_FILES.values(), *uvicorn}
    assert (
        compose["services"]["ingest"]["environment"]["MOCLO_INFLUX_URL"] == "http://influxdb:8086"
    )


def test_every_service_command_is_a_valid_moclo_command(compose: dict[str, Any]) -> None:
    parser = build_parser()
    for name in BUILT:
        parser.parse_args(compose["services"][name]["command"])  # exits on an invalid one


def test_secrets_come_from_an_uncommitted_env_file(
    compose: dict[str, Any], repo_root: Path
) -> None:
    text = (repo_root / "docker-compose.yml").read_text()
    referenced = set(re.findall(r"\$\{(\w+)", text))
    example = (repo_root / ".env.example").read_text()
    assert referenced and all(f"{name}=" in example for name in referenced)
    assert ".env" in (repo_root / ".gitignore").read_text().splitlines()
    # A secret has no default to fall back on: compose refuses to start without it.
    for name, default in re.findall(r"\$\{(\w+):([-?])", text):
        if re.search("PASSWORD|TOKEN|SECRET", name):
            assert default == "?", f"{name} must be required (${{{name}:?...}}), not defaulted"


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


def test_ingest_serves_health_and_metrics_to_the_other_containers(
    compose: dict[str, Any],
) -> None:
    listen = compose["services"]["ingest"]["environment"]["MOCLO_HTTP_LISTEN"]
    host, _, port = listen.rpartition(":")
    assert host == "0.0.0.0"  # the default, 127.0.0.1, is unreachable from other containers
    assert Settings(http_listen=listen).http_listen == listen
    assert f"127.0.0.1:{port}:{port}" in compose["services"]["ingest"]["ports"]


# --- Prometheus and Grafana: their config files against the services ------------------------


def _yaml(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def mount_of(service: dict[str, Any], source: str) -> str:
    """Where `service` mounts the repository path `source` (./...) in its container."""
    for volume in service["volumes"]:
        host, container, *_ = volume.split(":")
        if host.rstrip("/") == source:
            return str(container)
    raise AssertionError(f"{source} is not mounted")


def strings_in(document: Any) -> list[str]:
    if isinstance(document, dict):
        return [s for value in document.values() for s in strings_in(value)]
    if isinstance(document, list):
        return [s for value in document for s in strings_in(value)]
    return [document] if isinstance(document, str) else []


@pytest.fixture
def datasources(repo_root: Path) -> dict[str, dict[str, Any]]:
    """Grafana's provisioned data sources, by uid."""
    folder = repo_root / "deploy/grafana/provisioning/datasources"
    return {ds["uid"]: ds for path in folder.glob("*.yaml") for ds in _yaml(path)["datasources"]}


def test_grafana_wants_a_password_from_env_and_shows_nothing_anonymously(
    compose: dict[str, Any], repo_root: Path
) -> None:
    grafana = compose["services"]["grafana"]
    assert "127.0.0.1:3000:3000" in grafana["ports"]
    env = grafana["environment"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", env["GF_SECURITY_ADMIN_PASSWORD"])
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


def test_the_dashboard_provider_reads_where_compose_mounts_the_dashboards(
    compose: dict[str, Any], repo_root: Path
) -> None:
    grafana = compose["services"]["grafana"]
    assert mount_of(grafana, "./deploy/grafana/provisioning") == "/etc/grafana/provisioning"
    folder = repo_root / "deploy/grafana/provisioning/dashboards"
    providers = [p for path in folder.glob("*.yaml") for p in _yaml(path)["providers"]]
    assert [p["options"]["path"] for p in providers] == [
        mount_of(grafana, "./deploy/grafana/dashboards")
    ]
    assert providers[0]["type"] == "file"


def test_the_influxdb_data_source_reaches_what_ingest_writes(
    datasources: dict[str, dict[str, Any]], compose: dict[str, Any]
) -> None:
    influx = datasources["moclo-influxdb"]
    ingest_env = compose["services"]["ingest"]["environment"]
    assert influx["type"] == "influxdb" and influx["access"] == "proxy"
    assert influx["url"] == ingest_env["MOCLO_INFLUX_URL"]
    assert influx["jsonData"]["version"] == "InfluxQL"
    bucket = compose["services"]["influxdb"]["environment"]["DOCKER_INFLUXDB_INIT_BUCKET"]
    assert influx["jsonData"]["dbName"] == ingest_env["MOCLO_INFLUX_DB"] == bucket
    # InfluxDB 2.x takes the token as `Authorization: Token ...` on its 1.x /query.
    assert influx["jsonData"]["httpHeaderName1"] == "Authorization"
    assert influx["secureJsonData"]["httpHeaderValue1"] == "Token ${INFLUXDB_TOKEN}"


def test_the_prometheus_data_source_and_scrape_config_fit_together(
    datasources: dict[str, dict[str, Any]], compose: dict[str, Any], repo_root: Path
) -> None:
    prometheus = compose["services"]["prometheus"]
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", prometheus["image"])
    config_path = mount_of(prometheus, "./deploy/prometheus/prometheus.yml")
    assert f"--config.file={config_path}" in prometheus["command"]
    config = _yaml(repo_root / "deploy/prometheus/prometheus.yml")
    (job,) = config["scrape_configs"]
    listen = compose["services"]["ingest"]["environment"]["MOCLO_HTTP_LISTEN"]
    assert job["static_configs"] == [{"targets": [f"ingest:{listen.rpartition(':')[2]}"]}]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    source = datasources["moclo-prometheus"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    # $__rate_interval is right only if Grafana knows the scrape interval.
    assert source["jsonData"]["timeInterval"] == config["global"]["scrape_interval"]


def test_secrets_in_provisioning_come_from_grafanas_environment(
    repo_root: Path, compose: dict[str, Any], datasources: dict[str, dict[str, Any]]
) -> None:
    grafana_env = compose["services"]["grafana"]["environment"]
    provisioning = repo_root / "deploy/grafana/provisioning"
    for path in provisioning.rglob("*.yaml"):
        # Grafana expands $VAR and ${VAR} in every value of a provisioning file.
        for name in re.findall(r"\$\{?(\w+)", " ".join(strings_in(_yaml(path)))):
            assert name in grafana_env, f"{path.name} uses ${name}, which grafana is not given"
            assert grafana_env[name] == f"${{{name}:?set {name} in .env}}"
    for source in datasources.values():
        for key, value in source.get("secureJsonData", {}).items():
            assert re.search(r"\$\{\w+\}", value), f"{source['uid']}.{key} is a literal secret"


def test_the_dashboard_listens_for_other_containers_and_reads_what_ingest_writes(
    compose: dict[str, Any],
) -> None:
    serve = compose["services"]["serve"]["environment"]
    ingest = compose["services"]["ingest"]["environment"]
    for key in ("MOCLO_INFLUX_URL", "MOCLO_INFLUX_DB", "MOCLO_INFLUX_TOKEN", "MOCLO_TOPIC_PREFIX"):
        assert serve[key] == ingest[key], key
    host, _, port = serve["MOCLO_SERVE_LISTEN"].rpartition(":")
    assert host == "0.0.0.0"  # published below, on the host's loopback only
    assert compose["services"]["serve"]["ports"] == [f"127.0.0.1:{port}:{port}"]


def test_the_image_holds_every_package_of_the_project(repo_root: Path) -> None:
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    dockerfile = (repo_root / "Dockerfile").read_text()
    missing = [p for p in packages if f"COPY {p} ./{p}" not in dockerfile]
    assert packages and missing == []


def test_the_notifier_reads_a_valid_notify_file_and_keeps_its_outbox_on_a_volume(
    compose: dict[str, Any], repo_root: Path
) -> None:
    services = compose["services"]
    notify = services["notify"]
    env = notify["environment"]
    # Its own broker account: test_compose_access.py. serve checks the links the notifier
    # signs: the same secret.
    assert (
        services["serve"]["environment"]["MOCLO_NOTIFY_LINK_SECRET"]
        == (env["MOCLO_NOTIFY_LINK_SECRET"])
    )
    # And the same notify file: without it serve cannot tell who left, and takes no link.
    serve_file = services["serve"]["environment"]["MOCLO_NOTIFY_FILE"]
    serve_mounts = {v.split(":")[1]: v.split(":")[0] for v in services["serve"]["volumes"]}
    assert (
        serve_mounts[serve_file]
        == {v.split(":")[1]: v.split(":")[0] for v in notify["volumes"]}[env["MOCLO_NOTIFY_FILE"]]
    )
    outbox = Path(env["MOCLO_NOTIFY_OUTBOX"])
    mounts = {v.split(":")[1]: v.split(":")[0] for v in notify["volumes"]}
    assert any(outbox.is_relative_to(target) for target in mounts), "the outbox is on no volume"
    source = mounts[env["MOCLO_NOTIFY_FILE"]]
    from notify.file import load_notify_file

    environ = {name: "json://example.org/hook" for name in _url_envs(repo_root / source)}
    assert load_notify_file(repo_root / source, environ=environ).people
    assert notify["profiles"] == ["notify"], "started only when asked: it needs a notify file"


def _url_envs(path: Path) -> list[str]:
    return re.findall(r'url_env = "(\w+)"', path.read_text())
