"""Ingest against a real Mosquitto and a real InfluxDB: exact counts, rejections, alerts."""

from __future__ import annotations

import json
import time

import orjson

from core.settings import Settings
from devices.topics import alert_subscription, telemetry_topic
from ingest.decode import RejectReason
from ingest.options import IngestOptions
from simulators.run import SimulationOptions, run_simulation
from tests.conftest import RunningIngest
from tests.helpers import COW, Influx, Subscriber, cow_json, publish_all, wait_until

T0 = int(time.time()) // 60 * 60 - 3600  # an hour ago: inside the accepted ts window


def cow_topic(settings: Settings, device_id: str = "cow-1", tenant: str = "farm") -> str:
    return telemetry_topic(settings.topic_prefix, tenant, "cow_tracker", device_id)


def cow_reading(ts: int, **changes: object) -> bytes:
    return cow_json(ts, ts - T0, **changes)


def test_a_simulated_fleet_arrives_complete(
    settings: Settings, influx: Influx, ingest: RunningIngest
) -> None:
    options = SimulationOptions(
        devices={"cow_tracker": 30, "thermostat": 10},
        tenant="farm",
        interval_s=1.0,
        duration_s=25,
        seed=7,
        burst=True,
    )
    result = run_simulation(settings.mqtt, settings.topic_prefix, options)
    assert result.acknowledged
    assert result.readings == 40 * 25
    wait_until(
        lambda: (
            influx.count("cow_tracker", "seq") == 30 * 25
            and influx.count("thermostat", "seq") == 10 * 25
        ),
        what="every simulated reading in InfluxDB",
    )
    per_device = influx.query('SELECT count("seq") FROM "cow_tracker" GROUP BY "device_id"')
    assert len(per_device) == 30
    assert {row["count"] for row in per_device} == {25}
    assert influx.count("moclo_rejected", "error") == 0
    # Batched: far fewer InfluxDB writes than readings.
    assert 0 < ingest.stats.batches_written < ingest.stats.readings_stored / 5


def test_array_batches_from_one_device_are_stored_reading_by_reading(
    settings: Settings, influx: Influx, ingest: RunningIngest
) -> None:
    options = SimulationOptions(
        devices={"cow_tracker": 5},
        tenant="farm",
        interval_s=60,
        duration_s=3600,
        seed=3,
        burst=True,
        readings_per_message=25,
    )
    result = run_simulation(settings.mqtt, settings.topic_prefix, options)
    assert result.messages < result.readings == 5 * 60
    wait_until(lambda: influx.count("cow_tracker", "seq") == 300, what="300 readings")


def test_bad_input_is_recorded_with_its_reason_and_good_readings_around_it_are_stored(
    settings: Settings, influx: Influx, ingest: RunningIngest
) -> None:
    prefix = settings.topic_prefix
    # Raw line breaks, quotes, commas and '=': if any reached line protocol unescaped, this
    # payload would write a fake alert point.
    hostile = b'x", evil=1\nmoclo_alerts,tenant=farm state="raised" 1\n'
    bad = [
        # Matches the subscription, but the tenant breaks the identifier rule.
        (f"{prefix}/Farm_1/cow_tracker/cow-1/telemetry", cow_reading(T0), "bad_topic"),
        (f"{prefix}/farm/toaster/t-1/telemetry", b"{}", "unknown_device_type"),
        (cow_topic(settings), b'{"ts": 1, broken', "bad_json"),
        (cow_topic(settings), b'"just a string"', "bad_shape"),
        (cow_topic(settings), cow_reading(T0 + 50, body_temp_c="38.5"), "invalid_reading"),
        (cow_topic(settings), cow_reading(T0 + 51, body_temp_c=99.0), "invalid_reading"),
        (cow_topic(settings), hostile, "bad_json"),
        (
            cow_topic(settings),
            json.dumps({**COW, "ts": T0, "note": "a,b=c"}).encode(),
            "invalid_reading",
        ),
    ]
    good = [(cow_topic(settings, f"cow-{i}"), cow_reading(T0 + i)) for i in range(1, 6)]
    messages = [
        good[0],
        *[(t, p) for t, p, _ in bad[:4]],
        good[1],
        good[2],
        *[(t, p) for t, p, _ in bad[4:]],
        good[3],
        good[4],
    ]
    publish_all(settings.mqtt_url, messages)

    # Ingest counts a batch once InfluxDB has answered its write and the batch is
    # acknowledged, a moment after the rows can be read: wait for that, then every count is
    # final (the batches may be cut anywhere, so one count reached says nothing of the rest).
    wait_until(lambda: ingest.stats.messages == len(messages), what="every message handled")
    assert influx.count("moclo_rejected", "error") == len(bad)
    assert influx.count("cow_tracker", "seq") == len(good)
    rows = influx.query('SELECT * FROM "moclo_rejected"')
    by_topic: dict[str, list[str]] = {}
    for row in rows:
        by_topic.setdefault(row["topic"], []).append(row["reason"])
    for topic, _, reason in bad:
        assert reason in by_topic[topic]
    stored = {row["payload"] for row in rows}
    assert hostile.decode().replace("\n", "\\x0a") in stored
    assert any("note: unknown field" in row["error"] for row in rows)
    # The hostile payload did not turn into a point of its own.
    assert influx.count("moclo_alerts", "state") == 0
    assert ingest.stats.rejected == len(bad)
    assert {r.value for r in RejectReason} >= {reason for _, _, reason in bad}


def test_a_fever_raises_one_alert_and_recovery_resolves_it(
    settings: Settings, influx: Influx, ingest: RunningIngest
) -> None:
    watcher = Subscriber(settings.mqtt_url, alert_subscription(settings.topic_prefix))
    try:
        # Raised on the third reading at 39.5 or more, resolved on the third below 39.2.
        temps = [38.6, 38.9, 39.6, 40.1, 40.3, 39.9, 39.4, 38.8, 38.7, 38.6]
        publish_all(
            settings.mqtt_url,
            [
                (cow_topic(settings, "cow-9"), cow_reading(T0 + 60 * i, body_temp_c=t))
                for i, t in enumerate(temps)
            ],
        )
        wait_until(lambda: len(watcher.messages) == 2, what="raised and resolved on MQTT")
        wait_until(lambda: influx.count("moclo_alerts", "state") == 2, what="two alert points")
    finally:
        watcher.close()
    published = [json.loads(m.payload) for m in watcher.messages]
    assert [a["state"] for a in published] == ["raised", "resolved"]
    assert {m.topic for m in watcher.messages} == {f"{settings.topic_prefix}/farm/alerts/cow-9"}
    assert published[0]["rule"] == "fever" and published[0]["value"] == 40.3
    assert published[0]["first_seen"] == published[1]["first_seen"]
    assert published[0]["id"] == published[1]["id"]
    rows = influx.query('SELECT * FROM "moclo_alerts"')
    assert [(r["state"], r["rule"], r["severity"], r["device_type"]) for r in rows] == [
        ("raised", "fever", "warning", "cow_tracker"),
        ("resolved", "fever", "warning", "cow_tracker"),
    ]
    assert rows[0]["time"] == (T0 + 240) * 10**9
    assert rows[1]["time"] == (T0 + 540) * 10**9
    assert rows[0]["first_seen"] == (T0 + 120) * 10**9


def test_frost_risk_is_raised_for_a_cold_room(
    settings: Settings, influx: Influx, ingest: RunningIngest
) -> None:
    topic = telemetry_topic(settings.topic_prefix, "home", "thermostat", "th-1")
    publish_all(
        settings.mqtt_url,
        [
            (
                topic,
                orjson.dumps(
                    {
                        "ts": T0 + i,
                        "seq": i,
                        "temp_c": t,
                        "setpoint_c": 20.0,
                        "humidity_pct": 50.0,
                        "heating": True,
                    }
                ),
            )
            for i, t in enumerate([6.0, 4.5, 3.9])
        ],
    )
    wait_until(lambda: influx.count("moclo_alerts", "state") == 1, what="frost alert")
    [row] = influx.query('SELECT * FROM "moclo_alerts"')
    assert (row["rule"], row["severity"], row["state"], row["value"]) == (
        "frost_risk",
        "critical",
        "raised",
        3.9,  # the second reading below 5 °C: one cold reading is not a frost risk
    )


def test_a_redelivered_reading_does_not_create_a_second_point(
    settings: Settings, influx: Influx, ingest: RunningIngest
) -> None:
    reading = cow_reading(T0 + 5)
    publish_all(settings.mqtt_url, [(cow_topic(settings), reading)])
    wait_until(lambda: ingest.stats.readings_stored == 1, what="first delivery stored")
    publish_all(settings.mqtt_url, [(cow_topic(settings), reading)] * 3)
    wait_until(lambda: ingest.stats.readings_stored == 4, what="redeliveries handled")
    assert influx.count("cow_tracker", "seq") == 1


def test_readings_published_while_ingest_is_down_are_delivered_when_it_returns(
    settings: Settings, influx: Influx
) -> None:
    options = IngestOptions(linger_s=0.05)
    with RunningIngest(settings, options):
        pass  # the first run creates the persistent session and its subscription
    publish_all(settings.mqtt_url, [(cow_topic(settings), cow_reading(T0 + i)) for i in range(50)])
    with RunningIngest(settings, options) as second:
        wait_until(lambda: second.stats.readings_stored == 50, what="queued readings")
    assert influx.count("cow_tracker", "seq") == 50


def test_a_reading_influxdb_refuses_is_recorded_and_the_rest_is_stored(
    settings: Settings, influx: Influx, ingest: RunningIngest
) -> None:
    # Someone wrote `activity` as a float into the same shard (field types are per shard in
    # InfluxDB 1.x): InfluxDB now refuses our integer field.
    influx.write([f"cow_tracker,device_id=old,tenant=farm activity=1.5 {(T0 - 10) * 10**9}"])
    publish_all(
        settings.mqtt_url,
        [(cow_topic(settings, f"cow-{i}"), cow_reading(T0 + i)) for i in range(3)],
    )
    wait_until(lambda: influx.count("moclo_rejected", "error") == 3, what="3 refusals")
    rows = influx.query('SELECT * FROM "moclo_rejected"')
    assert {row["reason"] for row in rows} == {"storage_refused"}
    assert all("conflict" in row["error"] for row in rows)
    assert ingest.stats.readings_stored == 0
