"""`moclo commands` and `moclo desired show`: what was asked of devices and what became of it,
read from `moclo_commands` (storage/commands.py, the gateway's record), for people as a table
and for programs as JSON.

- `moclo commands TENANT DEVICE`: the device's steps, newest last (commands, desired changes
  with who, from and to, reported states), the latest `--limit`.
- `moclo commands TENANT`: each command of the tenant sent within `--since`, with its status.
- `--follow` then prints each step live from command-status (moclo/command_cli.py).
- `moclo desired show TENANT DEVICE`: the device's desired document, who set it, and whether
  the device has confirmed applying it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from core.settings import Settings
from devices.rfc3339 import format_us
from storage.commands import (
    CommandEvent,
    DesiredState,
    command_states,
    desired_states,
    device_history,
)
from storage.database import open_influx

_NS = 1_000_000_000


def show_history(
    settings: Settings,
    tenant: str,
    device: str | None,
    *,
    since_s: float,
    limit: int,
    as_json: bool,
) -> None:
    """Prints the stored history (see the module's docstring)."""
    asyncio.run(
        print_history(settings, tenant, device, since_s=since_s, limit=limit, as_json=as_json)
    )


async def print_history(
    settings: Settings,
    tenant: str,
    device: str | None,
    *,
    since_s: float,
    limit: int,
    as_json: bool,
) -> None:
    async with open_influx(settings) as client:
        if device is not None:
            events = list(reversed(await device_history(client, tenant, device, limit=limit)))
        else:
            since_ns = time.time_ns() - int(since_s * _NS)
            states = await command_states(client, since_ns=since_ns, tenant=tenant)
            events = sorted((s.last for s in states), key=lambda e: e.ts_ns)[-limit:]
    if as_json:
        for event in events:
            print(json.dumps(event_json(event), ensure_ascii=False))
    elif events:
        for event in events:
            print(describe_event(event))
    else:
        scope = f"{tenant}/{device}" if device else f"tenant {tenant}"
        print(f"no commands stored for {scope}", file=sys.stderr)
    sys.stdout.flush()


def event_json(event: CommandEvent) -> dict[str, Any]:
    shown = event.as_dict()
    shown["ts"] = format_us(event.ts_ns)
    return shown


def printable(line: str) -> str:
    """`line` with every control or formatting character escaped (`\\x1b`, `\\u202e`): a
    device's reason, or a requested command's name, is text of someone else's choosing, and
    must not move, clear or retitle the terminal it is shown in."""
    if line.isprintable():
        return line
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)


def describe_event(event: CommandEvent) -> str:
    """One step as a line: when, status, device, what, who, and what changed or why."""
    who = f" by {event.issuer}" if event.issuer else ""
    if event.alert:  # an automation's: the alert change it acted on
        who += f" because {event.trigger or 'an alert'} (alert {event.alert})"
    line = f"{format_us(event.ts_ns)}  {event.status:<9}  {event.device_id} {event.name}{who}"
    if event.kind == "command" and event.args:
        line += " " + _compact(event.args)
    if event.kind == "desired" and event.to_state is not None:
        line += f" {_compact(event.from_state or {})} -> {_compact(event.to_state)}"
    if event.kind == "reported" and event.state is not None:
        line += f" version {event.version}: {_compact(event.state)}"
    if event.id and event.kind != "reported":
        line += f" (id {event.id})"
    if event.reason:
        line += f": {event.reason}"
    if event.output:
        line += " " + _compact(event.output)
    return printable(line)


def show_desired(settings: Settings, tenant: str, device: str, *, as_json: bool) -> int:
    """`moclo desired show`: exit 0, also when the device has no desired state yet."""

    async def read() -> list[DesiredState]:
        async with open_influx(settings) as client:
            return await desired_states(client, tenant=tenant)

    found = next((d for d in asyncio.run(read()) if d.device_id == device), None)
    if as_json:
        print(json.dumps(None if found is None else desired_json(found), ensure_ascii=False))
        return 0
    if found is None:
        print(f"{tenant}/{device} has no desired state: `moclo desired set` gives it one")
        return 0
    applied = (
        "applied by the device"
        if found.confirmed_version >= found.version
        else f"not yet applied (the device confirmed version {found.confirmed_version})"
    )
    print(f"{tenant}/{device} ({found.device_type}) desired version {found.version}: {applied}")
    for name, value in sorted(found.state.items()):
        print(f"  {name} = {json.dumps(value, ensure_ascii=False)}")
    who = f" by {found.issuer}" if found.issuer else ""
    print(f"set{who} at {format_us(found.ts_ns)}")
    return 0


def desired_json(found: DesiredState) -> dict[str, Any]:
    return {
        "tenant": found.tenant,
        "device_type": found.device_type,
        "device_id": found.device_id,
        "version": found.version,
        "state": found.state,
        "issuer": found.issuer,
        "ts": format_us(found.ts_ns),
        "confirmed_version": found.confirmed_version,
        "applied": found.confirmed_version >= found.version,
    }


def _compact(document: dict[str, Any]) -> str:
    return json.dumps(document, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
