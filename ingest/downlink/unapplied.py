"""`desired_not_applied`: an alert when a device has not applied its desired state in time.

When a desired version is sent, the device has MOCLO_DESIRED_GRACE (default 10 minutes) to
report that version (or a later one) on `reported`; past it, an alert is raised for the device
through the alert machinery (published on the alerts topics, stored in `moclo_alerts`, sent to
the notifiers, acknowledged like any other). It is resolved when the device reports the version
it was sent. One episode per device while it is out of step: a newer version sent meanwhile
keeps the episode (and the deadline) of the first unapplied one.

The alert engine judges readings; this episode follows the downlink, so the gateway keeps it:
restored at start from `moclo_alerts` (the engine leaves this rule's changes to the gateway)
and from the desired documents (a deadline is the unapplied version's time plus the grace).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from devices.rule_base import format_seconds
from ingest.alerts import AcknowledgementRepeated
from storage.alert_record import Alert, StoredChange, alert_id

RULE = "desired_not_applied"
KIND = "desired"
_NS = 1_000_000_000


@dataclass(slots=True)
class _Watch:
    device_type: str
    version: int
    since_ns: int  # when the first unapplied version was sent


class Unapplied:
    def __init__(self, grace_s: float) -> None:
        self.grace_ns = int(grace_s * _NS)
        self._watches: dict[tuple[str, str], _Watch] = {}  # (tenant, device id)
        self._open: dict[tuple[str, str], Alert] = {}

    def sent(self, tenant: str, device_type: str, device_id: str, version: int, ts: int) -> None:
        """A desired version was sent: the device has the grace to apply it."""
        watch = self._watches.get((tenant, device_id))
        if watch is None or watch.device_type != device_type:  # (the id's new device: afresh)
            self._watches[(tenant, device_id)] = _Watch(device_type, version, ts)
        else:
            watch.version = version

    def applied(self, tenant: str, device_id: str, version: int, ts: int) -> Alert | None:
        """The device reported `version`: its resolution, if an alert was open."""
        watch = self._watches.get((tenant, device_id))
        if watch is None or version < watch.version:
            return None
        del self._watches[(tenant, device_id)]
        alert = self._open.pop((tenant, device_id), None)
        if alert is None:
            return None
        return replace(
            alert,
            state="resolved",
            ts_ns=max(ts, alert.ts_ns + 1),
            last_seen_ns=ts,
            message=f"resolved: the device applied desired version {version}",
            note="",
        )

    def due(self, now_ns: int) -> list[Alert]:
        """Raises the alert for each device past its deadline with none open yet."""
        raised = []
        for (tenant, device_id), watch in self._watches.items():
            if (tenant, device_id) in self._open or now_ns < watch.since_ns + self.grace_ns:
                continue
            late_s = (now_ns - watch.since_ns) / _NS
            alert = Alert(
                alert_id=alert_id(tenant, device_id, RULE, watch.since_ns),
                state="raised",
                rule=RULE,
                kind=KIND,
                severity="warning",
                tenant=tenant,
                device_type=watch.device_type,
                device_id=device_id,
                value=late_s,
                message=f"desired version {watch.version} not applied after "
                f"{format_seconds(late_s)} (MOCLO_DESIRED_GRACE): is the device online?",
                ts_ns=now_ns,
                first_seen_ns=watch.since_ns,
                last_seen_ns=now_ns,
            )
            self._open[(tenant, device_id)] = alert
            raised.append(alert)
        return raised

    def acknowledge(self, tenant: str, alert: str, by: str, note: str, ts: int) -> Alert | None:
        """The `acknowledged` change of an open episode of this rule, or None if `alert` is
        not one (the engine's, or nobody's); AcknowledgementRepeated if `by` acknowledged it
        already."""
        for key, open_alert in self._open.items():
            if open_alert.alert_id == alert and key[0] == tenant:
                if open_alert.acknowledged_by == by:
                    raise AcknowledgementRepeated(f"alert {alert!r} is acknowledged already")
                if open_alert.acknowledged_by:
                    return None  # the engine's refusal ("no open alert") fits well enough
                acknowledged = replace(
                    open_alert,
                    state="acknowledged",
                    acknowledged_by=by,
                    note=note,
                    ts_ns=max(ts, open_alert.ts_ns + 1),
                )
                self._open[key] = replace(acknowledged, note="")
                return acknowledged
        return None

    def open_count(self) -> int:
        return len(self._open)

    def restore(self, changes: list[StoredChange]) -> None:
        """Takes the episodes of this rule that were open when ingest stopped."""
        for change in changes:
            if change.rule == RULE and change.state != "resolved":
                self._open[(change.tenant, change.device_id)] = change.as_alert()
