"""For the gateway's tests: a scripted device (a paho client playing one device by the
downlink's contract), a watcher of command-status, and a registry with accounts and devices."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from access.registry import Registry
from core.mqtt import MqttEndpoint
from core.settings import Settings
from devices.topics import (
    COMMAND_REQUESTS,
    COMMAND_RESULTS,
    COMMANDS,
    COMMANDS_GET,
    DESIRED,
    DESIRED_GET,
    DESIRED_REQUESTS,
    REPORTED,
    command_status_subscription,
    device_topic,
    on_behalf_request_topic,
    request_topic,
)
from tests.helpers import Subscriber, publish_all, wait_until

Answer = Callable[[dict[str, Any]], dict[str, Any] | None]


def succeed(command: dict[str, Any]) -> dict[str, Any]:
    return {"id": command["id"], "status": "succeeded", "ts": time.time()}


class ScriptedDevice:
    """One device on MQTT 3.1.1 with a persistent session: subscribes (QoS 1) to its own
    `commands` and `desired`, answers each command with `answer` (None: stays silent), and
    executes an id at most once, as the contract asks."""

    def __init__(
        self,
        settings: Settings,
        tenant: str,
        device_type: str,
        device_id: str,
        *,
        answer: Answer | None = succeed,
        client_id: str | None = None,
        login: tuple[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.address = (tenant, device_type, device_id)
        self.answer = answer
        self.commands: list[dict[str, Any]] = []  # every delivery, repeats included
        self.executed: list[str] = []  # ids, once each
        self.desired: list[dict[str, Any]] = []
        # On the engine a login's client id must be its username.
        self.login = login
        self.client_id = client_id or (login[0] if login else f"dev-{uuid.uuid4().hex[:8]}")
        self._answers: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._client: paho.Client | None = None

    def topic(self, level: str) -> str:
        return device_topic(self.settings.topic_prefix, *self.address, level)

    def connect(self, *, clean: bool = False) -> ScriptedDevice:
        endpoint = MqttEndpoint.from_url(self.settings.mqtt_url)
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv311,
            clean_session=clean,
        )
        if self.login is not None:
            client.username_pw_set(*self.login)
        subscribed = threading.Event()
        client.on_message = self._on_message
        client.on_subscribe = lambda *a: subscribed.set()
        client.on_connect = lambda c, *a: c.subscribe(
            [(self.topic(COMMANDS), 1), (self.topic(DESIRED), 1)]
        )
        client.connect(endpoint.host, endpoint.port)
        client.loop_start()
        self._client = client
        assert subscribed.wait(10), "the scripted device did not subscribe"
        return self

    def disconnect(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def publish(self, level: str, payload: bytes | dict[str, Any]) -> None:
        assert self._client is not None
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        info = self._client.publish(self.topic(level), body, qos=1)
        info.wait_for_publish(10)
        assert info.is_published()

    def ask_for_commands(self) -> None:
        self.publish(COMMANDS_GET, b"{}")

    def ask_for_desired(self) -> None:
        self.publish(DESIRED_GET, b"{}")

    def report(self, version: int, state: dict[str, Any]) -> None:
        self.publish(REPORTED, {"version": version, "state": state, "ts": time.time()})

    def received(self, command_id: str) -> int:
        with self._lock:
            return sum(1 for c in self.commands if c["id"] == command_id)

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        document = orjson.loads(msg.payload)
        if msg.topic.endswith("/" + DESIRED):
            with self._lock:
                self.desired.append(document)
            return
        with self._lock:
            self.commands.append(document)
            first = document["id"] not in self._answers
            if first:
                self.executed.append(document["id"])
                self._answers[document["id"]] = (
                    self.answer(document) if self.answer is not None else None
                ) or {}
            answer = self._answers[document["id"]]
        if answer:  # a repeat re-sends the first answer, it does not execute again
            client.publish(self.topic(COMMAND_RESULTS), orjson.dumps(answer), qos=1)


class StatusWatch:
    """Every CommandUpdate published on command-status, from a real subscription."""

    def __init__(self, settings: Settings) -> None:
        self._subscriber = Subscriber(
            settings.mqtt_url, command_status_subscription(settings.topic_prefix)
        )

    def updates(self, command_id: str | None = None) -> list[dict[str, Any]]:
        documents = [orjson.loads(m.payload) for m in list(self._subscriber.messages)]
        return [d for d in documents if command_id is None or d["id"] == command_id]

    def statuses(self, command_id: str) -> list[str]:
        return [d["status"] for d in self.updates(command_id)]

    def wait_for(self, command_id: str, status: str, timeout_s: float = 20) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((u for u in self.updates(command_id) if u["status"] == status), None)

        return wait_until(found, timeout_s=timeout_s, what=f"{command_id} {status}")

    def close(self) -> None:
        self._subscriber.close()


def ask(
    settings: Settings,
    tenant: str,
    account: str,
    body: dict[str, Any],
    *,
    desired: bool = False,
    on_behalf: bool = False,
) -> None:
    """Publishes a request as `account` would (the test broker checks no login)."""
    level = DESIRED_REQUESTS if desired else COMMAND_REQUESTS
    prefix = settings.topic_prefix
    topic = (
        on_behalf_request_topic(prefix, tenant, level, account)
        if on_behalf
        else request_topic(prefix, tenant, level, account)
    )
    publish_all(settings.mqtt_url, [(topic, orjson.dumps(body))])


def registry_with(
    settings: Settings,
    devices: list[tuple[str, str, str]],
    accounts: list[tuple[str, str, str | None]],
) -> Registry:
    """`devices`: (tenant, type, id); `accounts`: (role, name, tenant)."""
    registry = Registry(settings.registry)
    for tenant, device_type, device_id in devices:
        registry.add_device(tenant, device_type, device_id)
    for role, name, tenant in accounts:
        registry.add_account(role, name, tenant=tenant)  # type: ignore[arg-type]
    return registry
