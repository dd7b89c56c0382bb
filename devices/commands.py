"""The downlink's contract: commands, their results, and desired state, as they travel.

A person never publishes to a device. They ask moclo (`command_request_topic`), moclo checks
who they are, what they may do, the device and the arguments, records the command in
`moclo_commands`, and only then sends it to the device (`command_topic`) with an id and an
expiry. The device answers on `command_result_topic`; moclo records each answer and tells the
people watching (`command_status_topic`). Desired state goes the same way: a request, checked
and recorded, then the whole desired document to the device (`desired_topic`), which reports
what it applied (`reported_topic`) and may ask for it at any time (`desired_get_topic`).

Only MQTT 3.1.1 QoS 1 and persistent sessions are relied on. A device that was away asks for
what it missed when it connects (`commands_get_topic`, `desired_get_topic`), so a broker that
lost its session, or a cluster node that never had it, costs nothing. A device executes a
command id at most once, however often it is delivered, and never one past its expiry: it
answers `expired` instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from devices.base import Timestamp

# A command id: a UUID, or whatever id the issuer chose to retry safely (the same id twice is
# one command, however often it is asked for).
COMMAND_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
COMMAND_ID_RULE = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"

# What a device answers: `accepted` (it will act; a long action answers again later), then
# one of `succeeded`, `failed` (it tried), `rejected` (it will not: busy, unsafe, unknown),
# `expired` (it received the command after its expiry and did not act).
DeviceStatus = Literal["accepted", "succeeded", "failed", "rejected", "expired"]
# What moclo adds: `sent` (checked, recorded and sent to the device), `refused` (moclo did not
# send it: the reason says who may, or what was wrong), and `expired` when no final answer
# came before the expiry.
CommandStatus = Literal["sent", "refused", "accepted", "succeeded", "failed", "rejected", "expired"]
COMMAND_STATUSES: tuple[CommandStatus, ...] = get_args(CommandStatus)
FINAL_STATUSES: frozenset[str] = frozenset(
    {"refused", "succeeded", "failed", "rejected", "expired"}
)

# Who may send a command or change a desired state, within the tenants they belong to: an
# `operator` clearance is for operators and clinicians; `clinician` for clinicians only (a
# pacemaker's settings). Viewers and apps send nothing; an admin manages tokens, not devices.
Clearance = Literal["operator", "clinician"]
CLEARANCES: tuple[Clearance, ...] = get_args(Clearance)
# The roles (of API tokens and MQTT accounts) each clearance admits.
ADMITTED_ROLES: dict[str, frozenset[str]] = {
    "operator": frozenset({"operator", "clinician"}),
    "clinician": frozenset({"clinician"}),
}

DEFAULT_EXPIRY_S = 300.0
MAX_EXPIRY_S = 7 * 24 * 3600.0  # beyond a week, an order is a desired state


def admits(clearance: Clearance, role: str) -> bool:
    """Whether someone in `role` (of the device's tenant) may act with this clearance."""
    return role in ADMITTED_ROLES[clearance]


class Strict(BaseModel):
    """The wire's rules for everything on the downlink: declared fields only, no strings for
    numbers, no NaN, immutable."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)


class NoArguments(Strict):
    """A command that takes no arguments."""


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One command a device type understands: adding one is one entry in the type's module."""

    name: str
    description: str
    arguments: type[Strict] = NoArguments
    clearance: Clearance = "operator"
    expiry_s: float = DEFAULT_EXPIRY_S
    # The shape of a `succeeded` answer's `output`, if the command reports something (a
    # pacemaker's read-out); None: the output is free-form or absent.
    output: type[Strict] | None = None

    def __post_init__(self) -> None:
        if not 0 < self.expiry_s <= MAX_EXPIRY_S:
            raise ValueError(f"command {self.name}: expiry_s must be in (0, {MAX_EXPIRY_S}]")


@dataclass(frozen=True, slots=True)
class DesiredSpec:
    """The settings a person may want a device type to have. Every field of `state` is
    optional: a request changes the fields it names and keeps the others."""

    state: type[Strict]
    clearance: Clearance = "operator"


CommandId = Annotated[str, Field(pattern=COMMAND_ID_RULE)]


class Command(Strict):
    """What the device receives on `command_topic`."""

    id: CommandId
    name: str
    args: dict[str, Any]
    issuer: Annotated[str, Field(description="who asked: an account or an API token's name")]
    created: Timestamp
    expires: Timestamp


class CommandResult(Strict):
    """What the device answers on `command_result_topic`."""

    id: CommandId
    status: DeviceStatus
    reason: Annotated[str | None, Field(max_length=500)] = None
    output: dict[str, Any] | None = None
    ts: Timestamp

    @model_validator(mode="after")
    def _reason_when_not_done(self) -> CommandResult:
        if self.status in ("failed", "rejected") and not self.reason:
            raise ValueError(f"a {self.status} answer must say why (reason)")
        return self


class CommandRequest(Strict):
    """What a person's client publishes on `command_request_topic`. `by` and `role` are
    believed only on a serve account's on-behalf topic (serve signed the person in)."""

    id: CommandId | None = None
    device: str
    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    expires_in_s: Annotated[float | None, Field(gt=0, le=MAX_EXPIRY_S)] = None
    by: str | None = None
    role: str | None = None


class CommandUpdate(Strict):
    """What moclo publishes on `command_status_topic`: one step of one command's life."""

    id: CommandId
    device: str
    device_type: str
    name: str
    status: CommandStatus
    reason: str | None = None
    output: dict[str, Any] | None = None
    issuer: str
    # What an automation did says why: the alert whose change made it act, and that change.
    alert: str | None = None
    trigger: str | None = None
    # A desired change's: the id its asker gave the request (DesiredRequest.request_id).
    request_id: str | None = None
    ts: Timestamp


class DesiredRequest(Strict):
    """What a person's client publishes on `desired_request_topic`: the fields to change."""

    device: str
    state: dict[str, Any]
    # The asker's own id for this request, echoed on every command-status update about it (the
    # version's id, `{device}-desired-{version}`, is not known until ingest takes it): two
    # changes asked at once by the same person are told apart by it.
    request_id: CommandId | None = None
    by: str | None = None
    role: str | None = None


class DesiredDocument(Strict):
    """The whole desired state of one device, as moclo sends it (`desired_topic`); `version`
    grows by one with each change, so a device can tell an old copy from a new one."""

    version: Annotated[int, Field(ge=0)]
    state: dict[str, Any]
    ts: Timestamp


class ReportedDocument(Strict):
    """What the device says it applied (`reported_topic`), and for which desired version."""

    version: Annotated[int, Field(ge=0, le=2**63 - 1)]  # what InfluxDB stores
    state: dict[str, Any]
    ts: Timestamp


def desired_command_id(device_id: str, version: int) -> str:
    """The id under which command-status tells of desired version `version` of a device:
    `{device_id}-desired-{version}`; a device id too long for that (ids are at most 64
    characters) is cut short, which keeps the id unique per device for every practical fleet."""
    suffix = f"-desired-{version}"
    return device_id[: 64 - len(suffix)] + suffix


class Notice(Strict):
    """What moclo publishes on `notice_topic` when an automation sends a notice: which
    automation, about which device and alert, and its message."""

    automation: str
    device: str
    device_type: str
    rule: str
    alert: str
    message: Annotated[str, Field(max_length=2000)]
    ts: Timestamp
