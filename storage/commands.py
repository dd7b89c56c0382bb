"""The downlink's record: every command, every change of desired state and every reported state,
in measurement `moclo_commands`, one point per step, so a command's whole life and every change
to a device's settings (who, when, from what to what) can be read back.

Declared in `storage/schema.py` (`COMMANDS`). Tags (sorted, as lines carry them):
`device_id`, `device_type`, `kind` (`command`, `desired`, `reported`, or `notice` for an
automation's notice), `name` (the command's; `desired` and `reported` for those kinds; the
automation's for a notice), `status` (a `CommandStatus`;
`reported` for a reported state), `tenant`. A tag that would hold text nobody checked (an
unknown command's name, a device that is not registered) holds `_unknown` and the text goes
to a field, so a stream of invented names adds no series.

Fields: `id` (the command's id; a desired change's is `{device}-desired-{version}`), `issuer`
(who asked: an account, or the person a serve account asked for), `account` (the MQTT account
that asked), `alert` and `trigger` (for what an automation did: the id of the alert whose
change made it act, and that change, "near_home raised on car-1"), `request_id` (a desired
change's: the id its asker gave the request), `reason`, `args`, `output`,
`from`, `to`, `state` (JSON strings), `created`,
`expires` and `device_ts` (ns), `version`; each point carries only the fields that apply.
Time: when ingest handled the step, strictly increasing, so no two steps share a point.

The readers answer the questions the surfaces and a restarted ingest ask: a device's history,
one command's life, the state of each recent command, and the current desired document and
last confirmed version of each device.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from storage.influx import InfluxClient, Series, influxql_literal
from storage.lineprotocol import escape_tag, line_field_string
from storage.schema import COMMANDS

COMMANDS_MEASUREMENT = COMMANDS.name
UNKNOWN_TAG = "_unknown"  # a tag whose text was not checked; the text is kept in a field

Kind = Literal["command", "desired", "reported", "notice"]
KINDS: tuple[Kind, ...] = ("command", "desired", "reported", "notice")
_JSON_FIELDS = ("args", "output", "from", "to", "state")
_INT_FIELDS = ("created", "expires", "device_ts", "version")
_TEXT_FIELDS = (
    "id", "issuer", "account", "alert", "trigger", "request_id", "reason", "device", "raw_name"
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CommandEvent:
    """One step of a command's or a desired state's life, as stored."""

    tenant: str
    device_type: str
    device_id: str
    kind: Kind
    name: str
    status: str
    id: str
    ts_ns: int
    issuer: str = ""
    account: str = ""
    reason: str = ""
    args: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    from_state: dict[str, Any] | None = None
    to_state: dict[str, Any] | None = None
    state: dict[str, Any] | None = None
    created_ns: int | None = None
    expires_ns: int | None = None
    device_ts_ns: int | None = None
    version: int | None = None
    alert: str = ""  # an automation's: the alert whose change it acted on
    trigger: str = ""  # and that change, "near_home raised on car-1"
    request_id: str = ""  # a desired change's: the id its asker gave the request
    # Only for a refusal whose device or command name could not be checked (tagged _unknown).
    raw: dict[str, str] = field(default_factory=dict)

    def to_line(self) -> str:
        values: dict[str, Any] = {
            "id": self.id,
            "issuer": self.issuer,
            "account": self.account,
            "alert": self.alert,
            "trigger": self.trigger,
            "request_id": self.request_id,
            "reason": self.reason,
            "args": self.args,
            "output": self.output,
            "from": self.from_state,
            "to": self.to_state,
            "state": self.state,
            "created": self.created_ns,
            "expires": self.expires_ns,
            "device_ts": self.device_ts_ns,
            "version": self.version,
            **self.raw,
        }
        fields = []
        for key, value in values.items():
            if value is None or value == "":
                continue
            if key in _INT_FIELDS:
                fields.append(f"{key}={int(value)}i")
            elif key in _JSON_FIELDS:
                fields.append(f"{key}={line_field_string(orjson.dumps(value).decode())}")
            else:
                fields.append(f"{key}={line_field_string(str(value))}")
        return (
            f"{COMMANDS_MEASUREMENT},device_id={escape_tag(self.device_id)},"
            f"device_type={escape_tag(self.device_type)},kind={self.kind},"
            f"name={escape_tag(self.name)},status={escape_tag(self.status)},"
            f"tenant={escape_tag(self.tenant)} {','.join(fields)} {self.ts_ns}"
        )

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> CommandEvent:
        """A point read back (tags and fields in one mapping, `time` in ns)."""

        def number(key: str) -> int | None:
            value = row.get(key)
            return None if value is None else int(value)

        def document(key: str) -> dict[str, Any] | None:
            value = row.get(key)
            if not value:
                return None
            loaded = orjson.loads(value)
            return loaded if isinstance(loaded, dict) else {"value": loaded}

        kind = str(row["kind"])
        return cls(
            tenant=str(row["tenant"]),
            device_type=str(row["device_type"]),
            device_id=str(row["device_id"]),
            kind=kind if kind in KINDS else "command",
            name=str(row["name"]),
            status=str(row["status"]),
            id=str(row.get("id") or ""),
            ts_ns=int(row["time"]),
            issuer=str(row.get("issuer") or ""),
            account=str(row.get("account") or ""),
            reason=str(row.get("reason") or ""),
            args=document("args"),
            output=document("output"),
            from_state=document("from"),
            to_state=document("to"),
            state=document("state"),
            created_ns=number("created"),
            expires_ns=number("expires"),
            device_ts_ns=number("device_ts"),
            version=number("version"),
            alert=str(row.get("alert") or ""),
            trigger=str(row.get("trigger") or ""),
            request_id=str(row.get("request_id") or ""),
            raw={k: str(row[k]) for k in ("device", "raw_name") if row.get(k)},
        )

    def as_dict(self) -> dict[str, Any]:
        """The JSON form for the CLI and the HTTP API (times in ns, absent fields left out)."""
        body: dict[str, Any] = {
            "id": self.id,
            "tenant": self.tenant,
            "device_type": self.device_type,
            "device_id": self.device_id,
            "kind": self.kind,
            "name": self.name,
            "status": self.status,
            "ts_ns": self.ts_ns,
            "issuer": self.issuer,
            "account": self.account,
            "reason": self.reason,
            "args": self.args,
            "output": self.output,
            "from": self.from_state,
            "to": self.to_state,
            "state": self.state,
            "created_ns": self.created_ns,
            "expires_ns": self.expires_ns,
            "device_ts_ns": self.device_ts_ns,
            "version": self.version,
            "alert": self.alert,
            "trigger": self.trigger,
            "request_id": self.request_id,
            **self.raw,
        }
        return {k: v for k, v in body.items() if v not in (None, "")}


@dataclass(frozen=True, slots=True)
class CommandState:
    """A command as it stands: the step that sent it and its latest step."""

    sent: CommandEvent
    last: CommandEvent

    @property
    def status(self) -> str:
        return self.last.status


@dataclass(frozen=True, slots=True)
class DesiredState:
    """A device's current desired document and the newest version it confirmed applying."""

    tenant: str
    device_type: str
    device_id: str
    version: int
    state: dict[str, Any]
    ts_ns: int
    issuer: str = ""
    confirmed_version: int = 0
    alert: str = ""  # set by an automation: the alert whose change it acted on
    trigger: str = ""
    request_id: str = ""  # the asker's id of the request that made this version


async def device_history(
    client: InfluxClient,
    tenant: str,
    device_id: str,
    *,
    limit: int = 50,
    kind: Kind | None = None,
) -> list[CommandEvent]:
    """A device's steps, newest first, at most `limit` (of one kind, if given)."""
    where = [
        f'"tenant" = {influxql_literal(tenant)}',
        f'"device_id" = {influxql_literal(device_id)}',
    ]
    if kind is not None:
        where.append(f'"kind" = {influxql_literal(kind)}')
    query = (
        f'SELECT * FROM "{COMMANDS_MEASUREMENT}" WHERE {" AND ".join(where)} '
        f"ORDER BY time DESC LIMIT {max(1, int(limit))}"
    )
    return _events(await client.query(query))


async def command_life(
    client: InfluxClient, command_id: str, *, tenant: str | None = None
) -> list[CommandEvent]:
    """Every step of the command `command_id` (of `tenant`, if given), oldest first."""
    where = [f'"id" = {influxql_literal(command_id)}']
    if tenant is not None:
        where.append(f'"tenant" = {influxql_literal(tenant)}')
    query = f'SELECT * FROM "{COMMANDS_MEASUREMENT}" WHERE {" AND ".join(where)}'
    return sorted(_events(await client.query(query)), key=lambda e: e.ts_ns)


async def first_steps_by_account(
    client: InfluxClient, tenant: str, account: str, *, since_ns: int
) -> list[CommandEvent]:
    """The first step (`sent`) of each command, desired change and notice that `account` asked
    for in `tenant` since `since_ns`, oldest first: what an automation did, whichever device it
    acted on."""
    where = [
        f'"tenant" = {influxql_literal(tenant)}',
        f'"account" = {influxql_literal(account)}',
        "\"status\" = 'sent'",
        "(\"kind\" = 'command' OR \"kind\" = 'notice' OR \"kind\" = 'desired')",
        f"time >= {int(since_ns)}",
    ]
    query = f'SELECT * FROM "{COMMANDS_MEASUREMENT}" WHERE {" AND ".join(where)}'
    return sorted(_events(await client.query(query)), key=lambda e: e.ts_ns)


async def command_states(
    client: InfluxClient, *, since_ns: int, tenant: str | None = None
) -> list[CommandState]:
    """Each command sent since `since_ns` (of `tenant`, if given), with its latest step."""
    where = ["\"kind\" = 'command'", f"time >= {int(since_ns)}"]
    if tenant is not None:
        where.append(f'"tenant" = {influxql_literal(tenant)}')
    query = f'SELECT * FROM "{COMMANDS_MEASUREMENT}" WHERE {" AND ".join(where)}'
    sent: dict[tuple[str, str], CommandEvent] = {}
    last: dict[tuple[str, str], CommandEvent] = {}
    for event in sorted(_events(await client.query(query)), key=lambda e: e.ts_ns):
        key = (event.tenant, event.id)
        if event.status == "sent" and key not in sent:
            sent[key] = event
        last[key] = event
    return [CommandState(sent[key], last[key]) for key in sent]


async def desired_states(
    client: InfluxClient, *, tenant: str | None = None, device_id: str | None = None
) -> list[DesiredState]:
    """The current desired document of every device that has one (of `tenant`, and only
    `device_id`, if given: one device's page need not read the whole tenant's), and the newest
    version each confirmed (a `reported` state of that version or later)."""
    where = "\"kind\" = 'desired'" + (
        f' AND "tenant" = {influxql_literal(tenant)}' if tenant is not None else ""
    )
    if device_id is not None:
        where += f' AND "device_id" = {influxql_literal(device_id)}'
    group = ' GROUP BY "tenant", "device_type", "device_id"'
    documents = await client.query(
        f'SELECT last("version") AS "version", "state", "issuer", "alert", "trigger", '
        f'"request_id" '
        f'FROM "{COMMANDS_MEASUREMENT}" '
        f"WHERE {where} AND \"status\" = 'sent'{group}"
    )
    confirmed = await client.query(
        f'SELECT max("version") AS "version" FROM "{COMMANDS_MEASUREMENT}" '
        f"WHERE {where} AND \"status\" = 'succeeded'{group}"
    )
    confirmed_by: dict[tuple[str, str, str], int] = {}
    for series in confirmed:
        for row in series.rows():
            if row.get("version") is not None:
                confirmed_by[_address(series.tags)] = int(row["version"])
    states = []
    for series in documents:
        for row in series.rows():
            if row.get("version") is None:
                continue
            tenant_, device_type, device_id = _address(series.tags)
            state = orjson.loads(row["state"]) if row.get("state") else {}
            states.append(
                DesiredState(
                    tenant_,
                    device_type,
                    device_id,
                    int(row["version"]),
                    state if isinstance(state, dict) else {},
                    int(row["time"]),
                    str(row.get("issuer") or ""),
                    confirmed_by.get((tenant_, device_type, device_id), 0),
                    str(row.get("alert") or ""),
                    str(row.get("trigger") or ""),
                    str(row.get("request_id") or ""),
                )
            )
    return states


async def reported_versions(
    client: InfluxClient, *, tenant: str | None = None, at_most: int | None = None
) -> dict[tuple[str, str], int]:
    """The highest desired version each device reported applying, by (tenant, device id):
    a version moclo must not give again, even if its own desired records are gone. With
    `at_most`, the highest at or below it (a larger report is recorded, not followed)."""
    where = "\"kind\" = 'reported'" + (
        f' AND "tenant" = {influxql_literal(tenant)}' if tenant is not None else ""
    )
    if at_most is not None:
        where += f' AND "version" <= {int(at_most)}'
    result = await client.query(
        f'SELECT max("version") AS "version" FROM "{COMMANDS_MEASUREMENT}" '
        f'WHERE {where} GROUP BY "tenant", "device_id"'
    )
    versions: dict[tuple[str, str], int] = {}
    for series in result:
        for row in series.rows():
            if row.get("version") is not None:
                key = (series.tags.get("tenant", ""), series.tags.get("device_id", ""))
                versions[key] = int(row["version"])
    return versions


def _address(tags: Mapping[str, str]) -> tuple[str, str, str]:
    return tags.get("tenant", ""), tags.get("device_type", ""), tags.get("device_id", "")


def _events(result: list[Series]) -> list[CommandEvent]:
    return [
        CommandEvent.from_row({**series.tags, **row}) for series in result for row in series.rows()
    ]
