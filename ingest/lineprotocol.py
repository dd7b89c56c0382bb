"""InfluxDB line protocol, by plain string formatting (measured ~2.5x faster than a Point API).

Storage schema:
- a reading: measurement = device type; tags `device_id`, `tenant`; fields = the reading's fields
  plus `seq`; timestamp = the reading's own `ts`, so a redelivered reading overwrites itself.
- a rejection: measurement `moclo_rejected`; tags `device_type`, `reason`, `tenant`; fields
  `topic`, `error`, `payload` (at most 1 KiB); timestamp = when it was received.
- an alert change: measurement `moclo_alerts`; see `ingest/alerts.py`.
All timestamps are nanoseconds (`precision=ns`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from devices.base import Reading
from devices.topics import DeviceAddress
from ingest.decode import Rejection, ValidReading

REJECTED_MEASUREMENT = "moclo_rejected"
ALERTS_MEASUREMENT = "moclo_alerts"

_TAG_SPECIALS = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
# Line protocol has no escape for line breaks, so any control character in a string is
# written as a visible \xNN escape instead of ending the line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def escape_tag(value: str) -> str:
    """Escapes a tag key or value. Control characters are made visible, never passed through."""
    return _CONTROL.sub(_visible, value).translate(_TAG_SPECIALS)


def quote_string(value: str) -> str:
    """A string field value: backslashes and quotes escaped, control characters made visible."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + _CONTROL.sub(_visible, escaped) + '"'


def _visible(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


def format_field(value: object) -> str:
    # bool before int: bool is a subclass of int and must stay a boolean field.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return quote_string(str(value))


def format_fields(fields: Mapping[str, object]) -> str:
    return ",".join(f"{escape_tag(name)}={format_field(value)}" for name, value in fields.items())


def reading_line(item: ValidReading) -> str:
    reading: Reading = item.reading
    address = item.address
    # Identifiers and type names are validated, so they need no escaping; tags sorted by key,
    # as InfluxDB prefers.
    fields = ",".join(
        f"{name}={format_field(getattr(reading, name))}" for name in reading.measurement_fields
    )
    return (
        f"{address.device_type},device_id={address.device_id},tenant={address.tenant} "
        f"{fields},seq={reading.seq}i {reading.ts}"
    )


def parse_reading_address(line: str) -> DeviceAddress | None:
    """The device behind a line written by `reading_line`; None for any other line."""
    head, _, _ = line.partition(" ")
    measurement, _, tags = head.partition(",")
    if measurement.startswith("moclo_") or not tags:
        return None
    values = dict(tag.partition("=")[::2] for tag in tags.split(","))
    if "device_id" not in values or "tenant" not in values:
        return None
    return DeviceAddress(values["tenant"], measurement, values["device_id"])


def is_reading_line(line: str) -> bool:
    return not line.startswith("moclo_")


def rejection_line(rejection: Rejection, ts_ns: int) -> str:
    payload = rejection.payload.decode("utf-8", "backslashreplace")
    return (
        f"{REJECTED_MEASUREMENT},device_type={escape_tag(rejection.device_type)},"
        f"reason={rejection.reason.value},tenant={escape_tag(rejection.tenant)} "
        f"topic={quote_string(rejection.topic)},error={quote_string(rejection.error)},"
        f"payload={quote_string(payload)} {ts_ns}"
    )
