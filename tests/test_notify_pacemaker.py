"""The issue's scripted scenario, end to end on the real broker, InfluxDB, ingest, serve and
the notifier, every step asserted from what the (real) receivers got: a pacemaker's battery
runs low at night; its cardiologist is asleep (quiet hours) so her message is held; the
cardiologist on call is told within seconds; nobody acknowledges for ten minutes, so the
second in line is told; the dashboard's acknowledgement (POST /api/alerts/{id}/ack) stops the
escalation: both are told it was acknowledged, and the ward never is. `moclo alerts ack` stops it
the same way.

The notifier's clock is real time plus an offset the test moves: it starts at 02:00 in
Amsterdam, and the escalation's ten minutes pass at once."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson

from core.settings import Settings
from devices.topics import telemetry_topic
from storage.alert_record import Alert
from storage.schema import NOTIFICATIONS
from tests.conftest import RunningIngest, RunningServe
from tests.helpers import Influx, publish_all, wait_until
from tests.notifier import MovableClock, RunningNotifier, notifier_settings
from tests.receivers import HttpReceiver
from tests.test_alerts_cli import alerts

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
WARD = "cardiology"
QUIET = '{ from = "23:00", to = "07:00", breakthrough = "critical" }'


def night_at_two() -> datetime:
    """The next 02:00 in Amsterdam, at least an hour from now."""
    now = datetime.now(AMSTERDAM)
    night = now.replace(hour=2, minute=0, second=0, microsecond=0)
    return night if night > now + timedelta(hours=1) else night + timedelta(days=1)


def ward_file(http: HttpReceiver, night: datetime) -> str:
    # dr-bakker's week began the evening before: she is on call, dr-visser next in line.
    handoff = (night - timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M")
    people = "".join(
        f"""
[[people]]
name = "{name}"
tenants = ["{WARD}"]
time_zone = "Europe/Amsterdam"
channels = [ {{ url = "json://{http.base}/{name}", label = "{name} phone" }} ]
{quiet}
"""
        for name, quiet in [
            ("dr-jansen", f"quiet_hours = [ {QUIET} ]"),
            ("dr-bakker", ""),
            ("dr-visser", ""),
            ("ward", ""),
        ]
    )  # fmt: skip
    return (
        people
        + f"""
[[rotations]]
name = "cardiology"
tenant = "{WARD}"
people = ["dr-bakker", "dr-visser", "dr-jansen"]
shift = "7d"
handoff = "{handoff}"
time_zone = "Europe/Amsterdam"

[[routes]]
name = "pacemakers"
tenant = "{WARD}"
device_types = ["pacemaker"]
min_severity = "warning"
group_wait = "0s"
steps = [
  {{ after = "0s", notify = ["dr-jansen", "oncall:cardiology"] }},
  {{ after = "10m", notify = ["oncall:cardiology#2"] }},
  {{ after = "20m", notify = ["ward"] }},
]
"""
    )


def battery_readings(settings: Settings) -> list[tuple[str, bytes]]:
    topic = telemetry_topic(settings.topic_prefix, WARD, "pacemaker", "pm-17")
    start = int(time.time()) - 60
    return [
        (topic, orjson.dumps({
            "ts": start + i, "seq": i, "heart_rate_bpm": 68, "paced_pct": 12.5,
            "battery_v": 2.5, "lead_impedance_ohm": 540, "event": "none",
        }))
        for i in range(3)
    ]  # fmt: skip


def timeline(influx: Influx, event: str) -> list[dict[str, object]]:
    return influx.query(
        f'SELECT * FROM "{NOTIFICATIONS.name}" WHERE "event" = \'{event}\' ORDER BY time'
    )


def test_the_pacemaker_night(
    settings: Settings,
    ingest: RunningIngest,
    serve: RunningServe,
    influx: Influx,
    http_receiver: HttpReceiver,
    tmp_path: Path,
) -> None:
    night = night_at_two()
    clock = MovableClock()
    clock.advance(night.timestamp() - time.time())
    settings = notifier_settings(settings, tmp_path, ward_file(http_receiver, night))
    with RunningNotifier(settings, clock=clock) as running:
        assert running.notifier is not None
        raised_at = time.monotonic()
        publish_all(settings.mqtt_url, battery_readings(settings))

        # Within seconds: the cardiologist on call; dr-jansen is asleep, her message held.
        (oncall,) = http_receiver.wait_for("/dr-bakker", timeout_s=20)
        assert time.monotonic() - raised_at < 10
        assert oncall.json()["title"] == "[warning] pm-17 battery low on cardiology"
        wait_until(
            lambda: [r["person"] for r in timeline(influx, "held")] == ["dr-jansen"],
            what="dr-jansen's message held in the timeline",
        )
        assert http_receiver.on("/dr-jansen") == []
        (alert,) = [a for a in ingest.alerts if isinstance(a, Alert) and a.state == "raised"]
        alert_id = alert.alert_id

        # Ten minutes without an acknowledgement: the second in line.
        clock.advance(600)
        (second,) = http_receiver.wait_for("/dr-visser")
        assert second.json()["title"].startswith("[warning] Not acknowledged yet: pm-17")
        wait_until(
            lambda: [r["level"] for r in timeline(influx, "escalated")] == [2],
            what="the escalation to level 2 in the timeline",
        )

        # The on-call cardiologist acknowledges on the dashboard.
        with serve.client(serve.token(name="dr-bakker")) as api:
            answer = api.post(f"/api/alerts/{alert_id}/ack", json={"note": "replacement planned"})
        assert answer.status_code == 200, answer.text
        for person in ("dr-bakker", "dr-visser"):
            told = http_receiver.wait_for(f"/{person}", count=2)
            assert told[-1].json()["title"].startswith("[warning] Acknowledged: pm-17")
        wait_until(
            lambda: (
                running.notifier is not None
                and running.notifier.dispatcher.owed()["deliveries"] == 0
            ),
            what="nothing left to deliver",
        )

        # Twenty minutes on, the escalation is over: nothing is due, the ward is never told.
        clock.advance(1200)
        wake = running.notifier.dispatcher.next_wake()
        assert wake is None or wake > clock(), "something is still due after the ack"
        assert running.notifier.dispatcher.due() == []
        assert http_receiver.on("/ward") == [] and http_receiver.on("/dr-jansen") == []
        metrics = running.get("/metrics").text
        assert f'moclo_notifications_escalated_total{{tenant="{WARD}"}} 1.0' in metrics
        assert 'moclo_notifications_total{channel="json",outcome="sent"} 4.0' in metrics
        # Of those, one was an escalation step's: the second in line told of the raise.
        escalated = 'moclo_notifications_escalated_messages_total{channel="json",outcome="sent"}'
        assert f"{escalated} 1.0" in metrics, [m for m in metrics.splitlines() if "escal" in m]
        stops = wait_until(
            lambda: timeline(influx, "acknowledged"), what="the acknowledgement in the timeline"
        )
    assert "dr-bakker" in str(stops[0]["detail"])


def test_an_acknowledgement_with_moclo_alerts_ack_stops_the_escalation_too(
    settings: Settings,
    ingest: RunningIngest,
    influx: Influx,
    http_receiver: HttpReceiver,
    tmp_path: Path,
) -> None:
    night = night_at_two()
    clock = MovableClock()
    clock.advance(night.timestamp() - time.time())
    settings = notifier_settings(settings, tmp_path, ward_file(http_receiver, night))
    with RunningNotifier(settings, clock=clock) as running:
        assert running.notifier is not None
        publish_all(settings.mqtt_url, battery_readings(settings))
        http_receiver.wait_for("/dr-bakker")
        (alert,) = [a for a in ingest.alerts if isinstance(a, Alert) and a.state == "raised"]
        # Before the ten minutes are up, from the command line.
        answer = alerts(settings, "ack", alert.alert_id, "--by", "dr-bakker")
        assert answer.returncode == 0, answer.stderr
        told = http_receiver.wait_for("/dr-bakker", count=2)
        assert told[-1].json()["title"].startswith("[warning] Acknowledged: pm-17")
        wait_until(lambda: timeline(influx, "acknowledged"), what="the escalation stopped")
        clock.advance(1800)  # past both further steps
        wake = running.notifier.dispatcher.next_wake()
        assert wake is None or wake > clock(), "a step is still due after the ack"
        assert running.notifier.dispatcher.due() == []
    assert http_receiver.on("/dr-visser") == [] and http_receiver.on("/ward") == []
