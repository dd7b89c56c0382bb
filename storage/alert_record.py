"""One alert state change: what is published on MQTT, stored in `moclo_alerts` and notified.

An alert is an episode with an id: `raised` → (`acknowledged`) → `resolved`. Storage: the
measurement `ALERTS` of `schema.py`, with `acknowledged_by` (and `note`, if one was given) once
acknowledged; time = the change (the reading that caused it; for an acknowledgement, just after
the device's newest reading, so changes of one episode are in time order). `parse_alert_line`
reads such a line back (restoring state from the spool), and `parse_alert` the published JSON
(`Alert.to_json`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import orjson

from devices.base import parse_timestamp
from devices.rfc3339 import format_us
from devices.rule_base import SEVERITIES, Severity
from storage.lineprotocol import format_field, line_field_string
from storage.schema import (
    ACKNOWLEDGED_BY,
    ALERT_ID,
    ALERTS,
    DEVICE_ID,
    DEVICE_TYPE,
    FIRST_SEEN,
    KIND,
    LAST_SEEN,
    MESSAGE,
    NOTE,
    RULE,
    SEVERITY,
    STATE,
    TENANT,
    VALUE,
)

AlertState = Literal["raised", "acknowledged", "resolved"]
ALERT_STATES: tuple[AlertState, ...] = ("raised", "acknowledged", "resolved")


@dataclass(frozen=True, slots=True)
class Alert:
    """One change of an episode's state."""

    alert_id: str
    state: AlertState
    rule: str
    kind: str
    severity: Severity
    tenant: str
    device_type: str
    device_id: str
    value: float  # the value that caused this change (the rule kind says what it measures)
    message: str
    ts_ns: int  # when the change happened, in the readings' time
    first_seen_ns: int  # when the condition began
    last_seen_ns: int  # the newest reading that met the condition
    acknowledged_by: str = ""
    note: str = ""

    def as_dict(self) -> dict[str, object]:
        """The JSON form (published, POSTed to webhooks, printed by `moclo alerts --json`)."""
        body: dict[str, object] = {
            "id": self.alert_id,
            "state": self.state,
            "rule": self.rule,
            "kind": self.kind,
            "severity": self.severity,
            "tenant": self.tenant,
            "device_type": self.device_type,
            "device_id": self.device_id,
            "value": self.value,
            "message": self.message,
            "ts": format_us(self.ts_ns),
            "first_seen": format_us(self.first_seen_ns),
            "last_seen": format_us(self.last_seen_ns),
        }
        if self.acknowledged_by:
            body["acknowledged_by"] = self.acknowledged_by
        if self.note:
            body["note"] = self.note
        return body

    def to_json(self) -> bytes:
        return orjson.dumps(self.as_dict())

    def describe(self) -> str:
        mark = {"raised": "ALERT", "acknowledged": "ACK  ", "resolved": "CLEAR"}[self.state]
        by = f" by {self.acknowledged_by}" if self.state == "acknowledged" else ""
        return (
            f"{format_us(self.ts_ns)}  {mark} {self.severity:<8} {self.rule:<16} "
            f"{self.tenant}/{self.device_id}: {self.message}{by}  (id {self.alert_id})"
        )

    def to_line(self) -> str:
        acked = (
            f",{ACKNOWLEDGED_BY}={line_field_string(self.acknowledged_by)}"
            if self.acknowledged_by
            else ""
        )
        if self.note:
            acked += f",{NOTE}={line_field_string(self.note)}"
        return (
            f"{ALERTS.name},{DEVICE_ID}={self.device_id},{DEVICE_TYPE}={self.device_type},"
            f"{RULE}={self.rule},{SEVERITY}={self.severity},{TENANT}={self.tenant} "
            f"{ALERT_ID}={line_field_string(self.alert_id)}{acked},"
            f"{FIRST_SEEN}={self.first_seen_ns}i,{KIND}={line_field_string(self.kind)},"
            f"{LAST_SEEN}={self.last_seen_ns}i,{MESSAGE}={line_field_string(self.message)},"
            f"{STATE}={line_field_string(self.state)},{VALUE}={format_field(float(self.value))} "
            f"{self.ts_ns}"
        )


def alert_id(tenant: str, device_id: str, rule: str, first_seen_ns: int) -> str:
    """Deterministic, so the same episode seen again after a restart keeps its id."""
    key = f"{tenant}/{device_id}/{rule}/{first_seen_ns}".encode()
    return hashlib.sha1(key).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class StoredChange:
    """An alert change read back from InfluxDB or the spool (for restoring state)."""

    tenant: str
    device_type: str
    device_id: str
    rule: str
    severity: str
    state: str
    alert_id: str
    ts_ns: int
    first_seen_ns: int
    last_seen_ns: int
    value: float
    acknowledged_by: str
    message: str = ""  # read back by `moclo alerts`; not needed to restore state
    kind: str = ""

    @classmethod
    def from_point(
        cls, tags: Mapping[str, str], fields: Mapping[str, Any], ts_ns: int
    ) -> StoredChange:
        """From an `ALERTS` point, read back from a line or a query (missing or null
        fields: points written before they existed). KeyError without state or id."""
        return cls(
            tenant=tags[TENANT],
            device_type=tags[DEVICE_TYPE],
            device_id=tags[DEVICE_ID],
            rule=tags[RULE],
            severity=tags[SEVERITY],
            state=str(fields[STATE]),
            alert_id=str(fields[ALERT_ID]),
            ts_ns=ts_ns,
            first_seen_ns=int(fields.get(FIRST_SEEN) or ts_ns),
            last_seen_ns=int(fields.get(LAST_SEEN) or ts_ns),
            value=float(fields.get(VALUE) or 0.0),
            acknowledged_by=str(fields.get(ACKNOWLEDGED_BY) or ""),
            message=str(fields.get(MESSAGE) or ""),
            kind=str(fields.get(KIND) or ""),
        )

    def as_alert(self) -> Alert:
        """The change as it was published (what InfluxDB keeps of it)."""
        return Alert(
            alert_id=self.alert_id,
            state=self.state if self.state in ALERT_STATES else "raised",
            rule=self.rule,
            kind=self.kind,
            severity=self.severity if self.severity in SEVERITIES else "info",
            tenant=self.tenant,
            device_type=self.device_type,
            device_id=self.device_id,
            value=self.value,
            message=self.message,
            ts_ns=self.ts_ns,
            first_seen_ns=self.first_seen_ns,
            last_seen_ns=self.last_seen_ns,
            acknowledged_by=self.acknowledged_by,
        )


_FIELD = re.compile(r'([a-z_]+)=("(?:[^"\\]|\\.)*"|[^,\s]+)')


def parse_alert_line(line: str) -> StoredChange | None:
    """Reads back a line written by `Alert.to_line`; None for any other line."""
    if not line.startswith(ALERTS.name + ","):
        return None
    head, _, rest = line.partition(" ")
    fields_text, _, ts_text = rest.rpartition(" ")
    tags = dict(pair.split("=", 1) for pair in head.split(",")[1:])
    fields: dict[str, str | float | int] = {}
    for name, raw in _FIELD.findall(fields_text):
        if raw.startswith('"'):
            fields[name] = re.sub(r"\\(.)", r"\1", raw[1:-1])
        elif raw.endswith("i"):
            fields[name] = int(raw[:-1])
        else:
            fields[name] = float(raw)
    try:
        return StoredChange.from_point(tags, fields, int(ts_text))
    except (KeyError, ValueError):
        return None


def parse_alert(payload: object) -> Alert | None:
    """A published alert change (`Alert.to_json`) read back; None if it is not one."""
    try:
        body = orjson.loads(payload if isinstance(payload, (bytes, bytearray, str)) else b"")
        state, severity = body["state"], body["severity"]
        if state not in ALERT_STATES or severity not in SEVERITIES:
            return None
        return Alert(
            alert_id=str(body["id"]),
            state=cast(AlertState, state),
            rule=str(body["rule"]),
            kind=str(body.get("kind", "")),
            severity=cast(Severity, severity),
            tenant=str(body["tenant"]),
            device_type=str(body.get("device_type", "")),
            device_id=str(body["device_id"]),
            value=float(body.get("value", 0.0)),
            message=str(body.get("message", "")),
            ts_ns=parse_timestamp(body["ts"]),
            first_seen_ns=parse_timestamp(body.get("first_seen", body["ts"])),
            last_seen_ns=parse_timestamp(body.get("last_seen", body["ts"])),
            acknowledged_by=str(body.get("acknowledged_by") or ""),
            note=str(body.get("note") or ""),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
