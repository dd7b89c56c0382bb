"""Acting on a device over HTTP, within the token's tenants (serve/commanding.py says how serve
asks ingest, the gateway, for a person):

- `GET /api/devices/{tenant}/{device_id}/commands`: the device type's commands, their
  arguments as JSON Schema with bounds, and whether this token may send each (if not, who may);
- `POST /api/devices/{tenant}/{device_id}/commands` `{"name", "args"?, "id"?, "expires_in_s"?}`:
  asks for a command; 202 with its id, or with `?wait=S` its outcome;
- `PUT /api/devices/{tenant}/{device_id}/desired` `{"state": {...}}`: changes the settings it
  names in the device's desired state (the others are kept); 202 with its `request_id`, which
  every command-status update about it echoes (its version's id is ingest's to give), or with
  `?wait=S` as for commands.

| answer | when |
|---|---|
| 200 | `?wait=S`: a final status came within S s (`succeeded`, `failed`, `rejected`, |
|     | `expired`, or `refused` by ingest, with the reason) |
| 202 | asked: the id to follow (`/api/stream`'s `command` events); with `?wait=S`, the |
|     | last status heard (`sent`, `accepted`) |
| 400 | a malformed body or parameter |
| 403 | a tenant outside the token's, or a role that may not (the message names the one needed) |
| 404 | no such device in the token's tenants |
| 422 | a command the type does not have, or arguments out of bounds (lists the bounds) |
| 503 | the broker or the database cannot be reached |
| 504 | `?wait=S`: ingest announced nothing within S s: is it running? |

The same `id` twice is one command: asking again (after a timeout, say) re-announces its status
rather than acting twice, so a client that sets its own id may retry safely. An id another
person's command already has is refused unannounced (a 504 with `?wait`), and never answered
with that other command's outcome.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from core.settings import Settings
from devices.catalogue import get_device_type
from devices.commands import (
    FINAL_STATUSES,
    MAX_EXPIRY_S,
    CommandId,
    CommandRequest,
    CommandUpdate,
    DesiredRequest,
)
from devices.topics import COMMAND_REQUESTS, DESIRED_REQUESTS
from devices.types import DeviceType
from query.fleet import find_device
from serve.auth import AUTH_ERRORS, Caller
from serve.command_watch import update_json
from serve.commanding import (
    Commander,
    checked_arguments,
    checked_desired,
    command_json,
    desired_json,
    new_command_id,
    refusal,
)
from serve.errors import ErrorBody, Forbidden, Unprocessable
from serve.routes.scope import checked, tenant_param
from serve.state import Hub, Influx
from storage.influx import InfluxClient

router = APIRouter()
_ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    **{status: {"model": ErrorBody} for status in (404, 422, 504)},
}
Wait = Annotated[
    float | None,
    Query(ge=0, le=60, description="seconds to wait for the outcome (default: answer at once)"),
]


class CommandOrder(BaseModel):
    name: str = Field(description="one of the device type's commands")
    args: dict[str, Any] = Field(default_factory=dict, description="its arguments")
    id: CommandId | None = Field(
        default=None, description="your id, to retry safely (default: a new one)"
    )
    expires_in_s: float | None = Field(
        default=None, gt=0, le=MAX_EXPIRY_S, description="default: the command's own expiry"
    )


class DesiredChange(BaseModel):
    state: dict[str, Any] = Field(description="the settings to change; the others are kept")


class Outcome(BaseModel):
    """A command's status: `requested` (asked, nothing heard yet), or as ingest announced it."""

    model_config = {"extra": "allow"}
    id: str | None = Field(
        default=None,
        description="the command's id; a desired change's version (`{device}-desired-{version}`) "
        "once ingest announced it (absent from a desired change's first 202)",
    )
    request_id: str | None = Field(
        default=None,
        description="a desired change's request, echoed by every update about it",
    )
    status: str


class Catalogue(BaseModel):
    tenant: str
    device_id: str
    device_type: str
    commands: list[dict[str, Any]]
    desired: dict[str, Any] | None


def keep(app: FastAPI, settings: Settings) -> None:
    """Serves these endpoints' requests through the broker of `settings`."""
    app.state.commander = Commander(settings)


async def _commander(request: Request) -> Commander:
    commander: Commander = request.app.state.commander
    return commander


Asker = Annotated[Commander, Depends(_commander)]


async def device_type_of(
    client: InfluxClient, who: Caller, tenant: str, device_id: str
) -> DeviceType:
    """The type of a device the token sees: 403 for another tenant, 404 if none is stored."""
    tenant_param(who, tenant)
    checked("device_id", device_id)
    ref = await find_device(client, device_id, tenant=tenant)
    return get_device_type(ref.device_type)


@router.get(
    "/api/devices/{tenant}/{device_id}/commands",
    response_model=Catalogue,
    responses=_ERRORS,
    tags=["commands"],
)
async def catalogue(who: Caller, client: Influx, tenant: str, device_id: str) -> Catalogue:
    """What the device's type can be told, with bounds, and whether this token may tell it."""
    device_type = await device_type_of(client, who, tenant, device_id)
    desired = device_type.desired
    return Catalogue(
        tenant=tenant,
        device_id=device_id,
        device_type=device_type.name,
        commands=[command_json(spec, who.role) for spec in device_type.commands],
        desired=None if desired is None else desired_json(desired, who.role),
    )


@router.post(
    "/api/devices/{tenant}/{device_id}/commands",
    response_model=Outcome,
    status_code=202,
    responses={**_ERRORS, 200: {"model": Outcome}},
    tags=["commands"],
)
async def command(
    who: Caller,
    client: Influx,
    hub: Hub,
    asker: Asker,
    tenant: str,
    device_id: str,
    order: CommandOrder,
    wait: Wait = None,
) -> JSONResponse:
    """Asks ingest to send a command to the device, as the token's name. Needs a token whose
    role the command admits (an operator's or a clinician's; a pacemaker's, a clinician's)."""
    device_type = await device_type_of(client, who, tenant, device_id)
    try:
        spec = device_type.command(order.name)
    except KeyError as exc:
        raise Unprocessable(exc.args[0]) from None
    why_not = refusal(spec.clearance, who.role, f"`{spec.name}`")
    if why_not is not None:
        raise Forbidden(why_not)
    checked_arguments(device_type, spec, order.args)
    command_id = order.id or new_command_id()
    request = CommandRequest(
        id=command_id,
        device=device_id,
        name=spec.name,
        args=order.args,
        expires_in_s=order.expires_in_s,
        by=who.name,
        role=who.role,
    )
    topic = asker.topic(tenant, COMMAND_REQUESTS)
    asked = {"id": command_id, "tenant": tenant, "device": device_id, "name": spec.name}
    # A command's id may be the client's, and another account may have taken it first: only
    # an update naming this person as the asker answers them.
    return await _ask_and_wait(
        hub, asker, tenant, device_id, topic, request, asked, wait,
        lambda u: u.id == command_id and _asked_by(u, who.name, asker),
    )  # fmt: skip


@router.put(
    "/api/devices/{tenant}/{device_id}/desired",
    response_model=Outcome,
    status_code=202,
    responses={**_ERRORS, 200: {"model": Outcome}},
    tags=["commands"],
)
async def change_desired(
    who: Caller,
    client: Influx,
    hub: Hub,
    asker: Asker,
    tenant: str,
    device_id: str,
    change: DesiredChange,
    wait: Wait = None,
) -> JSONResponse:
    """Asks ingest to change the named settings of the device's desired state, as the token's
    name; the device applies it when it is connected, or when it comes back."""
    device_type = await device_type_of(client, who, tenant, device_id)
    spec = device_type.desired
    if spec is None:
        raise Unprocessable(f"a {device_type.name} has no settings to desire")
    why_not = refusal(spec.clearance, who.role, f"changing a {device_type.name}'s desired state")
    if why_not is not None:
        raise Forbidden(why_not)
    checked_desired(device_type, spec, change.state)
    # The version's id is ingest's to give; the request's id is ours, and every update about
    # this request echoes it, so two changes asked at once by one person are told apart. Every
    # account of the tenant reads that echo and may ask under the same id: only an update
    # naming this person as its asker answers them.
    request_id = new_command_id()
    request = DesiredRequest(
        device=device_id, state=change.state, request_id=request_id, by=who.name, role=who.role
    )
    topic = asker.topic(tenant, DESIRED_REQUESTS)
    asked = {"request_id": request_id, "tenant": tenant, "device": device_id, "name": "desired"}
    return await _ask_and_wait(
        hub,
        asker,
        tenant,
        device_id,
        topic,
        request,
        asked,
        wait,
        lambda update: update.request_id == request_id and _asked_by(update, who.name, asker),
    )


def _asked_by(update: CommandUpdate, person: str, asker: Commander) -> bool:
    """Whether `update` is about a request of `person` through this serve: it names them, or
    serve's own account (a refusal made before the person could be believed: the account is
    not in the registry). Another account of the tenant may ask under the same id."""
    return update.issuer in (person, asker.account)


async def _ask_and_wait(
    hub: Hub,
    asker: Commander,
    tenant: str,
    device_id: str,
    topic: str,
    request: CommandRequest | DesiredRequest,
    asked: dict[str, Any],
    wait_s: float | None,
    mine: Callable[[CommandUpdate], bool],
) -> JSONResponse:
    """Publishes `request`; with `wait_s`, answers with what became of it (see the table)."""
    with hub.commands.watch(tenant, device_id) as updates:
        await asker.ask(topic, request)
        if not wait_s:
            return JSONResponse({**asked, "status": "requested"}, status_code=202)
        heard = await _outcome(updates, mine, wait_s)
    if heard is None:
        followed = asked.get("id") or asked["request_id"]
        return JSONResponse(
            {
                "error": f"asked, but ingest announced nothing about {followed} within "
                f"{wait_s:g} s: is `moclo ingest` running? (An id that already names another "
                "person's command is refused unannounced: give yours an id of its own.) The "
                "live stream tells what becomes of it"
            },
            status_code=504,
        )
    final = heard.status in FINAL_STATUSES
    return JSONResponse(update_json(tenant, heard), status_code=200 if final else 202)


async def _outcome(
    updates: asyncio.Queue[CommandUpdate], mine: Callable[[CommandUpdate], bool], wait_s: float
) -> CommandUpdate | None:
    """The final update of the request among `updates` within `wait_s`, or the last heard."""
    deadline = time.monotonic() + wait_s
    last = None
    while (left := deadline - time.monotonic()) > 0:
        try:
            update = await asyncio.wait_for(updates.get(), left)
        except TimeoutError:
            break
        if mine(update):
            last = update
            if update.status in FINAL_STATUSES:
                break
    return last
