"""The wire contract's topics: `{prefix}/{tenant}/{device_type}/{device_id}/telemetry`.

The device's identity (tenant, type, id) comes from the topic, never from the payload, so a
later broker ACL on the topic is what proves who is speaking. Acknowledgements of alerts follow
the same rule: `{prefix}/{tenant}/acks/{account}` names the account that acknowledges.

The downlink (devices/commands.py says how it works) has, under a device's own topic
`{prefix}/{tenant}/{device_type}/{device_id}`:

| level | who writes | what |
|---|---|---|
| `commands` | moclo | a command to execute |
| `commands/get` | the device | "send me my unexpired commands" (on connect) |
| `command-results` | the device | its answer to a command |
| `desired` | moclo | the whole desired state (also retained, a convenience only) |
| `desired/get` | the device | "send me my desired state" (on connect) |
| `reported` | the device | the state it applied |

and, per tenant, `command-requests/{account}` and `desired-requests/{account}` (a person's
client asks; the topic names the account, as for acknowledgements; a serve account adds
`/on-behalf`), `command-status/{device_id}` (moclo tells what became of each command) and
`notices/{device_id}` (an automation's notice about a device).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

IDENTIFIER = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
IDENTIFIER_RULE = "^[a-z0-9][a-z0-9-]{0,62}$"
# An account's name (ingest, serve, a tenant's app or operator) is its MQTT username, and the
# level of an acknowledgement topic that says who acknowledged.
ACCOUNT_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")
ACCOUNT_NAME_RULE = "^[a-z][a-z0-9_-]{0,63}$"
ON_BEHALF = "on-behalf"
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


# The topics below keep "acks" (MQTT's word elsewhere in the code): they are the wire contract.
def acknowledgement_topic(prefix: str, tenant: str, account: str) -> str:
    """Where the account `account` acknowledges a tenant's alerts: `{"id": ..., "note": ...}`.

    The broker's ACL lets an operator write only under its own name, so the topic, not the
    payload, says who acknowledged."""
    return f"{prefix}/{tenant}/acks/{account}"


def on_behalf_acknowledgement_topic(prefix: str, tenant: str, account: str) -> str:
    """Where the serve account `account` acknowledges for a person who signed in to it with
    an API token: `{"id": ..., "by": "<the token's name>", "note": ...}`. Only serve accounts
    may write here, so only here is the payload's `by` believed."""
    return f"{prefix}/{tenant}/acks/{account}/{ON_BEHALF}"


def acknowledgement_subscription(prefix: str, tenant: str = "+") -> str:
    """Every acknowledgement of a tenant; `#` also matches `{prefix}/{tenant}/acks` itself,
    the topic of older clients, which ingest then refuses saying why."""
    return f"{prefix}/{tenant}/acks/#"


def shared(group: str, subscription: str) -> str:
    """An MQTT 5 shared subscription: the broker deals each message to one member of `group`."""
    return f"$share/{group}/{subscription}"


def parse_acknowledgement_topic(prefix: str, topic: str) -> str | None:
    """The tenant level of a topic under `{prefix}/{tenant}/acks` (that topic or below it), or
    None if `topic` is not one. Cheap: ingest asks it of every message."""
    if "/acks" not in topic:  # every telemetry topic leaves here, after one C-level search
        return None
    start = len(prefix) + 1
    if not (topic.startswith(prefix) and topic.startswith("/", len(prefix))):
        return None
    cut = topic.find("/", start)
    if cut < 0 or not topic.startswith("/acks", cut):
        return None
    end = cut + len("/acks")
    if len(topic) > end and topic[end] != "/":
        return None  # `{prefix}/{tenant}/acksomething/...`: not ours
    return topic[start:cut]


def parse_acknowledger(prefix: str, tenant: str, topic: str) -> tuple[str, bool]:
    """(account, on behalf) of an acknowledgement topic of `tenant`: the account that
    published it, and whether it did so for a person named in the payload (a serve account
    on `on_behalf_acknowledgement_topic`). Raises TopicError saying which topic to use instead."""
    older = f"{prefix}/{tenant}/acks"
    return parse_requester(prefix, tenant, "acks", topic, verb="acknowledges", older=older)


def parse_requester(
    prefix: str,
    tenant: str,
    level: str,
    topic: str,
    *,
    verb: str = "asks",
    older: str | None = None,
) -> tuple[str, bool]:
    """(account, on behalf) of a topic `{prefix}/{tenant}/{level}/{account}[/on-behalf]`, the
    shape of every topic where a person's client asks moclo for something; TopicError says
    which topic to use instead. `older`: a topic older clients used, named in the error."""
    rest = topic[len(f"{prefix}/{tenant}/{level}") :]
    levels = rest.split("/")[1:] if rest.startswith("/") else []
    if len(levels) == 2 and levels[1] == ON_BEHALF:
        account, on_behalf = levels[0], True
    elif len(levels) == 1:
        account, on_behalf = levels[0], False
    else:
        hint = f"; clients older than this rule used {older} and need an update" if older else ""
        raise TopicError(
            f"topic {topic!r} must name who {verb}: {prefix}/{tenant}/{level}/{{account}} "
            f"(your MQTT login){hint}"
        )
    if ACCOUNT_NAME.fullmatch(account) is None:
        raise TopicError(
            f"the account {account!r} in topic {topic!r} must match {ACCOUNT_NAME_RULE}"
        )
    return account, on_behalf


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


# The downlink: see the table in this module's docstring and devices/commands.py.
COMMANDS = "commands"
COMMANDS_GET = "commands/get"
COMMAND_RESULTS = "command-results"
DESIRED = "desired"
DESIRED_GET = "desired/get"
REPORTED = "reported"
# What a device publishes besides telemetry, after its own topic.
DEVICE_UPLINK_LEVELS = (COMMANDS_GET, COMMAND_RESULTS, DESIRED_GET, REPORTED)
COMMAND_REQUESTS = "command-requests"
DESIRED_REQUESTS = "desired-requests"
COMMAND_STATUS = "command-status"
NOTICES = "notices"


def device_topic(prefix: str, tenant: str, device_type: str, device_id: str, level: str) -> str:
    """`{prefix}/{tenant}/{device_type}/{device_id}/{level}`, `level` one of the downlink's."""
    return f"{prefix}/{tenant}/{device_type}/{device_id}/{level}"


def device_subscription(prefix: str, level: str, tenant: str = "+") -> str:
    """Every device's `level` topic (of one tenant, if given)."""
    return f"{prefix}/{tenant}/+/+/{level}"


def request_topic(prefix: str, tenant: str, level: str, account: str) -> str:
    """Where the account `account` asks (`level` is COMMAND_REQUESTS or DESIRED_REQUESTS)."""
    return f"{prefix}/{tenant}/{level}/{account}"


def on_behalf_request_topic(prefix: str, tenant: str, level: str, account: str) -> str:
    """Where a serve account asks for a person it signed in; only here are the payload's
    `by` and `role` believed."""
    return f"{prefix}/{tenant}/{level}/{account}/{ON_BEHALF}"


def request_subscription(prefix: str, level: str, tenant: str = "+") -> str:
    return f"{prefix}/{tenant}/{level}/#"


def command_status_topic(prefix: str, tenant: str, device_id: str) -> str:
    return f"{prefix}/{tenant}/{COMMAND_STATUS}/{device_id}"


def command_status_subscription(prefix: str, tenant: str = "+") -> str:
    return f"{prefix}/{tenant}/{COMMAND_STATUS}/+"


def notice_topic(prefix: str, tenant: str, device_id: str) -> str:
    """Where an automation's notice about a device is published (devices/commands.py `Notice`)."""
    return f"{prefix}/{tenant}/{NOTICES}/{device_id}"


def notice_subscription(prefix: str, tenant: str = "+") -> str:
    return f"{prefix}/{tenant}/{NOTICES}/+"


def parse_device_uplink(prefix: str, topic: str) -> tuple[DeviceAddress, str]:
    """(device, level) of a topic a device publishes besides telemetry (DEVICE_UPLINK_LEVELS),
    or TopicError saying why it is not one."""
    head = prefix + "/"
    if not topic.startswith(head):
        raise TopicError(f"topic {topic!r} does not start with {head!r}")
    parts = topic[len(head) :].split("/", 3)
    if len(parts) != 4 or parts[3] not in DEVICE_UPLINK_LEVELS:
        levels = " or ".join(DEVICE_UPLINK_LEVELS)
        raise TopicError(
            f"topic {topic!r} must be {prefix}/{{tenant}}/{{device_type}}/{{device_id}}/({levels})"
        )
    tenant, device_type, device_id, level = parts
    check_identifier("tenant", tenant)
    check_identifier("device_id", device_id)
    return DeviceAddress(tenant, device_type, device_id), level
