"""`moclo alerts`: which alerts are open, what changes, and acknowledging one.

- `moclo alerts` lists the open alerts from InfluxDB (`moclo_alerts`: the latest change of each
  rule's latest episode), as a table for people or JSON for programs.
- `--follow` prints that list, then every change live from MQTT. It subscribes before reading
  the list, so no change falls between the two; a change both listed and received is printed
  once.
- `moclo alerts ack ID` acknowledges through ingest, which owns alert state: it publishes
  `{"id", "by", "note"}` on `{prefix}/{tenant}/acks` and succeeds only once ingest has taken it
  and published the `acknowledged` change. Ingest publishes a change just before it stores it,
  so a list read at that instant may still show the alert as raised.

JSON: every alert is an object with the keys of the published alert (`Alert.as_dict`): `id`,
`state` (raised, acknowledged, resolved), `rule`, `kind`, `severity`, `tenant`, `device_type`,
`device_id`, `value`, `message`, `ts` (this change), `first_seen`, `last_seen` (RFC 3339 UTC),
and `acknowledged_by` (null until acknowledged). A live acknowledgement also carries `note` when
one was given; notes are not stored. The list is one JSON array; with `--follow`, one object a
line, the list first. Argument parsing is in `moclo/alerts_args.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime

import aiomqtt
import orjson

from devices.rules import SEVERITIES, format_seconds
from devices.topics import ack_topic, alert_subscription, alert_topic
from ingest.alerts.history import find_alert
from ingest.alerts.record import Alert
from ingest.influx import InfluxError, quote_string
from moclo.database import open_influx
from moclo.mqtt import MqttEndpoint, MqttUnreachable
from moclo.settings import Settings
from query.alerts import AlertFilter, alert_json, current_alerts, parse_alert

CONNECT_TIMEOUT_S = 5.0
_NS = 1_000_000_000
_ALERT_ID = re.compile(r"[0-9a-f]{12}")
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
            _when(a.first_seen_ns),
            _when(a.ts_ns),
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
    async with _broker(endpoint) as mqtt:
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
    settings: Settings, alert_id: str, *, by: str, note: str = "", timeout_s: float = 10.0
) -> int:
    """`moclo alerts ack`: exit 0 once ingest has published the acknowledgement, else 1."""
    try:
        return asyncio.run(_acknowledge(settings, alert_id, by=by, note=note, timeout_s=timeout_s))
    except KeyboardInterrupt:
        return 130


async def _acknowledge(
    settings: Settings, alert_id: str, *, by: str, note: str, timeout_s: float
) -> int:
    async with open_influx(settings) as client:
        stored = await find_alert(client, alert_id)
    if stored is None:
        return _fail(
            f"no alert {alert_id} in database {settings.influx_db!r} at {settings.influx_url}: "
            "`moclo alerts --all` lists the ids"
        )
    what = f"{alert_id} ({stored.rule} on {stored.tenant}/{stored.device_id})"
    if stored.state == "resolved":
        return _fail(f"alert {what} is already resolved ({_when(stored.ts_ns)}): nothing to ack")
    if stored.state == "acknowledged":
        return _fail(
            f"alert {what} was already acknowledged by {stored.acknowledged_by} "
            f"({_when(stored.ts_ns)})"
        )
    body: dict[str, str] = {"id": alert_id, "by": by}
    if note:
        body["note"] = note
    payload = orjson.dumps(body)
    prefix = settings.topic_prefix
    async with _broker(settings.mqtt) as mqtt:
        # Subscribed first, so ingest's answer cannot be published before we listen.
        await mqtt.subscribe(alert_topic(prefix, stored.tenant, stored.device_id), qos=1)
        sent_ns = time.time_ns()
        await mqtt.publish(ack_topic(prefix, stored.tenant), payload, qos=1)
        try:
            async with asyncio.timeout(timeout_s):
                async for message in mqtt.messages:
                    alert = parse_alert(message.payload)
                    if alert is None or alert.alert_id != alert_id:
                        continue
                    if alert.state == "resolved":
                        return _fail(f"alert {what} was resolved before ingest took the ack")
                    if alert.state == "acknowledged" and alert.acknowledged_by != by:
                        return _fail(
                            f"alert {what} was acknowledged by {alert.acknowledged_by} first"
                        )
                    if alert.state == "acknowledged":
                        print(f"acknowledged {what} by {by}")
                        return 0
        except TimeoutError:
            pass
    refusal = await _refusal(settings, stored.tenant, payload, sent_ns)
    if refusal:
        return _fail(f"ingest refused the acknowledgement of {alert_id}: {refusal}")
    return _fail(
        f"sent, but ingest did not confirm within {format_seconds(timeout_s)}: "
        "is `moclo ingest` running?"
    )


async def _refusal(settings: Settings, tenant: str, payload: bytes, sent_ns: int) -> str | None:
    """Why ingest rejected this acknowledgement (`bad_ack` in moclo_rejected), if it did."""
    query = (
        'SELECT "error", "payload" FROM "moclo_rejected" WHERE "reason" = \'bad_ack\' '
        f'AND "tenant" = {quote_string(tenant)} '
        f"AND time >= {sent_ns - 60 * _NS}"  # ingest stamps arrival by its own clock
    )
    try:
        async with open_influx(settings) as client:
            series = await client.query(query)
    except InfluxError:
        return None  # the timeout message is still true
    text = payload.decode()
    errors = [str(row["error"]) for s in series for row in s.rows() if row["payload"] == text]
    return errors[-1] if errors else None


# -- pieces ---------------------------------------------------------------------------------


def check_alert_id(text: str) -> str:
    """`text` if it has the shape of an alert id (12 lowercase hex digits), else ValueError."""
    if _ALERT_ID.fullmatch(text) is None:
        raise ValueError(f"{text!r} is not an alert id: 12 hex digits (0-9, a-f), as listed")
    return text


def check_ack_text(kind: str, text: str) -> str:
    """An acknowledgement's `by` (1..64 characters, none a control character) or `note` (up to
    500 characters), checked as ingest will check them, so a bad one fails here and now."""
    if kind == "by" and not 1 <= len(text) <= 64:
        raise ValueError("a name is 1 to 64 characters")
    if kind == "by" and any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError("a name cannot hold control characters such as a line break")
    if kind == "note" and len(text) > 500:
        raise ValueError(f"a note is at most 500 characters; this one has {len(text)}")
    return text


def default_name() -> str:
    """Who acknowledges when --by is not given: $USER, if usable, else `unknown`."""
    try:
        return check_ack_text("by", os.environ.get("USER", ""))
    except ValueError:
        return "unknown"


def _when(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / _NS, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _fail(message: str) -> int:
    print(f"moclo: {message}", file=sys.stderr)
    return 1


@contextlib.asynccontextmanager
async def _broker(endpoint: MqttEndpoint) -> AsyncIterator[aiomqtt.Client]:
    """A connected aiomqtt client; its errors become MqttUnreachable saying what to check."""
    client = aiomqtt.Client(
        endpoint.host,
        endpoint.port,
        username=endpoint.username,
        password=endpoint.password,
        tls_context=endpoint.ssl_context(),
        timeout=CONNECT_TIMEOUT_S,
    )
    try:
        await client.__aenter__()
    except aiomqtt.MqttError as exc:
        raise endpoint.unreachable(CONNECT_TIMEOUT_S, str(exc)) from None
    try:
        yield client
    except aiomqtt.MqttError as exc:
        raise MqttUnreachable(
            f"lost the MQTT broker at {endpoint.display()} ({exc}); run the command again"
        ) from None
    finally:
        with contextlib.suppress(aiomqtt.MqttError):  # the connection may be gone already
            await client.__aexit__(None, None, None)
