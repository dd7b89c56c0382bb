"""Decode and validate: one MQTT message in, valid readings and reasoned rejections out.

Nothing here raises on bad input. Every message ends as readings, rejections, or both (an array
payload keeps its valid readings and rejects only the bad ones), so the service never stops for
a device that sends garbage and never drops anything without saying why.

Valid payloads take a fast path: pydantic validates the bytes directly (one validator per
type, for an object or an array of them), with no intermediate Python objects. Anything the
fast path does not accept whole (invalid JSON, an invalid reading, a `device_id` in the
payload, an empty or oversized array, a timestamp outside the window) is decoded again by the
careful path, which alone decides what is rejected and why; so both paths give the same
readings and the same rejections, the fast one only sooner.

The careful path is three checks, each a small function: the topic (`_check_topic`), the
payload as a whole (`_payload_items`), each reading (`_checked_item`), then the time window.
This module stays whole at ~470 lines because both paths must decide alike and are read side
by side; moving the checks out would move `RejectReason` and `Rejection`, which a dozen
modules and tests import from here.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from pydantic import TypeAdapter, ValidationError

from devices.base import Reading
from devices.catalogue import DEVICE_TYPES
from devices.topics import (
    MAX_READINGS_PER_MESSAGE,
    DeviceAddress,
    TopicError,
    is_identifier,
    parse_telemetry_topic,
)
from devices.types import DeviceType

DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024
REJECTED_PAYLOAD_KEEP_BYTES = 1024

# Tag values for a rejection whose topic part is not a valid identifier: a hostile topic must
# not be able to create series in InfluxDB, so the raw text goes to a field instead.
INVALID_TAG = "_invalid"
UNKNOWN_TYPE_TAG = "_unknown"
# Unregistered devices remembered as already reported (MOCLO_UNREGISTERED=flag); beyond this
# many, invented device ids are still counted but no longer reported one by one.
MAX_FLAGGED_DEVICES = 100_000
# Topics whose parsed address is remembered; beyond this many the memory starts afresh.
MAX_CACHED_TOPICS = 100_000


class RejectReason(enum.StrEnum):
    BAD_TOPIC = "bad_topic"
    UNKNOWN_DEVICE_TYPE = "unknown_device_type"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    BAD_JSON = "bad_json"
    BAD_SHAPE = "bad_shape"
    TOO_DEEP = "too_deep"
    INVALID_READING = "invalid_reading"
    IDENTITY_MISMATCH = "identity_mismatch"
    TS_OUT_OF_WINDOW = "ts_out_of_window"
    BEYOND_RETENTION = "beyond_retention"  # older than InfluxDB keeps: it would not store it
    CARDINALITY_LIMIT = "cardinality_limit"
    STORAGE_REFUSED = "storage_refused"  # valid for us, refused by InfluxDB (type conflict)
    # An acknowledgement that is malformed or names no open alert; the stored value keeps "ack".
    BAD_ACKNOWLEDGEMENT = "bad_ack"
    UNREGISTERED_DEVICE = "unregistered_device"  # not in the registry, or revoked
    # The downlink (ingest/downlink/): a person's request or a device's message moclo cannot
    # read; a request it can read but refuses is a `refused` step in moclo_commands instead.
    BAD_COMMAND_REQUEST = "bad_command_request"
    BAD_DESIRED_REQUEST = "bad_desired_request"
    BAD_COMMAND_RESULT = "bad_command_result"
    BAD_REPORTED = "bad_reported"


@dataclass(frozen=True, slots=True)
class Limits:
    """What ingest accepts beyond the schema. Every limit turns excess into a rejection."""

    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    # A reading's ts may be at most this far after its arrival (device clocks drift) ...
    max_future_s: float = 600.0
    # ... and at most this far before it (devices that were offline upload their backlog);
    # None accepts any age InfluxDB can store. Ingest sets it from MOCLO_MAX_READING_AGE.
    max_past_s: float | None = 90 * 86_400.0
    # New devices per tenant: a burst, then a steady rate (token bucket), so a flood of
    # invented device ids cannot blow up the number of series.
    new_devices_burst: int = 10_000
    new_devices_per_minute: int = 1_000


@dataclass(slots=True)  # not frozen: made once per reading, and frozen costs four times as much
class ValidReading:
    address: DeviceAddress
    reading: Reading


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: RejectReason
    tenant: str
    device_type: str
    topic: str
    error: str
    payload: bytes  # at most REJECTED_PAYLOAD_KEEP_BYTES of what was received
    received_ns: int


@dataclass(slots=True)
class Decoded:
    readings: list[ValidReading] = field(default_factory=list)
    received_ns: list[int] = field(default_factory=list)  # arrival of readings[i]
    rejections: list[Rejection] = field(default_factory=list)
    # Messages of the downlink (topic, payload, arrival), handed on to the command gateway.
    downlink: list[tuple[str, bytes, int]] = field(default_factory=list)


class Decoder:
    """Turns (topic, payload) into readings and rejections using the device catalogue.

    With `registered` (the registry's active devices), a message from any other device is
    rejected as `unregistered_device` before its payload is even parsed, or, with
    `unregistered="flag"`, decoded as usual and noted: `unregistered_messages` counts such
    messages and `take_flagged()` hands over each such device once, when first seen.
    """

    def __init__(
        self,
        prefix: str,
        *,
        catalogue: Mapping[str, DeviceType] = DEVICE_TYPES,
        limits: Limits = Limits(),
        registered: Container[DeviceAddress] | None = None,
        unregistered: Literal["reject", "flag"] = "reject",
        downlink: Callable[[str], bool] | None = None,
    ) -> None:
        self.prefix = prefix
        # Which topics that are not telemetry belong to the command gateway (None: none).
        self.downlink = downlink
        self._catalogue = catalogue
        self._registered = registered
        self._flag_unregistered = unregistered == "flag"
        self.unregistered_messages = 0  # let through because of "flag"
        self._flagged_seen: set[DeviceAddress] = set()
        self._flagged_new: list[tuple[DeviceAddress, str, int]] = []
        self._max_payload_bytes = limits.max_payload_bytes
        self._max_future_ns = int(limits.max_future_s * 1e9)
        self._max_past_ns = None if limits.max_past_s is None else int(limits.max_past_s * 1e9)
        self._retention_ns: int | None = None  # how long InfluxDB keeps points, if known
        self._oldest_ns = self._max_past_ns  # the lesser of the two: the one bound checked
        self._addresses: dict[str, DeviceAddress] = {}
        self._many: dict[type[Reading], TypeAdapter[list[Reading]]] = {}

    def decode(self, topic: str, payload: bytes, received_ns: int, out: Decoded) -> None:
        """Appends what `payload` holds to `out`: its valid readings and any rejections."""
        address = self._addresses.get(topic)
        if address is None:
            # A topic not seen before still tries the fast path: a gateway uploading a backlog
            # sends a device's first array as it sends the rest.
            address = self._learn_topic(topic)
        if address is None or not self._fast(address, payload, received_ns, out):
            self._careful(topic, payload, received_ns, out)

    def _learn_topic(self, topic: str) -> DeviceAddress | None:
        """The sender named by a telemetry topic, remembered; None: the careful path decides."""
        try:
            address = parse_telemetry_topic(self.prefix, topic)
        except TopicError:
            return None
        if len(self._addresses) >= MAX_CACHED_TOPICS:
            self._addresses.clear()
        self._addresses[topic] = address
        return address

    def _fast(self, address: DeviceAddress, payload: bytes, received_ns: int, out: Decoded) -> bool:
        """Appends the readings of a payload that is valid as a whole and returns True, or
        returns False having appended nothing."""
        device = self._catalogue.get(address.device_type)
        if (
            device is None
            or (self._registered is not None and address not in self._registered)
            or len(payload) > self._max_payload_bytes
            or b'"device_id"' in payload
        ):
            return False
        model = device.reading
        readings: list[Reading]
        try:
            if payload[:1] == b"{":
                readings = [model.model_validate_json(payload)]
            elif payload[:1] == b"[":
                adapter = self._many.get(model)
                if adapter is None:
                    adapter = self._many[model] = TypeAdapter(list[model])  # type: ignore[valid-type]
                readings = adapter.validate_json(payload)
                if not 0 < len(readings) <= MAX_READINGS_PER_MESSAGE:
                    return False
            else:
                return False
        except ValidationError:
            return False
        # The whole array is inside the window when its newest and oldest readings are.
        stamps = [reading.ts for reading in readings]
        if self._outside_window(max(stamps), received_ns) or self._outside_window(
            min(stamps), received_ns
        ):
            return False
        out.readings.extend([ValidReading(address, reading) for reading in readings])
        out.received_ns.extend([received_ns] * len(readings))
        return True

    def _careful(self, topic: str, payload: bytes, received_ns: int, out: Decoded) -> None:
        """Decodes step by step, rejecting with the first reason that applies: the topic, then
        the payload as a whole, then each of its readings on its own. A downlink topic is
        handed on instead: only here, so telemetry's fast path pays nothing for it."""
        downlink = self.downlink
        if downlink is not None and not topic.endswith("/telemetry") and downlink(topic):
            out.downlink.append((topic, payload, received_ns))
            return
        reject = _Rejecter(out.rejections, topic, payload, received_ns)
        checked = self._check_topic(topic, received_ns, reject)
        if checked is None:
            return
        address, model = checked
        items = _payload_items(payload, self._max_payload_bytes, reject)
        if items is None:
            return
        batch = len(items) > 1
        for index, item in enumerate(items):
            where = f"reading {index}: " if batch else ""
            # Each rejected element of a batch keeps its own JSON, so nothing valid is lost
            # and nothing invalid is recorded twice. (Taken before device_id is popped.)
            data = orjson.dumps(item) if batch else payload
            reading = _checked_item(item, address, model, where, data, reject)
            if reading is None:
                continue
            if (outside := self._why_outside(reading.ts, received_ns)) is not None:
                reject(outside[0], where + outside[1], data)
                continue
            out.readings.append(ValidReading(address, reading))
            out.received_ns.append(received_ns)

    def _check_topic(
        self, topic: str, received_ns: int, reject: _Rejecter
    ) -> tuple[DeviceAddress, type[Reading]] | None:
        """The sender and its reading model, or None having rejected the message for its topic:
        malformed, an unknown device type or an unregistered device. Sets `reject`'s tags."""
        try:
            address = parse_telemetry_topic(self.prefix, topic)
        except TopicError as exc:
            reject.tenant, reject.device_type = _tags_from_bad_topic(
                self.prefix, topic, self._catalogue
            )
            reject(RejectReason.BAD_TOPIC, str(exc))
            return None
        reject.tenant = address.tenant
        device = self._catalogue.get(address.device_type)
        if device is None:
            known = ", ".join(sorted(self._catalogue))
            reject(
                RejectReason.UNKNOWN_DEVICE_TYPE,
                f"unknown device type {address.device_type!r}; known: {known}",
            )
            return None
        reject.device_type = device.name
        if self._registered is not None and address not in self._registered:
            if not self._flag_unregistered:
                reject(
                    RejectReason.UNREGISTERED_DEVICE,
                    f"device {address.tenant}/{device.name}/{address.device_id} is not registered "
                    "(never added, or revoked); `moclo devices add` registers a device",
                )
                return None
            self._flag(address, topic, received_ns)
        return address, device.reading

    def take_flagged(self) -> list[tuple[DeviceAddress, str, int]]:
        """(address, topic, received_ns) of each unregistered device let through since the last
        call and not seen before (see `forget_flagged`)."""
        flagged, self._flagged_new = self._flagged_new, []
        return flagged

    def forget_flagged(self) -> None:
        """After the registry changed: an unregistered device is reported again when next seen
        (it may have been registered and revoked meanwhile)."""
        self._flagged_seen.clear()

    def _flag(self, address: DeviceAddress, topic: str, received_ns: int) -> None:
        self.unregistered_messages += 1
        if address not in self._flagged_seen and len(self._flagged_seen) < MAX_FLAGGED_DEVICES:
            self._flagged_seen.add(address)
            self._flagged_new.append((address, topic, received_ns))

    def set_retention(self, seconds: float | None) -> None:
        """How long InfluxDB keeps points (None: forever, or not known). Readings older than
        that, yet within `max_past_s`, are rejected as `beyond_retention`: InfluxDB would
        refuse them. Cheap: the hot path compares against one number either way."""
        self._retention_ns = None if seconds is None else int(seconds * 1e9)
        bounds = [b for b in (self._max_past_ns, self._retention_ns) if b is not None]
        self._oldest_ns = min(bounds) if bounds else None

    def _outside_window(self, ts_ns: int, received_ns: int) -> str | None:
        """Why `ts_ns` is outside the accepted window, or None (the fast path's check)."""
        if ts_ns - received_ns > self._max_future_ns:
            return "future"
        if self._oldest_ns is not None and received_ns - ts_ns > self._oldest_ns:
            return "past"
        return None

    def _why_outside(self, ts_ns: int, received_ns: int) -> tuple[RejectReason, str] | None:
        """The reason and explanation for a ts outside the window, or None."""
        if ts_ns - received_ns > self._max_future_ns:
            return RejectReason.TS_OUT_OF_WINDOW, (
                f"ts is {(ts_ns - received_ns) / 1e9:.0f}s after arrival; at most "
                f"{self._max_future_ns / 1e9:.0f}s ahead is accepted (check the device clock)"
            )
        age = received_ns - ts_ns
        if self._max_past_ns is not None and age > self._max_past_ns:
            return RejectReason.TS_OUT_OF_WINDOW, (
                f"ts is {_span(age)} before arrival; at most {_span(self._max_past_ns)} back is "
                "accepted (MOCLO_MAX_READING_AGE)"
            )
        if self._retention_ns is not None and age > self._retention_ns:
            return RejectReason.BEYOND_RETENTION, (
                f"ts is {_span(age)} before arrival; the database keeps {_span(self._retention_ns)}"
                " (its retention), so InfluxDB would not store it"
            )
        return None


@dataclass(slots=True)
class _Rejecter:
    """Appends the rejections of one message (the careful path's): all share its topic, payload
    and arrival, and its tags once the topic check has found them."""

    rejections: list[Rejection]
    topic: str
    payload: bytes
    received_ns: int
    tenant: str = INVALID_TAG
    device_type: str = UNKNOWN_TYPE_TAG

    def __call__(self, reason: RejectReason, error: str, data: bytes | None = None) -> None:
        kept = (self.payload if data is None else data)[:REJECTED_PAYLOAD_KEEP_BYTES]
        self.rejections.append(
            Rejection(
                reason, self.tenant, self.device_type, self.topic, error, kept, self.received_ns
            )
        )


def _payload_items(payload: bytes, max_bytes: int, reject: _Rejecter) -> list[Any] | None:
    """The payload's readings as JSON values (one for an object), or None having rejected it
    as a whole: too large, not JSON, too deep, or not an object or a non-empty array."""
    if len(payload) > max_bytes:
        reject(
            RejectReason.PAYLOAD_TOO_LARGE,
            f"payload is {len(payload)} bytes; the limit is {max_bytes}",
        )
        return None
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        # orjson stops at 1024 levels; a reading is flat, so anything that deep is hostile.
        reason = RejectReason.TOO_DEEP if "depth limit" in str(exc) else RejectReason.BAD_JSON
        reject(reason, f"not valid JSON: {exc}")
        return None
    if isinstance(document, dict):
        return [document]
    if not isinstance(document, list):
        reject(
            RejectReason.BAD_SHAPE,
            f"payload is a JSON {type(document).__name__}; send an object (one reading) "
            "or an array of readings",
        )
        return None
    if not document:
        reject(RejectReason.BAD_SHAPE, "empty array: send at least one reading")
        return None
    if len(document) > MAX_READINGS_PER_MESSAGE:
        reject(
            RejectReason.BAD_SHAPE,
            f"array of {len(document)} readings; at most {MAX_READINGS_PER_MESSAGE} per message",
        )
        return None
    return document


def _checked_item(
    item: Any,
    address: DeviceAddress,
    model: type[Reading],
    where: str,
    data: bytes,
    reject: _Rejecter,
) -> Reading | None:
    """One element of the payload as a reading of `model`, or None having rejected it (with
    `data`, its own JSON): not an object, naming another device, or invalid."""
    if not isinstance(item, dict):
        reject(RejectReason.BAD_SHAPE, f"{where}expected a JSON object", data)
        return None
    # A device may name itself in the payload; if it names another device, it is speaking
    # on a topic that is not its own.
    claimed = item.pop("device_id", address.device_id)
    if claimed != address.device_id:
        reject(
            RejectReason.IDENTITY_MISMATCH,
            f"{where}payload says device_id {str(claimed)[:70]!r} but the topic is "
            f"{address.device_id!r}'s",
            data,
        )
        return None
    for name in _integer_fields(model):
        value = item.get(name)
        if type(value) is float and value.is_integer():
            item[name] = int(value)
    try:
        return model.model_validate(item)
    except ValidationError as exc:
        reject(RejectReason.INVALID_READING, where + describe_validation_error(exc), data)
        return None


@functools.cache
def _integer_fields(model: type[Reading]) -> tuple[str, ...]:
    """The fields the published JSON Schema (`moclo devices schema`) calls "integer". By JSON
    Schema `120.0` is one, and many device SDKs print whole numbers that way, so the careful
    path takes such a number as the integer it is (stored with `i`); `120.5`, `true` and
    `"120"` still fail the strict model. The fast path's strict parse refuses `120.0` and so
    leaves such a payload to the careful path: readings sent as integers pay nothing for this."""
    properties = model.model_json_schema().get("properties", {})
    return tuple(name for name, spec in properties.items() if spec.get("type") == "integer")


def _span(ns: int) -> str:
    """A duration for people: 3.0 days, 36.0 hours, 90 s."""
    seconds = ns / 1e9
    if seconds >= 2 * 86_400:
        return f"{seconds / 86_400:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds:.0f} s"


def describe_validation_error(exc: ValidationError) -> str:
    """A one-line summary: `field: what was wrong (got X); other_field: ...`."""
    parts = []
    for error in exc.errors(include_url=False):
        location = ".".join(str(part) for part in error["loc"]) or "reading"
        message = error["msg"]
        if error["type"] == "missing":
            parts.append(f"{location}: required field is missing")
            continue
        if error["type"] == "extra_forbidden":
            parts.append(f"{location}: unknown field")
            continue
        got = repr(error.get("input"))
        if len(got) > 40:
            got = got[:37] + "..."
        parts.append(f"{location}: {message} (got {got})")
    return "; ".join(parts)


def _tags_from_bad_topic(
    prefix: str, topic: str, catalogue: Mapping[str, DeviceType]
) -> tuple[str, str]:
    """Best-effort tenant and type tags for a malformed topic, never raw attacker text."""
    parts = topic[len(prefix) + 1 :].split("/") if topic.startswith(prefix + "/") else []
    tenant = parts[0] if parts and is_identifier(parts[0]) else INVALID_TAG
    device_type = parts[1] if len(parts) > 1 and parts[1] in catalogue else UNKNOWN_TYPE_TAG
    return tenant, device_type
