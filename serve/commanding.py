"""How serve asks ingest to act on a device for a person signed in with an API token, and what
it tells that person before asking: the catalogue of the device's type, whether the token may
send each command, and the bounds of each argument.

Serve never publishes to a device. It publishes a `CommandRequest` (or a `DesiredRequest`) on
its own account's `{prefix}/{tenant}/command-requests/{account}/on-behalf`, with the token's
name in `by` and its role in `role`: the broker lets only serve accounts write there, so only
there does ingest believe them. Ingest, the gateway, checks everything again and decides; serve
checks first only so that a person hears at once, in words, what is wrong (who may, which
bounds) instead of a refusal a moment later.

It publishes as `{login}~commands` (core/mqtt.py), one request at a time: the broker allows one
connection per login, and the live stream holds the login's own.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiomqtt
from pydantic import BaseModel, ValidationError

from core.mqtt import MqttEndpoint, MqttUnreachable
from core.settings import Settings
from devices.commands import ADMITTED_ROLES, Clearance, CommandSpec, DesiredSpec, Strict, admits
from devices.topics import on_behalf_request_topic
from devices.types import DeviceType
from serve.errors import Unprocessable

CONNECT_TIMEOUT_S = 5.0
_ROLE_WORDS = {"operator": "an operator's", "clinician": "a clinician's", "admin": "an admin's"}


def role_words(role: str) -> str:
    """`an operator's`: a role as a possessive, for messages about tokens."""
    return _ROLE_WORDS.get(role, f"a {role}'s")


def refusal(clearance: Clearance, role: str, what: str) -> str | None:
    """Why a token of `role` may not do `what`, naming who may; None if it may."""
    if admits(clearance, role):
        return None
    needed = " or ".join(role_words(r) for r in sorted(ADMITTED_ROLES[clearance]))
    return f"{what} needs {needed} token of the device's tenant; this token is {role_words(role)}"


def command_json(spec: CommandSpec, role: str) -> dict[str, Any]:
    """One catalogue entry as the API shows it: the arguments as JSON Schema (with bounds)."""
    why_not = refusal(spec.clearance, role, f"`{spec.name}`")
    return {
        "name": spec.name,
        "description": spec.description,
        "clearance": spec.clearance,
        "expiry_s": spec.expiry_s,
        "arguments": spec.arguments.model_json_schema(),
        "output": None if spec.output is None else spec.output.model_json_schema(),
        "allowed": why_not is None,
        "reason": why_not,
    }


def desired_json(spec: DesiredSpec, role: str) -> dict[str, Any]:
    why_not = refusal(spec.clearance, role, "changing the desired state")
    return {
        "clearance": spec.clearance,
        "state": spec.state.model_json_schema(),
        "allowed": why_not is None,
        "reason": why_not,
    }


def checked_arguments(device_type: DeviceType, spec: CommandSpec, args: dict[str, Any]) -> None:
    """Unprocessable unless `args` are what `spec` takes; the message lists the bounds."""
    _validate(spec.arguments, args, f"{device_type.name} `{spec.name}` arguments")


def checked_desired(device_type: DeviceType, spec: DesiredSpec, state: dict[str, Any]) -> None:
    if not state:
        raise Unprocessable(f"name at least one setting to change; {bounds(spec.state)}")
    _validate(spec.state, state, f"{device_type.name} desired state")


def _validate(model: type[Strict], given: dict[str, Any], what: str) -> None:
    try:
        model.model_validate(given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise Unprocessable(f"{what} not valid ({problems}); {bounds(model)}") from None


def bounds(model: type[BaseModel]) -> str:
    """`takes lower_rate_bpm: integer 40..90`: what a model takes, in one line."""
    schema = model.model_json_schema()
    parts = [f"{name}: {_bound(prop, schema)}" for name, prop in schema["properties"].items()]
    return f"takes {', '.join(parts)}" if parts else "takes no arguments"


def _bound(prop: dict[str, Any], schema: dict[str, Any]) -> str:
    if "anyOf" in prop:  # optional: `X | None`
        prop = next((p for p in prop["anyOf"] if p.get("type") != "null"), prop)
    if "$ref" in prop:
        prop = schema.get("$defs", {}).get(prop["$ref"].rsplit("/", 1)[-1], prop)
    if "enum" in prop:
        return " | ".join(str(v) for v in prop["enum"])
    kind = str(prop.get("type", "value"))
    low, high = prop.get("minimum"), prop.get("maximum")
    if low is not None or high is not None:
        return f"{kind} {'' if low is None else low}..{'' if high is None else high}"
    values = prop.get("additionalProperties") or next(
        iter(prop.get("patternProperties", {}).values()), None
    )
    if kind == "object" and isinstance(values, dict):
        return f"{{name: {_bound(values, schema)}}}"
    return kind


def new_command_id() -> str:
    return uuid.uuid4().hex


class Commander:
    """Publishes requests for people to ingest through the broker of `settings`."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.account = settings.mqtt.username or "serve"
        self._endpoint: MqttEndpoint = settings.mqtt.for_connection("commands")
        self._one_at_a_time = asyncio.Lock()

    def topic(self, tenant: str, level: str) -> str:
        """Where this serve asks for a person (`level`: command- or desired-requests)."""
        return on_behalf_request_topic(self._settings.topic_prefix, tenant, level, self.account)

    async def ask(self, topic: str, request: Strict) -> None:
        """Publishes `request` (QoS 1) and returns once the broker has it; MqttUnreachable
        says what to check."""
        endpoint = self._endpoint
        payload = request.model_dump_json(exclude_none=True).encode()
        async with self._one_at_a_time:
            try:
                async with aiomqtt.Client(
                    endpoint.host,
                    endpoint.port,
                    username=endpoint.username,
                    password=endpoint.password,
                    tls_context=endpoint.ssl_context(),
                    identifier=endpoint.client_id(f"moclo-serve-commands-{uuid.uuid4().hex[:8]}"),
                    timeout=CONNECT_TIMEOUT_S,
                ) as client:
                    await client.publish(topic, payload, qos=1)
            except aiomqtt.MqttError as exc:
                raise MqttUnreachable(
                    f"cannot ask ingest through the broker at {endpoint.display()} as "
                    f"{endpoint.username or 'an anonymous client'} ({exc}): is the broker up, "
                    "and do its files give serve's account its `~commands` login? "
                    "(`moclo broker-auth write`, then reload the broker)"
                ) from None
