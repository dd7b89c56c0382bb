"""The words of a message: one title and body for one person, listing every grouped change.

A title says how many and of what ("3 cows with fever on farm-7"); the body lists each change
(device, rule, message, time in the person's time zone) and ends with one acknowledgement link
per open alert, so a tap acknowledges exactly the alert it names and never its neighbours.
Push services cut long texts (Pushover at 1,024 characters, ntfy at 4 KB), so a storm's message
lists the first `LISTED` changes and says how many more there are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from devices.rule_base import SEVERITIES, Severity
from notify.model import Person, Subject

Phase = Literal["raised", "escalated", "repeated", "acknowledged", "resolved", "notice"]
LISTED = 10  # changes listed, and acknowledgement links given, in one message

_PREFIX: dict[Phase, str] = {
    "raised": "",
    "notice": "",
    "escalated": "Not acknowledged yet: ",
    "repeated": "Still open: ",
    "acknowledged": "Acknowledged: ",
    "resolved": "Resolved: ",
}


def highest(subjects: Sequence[Subject]) -> Severity:
    return max((s.severity for s in subjects), key=SEVERITIES.index)


def title(phase: Phase, subjects: Sequence[Subject]) -> str:
    """E.g. `[critical] 3 cows with fever on farm-7`, or `[warning] pm-17 battery low on
    cardiology` for one change."""
    first = subjects[0]
    rule = first.rule.replace("_", " ")
    if len(subjects) == 1:
        what = f"{first.device_id} {rule}"
    elif all(s.device_type == first.device_type and s.rule == first.rule for s in subjects):
        what = f"{len(subjects)} {first.device_type}s with {rule}"
    else:
        what = f"{len(subjects)} alerts"
    tenants = sorted({s.tenant for s in subjects})
    return f"[{highest(subjects)}] {_PREFIX[phase]}{what} on {', '.join(tenants)}"


def body(
    phase: Phase,
    level: int,
    subjects: Sequence[Subject],
    person: Person,
    ack_link: Callable[[str, str], str | None],
) -> str:
    zone = ZoneInfo(person.time_zone)
    lines = [_line(s, zone) for s in subjects[:LISTED]]
    if len(subjects) > LISTED:
        lines.append(f"… and {len(subjects) - LISTED} more: see the dashboard")
    if phase == "escalated":
        lines.insert(0, f"Escalation level {level}: nobody has acknowledged these yet.")
    if phase in ("raised", "escalated", "repeated"):
        links = [
            (s.device_id, link)
            for s in subjects[:LISTED]
            if s.kind == "alert" and (link := ack_link(s.id, person.name))
        ]
        if links:
            lines.append("")
            lines.extend(f"Acknowledge {device}: {link}" for device, link in links)
    return "\n".join(lines)


def _line(subject: Subject, zone: ZoneInfo) -> str:
    at = datetime.fromtimestamp(subject.ts_ns / 1e9, UTC).astimezone(zone)
    by = f" (by {subject.acknowledged_by})" if subject.acknowledged_by else ""
    return (
        f"- {subject.device_id} · {subject.rule} · {subject.message}{by} · {at:%Y-%m-%d %H:%M %Z}"
    )
