"""What became of commands and desired state, read from `moclo_commands` (storage/commands.py),
within the token's tenants; any role that sees a device sees its record:

- `GET /api/devices/{tenant}/{device_id}/commands/{id}`: one command's life, step by step
  (`sent`, the device's answers, `expired` or `refused`), and its status now; 404 if the
  device has no command with that id.
- `GET /api/devices/{tenant}/{device_id}/command-history?limit=&kind=`: the device's record,
  newest first: commands, desired changes (who, from what, to what) and reported states, so
  "who changed this pacemaker, when, from what to what" is one request.
- `GET /api/devices/{tenant}/{device_id}/desired`: the desired document, what the device last
  reported, and where they differ.

Times are RFC 3339, as everywhere in the API.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from devices.commands import COMMAND_ID
from devices.rfc3339 import format_us
from serve.auth import AUTH_ERRORS, Caller
from serve.errors import BadParameter, ErrorBody, UnknownCommand
from serve.routes.commands import device_type_of
from serve.state import Influx
from storage.commands import CommandEvent, Kind, command_life, desired_states, device_history

router = APIRouter()
_ERRORS: dict[int | str, dict[str, Any]] = {**AUTH_ERRORS, 404: {"model": ErrorBody}}
_TIMES = {
    "ts_ns": "ts",
    "created_ns": "created",
    "expires_ns": "expires",
    "device_ts_ns": "device_ts",
}


class CommandLife(BaseModel):
    id: str
    tenant: str
    device: str
    name: str
    status: str = Field(description="the latest step's")
    reason: str | None = Field(description="the latest step's, if it gave one")
    output: dict[str, Any] | None = Field(description="the device's report, if it sent one")
    steps: list[dict[str, Any]] = Field(description="oldest first")


class History(BaseModel):
    events: list[dict[str, Any]] = Field(description="newest first")


class DesiredView(BaseModel):
    desired: dict[str, Any] | None = Field(description="version, state, ts, issuer; or none")
    reported: dict[str, Any] | None = Field(description="version, state, ts; or none")
    confirmed_version: int = Field(description="the newest desired version the device applied")
    differences: dict[str, dict[str, Any]] = Field(
        description="each desired setting the device does not report (yet): desired, reported"
    )


def step_json(event: CommandEvent) -> dict[str, Any]:
    """A stored step as the API shows it: times in RFC 3339 instead of nanoseconds."""
    body = event.as_dict()
    for ns_key, key in _TIMES.items():
        if ns_key in body:
            body[key] = format_us(body.pop(ns_key))
    return body


def _applied(wanted: Any, reported: Any) -> bool:
    """Whether a reported setting is the desired one. A setting of named parts (a meter's
    `appliances`) is desired part by part: the device reports every part it has, so the parts
    nobody named are no difference."""
    if isinstance(wanted, dict) and isinstance(reported, dict):
        return all(_applied(value, reported.get(part)) for part, value in wanted.items())
    return bool(wanted == reported)


@router.get(
    "/api/devices/{tenant}/{device_id}/commands/{command_id}",
    response_model=CommandLife,
    responses=_ERRORS,
    tags=["commands"],
)
async def command_status(
    who: Caller, client: Influx, tenant: str, device_id: str, command_id: str
) -> CommandLife:
    """One command's life and its status now."""
    await device_type_of(client, who, tenant, device_id)
    if COMMAND_ID.fullmatch(command_id) is None:
        raise BadParameter(f"{command_id!r} is not a command id: letters, digits, _ and -")
    steps = [
        e for e in await command_life(client, command_id, tenant=tenant) if e.device_id == device_id
    ]
    if not steps:
        raise UnknownCommand(f"{tenant}/{device_id} has no command {command_id!r}")
    last = steps[-1]
    return CommandLife(
        id=command_id,
        status=last.status,
        name=last.name,
        tenant=tenant,
        device=device_id,
        reason=last.reason or None,
        output=next((s.output for s in reversed(steps) if s.output), None),
        steps=[step_json(s) for s in steps],
    )


@router.get(
    "/api/devices/{tenant}/{device_id}/command-history",
    response_model=History,
    responses=_ERRORS,
    tags=["commands"],
)
async def command_history(
    who: Caller,
    client: Influx,
    tenant: str,
    device_id: str,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    kind: Annotated[Kind | None, Query(description="command, desired or reported")] = None,
) -> History:
    """The device's commands, desired changes and reported states, newest first."""
    await device_type_of(client, who, tenant, device_id)
    events = await device_history(client, tenant, device_id, limit=limit, kind=kind)
    return History(events=[step_json(e) for e in events])


@router.get(
    "/api/devices/{tenant}/{device_id}/desired",
    response_model=DesiredView,
    responses=_ERRORS,
    tags=["commands"],
)
async def desired(who: Caller, client: Influx, tenant: str, device_id: str) -> DesiredView:
    """The desired state, what the device last reported, and where they differ."""
    await device_type_of(client, who, tenant, device_id)
    found = await desired_states(client, tenant=tenant, device_id=device_id)
    reports = await device_history(client, tenant, device_id, limit=1, kind="reported")
    wanted = found[0] if found else None
    report = reports[0] if reports else None
    reported_state = (report.state or {}) if report is not None else {}
    differences = {
        name: {"desired": value, "reported": reported_state.get(name)}
        for name, value in (wanted.state if wanted else {}).items()
        if not _applied(value, reported_state.get(name))
    }
    return DesiredView(
        desired=None
        if wanted is None
        else {
            "version": wanted.version,
            "state": wanted.state,
            "ts": format_us(wanted.ts_ns),
            "issuer": wanted.issuer or None,
        },
        reported=None
        if report is None
        else {"version": report.version, "state": reported_state, "ts": format_us(report.ts_ns)},
        confirmed_version=wanted.confirmed_version if wanted else 0,
        differences=differences,
    )
