"""A rejection: a message, or one reading of it, that ingest refuses, with the reason and the
words that tell the sender what to fix. Rejections are data: stored and counted, never raised.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import ValidationError

from devices.topics import is_identifier
from devices.types import DeviceType

REJECTED_PAYLOAD_KEEP_BYTES = 1024

REJECTED_PAYLOAD_KEEP_BYTES = 1024

# Tag values for a rejection whose topic part is not a valid identifier: a hostile topic must
# not be able to create series in InfluxDB, so the raw text goes to a field instead.
INVALID_TAG = "_invalid"
UNKNOWN_TYPE_TAG = "_unknown"


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
class Rejection:
    reason: RejectReason
    tenant: str
    device_type: str
    topic: str
    error: str
    payload: bytes  # at most REJECTED_PAYLOAD_KEEP_BYTES of what was received
    received_ns: int


@dataclass(slots=True)
class Rejecter:
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


def tags_from_bad_topic(
    prefix: str, topic: str, catalogue: Mapping[str, DeviceType]
) -> tuple[str, str]:
    """Best-effort tenant and type tags for a malformed topic, never raw attacker text."""
    parts = topic[len(prefix) + 1 :].split("/") if topic.startswith(prefix + "/") else []
    tenant = parts[0] if parts and is_identifier(parts[0]) else INVALID_TAG
    device_type = parts[1] if len(parts) > 1 and parts[1] in catalogue else UNKNOWN_TYPE_TAG
    return tenant, device_type
