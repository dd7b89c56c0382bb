"""What the notifier receives, read into `Subject`s: alert changes (`{p}/{tenant}/alerts/{id}`,
`storage.alert_record.Alert.to_json`) and automation notices (`{p}/{tenant}/notices/{id}`,
`devices.commands.Notice`). Anything else is a `Refusal` with its reason: counted, logged and
acknowledged, so one bad message is never delivered again and again.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from devices.commands import Notice
from devices.rule_base import Severity
from devices.topics import NOTICES
from notify.model import Subject
from storage.alert_record import parse_alert

# A notice says nothing of severity: an automation sends one because something needs a
# person, so it is treated as a warning (a route's `min_severity = "critical"` leaves it out).
NOTICE_SEVERITY: Severity = "warning"


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str  # a short code, the label of moclo_notify_refused_total
    detail: str


def read_subject(prefix: str, topic: str, payload: bytes) -> Subject | Refusal:
    """The subject a message on `topic` stands for, or why it stands for none."""
    levels = topic.split("/")
    prefix_levels = prefix.split("/")
    if levels[: len(prefix_levels)] != prefix_levels or len(levels) != len(prefix_levels) + 3:
        return Refusal("unexpected_topic", f"{topic!r} is not an alert or notice topic")
    tenant, level, device_id = levels[len(prefix_levels) :]
    if level == "alerts":
        return _alert(tenant, device_id, payload)
    if level == NOTICES:
        return _notice(tenant, device_id, payload)
    return Refusal("unexpected_topic", f"{topic!r} is not an alert or notice topic")


def _alert(tenant: str, device_id: str, payload: bytes) -> Subject | Refusal:
    alert = parse_alert(payload)
    if alert is None:
        return Refusal("invalid_alert", "not an alert change (storage.alert_record.Alert)")
    if (alert.tenant, alert.device_id) != (tenant, device_id):
        return Refusal("topic_mismatch", "the change names another tenant or device than its topic")
    return Subject(
        kind="alert",
        id=alert.alert_id,
        state=alert.state,
        tenant=alert.tenant,
        device_type=alert.device_type,
        device_id=alert.device_id,
        rule=alert.rule,
        severity=alert.severity,
        message=alert.message,
        ts_ns=alert.ts_ns,
        acknowledged_by=alert.acknowledged_by,
    )


def _notice(tenant: str, device_id: str, payload: bytes) -> Subject | Refusal:
    try:
        notice = Notice.model_validate_json(payload)
    except ValidationError as exc:
        return Refusal("invalid_notice", f"not a notice: {exc.error_count()} problem(s)")
    if notice.device != device_id:
        return Refusal("topic_mismatch", "the notice names another device than its topic")
    return Subject(
        kind="notice",
        # One automation, one alert, one moment: a notice published again is the same one.
        id=f"{notice.automation}/{notice.alert}/{notice.ts}",
        state="notice",
        tenant=tenant,
        device_type=notice.device_type,
        device_id=notice.device,
        rule=notice.automation,
        severity=NOTICE_SEVERITY,
        message=notice.message,
        ts_ns=notice.ts,  # already nanoseconds (devices.base.Timestamp)
    )
