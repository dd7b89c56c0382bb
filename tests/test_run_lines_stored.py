"""Review of batch4's run formatter (an array's floats written by one orjson call), end to end:
arrays of every device type, on the fast path and on the careful one (an array with one bad
element), a float field holding a whole number in one reading and a fraction in the next, all
through real Mosquitto, ingest and InfluxDB 1.6.7. Each field keeps its declared type (an
integer stays an integer, a whole float stays a float, booleans and strings as they are), and
each value reads back as sent."""

from __future__ import annotations

import time
from typing import Any

import orjson

from core.settings import Settings
from devices.catalogue import DEVICE_TYPES
from devices.topics import telemetry_topic
from tests.conftest import RunningIngest
from tests.helpers import Influx, publish_all, wait_until

INFLUX_TYPE: dict[object, str] = {float: "float", int: "integer", bool: "boolean"}


def declared(device_type: str) -> dict[str, str]:
    """The InfluxDB field type each measurement field must have, from its model."""
    model = DEVICE_TYPES[device_type].reading
    out = {"seq": "integer"}
    for name in model.measurement_fields:
        kind = model.model_fields[name].annotation
        out[name] = INFLUX_TYPE.get(kind, "string")
    return out


def whole_then_fraction(device_type: str, now: int, careful: bool) -> list[dict[str, Any]]:
    """Three readings; each float field holds a whole number (sent as `20`) in the first."""
    example = DEVICE_TYPES[device_type].example
    floats = [k for k, v in declared(device_type).items() if v == "float"]
    readings = []
    for i in range(3):
        r = {**example, "ts": now - 30 + i, "seq": i}
        if i == 0:
            r.update({k: int(example[k]) for k in floats})  # JSON 20, not 20.0
        readings.append(r)
    if careful:
        readings.append({**example, "ts": now - 20, "seq": "not a number"})  # rejected alone
    return readings


def test_every_type_keeps_its_field_types_and_values_through_a_run(
    settings: Settings, ingest: RunningIngest, influx: Influx
) -> None:
    now = int(time.time())
    sent: dict[str, list[dict[str, Any]]] = {}
    messages = []
    for careful, tenant in ((False, "fast"), (True, "careful")):
        for device_type in DEVICE_TYPES:
            readings = whole_then_fraction(device_type, now, careful)
            topic = telemetry_topic(settings.topic_prefix, tenant, device_type, "d-1")
            messages.append((topic, orjson.dumps(readings)))
            sent.setdefault(device_type, []).extend(
                r for r in readings if r["seq"] != "not a number"
            )
    publish_all(settings.mqtt_url, messages)
    expected = {device_type: len(readings) for device_type, readings in sent.items()}
    wait_until(
        lambda: all(influx.count(d, "seq") == n for d, n in expected.items()), what="all stored"
    )
    for device_type, readings in sent.items():
        keys = influx.query(f'SHOW FIELD KEYS FROM "{device_type}"')
        assert {k["fieldKey"]: k["fieldType"] for k in keys} == declared(device_type), device_type
        rows = influx.query(f'SELECT * FROM "{device_type}" GROUP BY tenant')
        for tenant in ("fast", "careful"):
            got = sorted((r for r in rows if r["tenant"] == tenant), key=lambda r: r["seq"])
            fields = [n for n in declared(device_type) if n != "seq"]
            assert [[r[n] for n in fields] for r in got] == [
                [r[n] for n in fields] for r in sorted(readings[:3], key=lambda r: r["seq"])
            ], (device_type, tenant)
