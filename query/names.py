"""What a tenant, device id, device type or field name may be, checked before any of them goes
near InfluxQL (where each is also quoted). Each check returns the name or raises QueryError."""

from __future__ import annotations

import re

from devices.catalogue import DEVICE_TYPES
from devices.topics import IDENTIFIER_RULE, is_identifier
from query.errors import QueryError

_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


def check_tenant(value: object) -> str:
    return _identifier(value, "tenant", "tenant")


def check_device_id(value: object) -> str:
    return _identifier(value, "device id", "device_id")


def check_device_type(value: object) -> str:
    if not isinstance(value, str) or value not in DEVICE_TYPES:
        raise QueryError(
            f"unknown device type {value!r}; known types: {', '.join(DEVICE_TYPES)}",
            param="device_type",
        )
    return value


def check_field_name(value: object) -> str:
    """Syntax only: whether a type has the field is `query.series`' question."""
    if not isinstance(value, str) or _FIELD_NAME.fullmatch(value) is None:
        raise QueryError(
            f"{value!r} is not a field name: a field is a lowercase letter, then lowercase "
            "letters, digits and _",
            param="fields",
        )
    return value


def _identifier(value: object, kind: str, param: str) -> str:
    if not isinstance(value, str) or not is_identifier(value):
        raise QueryError(
            f"{kind} {value!r} is not valid: a {kind} matches {IDENTIFIER_RULE}", param=param
        )
    return value
