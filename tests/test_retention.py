"""The accepted age follows the database: MOCLO_MAX_READING_AGE, narrowed to the retention
ingest reads from InfluxDB (1.x: the default retention policy; 2.x: the bucket, through
`Fake2xBucketsProxy`, as our 1.6.7 has no bucket API) at start and on a schedule."""

from __future__ import annotations

import json
import logging
import time

import pytest

from core.settings import Settings, SettingsError
from devices.topics import telemetry_topic
from ingest.decode import Decoded, Decoder, Limits, RejectReason
from ingest.options import IngestOptions
from moclo.stack import InfluxServer
from tests.conftest import RunningIngest
from tests.helpers import COW, Influx, cow_json, publish_all, wait_until
from tests.influx_proxies import Fake2xBucketsProxy

DAY = 86_400
TOPIC = "moclo/farm/cow_tracker/cow-1/telemetry"


def reason_for(age_s: float, *, max_past_s: float, retention_s: float | None) -> str:
    decoder = Decoder("moclo", limits=Limits(max_past_s=max_past_s))
    decoder.set_retention(retention_s)
    now = 1_795_327_200
    out = Decoded()
    payload = json.dumps({**COW, "ts": now - age_s}).encode()
    decoder.decode(TOPIC, payload, now * 10**9, out)
    return out.rejections[0].reason.value if out.rejections else "stored"


@pytest.mark.parametrize(
    ("age_s", "max_past_s", "retention_s", "expected"),
    [
        (3 * DAY, 90 * DAY, None, "stored"),  # retention unknown or forever: the setting
        (3 * DAY, 90 * DAY, DAY, "beyond_retention"),  # the database keeps less
        (0.5 * DAY, 90 * DAY, DAY, "stored"),
        (3 * DAY, 2 * DAY, 30 * DAY, "ts_out_of_window"),  # the setting is the lesser
        (100 * DAY, 90 * DAY, DAY, "ts_out_of_window"),  # older than both: the setting says
    ],
    ids=["forever", "retention-binds", "within", "setting-binds", "older-than-both"],
)
def test_the_window_is_the_lesser_of_the_setting_and_the_retention(
    age_s: float, max_past_s: float, retention_s: float | None, expected: str
) -> None:
    assert reason_for(age_s, max_past_s=max_past_s, retention_s=retention_s) == expected


def test_the_retention_can_change_and_be_forgotten() -> None:
    decoder = Decoder("moclo")
    now = 1_795_327_200
    payload = json.dumps({**COW, "ts": now - 3 * DAY}).encode()
    for retention, stored in ((DAY, False), (None, True), (7 * DAY, True), (DAY, False)):
        decoder.set_retention(retention)
        out = Decoded()
        decoder.decode(TOPIC, payload, now * 10**9, out)  # the cached fast path, after the first
        assert bool(out.readings) is stored
        if not stored:
            assert [r.reason for r in out.rejections] == [RejectReason.BEYOND_RETENTION]


def test_max_reading_age_is_a_duration_setting() -> None:
    assert Settings.load({}).max_reading_age == 90 * DAY
    assert Settings.load({"MOCLO_MAX_READING_AGE": "36h"}).max_reading_age == 36 * 3600
    for bad in ("0s", "soon", "-1d"):
        with pytest.raises(SettingsError, match="MOCLO_MAX_READING_AGE"):
            Settings.load({"MOCLO_MAX_READING_AGE": bad})


def cow(settings: Settings, device: str, age_s: int, seq: int) -> tuple[str, bytes]:
    topic = telemetry_topic(settings.topic_prefix, "farm", "cow_tracker", device)
    return topic, cow_json(int(time.time()) - age_s, seq)


def test_max_reading_age_applies_where_the_database_keeps_everything(
    settings: Settings, influx: Influx
) -> None:
    settings = settings.model_copy(update={"max_reading_age": 2 * DAY})
    with RunningIngest(settings, IngestOptions(linger_s=0.05)) as running:
        assert running.ingest is not None and running.ingest.retention_s is None  # autogen: 0s
        publish_all(settings.mqtt_url, [cow(settings, "a", DAY, 1), cow(settings, "b", 3 * DAY, 2)])
        wait_until(lambda: running.stats.messages == 2, what="both handled")
    assert influx.count("cow_tracker", "seq") == 1
    [row] = influx.query('SELECT * FROM "moclo_rejected"')
    assert row["reason"] == "ts_out_of_window" and "MOCLO_MAX_READING_AGE" in row["error"]


def test_a_retention_shortened_while_ingest_runs_is_read_on_schedule(
    settings: Settings, influx: Influx
) -> None:
    with RunningIngest(settings, IngestOptions(linger_s=0.05, retention_every_s=0.2)) as running:
        service = running.ingest
        assert service is not None and service.retention_s is None
        influx.query(
            f'CREATE RETENTION POLICY "week" ON "{settings.influx_db}" DURATION 7d '
            "REPLICATION 1 DEFAULT"
        )
        wait_until(lambda: service.retention_s == 7 * DAY, what="the new retention read")


def test_a_2x_bucket_retention_is_read_from_the_bucket_api(
    settings: Settings, influxdb: InfluxServer
) -> None:
    with Fake2xBucketsProxy(influxdb.url, every_seconds=2 * DAY) as proxy:
        settings = settings.model_copy(update={"influx_url": proxy.url})
        influx = Influx(proxy.url, settings.influx_db)
        with RunningIngest(settings, IngestOptions(linger_s=0.05)) as running:
            assert running.ingest is not None and running.ingest.retention_s == 2 * DAY
            publish_all(
                settings.mqtt_url, [cow(settings, "a", DAY, 1), cow(settings, "b", 3 * DAY, 2)]
            )
            wait_until(lambda: running.stats.messages == 2, what="both handled")
        assert proxy.bucket_reads >= 1
        assert influx.count("cow_tracker", "seq") == 1
        [row] = influx.query('SELECT * FROM "moclo_rejected"')
        assert row["reason"] == "beyond_retention"


@pytest.mark.parametrize("status", [401, 403])
def test_a_token_that_may_not_read_buckets_leaves_the_setting_and_says_so_once(
    settings: Settings, influxdb: InfluxServer, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    caplog.set_level(logging.WARNING, logger="moclo.ingest")
    with Fake2xBucketsProxy(influxdb.url, status=status) as proxy:
        settings = settings.model_copy(update={"influx_url": proxy.url})
        options = IngestOptions(linger_s=0.05, retention_every_s=0.1)
        with RunningIngest(settings, options) as running:  # it starts
            wait_until(lambda: proxy.bucket_reads >= 3, what="the schedule's reads")
            assert running.ingest is not None and running.ingest.retention_s is None
            publish_all(settings.mqtt_url, [cow(settings, "a", 3 * DAY, 1)])
            wait_until(lambda: running.stats.readings_stored == 1, what="the old reading stored")
    said = [r for r in caplog.records if "only MOCLO_MAX_READING_AGE" in r.getMessage()]
    assert len(said) == 1 and str(status) in said[0].getMessage()
