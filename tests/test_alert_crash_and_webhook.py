"""Alerts through the hard cases: ingest killed mid-episode, a webhook, a webhook that hangs."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from core.settings import Settings
from devices.topics import alert_subscription, telemetry_topic
from moclo.stack import free_port
from tests.conftest import RunningIngest
from tests.helpers import Influx, Subscriber, cow_json, publish_all, wait_until

T0 = int(time.time()) - 3600


def cow_topic(settings: Settings, device: str = "cow-5") -> str:
    return telemetry_topic(settings.topic_prefix, "farm", "cow_tracker", device)


def test_ingest_killed_mid_episode_neither_forgets_nor_repeats_the_alert(
    settings: Settings, influx: Influx, tmp_path: Path
) -> None:
    """kill -9 leaves no snapshot of the open fever: the stored alert is what restores it."""
    http_port = free_port()
    env = {
        **os.environ,
        "MOCLO_MQTT_URL": settings.mqtt_url,
        "MOCLO_INFLUX_URL": settings.influx_url,
        "MOCLO_INFLUX_DB": settings.influx_db,
        "MOCLO_TOPIC_PREFIX": settings.topic_prefix,
        "MOCLO_INGEST_CLIENT_ID": settings.ingest_id,
        "MOCLO_SPOOL_DIR": settings.spool_dir,
        "MOCLO_HTTP_LISTEN": f"127.0.0.1:{http_port}",
    }

    def start() -> subprocess.Popen[bytes]:
        with (tmp_path / "ingest.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "moclo.cli", "ingest"], env=env, stdout=log, stderr=log
            )
        wait_until(
            lambda: (
                b"ingesting" in (tmp_path / "ingest.log").read_bytes() or process.poll() is not None
            ),
            timeout_s=60,
            what="ingest to start",
        )
        assert process.poll() is None, (tmp_path / "ingest.log").read_text()
        return process

    watcher = Subscriber(settings.mqtt_url, alert_subscription(settings.topic_prefix))
    try:
        first = start()
        hot = [(cow_topic(settings), cow_json(T0 + 60 * i, i, body_temp_c=40.0)) for i in range(4)]
        publish_all(settings.mqtt_url, hot)
        wait_until(lambda: influx.count("moclo_alerts", "state") == 1, what="the fever raised")
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        snapshot = Path(settings.spool_dir) / settings.ingest_id / "alert-state.json"
        assert not snapshot.exists()  # the periodic one had not come round: the store decides

        second = start()
        try:
            more = [(T0 + 60 * i, 40.2) for i in range(4, 8)]
            more += [(T0 + 60 * i, 38.6) for i in range(8, 11)]
            publish_all(
                settings.mqtt_url,
                [(cow_topic(settings), cow_json(t, t, body_temp_c=v)) for t, v in more],
            )
            wait_until(lambda: influx.count("moclo_alerts", "state") == 2, what="the resolution")
            wait_until(lambda: len(watcher.messages) == 2, what="both changes on MQTT")
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
    finally:
        watcher.close()
    rows = influx.query('SELECT * FROM "moclo_alerts"')
    assert [(r["state"], r["time"] // 10**9) for r in rows] == [
        ("raised", T0 + 120),
        ("resolved", T0 + 600),
    ]
    assert len({r["alert_id"] for r in rows}) == 1
    assert [json.loads(m.payload)["state"] for m in watcher.messages] == ["raised", "resolved"]


class Webhook:
    """A real HTTP endpoint recording what is POSTed; `hold()` makes it hang until released."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.released = threading.Event()
        self.released.set()
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.released.wait(60)
                hook.received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/push?token=s3cret"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def hold(self) -> None:
        self.released.clear()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


def test_alert_changes_are_posted_to_the_webhook(
    settings: Settings, influx: Influx, webhook: Webhook
) -> None:
    settings = settings.model_copy(update={"webhook_url": SecretStr(webhook.url)})
    with RunningIngest(settings, _options()) as running:
        temps = [40.0, 40.1, 40.2, 38.6, 38.5, 38.4]
        publish_all(
            settings.mqtt_url,
            [
                (cow_topic(settings), cow_json(T0 + i, i, body_temp_c=t))
                for i, t in enumerate(temps)
            ],
        )
        wait_until(lambda: len(webhook.received) == 2, what="both changes at the webhook")
        assert running.ingest is not None and running.ingest.webhook is not None
        webhook_stats = running.ingest.webhook.stats
        wait_until(lambda: webhook_stats.sent == 2, what="both counted as sent")
    assert [(a["state"], a["rule"], a["device_id"]) for a in webhook.received] == [
        ("raised", "fever", "cow-5"),
        ("resolved", "fever", "cow-5"),
    ]
    assert webhook.received[0]["id"] == webhook.received[1]["id"]


def test_a_hanging_webhook_never_holds_ingestion_back(
    settings: Settings, influx: Influx, webhook: Webhook
) -> None:
    settings = settings.model_copy(update={"webhook_url": SecretStr(webhook.url)})
    webhook.hold()
    with RunningIngest(settings, _options()) as running:
        # Thirty cows fall ill at once; the webhook answers nobody.
        fevers = [
            (cow_topic(settings, f"cow-{n}"), cow_json(T0 + i, i, body_temp_c=40.0))
            for n in range(30)
            for i in range(3)
        ]
        healthy = [
            (cow_topic(settings, f"well-{n}"), cow_json(T0 + i, i))
            for n in range(200)
            for i in range(5)
        ]
        publish_all(settings.mqtt_url, fevers + healthy)
        # Every reading and every alert is stored and published while the webhook hangs.
        wait_until(
            lambda: influx.count("cow_tracker", "seq") == len(fevers) + len(healthy),
            what="every reading stored",
        )
        wait_until(lambda: influx.count("moclo_alerts", "state") == 30, what="30 fevers stored")
        assert webhook.received == []
        assert running.ingest is not None and running.ingest.webhook is not None
        webhook.released.set()
        wait_until(lambda: len(webhook.received) == 30, what="the webhook catching up")
    assert {a["device_id"] for a in webhook.received} == {f"cow-{n}" for n in range(30)}


def _options() -> Any:
    from ingest.options import IngestOptions

    return IngestOptions(linger_s=0.02)


def test_alerts_in_a_backlog_larger_than_the_window_do_not_stall_ingest(
    settings: Settings, influx: Influx, caplog: pytest.LogCaptureFixture
) -> None:
    """While a backlog fills ingest's window, its consuming connection stops reading; alert
    notifications travel on their own connection, so their PUBACKs still arrive."""
    from ingest.options import IngestOptions

    options = IngestOptions(linger_s=0.02, batch_messages=20, window=40)
    with RunningIngest(settings, options):
        pass  # creates ingest's persistent session
    backlog = [
        (cow_topic(settings, f"cow-{n}"), cow_json(T0 + i, i, body_temp_c=40.0 if n < 20 else 38.6))
        for i in range(4)
        for n in range(100)
    ]
    publish_all(settings.mqtt_url, backlog)
    with RunningIngest(settings, options):
        wait_until(
            lambda: influx.count("cow_tracker", "seq") == len(backlog), what="the backlog stored"
        )
        wait_until(lambda: influx.count("moclo_alerts", "state") == 20, what="20 fevers")
    assert "did not confirm" not in caplog.text


def test_the_alert_state_is_snapshotted_while_ingesting(settings: Settings, influx: Influx) -> None:
    from ingest.alerts import AlertEngine, snapshot
    from ingest.options import IngestOptions

    path = Path(settings.spool_dir) / settings.ingest_id / "alert-state.json"
    options = IngestOptions(linger_s=0.02, snapshot_every_s=0.1)
    with RunningIngest(settings, options):
        publish_all(
            settings.mqtt_url,
            [
                (cow_topic(settings, f"cow-{n}"), cow_json(T0 + i, i))
                for i in range(2)
                for n in range(300)
            ],
        )
        wait_until(lambda: influx.count("cow_tracker", "seq") == 600, what="readings stored")

        def devices_in_snapshot() -> int:
            if not path.exists():
                return 0
            return snapshot.load(AlertEngine(), path.read_bytes())

        wait_until(lambda: devices_in_snapshot() == 300, what="a snapshot with every cow")
