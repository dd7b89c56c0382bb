"""One connection per login (`use_username_as_clientid`): what a person sees when a second
client logs in with the same login as a running `moclo alerts --follow`, `moclo serve` or
`moclo ingest`."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from pydantic import SecretStr

from core.settings import Settings
from ingest.options import IngestOptions
from tests.conftest import RunningIngest, RunningServe
from tests.helpers import Influx, moclo, wait_until
from tests.test_alerts_cli import Process, _open_alert, connection
from tests.test_broker_access import T1, Secured, secured  # noqa: F401 (a fixture)


def test_a_follow_pushed_off_by_the_same_login_says_why(
    secured: Secured,  # noqa: F811
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two `moclo alerts --follow` as the same operator: the broker closes the first when the
    second logs in. The first must not only say it "lost the broker" (which it did not: the
    second one is connected) but name the login that took its place."""
    user, password = secured.creds("operator farm-one")
    monkeypatch.setenv("MOCLO_MQTT_USERNAME", user)
    monkeypatch.setenv("MOCLO_MQTT_PASSWORD", password)
    live = settings.model_copy(update={"mqtt_url": secured.broker.url})
    args = ("alerts", "--follow", "--tenant", T1, *connection(live))
    first = Process(*args)
    second = None
    try:
        wait_until(lambda: any("watching" in line for line in first.err), what="first follows")
        second = Process(*args)
        wait_until(lambda: any("watching" in line for line in second.err), what="second follows")
        assert first.wait() == 1
        said = "\n".join(first.err)
        assert f"another client logged in as {user!r}" in said, said
        assert "one connection per login" in said, said
        assert second.process.poll() is None  # the newer one keeps its connection
    finally:
        first.close()
        if second is not None:
            second.close()


def test_two_serves_with_one_login_say_why_their_live_streams_drop(
    secured: Secured,  # noqa: F811
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two `moclo serve` with the same account push each other off the broker every half
    second, for as long as both run. Their log must name the cause, not only "broker
    unavailable"."""
    caplog.set_level(logging.WARNING, logger="moclo.serve")
    user, password = secured.creds("serve")
    update = {"mqtt_username": user, "mqtt_password": SecretStr(password)}
    web = settings.model_copy(
        update={"mqtt_url": secured.broker.url, "serve_listen": "127.0.0.1:0", **update}
    )
    cause = f"another client logged in as {user!r}"
    with RunningServe(web), RunningServe(web):
        wait_until(
            lambda: any(cause in record.getMessage() for record in caplog.records),
            what="a warning naming the login that took the live stream's place",
        )


def test_an_ack_by_an_account_without_an_acks_login_says_so(
    secured: Secured,  # noqa: F811
    settings: Settings,
    influx: Influx,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`moclo alerts ack` logs in as `ACCOUNT~acks`, which only operator, clinician and serve
    accounts have (and brokers whose files were generated before it have not). Refused, it must not
    send the person looking for a broker that is down or at the wrong address."""
    alert = dataclasses.replace(_open_alert(), tenant=T1)
    influx.write([alert.to_line()])
    user, password = secured.creds("app farm-one")
    monkeypatch.setenv("MOCLO_MQTT_USERNAME", user)
    monkeypatch.setenv("MOCLO_MQTT_PASSWORD", password)
    live = settings.model_copy(update={"mqtt_url": secured.broker.url})
    result = moclo("alerts", "ack", alert.alert_id, "--timeout", "1s", *connection(live))
    assert result.returncode == 1
    assert f"refused the login '{user}~acks'" in result.stderr, result.stderr
    assert "only operator, clinician and serve accounts have it" in result.stderr
    assert "Is it running?" not in result.stderr


def test_two_ingests_with_one_login_say_why_their_connections_drop(
    secured: Secured,  # noqa: F811
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two `moclo ingest` with the same account take the one session from each other about
    every second, each then consuming a part of the readings (alert rules judge fragments).
    Mosquitto 2.0.11 closes the older connection without a reason code, so paho says only
    "Unspecified error": the log must name the cause."""
    caplog.set_level(logging.WARNING, logger="moclo.ingest")
    user, password = secured.creds("ingest")
    update = {"mqtt_username": user, "mqtt_password": SecretStr(password)}
    first = settings.model_copy(
        update={"mqtt_url": secured.broker.url, "ingest_client_id": None, **update}
    )
    second = first.model_copy(update={"ingest_client_id": "second"})  # its own spool folder
    cause = f"another client logged in as {user!r}"
    options = IngestOptions(linger_s=0.05)
    with RunningIngest(first, options), RunningIngest(second, options):
        wait_until(
            lambda: any(cause in record.getMessage() for record in caplog.records),
            what="a warning naming the login that took ingest's connection",
        )
