"""kill -9, from the receivers' side: ingest killed between an alert and its notification,
and the notifier killed with a message in its outbox; each message still arrives, once.
Ingest and the notifier run as `moclo` child processes, as a user runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from core.settings import Settings
from devices.topics import alert_subscription
from moclo.stack import free_port
from tests.conftest import RunningIngest
from tests.helpers import Subscriber, publish_all, wait_until
from tests.notifier import RunningNotifier, environment, notifier_settings
from tests.receivers import HttpReceiver, SmtpReceiver
from tests.test_commands import Output
from tests.test_notify_service import farm_file, fever


@contextmanager
def child(*args: str, env: dict[str, str], ready: str) -> Iterator[subprocess.Popen[str]]:
    """`moclo ARGS` with `env`, once it printed `ready`; killed if the test left it running."""
    process = subprocess.Popen(
        [sys.executable, "-m", "moclo.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **env},
    )
    output = Output(process)
    try:
        wait_until(lambda: output.has(ready), timeout_s=30, what=f"moclo {args[0]}: {ready!r}")
        yield process
    finally:
        output.close()


def test_ingest_killed_between_an_alert_and_its_notification_it_arrives_once(
    settings: Settings, http_receiver: HttpReceiver, smtp_receiver: SmtpReceiver, tmp_path: Path
) -> None:
    # Grouped over 3 s: the message is still owed when ingest dies.
    toml = farm_file(http_receiver, smtp_receiver, group_wait="3s")
    settings = notifier_settings(settings, tmp_path, toml)
    ingest_env = environment(settings, MOCLO_MQTT_USERNAME="")
    alerts = Subscriber(settings.mqtt_url, alert_subscription(settings.topic_prefix))
    try:
        with RunningNotifier(settings):
            with child("ingest", env=ingest_env, ready="ingesting") as ingest:
                publish_all(settings.mqtt_url, fever(settings, "cow-5"))
                wait_until(lambda: alerts.messages, what="the fever published by ingest")
                ingest.send_signal(signal.SIGKILL)
                ingest.wait(10)
            assert http_receiver.on("/farmer") == [], "told before the kill: not the case tried"
            # Restarted, ingest replays what it had not acknowledged: the same change again.
            with child("ingest", env=ingest_env, ready="ingesting"):
                (first,) = http_receiver.wait_for("/farmer")
                assert "cow-5" in first.json()["title"]
                # A marker after the replay: once its message is in, a duplicate would be too.
                publish_all(settings.mqtt_url, fever(settings, "cow-6", seq0=10))
                messages = http_receiver.wait_for("/farmer", count=2)
    finally:
        alerts.close()
    assert ["cow-5" in m.json()["title"] for m in messages] == [True, False]
    assert "cow-6" in messages[1].json()["title"]
    assert len(http_receiver.on("/farmer")) == 2


def test_the_notifier_killed_with_a_message_in_its_outbox_sends_it_after_restart_once(
    settings: Settings,
    ingest: RunningIngest,
    http_receiver: HttpReceiver,
    smtp_receiver: SmtpReceiver,
    tmp_path: Path,
) -> None:
    settings = notifier_settings(settings, tmp_path, farm_file(http_receiver, smtp_receiver))
    port = free_port()
    env = environment(settings, MOCLO_NOTIFY_LISTEN=f"127.0.0.1:{port}")

    def owed() -> dict[str, int]:
        answer: dict[str, int] = httpx.get(f"http://127.0.0.1:{port}/healthz").json()["outbox"]
        return answer

    http_receiver.fail("/farmer", 503)  # the farmer's phone service is down for now
    with child("notify", "run", env=env, ready="notifier: following") as notifier:
        publish_all(settings.mqtt_url, fever(settings, "cow-5"))
        smtp_receiver.wait_for(lambda m: "cow-5" in m.subject)  # the vet's channel works
        wait_until(lambda: http_receiver.arrived >= 1, what="the farmer's first attempt")
        wait_until(lambda: owed()["deliveries"] == 1, what="the farmer's message owed")
        notifier.send_signal(signal.SIGKILL)
        notifier.wait(10)
    http_receiver.heal("/farmer")
    with child("notify", "run", env=env, ready="notifier: following"):
        # Within 40 s of the restarted notifier being ready (wait_for's deadline). A clock
        # started before the child also counted its start and stop, which a loaded machine
        # can stretch to half of that.
        (phone,) = http_receiver.wait_for("/farmer", timeout_s=40)
        assert "cow-5" in phone.json()["title"]
        wait_until(lambda: owed()["deliveries"] == 0, what="nothing owed any more")
    assert len(http_receiver.on("/farmer")) == 1
    assert len([m for m in smtp_receiver.mail if "cow-5" in m.subject]) == 1, "the vet twice"
