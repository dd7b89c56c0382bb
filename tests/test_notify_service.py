"""The notifier end to end on the real broker, InfluxDB and ingest, telling people through
the real receivers: what arrives, what is stored as the timeline, what /metrics counts, what a
bad message or a broken notify file does."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from core.settings import Settings
from devices.topics import alert_topic, telemetry_topic
from moclo.stack import InfluxServer, free_port
from storage.schema import NOTIFICATIONS
from tests.conftest import RunningIngest
from tests.helpers import Influx, cow_json, publish_all, wait_until
from tests.notifier import RunningNotifier, notifier_settings
from tests.receivers import HttpReceiver, SmtpReceiver

T0 = int(time.time()) - 3600
FARM = "farm-7"


def farm_file(http: HttpReceiver, smtp: SmtpReceiver, *, group_wait: str = "0s") -> str:
    return f"""
[[people]]
name = "farmer"
tenants = ["{FARM}"]
channels = [ {{ url = "json://{http.base}/farmer", label = "farmer's phone" }} ]

[[people]]
name = "vet"
tenants = ["{FARM}"]
channels = [ {{ url = "{smtp.url("vet@example.org")}", label = "vet mail" }} ]

[[routes]]
name = "fever"
tenant = "{FARM}"
rules = ["fever"]
group_wait = "{group_wait}"
notify = ["farmer", "vet"]
"""


def fever(settings: Settings, cow: str, seq0: int = 0) -> list[tuple[str, bytes]]:
    topic = telemetry_topic(settings.topic_prefix, FARM, "cow_tracker", cow)
    return [
        (topic, cow_json(T0 + seq0 + i, seq0 + i, body_temp_c=t))
        for i, t in enumerate([40.0, 40.1, 40.2])
    ]


def test_a_fever_reaches_the_farmers_phone_and_the_vets_mail_and_the_timeline(
    settings: Settings,
    ingest: RunningIngest,
    influx: Influx,
    http_receiver: HttpReceiver,
    smtp_receiver: SmtpReceiver,
    tmp_path: Path,
) -> None:
    settings = notifier_settings(settings, tmp_path, farm_file(http_receiver, smtp_receiver))
    with RunningNotifier(settings) as running:
        publish_all(settings.mqtt_url, fever(settings, "cow-5"))
        (phone,) = http_receiver.wait_for("/farmer")
        assert "cow-5" in phone.json()["title"] and "fever" in phone.json()["title"]
        (mail,) = smtp_receiver.wait_for(lambda m: "cow-5" in m.subject)
        assert mail.recipients == ("vet@example.org",)
        wait_until(
            lambda: influx.count(NOTIFICATIONS.name, "level", "\"event\" = 'sent'") == 2,
            what="both deliveries in the timeline",
        )
        metrics = running.get("/metrics").text
        assert 'moclo_notifications_total{channel="json",outcome="sent"} 1.0' in metrics
        assert 'moclo_notifications_total{channel="mailto",outcome="sent"} 1.0' in metrics
        assert running.get("/healthz").json()["ok"] is True
    rows = influx.query(f'SELECT * FROM "{NOTIFICATIONS.name}" WHERE "event" = \'sent\'')
    assert sorted(row["person"] for row in rows) == ["farmer", "vet"]
    assert {row["channel"] for row in rows} == {"farmer's phone", "vet mail"}
    assert not any("json://" in str(row) or "mailto://" in str(row) for row in rows)


def test_a_message_that_is_no_alert_change_is_refused_and_ingest_goes_on(
    settings: Settings,
    ingest: RunningIngest,
    http_receiver: HttpReceiver,
    smtp_receiver: SmtpReceiver,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = notifier_settings(settings, tmp_path, farm_file(http_receiver, smtp_receiver))
    with RunningNotifier(settings) as running:
        bad = alert_topic(settings.topic_prefix, FARM, "cow-9")
        publish_all(settings.mqtt_url, [(bad, b"not json"), (bad, b'{"state": "raised"}')])
        publish_all(settings.mqtt_url, fever(settings, "cow-6"))
        (phone,) = http_receiver.wait_for("/farmer")
        assert "cow-6" in phone.json()["title"], "a good change after bad ones is notified"
        metrics = running.get("/metrics").text
        assert 'moclo_notify_refused_total{reason="invalid_alert"} 2.0' in metrics
    assert "not an alert change" in caplog.text


def test_a_broken_notify_file_keeps_the_last_good_one_and_a_fixed_one_is_used(
    settings: Settings,
    ingest: RunningIngest,
    http_receiver: HttpReceiver,
    smtp_receiver: SmtpReceiver,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="moclo.notify")
    good = farm_file(http_receiver, smtp_receiver)
    settings = notifier_settings(settings, tmp_path, good)
    path = Path(str(settings.notify_file))
    with RunningNotifier(settings):
        path.write_text(good.replace('notify = ["farmer", "vet"]', 'notify = ["nobody"]'))
        wait_until(lambda: "cannot be used" in caplog.text, what="the broken file refused")
        assert f"{path}:" in caplog.text, "the mistake is named by FILE:LINE"
        publish_all(settings.mqtt_url, fever(settings, "cow-7"))
        (phone,) = http_receiver.wait_for("/farmer")  # the last good file still routes
        assert "cow-7" in phone.json()["title"]
        # Fixed, with the vet alone: the next fever goes to the vet only.
        path.write_text(good.replace('notify = ["farmer", "vet"]', 'notify = ["vet"]'))
        wait_until(lambda: "read the notify file" in caplog.text, what="the fixed file read")
        publish_all(settings.mqtt_url, fever(settings, "cow-8", seq0=10))
        smtp_receiver.wait_for(lambda m: "cow-8" in m.subject)
    assert len(http_receiver.on("/farmer")) == 1, "the fixed file's routes were not used"


def test_while_influxdb_is_down_people_are_told_and_the_timeline_waits_in_the_outbox(
    settings: Settings,
    ingest: RunningIngest,
    http_receiver: HttpReceiver,
    smtp_receiver: SmtpReceiver,
    tmp_path: Path,
) -> None:
    database = InfluxServer(tmp_path / "influx", free_port())  # the notifier's own, to stop
    settings = notifier_settings(settings, tmp_path, farm_file(http_receiver, smtp_receiver))
    settings = settings.model_copy(update={"influx_url": database.url})
    own = Influx(database.url, settings.influx_db)
    with RunningNotifier(settings) as running:  # InfluxDB is not running
        publish_all(settings.mqtt_url, fever(settings, "cow-5"))
        http_receiver.wait_for("/farmer")
        smtp_receiver.wait_for(lambda m: "cow-5" in m.subject)
        health = wait_until(
            lambda: (h := running.get("/healthz").json())["outbox"]["events"] >= 4 and h,
            what="the timeline owed (queued and sent, for two people)",
        )
        assert health["ok"] and health["influxdb_available"] is False
        database.start()
        try:
            wait_until(
                lambda: running.get("/healthz").json()["outbox"]["events"] == 0,
                timeout_s=40,
                what="the timeline written once InfluxDB is back",
            )
            rows = own.query(f'SELECT * FROM "{NOTIFICATIONS.name}" WHERE "event" = \'sent\'')
            assert sorted(row["person"] for row in rows) == ["farmer", "vet"]
        finally:
            database.stop()
