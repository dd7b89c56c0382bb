"""The wire contract's topics: `{prefix}/{tenant}/{device_type}/{device_id}/telemetry`.

The device's identity (tenant, type, id) comes from the topic, never from the payload, so a
later broker ACL on the topic is what proves who is speaking.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

IDENTIFIER = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
IDENTIFIER_RULE = "^[a-z0-9][a-z0-9-]{0,62}$"
DEFAULT_PREFIX = "moclo"
MAX_READINGS_PER_MESSAGE = 1000


class TopicError(ValueError):
    """A topic that does not follow the wire contract; the message says which part is wrong."""


@dataclass(frozen=True, slots=True)
class DeviceAddress:
    tenant: str
    device_type: str
    device_id: str


def is_identifier(text: str) -> bool:
    return IDENTIFIER.fullmatch(text) is not None


def check_identifier(kind: str, text: str) -> str:
    """Returns `text` if it is a valid tenant or device id, else raises TopicError."""
    if not is_identifier(text):
        raise TopicError(f"{kind} {text!r} must match {IDENTIFIER_RULE}")
    return text


def check_prefix(prefix: str) -> str:
    """A prefix is one or more topic levels with no wildcards."""
    if (
        not prefix
        or any(c in prefix for c in "+#\0")
        or prefix.startswith("/")
        or prefix.endswith("/")
        or "//" in prefix
    ):
        raise TopicError(f"topic prefix {prefix!r} must be non-empty levels without + or #")
    return prefix


def telemetry_topic(prefix: str, tenant: str, device_type: str, device_id: str) -> str:
    return f"{prefix}/{tenant}/{device_type}/{device_id}/telemetry"


def telemetry_subscription(prefix: str, tenant: str = "+") -> str:
    """The one subscription that sees every device's telemetry (of one tenant, if given)."""
    return f"{prefix}/{tenant}/+/+/telemetry"


def alert_topic(prefix: str, tenant: str, device_id: str) -> str:
    return f"{prefix}/{tenant}/alerts/{device_id}"


def alert_subscription(prefix: str, tenant: str = "+") -> str:
    return f"{prefix}/{tenant}/alerts/+"


def alert_state_topic(prefix: str, tenant: str, device_id: str, rule: str) -> str:
    """Retained: the current state of one open alert; emptied when it is resolved."""
    return f"{prefix}/{tenant}/alert-state/{device_id}/{rule}"


def alert_state_subscription(prefix: str, tenant: str = "+") -> str:
    return f"{prefix}/{tenant}/alert-state/+/+"


def ack_topic(prefix: str, tenant: str) -> str:
    """Where people acknowledge a tenant's alerts: `{"id": ..., "by": ..., "note": ...}`."""
    return f"{prefix}/{tenant}/acks"


def ack_subscription(prefix: str, tenant: str = "+") -> str:
    return f"{prefix}/{tenant}/acks"


def shared(group: str, subscription: str) -> str:
    """An MQTT 5 shared subscription: the broker deals each message to one member of `group`."""
    return f"$share/{group}/{subscription}"


def parse_ack_topic(prefix: str, topic: str) -> str | None:
    """The tenant of an acknowledgement topic, or None if `topic` is not one."""
    head = prefix + "/"
    if not (topic.startswith(head) and topic.endswith("/acks")):
        return None
    tenant = topic[len(head) : -len("/acks")]
    return tenant if "/" not in tenant else None


def parse_telemetry_topic(prefix: str, topic: str) -> DeviceAddress:
    """Splits a telemetry topic into its device address, or raises TopicError saying why.

    Whether the device type exists is the catalogue's question, not this function's.
    """
    head = prefix + "/"
    if not topic.startswith(head):
        raise TopicError(f"topic {topic!r} does not start with {head!r}")
    parts = topic[len(head) :].split("/")
    if len(parts) != 4 or parts[3] != "telemetry":
        raise TopicError(
            f"topic {topic!r} must be {prefix}/{{tenant}}/{{device_type}}/{{device_id}}/telemetry"
        )
    tenant, device_type, device_id, _ = parts
    check_identifier("tenant", tenant)
    check_identifier("device_id", device_id)
    return DeviceAddress(tenant, device_type, device_id)
