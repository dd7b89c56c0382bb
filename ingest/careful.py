"""The careful path's checks of a payload: the whole payload, then each reading on its own.
Each rejects with the first reason that applies and says what to send instead.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson
from pydantic import ValidationError

from devices.base import Reading
from devices.topics import MAX_READINGS_PER_MESSAGE, DeviceAddress
from ingest.rejection import Rejecter, RejectReason, describe_validation_error


def payload_items(payload: bytes, max_bytes: int, reject: Rejecter) -> list[Any] | None:
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


def checked_item(
    item: Any,
    address: DeviceAddress,
    model: type[Reading],
    where: str,
    data: bytes,
    reject: Rejecter,
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
    for name in integer_fields(model):
        value = item.get(name)
        if type(value) is float and value.is_integer():
            item[name] = int(value)
    try:
        return model.model_validate(item)
    except ValidationError as exc:
        reject(RejectReason.INVALID_READING, where + describe_validation_error(exc), data)
        return None


@functools.cache
def integer_fields(model: type[Reading]) -> tuple[str, ...]:
    """The fields the published JSON Schema (`moclo devices schema`) calls "integer". By JSON
    Schema `120.0` is one, and many device SDKs print whole numbers that way, so the careful
    path takes such a number as the integer it is (stored with `i`); `120.5`, `true` and
    `"120"` still fail the strict model. The fast path's strict parse refuses `120.0` and so
    leaves such a payload to the careful path: readings sent as integers pay nothing for this."""
    properties = model.model_json_schema().get("properties", {})
    return tuple(name for name, spec in properties.items() if spec.get("type") == "integer")
