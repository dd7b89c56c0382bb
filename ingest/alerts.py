"""Where an alert is born: rules evaluated on each valid reading, one alert per episode.

An episode starts when a rule's condition is met (`raised`) and ends when the value is back on
the safe side of the rule's clear level (`resolved`); readings in between change nothing, so a
fever that lasts six hours is one alert, not seven hundred. Rules are evaluated on the reading's
own timestamp: a reading older than the newest one already seen from that device is stored but
not evaluated, so a late or redelivered reading cannot reopen or close an episode.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import orjson

from devices.base import format_timestamp
from devices.catalogue import DEVICE_TYPES
from devices.rules import Rule, Severity
from devices.types import DeviceType
from ingest.decode import ValidReading
from ingest.lineprotocol import ALERTS_MEASUREMENT, format_field, quote_string

AlertState = Literal["raised", "resolved"]


@dataclass(frozen=True, slots=True)
class Alert:
    """One change of an episode's state, as published and stored."""

    alert_id: str
    state: AlertState
    rule: str
    severity: Severity
    tenant: str
    device_type: str
    device_id: str
    value: float
    message: str
    ts_ns: int  # the reading that caused this change
    raised_ns: int  # when the episode began

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "id": self.alert_id,
                "state": self.state,
                "rule": self.rule,
                "severity": self.severity,
                "tenant": self.tenant,
                "device_type": self.device_type,
                "device_id": self.device_id,
                "value": self.value,
                "message": self.message,
                "ts": format_timestamp(self.ts_ns),
                "raised_at": format_timestamp(self.raised_ns),
            }
        )

    def to_line(self) -> str:
        return (
            f"{ALERTS_MEASUREMENT},device_id={self.device_id},device_type={self.device_type},"
            f"rule={self.rule},severity={self.severity},tenant={self.tenant} "
            f"alert_id={quote_string(self.alert_id)},message={quote_string(self.message)},"
            f"state={quote_string(self.state)},value={format_field(float(self.value))} "
            f"{self.ts_ns}"
        )


def alert_id(tenant: str, device_id: str, rule: str, raised_ns: int) -> str:
    """Deterministic, so the same episode replayed after a restart keeps its id."""
    key = f"{tenant}/{device_id}/{rule}/{raised_ns}".encode()
    return hashlib.sha1(key).hexdigest()[:12]


@dataclass(slots=True)
class _Episode:
    raised_ns: int
    alert_id: str


class AlertEngine:
    """Evaluates each device type's rules on readings, in order, and reports state changes."""

    def __init__(self, catalogue: Mapping[str, DeviceType] = DEVICE_TYPES) -> None:
        self._rules: dict[str, tuple[Rule, ...]] = {
            name: device.rules for name, device in catalogue.items()
        }
        self._open: dict[tuple[str, str, str], _Episode] = {}
        self._newest_ns: dict[tuple[str, str], int] = {}

    def open_alerts(self) -> int:
        return len(self._open)

    def evaluate(self, item: ValidReading) -> list[Alert]:
        """The alerts raised or resolved by this reading (usually none)."""
        address, reading = item.address, item.reading
        rules = self._rules.get(address.device_type, ())
        if not rules:
            return []
        device_key = (address.tenant, address.device_id)
        newest = self._newest_ns.get(device_key)
        if newest is not None and reading.ts <= newest:
            return []
        self._newest_ns[device_key] = reading.ts

        changes: list[Alert] = []
        for rule in rules:
            value = float(getattr(reading, rule.field))
            key = (address.tenant, address.device_id, rule.name)
            episode = self._open.get(key)
            if episode is None and rule.is_triggered(value):
                episode = _Episode(
                    reading.ts, alert_id(address.tenant, address.device_id, rule.name, reading.ts)
                )
                self._open[key] = episode
                state: AlertState = "raised"
            elif episode is not None and rule.is_cleared(value):
                del self._open[key]
                state = "resolved"
            else:
                continue
            message = rule.message.format(value=value)
            if state == "resolved":
                message = f"resolved: {message}"
            changes.append(
                Alert(
                    alert_id=episode.alert_id,
                    state=state,
                    rule=rule.name,
                    severity=rule.severity,
                    tenant=address.tenant,
                    device_type=address.device_type,
                    device_id=address.device_id,
                    value=value,
                    message=message,
                    ts_ns=reading.ts,
                    raised_ns=episode.raised_ns,
                )
            )
        return changes
