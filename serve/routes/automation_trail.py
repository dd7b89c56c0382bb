"""`GET /api/devices/{tenant}/{device_id}/automation-actions?since=|from=&to=`: what the
automations did about this device's alerts of a time range (the episodes `/api/episodes`
gives): each command or notice an automation asked for (`moclo_commands`, account
`automation`, issuer `automation NAME`), the alert change that triggered it, the device it
acted on and its status now. The dashboard's map labels an alert's marker with it.

An action is tied to its alert exactly, not by time: the id of what an automation does is made
from its name and the alert's id and state (`ingest/automations/runner.py` `action_key`), so a
stored id is matched against the ids this device's episodes would give. A desired-state change
(whose id is the device's version) is matched by the alert id its record carries (`alert`,
with the change in `trigger`), as are the commands and notices recorded since they carry it.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from devices.rfc3339 import format_us
from ingest.automations.file import TRIGGERS
from ingest.automations.runner import ACCOUNT, action_key
from query.alerts import Episode, device_episodes
from query.request import parse_series_request
from serve.auth import AUTH_ERRORS, Caller
from serve.errors import ErrorBody
from serve.routes.commands import device_type_of
from serve.state import Influx
from storage.commands import CommandEvent, command_life, first_steps_by_account

router = APIRouter()
ISSUER = f"{ACCOUNT} "  # an automation's issuer is `automation NAME`
# An automation acts when ingest judges the reading, after the reading's own time; a device
# clock a little ahead of ingest's is allowed for.
_CLOCK_SLACK_NS = 300 * 1_000_000_000


class AutomationAction(BaseModel):
    alert_id: str = Field(description="the alert whose change triggered it")
    rule: str
    on: Literal["raised", "resolved"] = Field(description="the alert change that triggered it")
    automation: str
    kind: Literal["command", "desired", "notice"]
    id: str = Field(description="the command's (or notice's) id")
    device_id: str = Field(description="the device acted on (a notice's: the alert's device)")
    name: str = Field(
        description="the command's name; `desired` for a desired change; a notice's: the "
        "automation's"
    )
    status: str = Field(description="the latest step's")
    ts: str = Field(description="when the automation asked (RFC 3339)")


class AutomationActions(BaseModel):
    actions: list[AutomationAction] = Field(description="oldest first")


@router.get(
    "/api/devices/{tenant}/{device_id}/automation-actions",
    response_model=AutomationActions,
    responses={**AUTH_ERRORS, 404: {"model": ErrorBody}},
    tags=["alerts"],
)
async def automation_actions(
    who: Caller,
    client: Influx,
    tenant: str,
    device_id: str,
    since: Annotated[str | None, Query(description="e.g. 3d (default 1h)")] = None,
    from_: Annotated[str | None, Query(alias="from")] = None,
    to: Annotated[str | None, Query()] = None,
) -> AutomationActions:
    """What automations did about this device's alert episodes in the range."""
    await device_type_of(client, who, tenant, device_id)
    window = parse_series_request(
        device_id=device_id, tenant=tenant, since=since, start=from_, end=to,
        now_ns=time.time_ns(),
    )  # fmt: skip
    episodes = await device_episodes(
        client, tenant=tenant, device_id=device_id, start_ns=window.start_ns, end_ns=window.end_ns
    )
    if not episodes:
        return AutomationActions(actions=[])
    since_ns = min(e.start_ns for e in episodes) - _CLOCK_SLACK_NS
    asked = await first_steps_by_account(client, tenant, ACCOUNT, since_ns=since_ns)
    found = []
    for step, episode, on in _matches(asked, episodes):
        life = await command_life(client, step.id, tenant=tenant)
        found.append(_action(step, episode, on, life[-1].status if life else step.status))
    return AutomationActions(actions=found)


def _matches(
    asked: list[CommandEvent], episodes: list[Episode]
) -> list[tuple[CommandEvent, Episode, Literal["raised", "resolved"]]]:
    """Each step whose id is what its automation would give one of these episodes' changes, or
    whose record names one of these episodes' alerts (a desired change)."""
    triggers = {
        action_key(name, episode.alert_id, on): (episode, on)
        for name in {s.issuer.removeprefix(ISSUER) for s in asked if s.issuer.startswith(ISSUER)}
        for episode in episodes
        for on in TRIGGERS
    }
    by_alert = {episode.alert_id: episode for episode in episodes}
    found: list[tuple[CommandEvent, Episode, Literal["raised", "resolved"]]] = []
    for step in asked:
        if step.id in triggers:
            found.append((step, *triggers[step.id]))
        elif step.kind == "desired" and step.alert in by_alert:
            on: Literal["raised", "resolved"] = (
                "resolved" if " resolved on " in step.trigger else "raised"
            )
            found.append((step, by_alert[step.alert], on))
    return found


def _action(
    step: CommandEvent, episode: Episode, on: Literal["raised", "resolved"], status: str
) -> AutomationAction:
    return AutomationAction(
        alert_id=episode.alert_id,
        rule=episode.rule,
        on=on,
        automation=step.issuer.removeprefix(ISSUER),
        kind="notice"
        if step.kind == "notice"
        else "desired"
        if step.kind == "desired"
        else "command",
        id=step.id,
        device_id=step.device_id,
        name=step.name,
        status=status,
        ts=format_us(step.ts_ns),
    )
