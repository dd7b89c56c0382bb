"""Where an alert is born: every rule judged on each valid reading, one alert per episode.

For each device the engine keeps, per rule, a small lifecycle: idle → pending (the condition
holds, but not yet for `for_s` / `min_readings`) → raised → (acknowledged) → resolved (clear for
`clear_for_s` / `clear_readings`). Only state changes come out, so a fever that lasts six hours
is one alert, not seven hundred.

Time is the readings' own: a reading no newer than the newest already judged for that device
is stored but not judged, so a late or redelivered reading cannot reopen or close an episode,
and a replay behaves as the live stream did. Absence ("silent") is judged two ways: when a
device's next reading comes after too long a gap (an episode raised at the deadline and
resolved by that reading, deterministic in a replay), and by `sweep`, against each tenant's
clock: the newest reading time seen (never ahead of the wall clock) plus wall time since, so a
stream that stops entirely is noticed too.

Memory per device is fixed: the newest time, the learnt interval, and per rule a lifecycle and
a condition state of bounded size (held by `lifecycle.py`'s classes; see `conditions.py`).
`snapshot`/`restore` (in `snapshot.py`) carry it over a restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Final

from devices.fast import AnyReading
from devices.topics import DeviceAddress
from ingest.alerts.lifecycle import DeviceState, Episode, Tracker, find_tracker
from ingest.alerts.messages import alert_message
from ingest.alerts.rulebook import RuleBook
from ingest.alerts.verdict import ALARM, CLEAR
from ingest.decode import ValidReading
from storage.alert_record import Alert, AlertState, StoredChange, alert_id

_NS: Final = 1_000_000_000
_INTERVAL_WEIGHT: Final = 0.2  # how fast the learnt interval follows the device


class AcknowledgementInvalid(ValueError):
    """An acknowledgement that cannot be applied (stored as `bad_ack`); the message says why."""


class AcknowledgementRepeated(AcknowledgementInvalid):
    """The person who acknowledged an episode acknowledged it again (a double click, or on the
    engine a copy forwarded twice): nothing to do, and nothing to refuse."""


class AlertEngine:
    def __init__(
        self, rulebook: RuleBook | None = None, *, wall_ns: Callable[[], int] = time.time_ns
    ) -> None:
        self.rulebook = rulebook or RuleBook()
        self.wall_ns = wall_ns
        self.devices: dict[tuple[str, str, str], DeviceState] = {}
        # Per tenant: (the newest reading time seen, capped at the wall clock; wall time then).
        self.clocks: dict[str, tuple[int, int]] = {}
        self._open: dict[str, tuple[DeviceState, Tracker]] = {}  # alert id → where
        # The device of the previous reading: consecutive readings of one device (an array)
        # find it without building and hashing its key again.
        self._last: tuple[DeviceAddress, DeviceState] | None = None

    def open_alerts(self) -> int:
        return len(self._open)

    def open_list(self) -> list[Alert]:
        """The current state of every open alert."""
        out = []
        for device, tracker in self._open.values():
            episode = tracker.episode
            assert episode is not None
            state: AlertState = "acknowledged" if episode.acknowledged_by else "raised"
            out.append(self._alert(device, tracker, state, tracker.changed_at, episode.value))
        return out

    def device(self, address: DeviceAddress) -> DeviceState:
        key = (address.tenant, address.device_type, address.device_id)
        state = self.devices.get(key)
        if state is None:
            rules = self.rulebook.rules_for(*key)
            state = self.devices[key] = DeviceState(address, rules)
        return state

    # -- readings --------------------------------------------------------------------------

    def evaluate(self, item: ValidReading) -> list[Alert]:
        """The alerts raised or resolved by this reading (usually none)."""
        reading = item.reading
        ts = reading.ts
        address = item.address
        last = self._last
        if last is not None and last[0] is address:  # an array: one device, many readings
            device = last[1]
        else:
            found = self.devices.get((address.tenant, address.device_type, address.device_id))
            device = self.device(address) if found is None else found
            self._last = (address, device)
        newest = device.newest
        if ts <= newest:
            return []
        changes: list[Alert] = []
        absence = device.absence
        # No silence can end with a gap below the absence rule's floor (`at_least`).
        if absence is not None and (absence.episode is not None or ts - newest > device.quiet_ns):
            self._heard(device, ts, changes)
        # The tenant's clock (as `_tick_clock`, inline: a call per reading costs). A reading no
        # newer than the time it has seen cannot move it, whatever the wall clock says.
        tenant = address.tenant
        clock = self.clocks.get(tenant)
        if clock is None or ts > clock[0]:
            wall = self.wall_ns()
            seen = ts if ts < wall else wall
            now = 0 if clock is None else clock[0] + (wall - clock[1] if wall > clock[1] else 0)
            if seen > now:
                self.clocks[tenant] = (seen, wall)
        if device.readings:
            gap = ts - newest
            interval = device.interval
            if not interval:
                device.interval = gap
            elif gap != interval:  # (a device keeping its interval leaves it as it is)
                # Neither a silence nor a burst teaches the interval much: gaps count as 1/3 to
                # 3 intervals at most.
                low, high = interval // 3, 3 * interval
                gap = low if gap < low else high if gap > high else gap
                device.interval = interval + int(_INTERVAL_WEIGHT * (gap - interval))
        device.newest = ts
        device.readings += 1
        if device.trackers:
            self._judge(device, reading, ts, changes)
        return changes

    def _judge(
        self, device: DeviceState, reading: AnyReading, ts: int, changes: list[Alert]
    ) -> None:
        """Each rule's verdict on the reading, moving its lifecycle; changes are appended."""
        usual = device.usual  # a device with an open alert: its baselines do not learn now
        for tracker in device.trackers:
            pending_since = tracker.pending_since
            verdict, value = tracker.judge.judge(
                tracker.condition, reading, ts, usual and pending_since < 0
            )
            episode = tracker.episode
            if episode is None:
                if verdict != ALARM:
                    if pending_since >= 0:  # a pending alarm that did not last
                        tracker.pending_since = -1
                        tracker.pending_count = 0
                    continue
                if pending_since < 0:
                    tracker.pending_since = ts
                tracker.pending_count += 1
                rule = tracker.rule
                if (
                    ts - tracker.pending_since >= rule.for_s * _NS
                    and tracker.pending_count >= rule.min_readings
                ):
                    changes.append(self._raise(device, tracker, tracker.pending_since, ts, value))
                continue
            if verdict != CLEAR:
                tracker.clear_since = -1
                tracker.clear_count = 0
                if verdict == ALARM:
                    episode.last_seen = ts
                continue
            if tracker.clear_since < 0:
                tracker.clear_since = ts
            tracker.clear_count += 1
            rule = tracker.rule
            if (
                ts - tracker.clear_since >= rule.clear_for_s * _NS
                and tracker.clear_count >= rule.clear_readings
            ):
                changes.append(self._resolve(device, tracker, ts, value))

    def _heard(self, device: DeviceState, ts: int, changes: list[Alert]) -> None:
        """A reading from a device: ends a silence, or reports one it ended just now."""
        tracker = device.absence
        assert tracker is not None
        if tracker.episode is not None:
            # Readings a device buffered during its silence can predate the raise; the
            # resolution still comes after it, so the episode's changes stay in order.
            at = max(ts, tracker.changed_at + 1)
            changes.append(self._resolve(device, tracker, at, (ts - device.newest) / _NS))
            return
        limit = device.silence_limit()
        if limit is not None and ts - device.newest > limit:
            deadline = device.newest + limit
            changes.append(self._raise(device, tracker, deadline, deadline, limit / _NS))
            changes.append(self._resolve(device, tracker, ts, (ts - device.newest) / _NS))

    def _tick_clock(self, tenant: str, ts: int) -> None:
        wall = self.wall_ns()
        seen = min(ts, wall)
        if seen > self.tenant_now(tenant, wall):
            self.clocks[tenant] = (seen, wall)

    def tenant_now(self, tenant: str, wall: int) -> int:
        clock = self.clocks.get(tenant)
        return 0 if clock is None else clock[0] + max(0, wall - clock[1])

    def sweep(self) -> list[Alert]:
        """Raises `silent` for devices whose silence passed its limit by their tenant's clock."""
        wall = self.wall_ns()
        changes: list[Alert] = []
        now_by_tenant: dict[str, int] = {}
        for device in self.devices.values():
            tracker = device.absence
            if tracker is None or tracker.episode is not None:
                continue
            limit = device.silence_limit()
            if limit is None:
                continue
            tenant = device.address.tenant
            now = now_by_tenant.get(tenant)
            if now is None:
                now = now_by_tenant[tenant] = self.tenant_now(tenant, wall)
            deadline = device.newest + limit
            if now >= deadline:
                changes.append(self._raise(device, tracker, deadline, deadline, limit / _NS))
        return changes

    # -- people ----------------------------------------------------------------------------

    def acknowledge(self, tenant: str, alert: str, by: str, note: str = "") -> Alert:
        """Marks an open alert as acknowledged by `by`, or says why not (AcknowledgementInvalid)."""
        found = self._open.get(alert)
        if found is None or found[0].address.tenant != tenant:
            raise AcknowledgementInvalid(f"no open alert {alert!r} for tenant {tenant!r}")
        device, tracker = found
        episode = tracker.episode
        assert episode is not None
        if episode.acknowledged_by == by:
            raise AcknowledgementRepeated(f"alert {alert!r} is acknowledged by {by} already")
        if episode.acknowledged_by:
            raise AcknowledgementInvalid(
                f"alert {alert!r} was already acknowledged by {episode.acknowledged_by}"
            )
        episode.acknowledged_by = by
        # Just after the newest reading, so the episode's changes stay in time order.
        ts = max(device.newest, tracker.changed_at) + 1
        tracker.changed_at = ts
        return self._alert(device, tracker, "acknowledged", ts, episode.value, note=note)

    # -- state changes ---------------------------------------------------------------------

    def _raise(
        self, device: DeviceState, tracker: Tracker, first_seen: int, ts: int, value: float
    ) -> Alert:
        a = device.address
        rule = tracker.rule
        episode = Episode(
            alert_id(a.tenant, a.device_id, rule.name, first_seen), first_seen, ts, value
        )
        tracker.episode = episode
        tracker.pending_since, tracker.pending_count = -1, 0
        tracker.clear_since, tracker.clear_count = -1, 0
        tracker.changed_at = ts
        self._open[episode.alert_id] = (device, tracker)
        device.episodes_changed()
        return self._alert(device, tracker, "raised", ts, value)

    def _resolve(self, device: DeviceState, tracker: Tracker, ts: int, value: float) -> Alert:
        alert = self._alert(device, tracker, "resolved", ts, value)
        assert tracker.episode is not None
        self._open.pop(tracker.episode.alert_id, None)
        tracker.episode = None
        tracker.clear_since, tracker.clear_count = -1, 0
        tracker.changed_at = ts
        device.episodes_changed()
        return alert

    def _alert(
        self,
        device: DeviceState,
        tracker: Tracker,
        state: AlertState,
        ts: int,
        value: float,
        note: str = "",
    ) -> Alert:
        episode = tracker.episode
        assert episode is not None
        rule = tracker.rule
        a = device.address
        message = alert_message(rule, tracker.condition, value, ts)
        if state == "resolved":
            message = f"resolved: {message}"
        return Alert(
            alert_id=episode.alert_id,
            state=state,
            rule=rule.name,
            kind=rule.kind,
            severity=rule.severity,
            tenant=a.tenant,
            device_type=a.device_type,
            device_id=a.device_id,
            value=value,
            message=message,
            ts_ns=ts,
            first_seen_ns=episode.first_seen,
            last_seen_ns=episode.last_seen,
            acknowledged_by=episode.acknowledged_by,
            note=note,
        )

    # -- restoring -------------------------------------------------------------------------

    def apply_stored(self, changes: Iterable[StoredChange]) -> list[Alert]:
        """Brings episodes up to date with stored changes newer than what the engine knows.

        Returns resolutions for stored open alerts whose rule no longer applies (the rules
        changed while ingest was down), so that they do not stay open for ever.
        """
        latest: dict[tuple[str, str, str, str], StoredChange] = {}
        for c in changes:
            key = (c.tenant, c.device_type, c.device_id, c.rule)
            if key not in latest or c.ts_ns >= latest[key].ts_ns:
                latest[key] = c
        orphans: list[Alert] = []
        for (tenant, device_type, device_id, rule_name), c in latest.items():
            device = self.device(DeviceAddress(tenant, device_type, device_id))
            tracker = find_tracker(device, rule_name)
            if tracker is None:
                if c.state != "resolved":
                    orphans.append(_orphan_resolution(c, device.newest))
                continue
            if c.ts_ns <= tracker.changed_at:
                continue  # the snapshot knows this change, and what came after it
            if tracker.episode is not None:
                self._open.pop(tracker.episode.alert_id, None)
            tracker.changed_at = c.ts_ns
            tracker.pending_since, tracker.pending_count = -1, 0
            tracker.clear_since, tracker.clear_count = -1, 0
            # The change was stored with the batch that caused it: its readings were judged.
            # (A silence's `last_seen` is its deadline, not a reading.)
            if c.state == "resolved":
                tracker.episode = None
                device.episodes_changed()
                device.newest = max(device.newest, c.ts_ns)
                continue
            tracker.episode = Episode(
                c.alert_id, c.first_seen_ns, c.last_seen_ns, c.value, c.acknowledged_by
            )
            device.episodes_changed()
            self._open[c.alert_id] = (device, tracker)
            if tracker is not device.absence:
                device.newest = max(device.newest, c.last_seen_ns)
        return orphans

    def reindex(self) -> None:
        """Rebuilds the open-alert index after trackers were loaded from a snapshot."""
        for device in self.devices.values():
            device.episodes_changed()
        self._open = {
            t.episode.alert_id: (d, t)
            for d in self.devices.values()
            for t in [*d.trackers, *([d.absence] if d.absence else [])]
            if t.episode is not None
        }


def _orphan_resolution(c: StoredChange, newest: int) -> Alert:
    return replace(
        c.as_alert(),
        state="resolved",
        ts_ns=max(c.ts_ns, newest) + 1,
        message=f"resolved: rule {c.rule} no longer applies to this device",
    )
