"""`moclo devices`: the catalogue's types and schemas, and registering, revoking and listing
devices. Argument parsing is in `moclo/devices_args.py`.

A password is printed once (or written to a 0600 file instead) and never logged; after each
change the broker's files are rewritten and the local broker reloaded (`after_change`).
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from access.broker import BrokerAuthError, sync_broker_auth
from access.issued import IssuedFileError, append_device_credentials
from access.registry import Credentials, DeviceRecord, DeviceSpec, Registry, RegistryError
from core.settings import Settings
from devices.catalogue import DEVICE_TYPES
from devices.rule_base import format_seconds
from devices.topics import telemetry_topic
from devices.types import DeviceType

IMPORT_FIELDS = ("tenant", "device_type", "device_id")
Saver = Callable[[list[tuple[DeviceRecord, Credentials]]], None]


# Who may send what (devices/commands.py ADMITTED_ROLES), in people's words.
_WHO = {"operator": "operators and clinicians", "clinician": "clinicians only"}


def list_types(*, as_json: bool) -> int:
    """The catalogue: each type, its readings' fields, its commands (arguments, who may send
    them, their expiry) and the settings a person may want it to have."""
    from moclo.command_checks import describe_arguments

    if as_json:
        print(json.dumps([_type_json(d) for d in DEVICE_TYPES.values()], indent=2))
        return 0
    width = max(map(len, DEVICE_TYPES))
    for name, device in DEVICE_TYPES.items():
        print(f"{name:<{width}}  {device.description}")
        for command in device.commands:
            takes = describe_arguments(command.arguments).replace(", ", " ")
            takes = "" if takes == "no arguments" else f" {takes}"
            print(
                f"{'':<{width}}    command {command.name}{takes}: {command.description} "
                f"({_WHO[command.clearance]}; expires in {format_seconds(command.expiry_s)})"
            )
        if device.desired is not None:
            fields = describe_arguments(device.desired.state).replace(", ", " ")
            print(f"{'':<{width}}    desired {fields} ({_WHO[device.desired.clearance]})")
    return 0


def _type_json(device: DeviceType) -> dict[str, object]:
    return {
        "type": device.name,
        "description": device.description,
        "fields": list(device.reading.measurement_fields),
        "commands": [
            {
                "name": c.name,
                "description": c.description,
                "clearance": c.clearance,
                "expiry_s": c.expiry_s,
                "arguments": c.arguments.model_json_schema(),
            }
            for c in device.commands
        ],
        "desired": None
        if device.desired is None
        else {
            "clearance": device.desired.clearance,
            "state": device.desired.state.model_json_schema(),
        },
    }


def print_schema(device_type: str) -> int:
    chosen = DEVICE_TYPES.get(device_type)
    if chosen is None:
        print(
            f"moclo: unknown device type {device_type!r}; known: {', '.join(DEVICE_TYPES)}",
            file=sys.stderr,
        )
        return 2
    print(json.dumps(chosen.json_schema(), indent=2, ensure_ascii=False))
    return 0


def add(
    settings: Settings,
    tenant: str,
    device_type: str,
    device_id: str,
    *,
    credentials_out: Path | None,
    as_json: bool,
) -> int:
    registry = Registry(settings.registry)
    spec = [DeviceSpec(tenant, device_type, device_id)]
    try:
        [(_, credentials)] = registry.add_devices(spec, before_commit=_saver(credentials_out))
    except (RegistryError, IssuedFileError) as exc:
        return _fail(exc)
    topic = telemetry_topic(settings.topic_prefix, tenant, device_type, device_id)
    if as_json:
        shown: dict[str, Any] = {
            "tenant": tenant,
            "device_type": device_type,
            "device_id": device_id,
            "username": credentials.username,
            "topic": topic,
        }
        if credentials_out is None:
            shown["password"] = credentials.password
        else:
            shown["credentials_file"] = str(credentials_out)
        print(json.dumps(shown, indent=2))
    else:
        print(f"registered {tenant}/{device_type}/{device_id}")
        print(f"  username  {credentials.username}")
        if credentials_out is None:
            print(f"  password  {credentials.password}")
            print(
                "The password is shown this once and kept only as a hash: give it to the "
                "device now.\n"
                f"The device logs in with these and may publish only to {topic}.\n"
                "To collect credentials for `moclo simulate --connections device --credentials "
                "FILE`, use --credentials-out FILE instead."
            )
        else:
            print(f"  password  appended to {credentials_out} (mode 0600)")
            print(
                f"The device may publish only to {topic}. Simulate it with\n"
                f"  moclo simulate --connections device --credentials {credentials_out} ..."
            )
    return after_change(settings, registry)


def import_devices(
    settings: Settings,
    *,
    file: Path | None,
    scenario: str | None,
    credentials_out: Path,
    skip_registered: bool,
    as_json: bool,
) -> int:
    try:
        if scenario is not None:
            specs = scenario_devices(scenario)
        else:
            assert file is not None, "argparse requires FILE or --scenario"
            specs = _csv_devices(file)
    except ValueError as exc:
        return _fail(exc)
    registry = Registry(settings.registry)
    try:
        issued = registry.add_devices(
            specs, skip_registered=skip_registered, before_commit=_saver(credentials_out)
        )
    except (RegistryError, IssuedFileError) as exc:
        return _fail(exc)
    skipped = len(specs) - len(issued)
    if as_json:
        summary = {
            "registered": len(issued),
            "skipped": skipped,
            "credentials_file": str(credentials_out),
        }
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"registered {len(issued)} devices"
            + (f" ({skipped} already registered, left as they were)" if skipped else "")
            + f"; their credentials are appended to {credentials_out} (mode 0600)"
        )
    return after_change(settings, registry)


def revoke(settings: Settings, tenant: str, device_id: str) -> int:
    registry = Registry(settings.registry)
    try:
        registry.revoke_device(tenant, device_id)
    except RegistryError as exc:
        return _fail(exc)
    print(f"revoked {tenant}/{device_id}: its login is refused and its readings rejected")
    return after_change(settings, registry)


def list_devices(
    settings: Settings, *, tenant: str | None, include_revoked: bool, as_json: bool
) -> int:
    try:
        records = Registry(settings.registry).devices(
            tenant=tenant, include_revoked=include_revoked
        )
    except RegistryError as exc:
        return _fail(exc)
    if as_json:
        print(json.dumps([_record_json(r) for r in records], indent=2))
        return 0
    if not records:
        print("no devices registered" + (f" of {tenant}" if tenant else ""), file=sys.stderr)
        return 0
    columns = ["TENANT", "TYPE", "DEVICE_ID", "USERNAME", "ADDED"]
    rows = [[r.tenant, r.device_type, r.device_id, r.username, r.created_at] for r in records]
    if include_revoked:
        columns.append("REVOKED")
        for row, record in zip(rows, records, strict=True):
            row.append(record.revoked_at or "-")
    print_table(columns, rows)
    return 0


def after_change(settings: Settings, registry: Registry) -> int:
    """Rewrites the broker's password and ACL files (unless MOCLO_BROKER_AUTH_DIR=off) and
    reloads the local broker if its pid is known. Says so on stderr; stdout is for results."""
    directory = settings.broker_auth_path
    if directory is None:
        return 0
    try:
        synced = sync_broker_auth(registry, directory, prefix=settings.topic_prefix)
    except (BrokerAuthError, RegistryError) as exc:
        print(f"moclo: the registry is changed, but {exc}", file=sys.stderr)
        return 1
    reloaded = (
        f"; broker (pid {synced.reloaded_pid}) reloaded"
        if synced.reloaded_pid is not None
        else "; no local broker to reload (a broker using them needs a SIGHUP)"
    )
    print(f"broker password and ACL files rewritten in {directory}{reloaded}", file=sys.stderr)
    return 0


def print_table(columns: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(v)) for v in column) for column in zip(columns, *rows, strict=True)]
    for row in [columns, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _saver(path: Path | None) -> Saver | None:
    if path is None:
        return None

    def save(issued: list[tuple[DeviceRecord, Credentials]]) -> None:
        append_device_credentials(path, issued)

    return save


def _csv_devices(path: Path) -> list[DeviceSpec]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header) != IMPORT_FIELDS:
        raise ValueError(f"{path}: the first line must be {','.join(IMPORT_FIELDS)}")
    specs = []
    for number, row in enumerate(reader, start=2):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) != len(IMPORT_FIELDS) or not all(cell.strip() for cell in row):
            raise ValueError(f"{path}, line {number}: expected {','.join(IMPORT_FIELDS)}")
        specs.append(DeviceSpec(*(cell.strip() for cell in row)))
    if not specs:
        raise ValueError(f"{path} lists no devices")
    return specs


def scenario_devices(name_or_path: str) -> list[DeviceSpec]:
    from simulators.run import build_fleet
    from simulators.scenario import load_scenario

    _, options = load_scenario(name_or_path)
    fleet = build_fleet(options, "moclo", options.resolved_start(time.time()))
    return [DeviceSpec(d.tenant, d.device_type, d.device_id) for d in fleet.devices]


def _record_json(record: DeviceRecord) -> dict[str, Any]:
    return {
        "tenant": record.tenant,
        "device_type": record.device_type,
        "device_id": record.device_id,
        "username": record.username,
        "created_at": record.created_at,
        "revoked_at": record.revoked_at,
    }


def _fail(exc: Exception) -> int:
    print(f"moclo: {exc}", file=sys.stderr)
    return 2
