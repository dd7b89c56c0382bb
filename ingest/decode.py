"""Decode and validate: one MQTT message in, valid readings and reasoned rejections out.

Nothing here raises on bad input. Every message ends as readings, rejections, or both (an array
payload keeps its valid readings and rejects only the bad ones), so the service never stops for
a device that sends garbage and never drops anything without saying why.

Valid payloads take a fast path: msgspec decodes the bytes straight into the Struct generated
from the type's pydantic model (devices/fast.py; pydantic itself for a model that has none),
for an object or an array of them. Anything the fast path does not accept whole (invalid JSON,
an invalid reading, a `device_id` in the payload, an empty or oversized array, a timestamp
outside the window) is decoded again by the careful path, pydantic's, which alone decides what
is rejected and why; so both paths give the same readings and the same rejections, word for
word, the fast one only sooner (tests/test_fast_readings.py).

The careful path is three checks: the topic (`Decoder._check_topic`), the payload as a whole
and each reading (ingest/careful.py), then the time window. Rejections: ingest/rejection.py.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from itertools import repeat
from typing import Literal

import msgspec
import orjson
from pydantic import TypeAdapter, ValidationError

from devices.base import Reading
from devices.catalogue import DEVICE_TYPES
from devices.fast import AnyReading, fast_struct
from devices.topics import (
    MAX_READINGS_PER_MESSAGE,
    DeviceAddress,
    TopicError,
    parse_telemetry_topic,
)
from devices.types import DeviceType
from ingest.careful import checked_item, payload_items
from ingest.rejection import (
    INVALID_TAG,
    REJECTED_PAYLOAD_KEEP_BYTES,
    UNKNOWN_TYPE_TAG,
    Rejecter,
    Rejection,
    RejectReason,
    describe_validation_error,
    tags_from_bad_topic,
)

# Re-exported: a dozen modules and tests take the rejection's names from here.
__all__ = [
    "INVALID_TAG",
    "REJECTED_PAYLOAD_KEEP_BYTES",
    "UNKNOWN_TYPE_TAG",
    "Decoded",
    "Decoder",
    "Limits",
    "RejectReason",
    "Rejection",
    "ValidReading",
    "describe_validation_error",
]

DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024
# Unregistered devices remembered as already reported (MOCLO_UNREGISTERED=flag); beyond this
# many, invented device ids are still counted but no longer reported one by one.
MAX_FLAGGED_DEVICES = 100_000
# Topics whose parsed address is remembered; beyond this many the memory starts afresh.
MAX_CACHED_TOPICS = 100_000


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


class ValidReading(msgspec.Struct, gc=False):
    """A reading and its sender. Made once per reading, so a msgspec Struct: built in C (about
    half a slots dataclass's cost) and not tracked by the garbage collector (it refers to an
    address and a reading, neither of which refers back, so it can be in no cycle)."""

    address: DeviceAddress
    reading: AnyReading  # a Struct from the fast path, a pydantic model from the careful one


@dataclass(slots=True)
class Decoded:
    readings: list[ValidReading] = field(default_factory=list)
    received_ns: list[int] = field(default_factory=list)  # arrival of readings[i]
    rejections: list[Rejection] = field(default_factory=list)
    # Messages of the downlink (topic, payload, arrival), handed on to the command gateway.
    downlink: list[tuple[str, bytes, int]] = field(default_factory=list)


# The fast path's decoders of one model: a single reading, an array of readings.
_Parsers = tuple[Callable[[bytes], AnyReading], Callable[[bytes], list[AnyReading]]]


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
        self._parsers: dict[type[Reading], _Parsers] = {}

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
        one, many = self._parsers.get(device.reading) or self._parsers_for(device.reading)
        first = payload[:1]
        try:
            if first == b"{":
                # One reading, the most common message: no lists made for it.
                reading = one(payload)
                if not self._inside_window(reading.ts, reading.ts, received_ns):
                    return False
                out.readings.append(ValidReading(address, reading))
                out.received_ns.append(received_ns)
                return True
            if first != b"[":
                return False
            readings = many(payload)
        except (msgspec.DecodeError, ValidationError):  # msgspec's ValidationError is a DecodeError
            return False
        if not 0 < len(readings) <= MAX_READINGS_PER_MESSAGE:
            return False
        # The whole array is inside the window when its newest and oldest readings are.
        stamps = [reading.ts for reading in readings]
        if not self._inside_window(max(stamps), min(stamps), received_ns):
            return False
        out.readings.extend(map(ValidReading, repeat(address, len(readings)), readings))
        out.received_ns.extend([received_ns] * len(readings))
        return True

    def _parsers_for(self, model: type[Reading]) -> _Parsers:
        """The fast path's decoders of one reading and of an array of them, made once per model:
        msgspec into the Struct generated from `model`, or pydantic where there is none."""
        struct = fast_struct(model)
        parsers: _Parsers
        if struct is None:
            parsers = (model.model_validate_json, TypeAdapter(list[model]).validate_json)  # type: ignore[valid-type]
        else:
            parsers = (
                msgspec.json.Decoder(struct).decode,
                msgspec.json.Decoder(list[struct]).decode,  # type: ignore[valid-type]
            )
        self._parsers[model] = parsers
        return parsers

    def _careful(self, topic: str, payload: bytes, received_ns: int, out: Decoded) -> None:
        """Decodes step by step, rejecting with the first reason that applies: the topic, then
        the payload as a whole, then each of its readings on its own. A downlink topic is
        handed on instead: only here, so telemetry's fast path pays nothing for it."""
        downlink = self.downlink
        if downlink is not None and not topic.endswith("/telemetry") and downlink(topic):
            out.downlink.append((topic, payload, received_ns))
            return
        reject = Rejecter(out.rejections, topic, payload, received_ns)
        checked = self._check_topic(topic, received_ns, reject)
        if checked is None:
            return
        address, model = checked
        items = payload_items(payload, self._max_payload_bytes, reject)
        if items is None:
            return
        batch = len(items) > 1
        for index, item in enumerate(items):
            where = f"reading {index}: " if batch else ""
            # Each rejected element of a batch keeps its own JSON, so nothing valid is lost
            # and nothing invalid is recorded twice. (Taken before device_id is popped.)
            data = orjson.dumps(item) if batch else payload
            reading = checked_item(item, address, model, where, data, reject)
            if reading is None:
                continue
            if (outside := self._why_outside(reading.ts, received_ns)) is not None:
                reject(outside[0], where + outside[1], data)
                continue
            out.readings.append(ValidReading(address, reading))
            out.received_ns.append(received_ns)

    def _check_topic(
        self, topic: str, received_ns: int, reject: Rejecter
    ) -> tuple[DeviceAddress, type[Reading]] | None:
        """The sender and its reading model, or None having rejected the message for its topic:
        malformed, an unknown device type or an unregistered device. Sets `reject`'s tags."""
        try:
            address = parse_telemetry_topic(self.prefix, topic)
        except TopicError as exc:
            reject.tenant, reject.device_type = tags_from_bad_topic(
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

    def _inside_window(self, newest_ns: int, oldest_ns: int, received_ns: int) -> bool:
        """Whether readings from `oldest_ns` to `newest_ns` are all inside the accepted
        window (the fast path's check; `_why_outside` says why not)."""
        if newest_ns - received_ns > self._max_future_ns:
            return False
        return self._oldest_ns is None or received_ns - oldest_ns <= self._oldest_ns

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


def _span(ns: int) -> str:
    """A duration for people: 3.0 days, 36.0 hours, 90 s."""
    seconds = ns / 1e9
    if seconds >= 2 * 86_400:
        return f"{seconds / 86_400:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds:.0f} s"
