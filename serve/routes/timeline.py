"""`GET /api/alerts/{id}/timeline`: one alert and who was told about it, how and when, as the
notifier stored it (storage/notifications.py): each message queued, held in quiet hours, sent,
retried or failed, each escalation step and repeat, and what stopped it (an acknowledgement, a
resolution). The alert's page shows it.

Scoped like every alert endpoint: an alert of a tenant the token does not see is a 404, told
apart from no alert at all by nothing. A channel is shown as the notifier stored it (its label
or scheme and server, never the URL, which may hold a token), and once more redacted here in
case a row holds more: a URL anywhere in a channel or a detail is cut to its shown form.
"""

from __future__ import annotations

import re

from fastapi import APIRouter
from pydantic import BaseModel, Field

from devices.rfc3339 import format_us
from ingest.alerts import acknowledge as acknowledging
from notify.model import Channel
from serve.auth import AUTH_ERRORS, Caller
from serve.errors import BadParameter, ErrorBody, UnknownAlert
from serve.state import Influx
from storage.alert_history import find_alert
from storage.alert_record import StoredChange
from storage.notifications import NotificationEvent, timeline

router = APIRouter()

_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>]*")


class TimelineEvent(BaseModel):
    ts: str = Field(description="when, RFC 3339 (UTC, microseconds)")
    event: str = Field(description="queued, held, sent, retrying, failed, escalated, "
                       "repeated, acknowledged or resolved")  # fmt: skip
    person: str = Field(description="who was (to be) told, or who acknowledged")
    channel: str = Field(description="how: the channel's label or scheme, never its URL")
    level: int = Field(description="the escalation step, 1 = the first (0: none)")
    detail: str = Field(description="why it failed or was held, what stopped it")
    message_id: str = Field(description="the message's id, the same at its receiver")


class AlertTimeline(BaseModel):
    alert: dict[str, object] = Field(description="the alert's newest change")
    events: list[TimelineEvent] = Field(description="oldest first")


def redact(text: str) -> str:
    """`text` with every URL in it cut to what `notify.model.Channel.shown` shows of it."""
    return _URL.sub(lambda m: Channel(url=m.group(0)).shown, text)


def event_json(event: NotificationEvent) -> TimelineEvent:
    return TimelineEvent(
        ts=format_us(event.ts_ns),
        event=event.event,
        person=event.person,
        channel=redact(event.channel),
        level=event.level,
        detail=redact(event.detail),
        message_id=event.message_id,
    )


def stored_json(stored: StoredChange) -> dict[str, object]:
    """An alert's newest stored change, with the keys of `/api/alerts` objects it has."""
    return {
        "id": stored.alert_id,
        "state": stored.state,
        "rule": stored.rule,
        "severity": stored.severity,
        "tenant": stored.tenant,
        "device_type": stored.device_type,
        "device_id": stored.device_id,
        "value": stored.value,
        "message": stored.message,
        "ts": format_us(stored.ts_ns),
        "first_seen": format_us(stored.first_seen_ns),
        "acknowledged_by": stored.acknowledged_by or None,
    }


@router.get(
    "/api/alerts/{alert_id}/timeline",
    response_model=AlertTimeline,
    responses={**AUTH_ERRORS, 404: {"model": ErrorBody}},
    tags=["alerts"],
)
async def alert_timeline(who: Caller, client: Influx, alert_id: str) -> AlertTimeline:
    """The alert and its notification timeline: every message, escalation and what stopped
    it, oldest first. Empty when nobody was to be told (no notifier, no route matched)."""
    try:
        acknowledging.check_alert_id(alert_id)
    except ValueError as exc:
        raise BadParameter(str(exc)) from None
    stored = await find_alert(client, alert_id)
    if stored is None or not who.sees(stored.tenant):
        raise UnknownAlert(f"no alert {alert_id} in {who.scope_words()}")
    events = await timeline(client, tenant=stored.tenant, alert_id=alert_id)
    return AlertTimeline(alert=stored_json(stored), events=[event_json(e) for e in events])
