"""A command's arguments and a desired state's fields, checked against the catalogue before
anything is sent: `ARG=VALUE` (and `FIELD.KEY=VALUE` for a map) parsed by the command's own
model, so that what is sent is what the gateway's strict check accepts, and errors that list
what the command takes; and the device's type, which says which catalogue entry applies."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from core.settings import Settings
from devices.catalogue import DEVICE_TYPES
from devices.commands import CommandSpec
from devices.types import DeviceType


class ArgumentsError(ValueError):
    """A command's or desired state's arguments do not fit; the message lists what does."""


def assignments(items: list[str]) -> dict[str, Any]:
    """`["a=1", "b.c=x"]` → `{"a": "1", "b": {"c": "x"}}`: every value a string, for the
    model to parse (`model_validate_strings`). ArgumentsError for a malformed or repeated one."""
    result: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ArgumentsError(f"{item!r} is not ARG=VALUE (e.g. setpoint_c=21.5)")
        *parents, leaf = key.split(".")
        level = result
        for part in parents:
            level = level.setdefault(part, {})
            if not isinstance(level, dict):
                raise ArgumentsError(f"{key!r}: {part!r} is given a value and fields at once")
        if leaf in level:
            raise ArgumentsError(f"{key!r} is given twice")
        level[leaf] = value
    return result


def command_arguments(
    device_type: DeviceType, name: str, items: list[str]
) -> tuple[CommandSpec, dict[str, Any]]:
    """The command `name` of this type and its arguments, parsed by the command's model;
    ArgumentsError lists the type's commands, or the command's arguments and bounds."""
    try:
        spec = device_type.command(name)
    except KeyError:
        raise ArgumentsError(
            f"{device_type.name} has no command {name!r}; its commands: "
            + (", ".join(c.name for c in device_type.commands) or "none")
        ) from None
    arguments = _validated(spec.arguments, assignments(items), f"{device_type.name} {name}")
    return spec, arguments


def desired_fields(device_type: DeviceType, items: list[str]) -> dict[str, Any]:
    """The desired fields named in `items`, parsed by the type's desired model."""
    if device_type.desired is None:
        raise ArgumentsError(f"{device_type.name} has no desired state to set")
    return _validated(device_type.desired.state, assignments(items), f"{device_type.name} desired")


def _validated(model: type[BaseModel], raw: dict[str, Any], what: str) -> dict[str, Any]:
    takes = describe_arguments(model)
    try:
        parsed = model.model_validate_strings(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc'])) or 'arguments'}: {_message(error)}"
            for error in exc.errors(include_url=False, include_input=False)
        )
        raise ArgumentsError(f"{what} takes {takes}; {problems}") from None
    return parsed.model_dump(mode="json", exclude_unset=True)


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "not an argument of it"
    return (
        str(error["msg"]).replace("Input should be", "must be").replace("Field required", "missing")
    )


def describe_arguments(model: type[BaseModel]) -> str:
    """`setpoint_c=NUMBER (5..35)`, `mode=on|off|standby`, or `no arguments`: what a model
    takes, from its JSON Schema (the bounds the catalogue declares)."""
    schema = model.model_json_schema()
    properties: dict[str, Any] = schema.get("properties", {})
    parts = [_describe_field(name, field, schema) for name, field in properties.items()]
    return ", ".join(parts) if parts else "no arguments"


def _describe_field(name: str, field: dict[str, Any], schema: dict[str, Any]) -> str:
    options = [o for o in field.get("anyOf", [field]) if o.get("type") != "null"]
    field = {**field, **options[0]} if options else field
    if "$ref" in field:
        field = {**field, **schema["$defs"][field["$ref"].rsplit("/", 1)[1]]}
    if field.get("type") == "object":
        # A map (a meter's appliances): its values' shape, whatever the keys' pattern.
        patterns = list(field.get("patternProperties", {}).values())
        inner = patterns[0] if patterns else field.get("additionalProperties", {})
        return _describe_field(f"{name}.NAME", inner if isinstance(inner, dict) else {}, schema)
    if "enum" in field:
        return f"{name}={'|'.join(map(str, field['enum']))}"
    if field.get("type") == "boolean":
        return f"{name}=true|false"
    kind = {"integer": "INTEGER", "number": "NUMBER"}.get(field.get("type", ""), "TEXT")
    low = field.get("minimum", field.get("exclusiveMinimum"))
    high = field.get("maximum", field.get("exclusiveMaximum"))
    bounds = f" ({low}..{high})" if low is not None and high is not None else ""
    return f"{name}={kind}{bounds}"


# -- the device's type -----------------------------------------------------------------------


def device_type_of(settings: Settings, tenant: str, device: str, given: str | None) -> DeviceType:
    """The type of TENANT's DEVICE: as given, else from the registry file if it is here and
    holds the device, else from InfluxDB's stored readings. ArgumentsError says to give --type."""
    if given is not None:
        return DEVICE_TYPES[given]
    found = _registered_type(settings, tenant, device) or _stored_type(settings, tenant, device)
    if found is None:
        raise ArgumentsError(
            f"cannot tell the type of {tenant}/{device}: it is neither in the registry "
            f"({settings.registry}) nor stored in InfluxDB; give --type "
            f"({', '.join(sorted(t for t, d in DEVICE_TYPES.items() if d.commands))})"
        )
    return DEVICE_TYPES[found]


def _registered_type(settings: Settings, tenant: str, device: str) -> str | None:
    from pathlib import Path

    from access.registry import Registry, RegistryError

    if not Path(settings.registry).is_file():
        return None  # an operator's machine rarely holds the registry: never create one here
    try:
        records = Registry(settings.registry).devices(tenant=tenant)
    except RegistryError:
        return None
    return next((r.device_type for r in records if r.device_id == device), None)


def tenant_refusal(settings: Settings, account: str, tenant: str) -> str | None:
    """Why `account` may not ask about `tenant`'s devices, if the registry file is here and
    says so; else None (ingest decides). An operator or clinician of another tenant may not
    write `tenant`'s request topics: our broker's ACL drops that publish unanswered (MQTT
    3.1.1 has no refusal), so without this the asker would wait out `--timeout` for nothing."""
    from pathlib import Path

    from access.registry import Registry, RegistryError

    if not Path(settings.registry).is_file():
        return None  # an operator's machine rarely holds the registry: never create one here
    try:
        record = next(
            (a for a in Registry(settings.registry).accounts() if a.name == account), None
        )
    except RegistryError:
        return None
    if record is None or record.tenant is None or record.tenant == tenant:
        return None  # unknown here, a service account, or of this tenant: ingest decides
    return (
        f"account {account!r} belongs to tenant {record.tenant!r}, not {tenant!r}: only "
        f"operators and clinicians of {tenant} act on its devices (nothing was sent)"
    )


def _stored_type(settings: Settings, tenant: str, device: str) -> str | None:
    import asyncio

    from query.errors import QueryError
    from query.fleet import find_device
    from storage.database import open_influx
    from storage.influx import InfluxError

    async def find() -> str:
        async with open_influx(settings) as client:
            return (await find_device(client, device, tenant=tenant)).device_type

    try:
        return asyncio.run(find())
    except (QueryError, InfluxError):
        return None
