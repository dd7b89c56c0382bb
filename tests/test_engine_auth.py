"""The engine's ACL decisions (access/engine_auth.py) without a cluster: RabbitMQ's questions
in its own terms (routing keys, queue names) get the answers Mosquitto's ACL file gives for
the same login. tests/test_engine_cluster.py asks the same through a real cluster."""

from __future__ import annotations

import http.client
import socket
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest

from access.engine_auth import EngineAuth, filter_within, mqtt_topic, serve_engine_auth
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


def ask(url: str, path: str, body: bytes, **headers: str) -> tuple[int, bytes]:
    """POSTs `path` below `url` as RabbitMQ does; the service's status and answer."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        connection.request("POST", parts.path + path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("declared", "status"),
    [(str(10**13), 413), (str(2**20 + 1), 413), ("-1", 400), ("²", 400), ("9" * 5000, 413)],
    ids=["10TB", "1MiB+1", "negative", "not-ascii", "5000-digits"],
)
def test_a_caller_declaring_an_impossible_body_is_denied_at_once(
    auth: EngineAuth, registry: Registry, declared: str, status: int
) -> None:
    """Anyone on the machine can reach the service. Before, a claimed 10 TB body ended in a
    MemoryError and no answer at all; a negative length read until the caller hung up."""
    device = registry.add_device("farm", "cow_tracker", "c1")
    question = urlencode({"username": device.username, "password": device.password}).encode()
    with serve_engine_auth(auth) as url:
        assert ask(url, "/user", question, **{"Content-Length": declared}) == (status, b"deny")
        # Positive control: RabbitMQ's own question, to the same service, is still answered.
        assert ask(url, "/user", question) == (200, b"allow")
    assert auth.refusals["request"] == 1


def test_a_caller_that_never_sends_its_body_is_dropped(
    auth: EngineAuth, registry: Registry
) -> None:
    """A body that does not come held its thread forever (one per connection, no bound)."""
    device = registry.add_device("farm", "cow_tracker", "c1")
    question = urlencode({"username": device.username, "password": device.password}).encode()
    with serve_engine_auth(auth, request_timeout_s=0.5) as url:
        parts = urlsplit(url)
        with socket.create_connection((parts.hostname, parts.port)) as stalled:
            head = f"POST {parts.path}/user HTTP/1.1\r\nContent-Length: 100\r\n\r\n"
            stalled.sendall(head.encode() + b"username=a")
            # Positive control: meanwhile others are answered.
            assert ask(url, "/user", question) == (200, b"allow")
            stalled.settimeout(10)  # the deadline of the wait below
            assert stalled.recv(1) == b"", "the stalled request was answered"


def test_a_caller_without_the_services_url_learns_nothing(
    auth: EngineAuth, registry: Registry
) -> None:
    """RabbitMQ sends no credentials of its own, and the vhost, resource and topic questions
    carry no password: anyone reaching the port could ask which logins exist and what each
    may do (every tenant and device id), or guess passwords out of RabbitMQ's sight. The
    service answers only below the secret path of the URL it yields (in rabbitmq.conf)."""
    device = registry.add_device("farm", "cow_tracker", "c1")
    name = device.username
    questions = {
        "/vhost": {"username": name, "vhost": "/", "client_id": name},
        "/topic": {
            "username": name,
            "routing_key": "moclo.farm.cow_tracker.c1.telemetry",
            "permission": "write",
        },
        "/user": {"username": name, "password": device.password},
    }
    with serve_engine_auth(auth) as url:
        port_only = f"http://127.0.0.1:{urlsplit(url).port}"
        for path, form in questions.items():
            body = urlencode(form).encode()
            assert ask(url, path, body) == (200, b"allow"), path  # positive control
            assert ask(port_only, path, body) == (404, b"deny"), path  # the stranger
            assert ask(port_only, "/x" + urlsplit(url).path[2:] + path, body)[1] == b"deny"
    assert auth.refusals["request"] == 2 * len(questions)


def test_a_caller_trickling_its_request_is_dropped_at_the_requests_deadline(
    auth: EngineAuth, registry: Registry
) -> None:
    """A byte every 0.2 s never trips a per-read timeout of 0.5 s: the deadline is the whole
    request's, or a caller could hold a thread (one per connection) for as long as it likes."""
    device = registry.add_device("farm", "cow_tracker", "c1")
    question = urlencode({"username": device.username, "password": device.password}).encode()
    with serve_engine_auth(auth, request_timeout_s=0.5) as url:
        parts = urlsplit(url)
        with socket.create_connection((parts.hostname, parts.port)) as trickling:
            trickling.sendall(f"POST {parts.path}/user HTTP/1.1\r\nX-Slow: ".encode())
            trickling.settimeout(0.2)  # paces the attacker: a byte, then 0.2 s of listening
            deadline = time.monotonic() + 10
            closed = False
            while not closed and time.monotonic() < deadline:
                try:
                    trickling.sendall(b"a")
                    closed = trickling.recv(1) == b""
                except TimeoutError:
                    continue
                except ConnectionError:  # reset by the server: dropped too
                    closed = True
            assert closed, "a trickling request held its thread for 10 s"
            # Positive control: the service answers others all along.
            assert ask(url, "/user", question) == (200, b"allow")
