"""`moclo alerts`: which alerts are open, what changes, and acknowledging one.

- `moclo alerts` lists the open alerts from InfluxDB (`moclo_alerts`: the latest change of each
  rule's latest episode), as a table for people or JSON for programs.
- `--follow` prints that list, then every change live from MQTT. It subscribes before reading
  the list, so no change falls between the two; a change both listed and received is printed
  once.
- `moclo alerts ack ID` acknowledges through ingest, which owns alert state, with
  `ingest/alerts/acknowledge.py` (which the HTTP API uses too): it publishes `{"id", "note"}` on
  `{prefix}/{tenant}/acks/{account}`, the account being the MQTT login, and succeeds only once
  ingest has taken it and published the `acknowledged` change.

JSON: every alert is an object with the keys of the published alert (`Alert.as_dict`): `id`,
`state` (raised, acknowledged, resolved), `rule`, `kind`, `severity`, `tenant`, `device_type`,
`device_id`, `value`, `message`, `ts` (this change), `first_seen`, `last_seen` (RFC 3339 UTC),
and `acknowledged_by` (null until acknowledged). A live acknowledgement also carries `note` when
one was given; notes are not stored. The list is one JSON array; with `--follow`, one object a
line, the list first. Argument parsing is in `moclo/alerts_args.py`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Iterable

from core.settings import Settings
from devices.rfc3339 import format_seconds_spaced
from devices.rule_base import SEVERITIES
from devices.topics import alert_subscription
from ingest.alerts import acknowledge as acknowledging
from query.alerts import AlertFilter, alert_json, current_alerts
from storage.alert_history import find_alert
from storage.alert_record import Alert, parse_alert
from storage.database import open_influx
from storage.influx import InfluxError

_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}
_COLUMNS = (
    "ID",
    "SEVERITY",
    "STATE",
    "TENANT/DEVICE",
    "RULE",
    "VALUE",
    "FIRST SEEN",
    "LAST CHANGE",
    "MESSAGE",
)


def list_alerts(settings: Settings, query: AlertFilter, *, as_json: bool = False) -> int:
    """`moclo alerts`: prints the alerts and exits 0, also when there are none."""

    async def run() -> list[Alert]:
        async with open_influx(settings) as client:
            alerts, _ = await current_alerts(client, query, now_ns=time.time_ns())
            return alerts

    _print(asyncio.run(run()), query, as_json=as_json, json_lines=False)
    return 0


def _print(alerts: list[Alert], query: AlertFilter, *, as_json: bool, json_lines: bool) -> None:
    if as_json and json_lines:
        for alert in alerts:
            print(json.dumps(alert_json(alert), ensure_ascii=False))
    elif as_json:
        print(json.dumps([alert_json(a) for a in alerts], indent=2, ensure_ascii=False))
    elif alerts:
        print(table(alerts))
    else:
        print(f"no {'' if query.include_resolved else 'open '}alerts{query.scope()}")


def table(alerts: Iterable[Alert]) -> str:
    """The alerts as aligned columns, one a line, under a header."""
    rows = [_COLUMNS] + [
        (
            a.alert_id,
            a.severity,
            a.state,
            f"{a.tenant}/{a.device_id}",
            a.rule,
            f"{a.value:g}",
            format_seconds_spaced(a.first_seen_ns),
            format_seconds_spaced(a.ts_ns),
            a.message + (f" (acknowledged by {a.acknowledged_by})" if a.acknowledged_by else ""),
        )
        for a in alerts
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)), row[-1]])
        for row in rows
    )


# -- following ------------------------------------------------------------------------------


def follow_alerts(
    settings: Settings, query: AlertFilter, *, as_json: bool = False, count: int | None = None
) -> int:
    """`moclo alerts --follow`: the current list, then each change as it is published.

    Runs until Ctrl-C (exit 130), or until `count` changes were printed (exit 0).
    """
    try:
        return asyncio.run(_follow(settings, query, as_json=as_json, count=count))
    except KeyboardInterrupt:
        return 130


async def _follow(
    settings: Settings, query: AlertFilter, *, as_json: bool, count: int | None
) -> int:
    endpoint = settings.mqtt
    topic = alert_subscription(settings.topic_prefix, query.tenant or "+")
    async with acknowledging.broker(endpoint) as mqtt:
        await mqtt.subscribe(topic, qos=1)
        listed: dict[str, int] = {}  # alert id → its listed change's time, to skip repeats
        raised: set[str] | None = None
        try:
            async with open_influx(settings) as client:
                alerts, raised = await current_alerts(client, query, now_ns=time.time_ns())
        except InfluxError as exc:
            # The live stream is the point of --follow; the list is a head start.
            print(f"moclo: cannot list the open alerts ({exc}); live changes only", file=sys.stderr)
            if query.since_s is not None:
                raised = set()  # only what is raised from now on is known to be recent
        else:
            listed = {a.alert_id: a.ts_ns for a in alerts}
            _print(alerts, query, as_json=as_json, json_lines=True)
        print(f"watching {topic} on {endpoint.display()} (Ctrl-C to stop)", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        printed = 0
        async for message in mqtt.messages:
            alert = parse_alert(message.payload)
            if alert is None:
                print(f"moclo: unreadable alert on {message.topic}", file=sys.stderr, flush=True)
                continue
            if alert.state == "raised" and raised is not None:
                raised.add(alert.alert_id)
            # Microseconds: the published time has no finer resolution.
            if alert.ts_ns // 1000 <= listed.get(alert.alert_id, -1) // 1000:
                continue  # published while the list was read: already shown
            if not query.admits(alert) or (raised is not None and alert.alert_id not in raised):
                continue
            if as_json:
                print(json.dumps(alert_json(alert), ensure_ascii=False), flush=True)
            else:
                print(alert.describe(), flush=True)
            printed += 1
            if count is not None and printed >= count:
                return 0
    return 0


# -- acknowledging --------------------------------------------------------------------------


def acknowledge(
    settings: Settings,
    alert_id: str,
    *,
    by: str | None = None,
    note: str = "",
    timeout_s: float = 10.0,
) -> int:
    """`moclo alerts ack`: exit 0 once ingest has published the acknowledgement, 1 if it did
    not, 2 if `by` cannot be who acknowledges (see `acknowledging.account_of`)."""
    if settings.mqtt.username is None and by is None:
        by = default_name()
    try:
        account = acknowledging.account_of(settings, by)
    except ValueError as exc:
        print(f"moclo: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(
            _acknowledge(settings, alert_id, account=account, note=note, timeout_s=timeout_s)
        )
    except KeyboardInterrupt:
        return 130


async def _acknowledge(
    settings: Settings, alert_id: str, *, account: str, note: str, timeout_s: float
) -> int:
    async with open_influx(settings) as client:
        stored = await find_alert(client, alert_id)
    if stored is None:
        return _fail(
            f"no alert {alert_id} in database {settings.influx_db!r} at {settings.influx_display}: "
            "`moclo alerts --all` lists the ids"
        )
    try:
        await acknowledging.acknowledge(
            settings, stored, account=account, note=note, timeout_s=timeout_s
        )
    except acknowledging.AcknowledgementFailed as exc:
        return _fail(str(exc))
    print(f"acknowledged {acknowledging.describe(stored)} by {account}")
    return 0


# -- pieces ---------------------------------------------------------------------------------


def default_name() -> str:
    """Who acknowledges on a broker without logins when --by is not given: $USER, if usable,
    else `unknown`."""
    try:
        return acknowledging.check_acknowledgement_text("by", os.environ.get("USER", ""))
    except ValueError:
        return "unknown"


def _fail(message: str) -> int:
    print(f"moclo: {message}", file=sys.stderr)
    return 1
