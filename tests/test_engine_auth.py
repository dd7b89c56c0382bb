"""The engine's ACL decisions (access/engine_auth.py) without a cluster: RabbitMQ's questions
in its own terms (routing keys, queue names) get the answers Mosquitto's ACL file gives for
the same login. tests/test_engine_cluster.py asks the same through a real cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from access.engine_auth import EngineAuth, filter_within, mqtt_topic
from access.registry import Registry

P = "moclo"


@pytest.mark.parametrize(
    ("requested", "granted", "within"),
    [
        ("moclo/+/+/+/telemetry", "moclo/+/+/+/telemetry", True),
        ("moclo/farm/+/+/telemetry", "moclo/+/+/+/telemetry", True),
        ("moclo/farm/cow/c1/telemetry", "moclo/+/+/+/telemetry", True),
        ("moclo/#", "moclo/+/+/+/telemetry", False),
        ("moclo/+/+/+/+", "moclo/+/+/+/telemetry", False),
        ("moclo/+/+/+/telemetry/x", "moclo/+/+/+/telemetry", False),
        ("moclo/+/+/+", "moclo/+/+/+/telemetry", False),
        ("moclo/farm/alert-state/a/b", "moclo/farm/alert-state/#", True),
        ("moclo/farm/alert-state", "moclo/farm/alert-state/#", True),
        ("moclo/other/alert-state/#", "moclo/farm/alert-state/#", False),
        ("#", "moclo/#", False),
    ],
    ids=lambda v: str(v),
)
def test_a_subscription_is_allowed_only_inside_a_granted_filter(
    requested: str, granted: str, within: bool
) -> None:
    assert filter_within(requested, granted) is within


def test_routing_keys_become_mqtt_topics_again() -> None:
    assert (
        mqtt_topic("moclo.farm.cow_tracker.c1.telemetry") == "moclo/farm/cow_tracker/c1/telemetry"
    )
    assert mqtt_topic("moclo.*.*.*.telemetry") == "moclo/+/+/+/telemetry"
    assert mqtt_topic("moclo.farm.#") == "moclo/farm/#"


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry.sqlite")


@pytest.fixture
def auth(registry: Registry) -> EngineAuth:
    return EngineAuth(registry.path, prefix=P, check_every_s=0.0)


def test_a_device_writes_only_its_own_telemetry_and_reads_only_its_own_commands(
    auth: EngineAuth, registry: Registry
) -> None:
    device = registry.add_device("farm", "cow_tracker", "c1")
    name = device.username
    assert auth.user(name, device.password) is None
    assert auth.user(name, device.password + "x") == "wrong password"
    own = "moclo.farm.cow_tracker.c1"
    assert auth.topic(name, f"{own}.telemetry", "write") is None
    assert auth.topic(name, "moclo.farm.cow_tracker.c2.telemetry", "write") is not None
    assert auth.topic(name, "moclo.*.*.*.telemetry", "write") is not None  # no wildcard writes
    assert auth.topic(name, f"{own}.commands", "write") is not None  # only ingest writes these
    assert auth.topic(name, f"{own}.commands", "read") is None
    assert auth.topic(name, "moclo.farm.cow_tracker.c2.commands", "read") is not None
    assert auth.topic(name, "moclo.#", "read") is not None


def test_client_ids_queues_and_amqp_are_the_logins_own(
    auth: EngineAuth, registry: Registry
) -> None:
    device = registry.add_device("farm", "cow_tracker", "c1").username
    ingest = registry.add_account("ingest", "ingest").username
    assert auth.vhost(device, "/", device) is None
    assert auth.vhost(device, "/", "farm.c2") is not None  # another's client id
    assert auth.vhost(device, "/", None) is not None  # devices speak MQTT only
    assert auth.vhost(ingest, "/", None) is None  # the engine's consumers speak AMQP
    assert auth.vhost(device, "other", device) is not None
    assert auth.resource(device, "queue", f"mqtt-subscription-{device}qos1", "configure") is None
    queue = "mqtt-subscription-farm.c2qos1"
    assert auth.resource(device, "queue", queue, "configure") is not None  # another's session
    assert auth.resource(device, "queue", "moclo.partition.telemetry.0", "read") is not None
    assert auth.resource(ingest, "queue", "moclo.partition.telemetry.0", "read") is None
    assert auth.decide("/user", {"username": "nobody", "password": "x"}) == "deny"
    assert auth.refusals["user"] == 1
