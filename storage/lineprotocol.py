"""InfluxDB line protocol, by plain string formatting (measured ~2.5x faster than a Point API).

The lines of readings, rejections and unregistered devices, and the escaping every line needs
(an alert change's line is in `alert_record.py`). What each measurement holds, its tags and
fields, is declared in `schema.py`; all timestamps are nanoseconds (`precision=ns`).
"""

from __future__ import annotations

import itertools
import operator
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import orjson

from devices.base import Reading
from devices.fast import AnyReading, FastReading
from devices.topics import DeviceAddress
from storage.schema import (
    DEVICE_ID,
    DEVICE_TYPE,
    ERROR,
    OWN_PREFIX,
    PAYLOAD,
    READINGS,
    REASON,
    REJECTED,
    SEQ,
    TENANT,
    TOPIC,
    UNREGISTERED,
)


# What the writer needs of decode's results (`ingest.decode.ValidReading` and `Rejection`),
# said here so that storage sits below ingest and imports nothing of it.
class StoredReading(Protocol):
    @property
    def address(self) -> DeviceAddress: ...
    @property
    def reading(self) -> AnyReading: ...


class _Reason(Protocol):
    @property
    def value(self) -> str: ...


class StoredRejection(Protocol):
    @property
    def reason(self) -> _Reason: ...
    @property
    def tenant(self) -> str: ...
    @property
    def device_type(self) -> str: ...
    @property
    def topic(self) -> str: ...
    @property
    def error(self) -> str: ...
    @property
    def payload(self) -> bytes: ...


_TAG_SPECIALS = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
# Line protocol has no escape for line breaks, so any control character in a string is
# written as a visible \xNN escape instead of ending the line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def escape_tag(value: str) -> str:
    """Escapes a tag key or value. Control characters are made visible, never passed through."""
    return _CONTROL.sub(_visible, value).translate(_TAG_SPECIALS)


def line_field_string(value: str) -> str:
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
    return line_field_string(str(value))


def reading_line(item: StoredReading) -> str:
    return reading_fields(item.reading, reading_head(item.address))


def reading_head(address: DeviceAddress) -> str:
    """The start of every reading line of one device: its measurement and tags, then the space
    before the fields. A message's readings share it, so ingest makes it once per message."""
    return _head(address)


def reading_fields(reading: AnyReading, head: str) -> str:
    """One reading's line: `head` (from `reading_head` of its device), its fields, its time."""
    return reading_formatter(type(reading))(head, reading)


LineFormatter = Callable[[str, AnyReading], str]  # (head, reading) → the reading's line


def reading_formatter(reading_type: type[AnyReading]) -> LineFormatter:
    """What `reading_fields` calls for readings of one type (for a loop over many of them)."""
    formatter = _FORMATTERS.get(reading_type)
    if formatter is None:
        formatter = _FORMATTERS[reading_type] = _compile_formatter(reading_type)
    return formatter


_FORMATTERS: dict[type[AnyReading], LineFormatter] = {}
_PLAIN = re.compile(r'[^\x00-\x1f\x7f\\"]*')  # a string that line_field_string leaves as it is
# Identifiers and type names are validated, so they need no escaping; each tag's value is the
# device address's attribute of the same name.
_head: Callable[[DeviceAddress], str] = eval(
    'lambda a: f"{a.device_type},' + ",".join(f"{tag}={{a.{tag}}}" for tag in READINGS.tags) + ' "'
)


def _model(reading_type: type[AnyReading]) -> type[Reading]:
    """The pydantic model whose field kinds say how a reading of `reading_type` is written."""
    return reading_type.pydantic_model if issubclass(reading_type, FastReading) else reading_type


def _float_fields(model: type[Reading]) -> list[str]:
    return [n for n in model.measurement_fields if model.model_fields[n].annotation is float]


def _compile_formatter(reading_type: type[AnyReading]) -> LineFormatter:
    """One f-string per reading type, written out field by field (as dataclasses writes its
    __init__): about 2.5x faster than formatting each field through `format_field`, and the
    same text, because a validated reading's values have exactly their declared types. A
    generated Struct (devices/fast.py) is formatted by its pydantic model's field kinds."""
    source = "lambda h, r: " + _line_source(reading_type)
    formatter: LineFormatter = eval(source, {"format_field": format_field})
    return formatter


def _line_source(
    reading_type: type[AnyReading], float_text: Mapping[str, str] | None = None
) -> str:
    """The f-string of a line of `reading_type` from the head `h` and the reading `r`; with
    `float_text`, each float field is written from the variable it names (its text) instead of
    `repr` of the reading's value."""
    model = _model(reading_type)
    fields = []
    for name in model.measurement_fields:
        if not name.isidentifier():
            raise ValueError(f"{model.__name__}.{name} is not an identifier")
        kind = model.model_fields[name].annotation
        if kind is float and float_text is not None:
            fields.append(f"{name}={{{float_text[name]}}}")
        elif kind is float:
            fields.append(f"{name}={{r.{name}!r}}")
        elif kind is int:
            fields.append(f"{name}={{r.{name}}}i")
        elif kind is bool:
            fields.append(f"{name}={{'true' if r.{name} else 'false'}}")
        elif typing.get_origin(kind) is typing.Literal and all(
            isinstance(v, str) and _PLAIN.fullmatch(v) for v in typing.get_args(kind)
        ):
            fields.append(f'{name}=\\"{{r.{name}}}\\"')  # \" inside the f-string
        else:  # anything else goes the general way
            fields.append(f"{name}={{format_field(r.{name})}}")
    return 'f"{h}' + ",".join([*fields, f"{SEQ}={{r.{SEQ}}}i {{r.ts}}"]) + '"'


RunFormatter = Callable[[str, list[AnyReading]], list[str]]  # (head, readings) → their lines


def reading_run_formatter(reading_type: type[AnyReading]) -> RunFormatter:
    """The lines of a run of readings of one type and one device (an array's), the same as
    `reading_formatter`'s one by one but for the text of float fields.

    `repr` of a float was most of a line's cost (about 0.25 µs each, four per cow reading).
    Here a run's floats are written by one `orjson.dumps` call: the same shortest text that
    reads back as the same double (only the exponent is written `1e-7`, not `1e-07`, which
    InfluxDB reads as the same number; tests/test_lineprotocol.py stores both ways). orjson
    writes NaN and infinities as `null` and refuses integers beyond 64 bits; validated readings
    hold neither, but should one come, the run is written by `repr` as before."""
    formatter = _RUN_FORMATTERS.get(reading_type)
    if formatter is None:
        formatter = _RUN_FORMATTERS[reading_type] = _compile_run_formatter(reading_type)
    return formatter


_RUN_FORMATTERS: dict[type[AnyReading], RunFormatter] = {}


def _compile_run_formatter(reading_type: type[AnyReading]) -> RunFormatter:
    one = reading_formatter(reading_type)
    floats = _float_fields(_model(reading_type))
    if not floats:
        return lambda h, rs: [one(h, r) for r in rs]
    names = {name: f"v{i}" for i, name in enumerate(floats)}
    line = _line_source(reading_type, names)
    # One float: attrgetter gives the value itself; several: a tuple of them, chained flat.
    values = "list(map(get, rs))" if len(floats) == 1 else "list(chain(map(get, rs)))"
    unpack = "".join(f"{v}, " for v in names.values())
    source = (
        "def run(h, rs):\n"
        "    if len(rs) == 1:\n"  # a single reading's message: orjson's call costs more
        "        return [one(h, rs[0])]\n"
        "    try:\n"
        f"        text = dumps({values})\n"
        "    except JSONEncodeError:\n"
        "        return [one(h, r) for r in rs]\n"
        '    if b"null" in text:\n'
        "        return [one(h, r) for r in rs]\n"
        '    it = iter(text[1:-1].decode().split(","))\n'
        f"    return [{line} for r, ({unpack}) in zip(rs, zip({'it, ' * len(floats)}))]\n"
    )
    namespace = {
        "dumps": orjson.dumps,
        "JSONEncodeError": orjson.JSONEncodeError,
        "chain": itertools.chain.from_iterable,
        "get": operator.attrgetter(*floats),
        "one": one,
        "format_field": format_field,
    }
    exec(source, namespace)
    run: RunFormatter = namespace["run"]  # type: ignore[assignment]
    return run


def parse_reading_address(line: str) -> DeviceAddress | None:
    """The device behind a line written by `reading_line`; None for any other line."""
    head, _, _ = line.partition(" ")
    measurement, _, tags = head.partition(",")
    if measurement.startswith(OWN_PREFIX) or not tags:
        return None
    values = dict(tag.partition("=")[::2] for tag in tags.split(","))
    if DEVICE_ID not in values or TENANT not in values:
        return None
    return DeviceAddress(values[TENANT], measurement, values[DEVICE_ID])


def is_reading_line(line: str) -> bool:
    return not line.startswith(OWN_PREFIX)


def count_reading_lines(lines: Sequence[str]) -> int:
    """How many of `lines` are readings: `is_reading_line` of each, at C speed (no Python call
    per line; a batch holds tens of thousands)."""
    return len(lines) - sum(map(str.startswith, lines, itertools.repeat(OWN_PREFIX)))


def rejection_line(rejection: StoredRejection, ts_ns: int) -> str:
    payload = rejection.payload.decode("utf-8", "backslashreplace")
    return (
        f"{REJECTED.name},{DEVICE_TYPE}={escape_tag(rejection.device_type)},"
        f"{REASON}={rejection.reason.value},{TENANT}={escape_tag(rejection.tenant)} "
        f"{TOPIC}={line_field_string(rejection.topic)},"
        f"{ERROR}={line_field_string(rejection.error)},"
        f"{PAYLOAD}={line_field_string(payload)} {ts_ns}"
    )


def unregistered_line(address: DeviceAddress, topic: str, ts_ns: int) -> str:
    """An unregistered device let through; its address was validated, so only the fields'
    strings need escaping."""
    return (
        f"{UNREGISTERED.name},{DEVICE_TYPE}={address.device_type},{TENANT}={address.tenant} "
        f"{DEVICE_ID}={line_field_string(address.device_id)},"
        f"{TOPIC}={line_field_string(topic)} {ts_ns}"
    )
