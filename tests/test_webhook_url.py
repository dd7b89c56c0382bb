"""A webhook URL that httpx cannot send to is refused at start-up, without echoing it (it may
carry a token); and whatever a send raises stays inside the notifier: ingest carries on."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from core.settings import Settings
from devices.topics import telemetry_topic
from ingest.options import IngestOptions
from tests.conftest import RunningIngest
from tests.helpers import Influx, cow_json, moclo, publish_all, wait_until
from tests.test_cli import _nowhere

SECRET = "tok3n-s3cr3t"
# Each passes a plain urlsplit check (scheme http, a host) but httpx refuses to send to it.
UNSENDABLE = [
    ("bad-idna", f"http://xn--zz/hook?token={SECRET}"),
    ("bad-idna-label", f"http://xn--/hook?token={SECRET}"),
    ("control-character", f"http://hooks.example/a\x01b?token={SECRET}"),
    ("delete-character", f"http://hooks.example/\x7f?token={SECRET}"),
    ("invalid-ipv6", f"http://[v1.x]/hook?token={SECRET}"),
]


@pytest.mark.parametrize("url", [u for _, u in UNSENDABLE], ids=[n for n, _ in UNSENDABLE])
def test_an_unsendable_webhook_url_is_refused_at_start_without_echoing_it(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOCLO_WEBHOOK_URL", url)
    result = moclo("ingest", *_nowhere(), timeout_s=60)
    assert result.returncode == 2, result.stderr
    assert "MOCLO_WEBHOOK_URL" in result.stderr
    output = result.stdout + result.stderr
    assert SECRET not in output and "hooks.example" not in output and "xn--" not in output
    assert "Traceback" not in output


def test_an_unsendable_webhook_url_in_a_file_names_the_file_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_file = tmp_path / "webhook-url"
    secret_file.write_text(f"http://xn--zz/hook?token={SECRET}\n")
    monkeypatch.delenv("MOCLO_WEBHOOK_URL", raising=False)
    monkeypatch.setenv("MOCLO_WEBHOOK_URL_FILE", str(secret_file))
    result = moclo("ingest", *_nowhere(), timeout_s=60)
    assert result.returncode == 2, result.stderr
    assert "MOCLO_WEBHOOK_URL_FILE" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_control_a_sendable_webhook_url_passes_the_start_up_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MOCLO_WEBHOOK_URL", f"http://127.0.0.1:9/hook?token={SECRET}")
    result = moclo("ingest", *_nowhere(), timeout_s=120)
    # Past the settings: it fails later, on the database that is not there (exit 1, not 2).
    assert result.returncode == 1, result.stderr
    assert "cannot reach InfluxDB" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_a_webhook_url_that_fails_only_when_sending_does_not_stop_ingest(
    settings: Settings, influx: Influx, caplog: pytest.LogCaptureFixture
) -> None:
    """A Settings made in code skips the start-up check (model_copy validates nothing), so
    the URL reaches the notifier, and httpx raises only when the first alert is sent."""
    late = settings.model_copy(
        update={"webhook_url": SecretStr(f"http://xn--zz/hook?token={SECRET}")}
    )
    topic = telemetry_topic(settings.topic_prefix, "farm", "cow_tracker", "cow-5")
    t0 = int(time.time()) - 3600
    caplog.set_level(logging.INFO)
    with RunningIngest(late, IngestOptions(linger_s=0.02)) as running:
        fever = [(topic, cow_json(t0 + i, i, body_temp_c=40.0)) for i in range(3)]
        publish_all(settings.mqtt_url, fever)
        assert running.ingest is not None and running.ingest.webhook is not None
        stats = running.ingest.webhook.stats
        wait_until(lambda: stats.failed == 1, what="the send counted as failed")
        # Still ingesting: readings after the failed send are stored.
        after = [(topic, cow_json(t0 + 10 + i, 10 + i)) for i in range(5)]
        publish_all(settings.mqtt_url, after)
        wait_until(lambda: influx.count("cow_tracker", "seq") == 8, what="all 8 stored")
        assert running.error is None
    assert stats.sent == 0
    assert SECRET not in caplog.text
    assert "webhook http://xn--zz" in caplog.text, "the failure is logged with the safe target"
