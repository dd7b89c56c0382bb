"""The notification timeline: every message queued, held, sent or failed, every escalation
step and every acknowledgement or resolution that ended one, in measurement
`moclo_notifications`, so an alert's page can show who was told what, when, and how.

Declared in `storage/schema.py` (`NOTIFICATIONS`). Tags: `tenant`, `event` (one of `EVENTS`).
Fields: `alert_id` (or a notice's id), `device_id`, `rule`, `person`, `channel` (its shown
form, never the URL), `level` (the escalation step, 1 = the first), `message_id`, `detail`
(why it failed, was held, what acknowledged it). A person and a device are fields, not tags,
so a large fleet adds no series. Time: when the event happened (wall clock, ns); the writer
keeps it strictly increasing so no two events share a point.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from storage.influx import InfluxClient, influxql_literal
from storage.lineprotocol import escape_tag, line_field_string
from storage.schema import NOTIFICATIONS

Event = Literal[
    "queued",  # a message for a person is due (after grouping) or waiting for its time
    "held",  # in the person's quiet hours: sent when they end, if still open
    "sent",  # a channel accepted it
    "retrying",  # a channel failed; another attempt is scheduled (detail: why, when)
    "failed",  # a channel refused it for good, or every attempt failed
    "escalated",  # not acknowledged in time: the next step's people are told
    "repeated",  # still open after the route's repeat interval: told again
    "acknowledged",  # the escalation stopped (detail: by whom)
    "resolved",  # the escalation stopped because the alert was resolved
]
EVENTS: tuple[Event, ...] = (
    "queued", "held", "sent", "retrying", "failed", "escalated", "repeated", "acknowledged",
    "resolved",
)  # fmt: skip
_TEXT = ("alert_id", "device_id", "rule", "person", "channel", "message_id", "detail")


@dataclass(frozen=True, slots=True)
class NotificationEvent:
    tenant: str
    event: Event
    alert_id: str
    ts_ns: int
    device_id: str = ""
    rule: str = ""
    person: str = ""
    channel: str = ""  # Channel.shown: never the URL, which may hold a token
    level: int = 0
    message_id: str = ""
    detail: str = ""

    def to_line(self) -> str:
        fields = [
            f"{name}={line_field_string(value)}" for name in _TEXT if (value := getattr(self, name))
        ]
        fields.append(f"level={int(self.level)}i")
        return (
            f"{NOTIFICATIONS.name},event={self.event},tenant={escape_tag(self.tenant)} "
            f"{','.join(fields)} {self.ts_ns}"
        )

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> NotificationEvent:
        event = str(row["event"])
        return cls(
            tenant=str(row["tenant"]),
            event=event if event in EVENTS else "queued",
            alert_id=str(row.get("alert_id") or ""),
            ts_ns=int(row["time"]),
            level=int(row.get("level") or 0),
            **{name: str(row.get(name) or "") for name in _TEXT if name != "alert_id"},
        )


async def timeline(
    client: InfluxClient, *, tenant: str, alert_id: str, limit: int = 500
) -> list[NotificationEvent]:
    """One alert's (or notice's) notification events, oldest first."""
    query = (
        f'SELECT * FROM "{NOTIFICATIONS.name}" WHERE "tenant" = {influxql_literal(tenant)} '
        f'AND "alert_id" = {influxql_literal(alert_id)} ORDER BY time ASC LIMIT {int(limit)}'
    )
    return [NotificationEvent.from_row(row) for s in await client.query(query) for row in s.rows()]
