"""What handling downlink messages leads to, and the JSON forms the gateway reads and writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel

from devices.rfc3339 import format_us
from ingest.announce import Publication
from ingest.decode import Rejection
from storage.alert_record import Alert

KEEP_BYTES = 1024
# A request or an answer bigger than this is refused unread: a command's arguments and a
# read-out fit in a few KiB.
MAX_PAYLOAD_BYTES = 64 * 1024
REQUEST_TAG = "_request"  # the device_type tag of a rejected request (it names no device yet)


@dataclass(frozen=True, slots=True)
class Incoming:
    """A downlink message as the gateway sees it (the broker's packet id is the consumer's)."""

    topic: str
    payload: bytes
    received_ns: int


@dataclass(slots=True)
class Outcome:
    """What handling messages led to, in the order it must happen."""

    lines: list[str] = field(default_factory=list)
    publications: list[Publication] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)  # desired_not_applied (unapplied.py)


def is_downlink_topic(topic: str) -> bool:
    """Whether a topic that is not telemetry belongs to the downlink (the decoder asks only
    of topics that are not a device's telemetry, on its careful path: readings pay nothing)."""
    return "/command" in topic or "/desired" in topic or topic.endswith("/reported")


def stamp(ts_ns: int) -> Any:
    """A time for a downlink model's constructor: a model's Timestamp field reads an integer
    as epoch seconds, so nanoseconds go in as the RFC 3339 text they stand for (typed Any
    because the field is declared as the int it stores)."""
    return format_us(ts_ns)


def to_wire(model: BaseModel, *times: str) -> bytes:
    """A downlink model as JSON, its timestamps (ns inside moclo) as RFC 3339 strings, the
    form every reader of the contract parses back to the same instant (to the microsecond)."""
    document = model.model_dump()
    for key in times:
        document[key] = format_us(document[key])
    return orjson.dumps(document)


def loads_object(payload: bytes) -> dict[str, Any]:
    """A JSON object, or ValueError saying what was sent instead."""
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError(f"a JSON {type(document).__name__}; send a JSON object")
    return document
