"""Ingest and the JSON Schema it publishes agree on integer fields: by JSON Schema `120.0` is an
integer (many device SDKs print whole numbers that way), `120.5` is not. Both decode paths
accept the first, stored as an integer, and reject the second."""

from __future__ import annotations

import json
import time
from typing import Any

import jsonschema
import orjson
import pytest

from core.settings import Settings
from devices.catalogue import DEVICE_TYPES
from devices.topics import telemetry_topic
from ingest.decode import Decoded, Decoder, RejectReason
from storage.lineprotocol import reading_line
from tests.conftest import RunningIngest
from tests.helpers import Influx, moclo, publish_all, wait_until
from tests.test_decode import ARRIVAL_NS

INTEGER_FIELDS = [
    (name, field)
    for name, device in DEVICE_TYPES.items()
    for field, spec in device.json_schema()["properties"].items()
    if spec.get("type") == "integer"
]
IDS = [f"{name}.{field}" for name, field in INTEGER_FIELDS]


def payload(device_type: str, **changes: Any) -> dict[str, Any]:
    return {**DEVICE_TYPES[device_type].example, "ts": ARRIVAL_NS // 10**9 - 60, **changes}


def decode_both_ways(device_type: str, data: bytes) -> tuple[Decoded, Decoded]:
    """(careful path: a topic seen for the first time; fast path: a topic seen before)."""
    topic = telemetry_topic("moclo", "t", device_type, "d-1")
    cold = Decoded()
    Decoder("moclo").decode(topic, data, ARRIVAL_NS, cold)
    decoder = Decoder("moclo")
    decoder.decode(topic, orjson.dumps(payload(device_type)), ARRIVAL_NS, Decoded())
    warm = Decoded()
    decoder.decode(topic, data, ARRIVAL_NS, warm)
    return cold, warm


def test_the_catalogue_has_integer_fields_to_check() -> None:
    assert ("cow_tracker", "activity") in INTEGER_FIELDS
    assert ("cow_tracker", "seq") in INTEGER_FIELDS


@pytest.mark.parametrize(("device_type", "field"), INTEGER_FIELDS, ids=IDS)
def test_a_whole_float_is_an_integer_for_the_schema_and_for_ingest(
    device_type: str, field: str
) -> None:
    schema = DEVICE_TYPES[device_type].json_schema()
    whole = int(payload(device_type)[field])
    document = payload(device_type, **{field: float(whole)})
    text = json.dumps(document).encode()
    assert f'"{field}": {whole}.0'.encode() in text  # really sent as X.0
    jsonschema.validate(json.loads(text), schema)
    for path in decode_both_ways(device_type, text):
        assert path.rejections == []
        [item] = path.readings
        value = getattr(item.reading, field)
        assert type(value) is int and value == whole
        assert f"{field}={whole}i" in reading_line(item)


@pytest.mark.parametrize(("device_type", "field"), INTEGER_FIELDS, ids=IDS)
@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(0.5, id="half"),
        pytest.param(True, id="boolean"),
        pytest.param("7", id="string"),
    ],
)
def test_what_the_schema_refuses_ingest_rejects(device_type: str, field: str, sent: Any) -> None:
    schema = DEVICE_TYPES[device_type].json_schema()
    value = int(payload(device_type)[field]) + sent if sent == 0.5 else sent
    document = payload(device_type, **{field: value})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, schema)
    for path in decode_both_ways(device_type, json.dumps(document).encode()):
        assert path.readings == []
        assert [r.reason for r in path.rejections] == [RejectReason.INVALID_READING]


@pytest.mark.parametrize("number", [b"1e400", b"-1e400"])
def test_a_number_too_large_for_a_float_is_still_refused(number: bytes) -> None:
    text = json.dumps(payload("cow_tracker", activity=0)).encode()
    for path in decode_both_ways(
        "cow_tracker", text.replace(b'"activity": 0', b'"activity": ' + number)
    ):
        assert path.readings == [] and len(path.rejections) == 1


def test_the_printed_schema_is_the_one_checked_here() -> None:
    result = moclo("devices", "schema", "cow_tracker", timeout_s=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json.loads(
        json.dumps(DEVICE_TYPES["cow_tracker"].json_schema())
    )


def test_whole_floats_and_integers_are_stored_in_one_integer_field(
    settings: Settings, influx: Influx, ingest: RunningIngest
) -> None:
    """Through a real ingest into InfluxDB: 120.0 then 121 are one integer field, no type
    conflict (a float would flip the field and refuse the integer after it)."""
    topic = telemetry_topic(settings.topic_prefix, "farm", "cow_tracker", "cow-1")
    now = int(time.time())
    first = orjson.dumps(payload("cow_tracker", ts=now - 2, seq=1, activity=120.0))
    second = orjson.dumps(payload("cow_tracker", ts=now - 1, seq=2, activity=121))
    assert b'"activity":120.0' in first
    publish_all(settings.mqtt_url, [(topic, first), (topic, second)])
    wait_until(lambda: influx.count("cow_tracker", "activity") == 2, what="both stored")
    rows = influx.query('SELECT "activity" FROM "cow_tracker"')
    assert [r["activity"] for r in rows] == [120, 121]
    assert ingest.stats.rejected == 0
    types = {
        r["fieldKey"]: r["fieldType"] for r in influx.query('SHOW FIELD KEYS FROM "cow_tracker"')
    }
    assert types["activity"] == "integer"
