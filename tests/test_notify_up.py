"""`moclo up` with MOCLO_NOTIFY_FILE: the notifier runs as one more part of the stack, logged
in with its own account, and the simulated fleet's fevers reach the farmer's (real) receiver
with a one-tap acknowledgement link to this dashboard. Without the file, no notifier."""

from __future__ import annotations

import signal
import socket
import stat
import time
from pathlib import Path

import httpx
import pytest

from moclo.stack import free_port
from moclo.up_servers import LINK_SECRET_CHARS, dashboard_port, link_secret
from notify.links import AckLinkInvalid, make_ack_token, verify_ack_token
from tests.helpers import wait_until
from tests.receivers import HttpReceiver
from tests.test_commands import Output, _moclo


def test_moclo_up_starts_the_notifier_when_a_notify_file_is_set(
    tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    notify_file = tmp_path / "notify.toml"
    notify_file.write_text(
        f"""
[[people]]
name = "farmer"
tenants = ["demo-farm"]
channels = [ {{ url = "json://{http_receiver.base}/farmer", label = "farmer's phone" }} ]

[[routes]]
name = "everything"
tenant = "demo-farm"
group_wait = "0s"
notify = ["farmer"]
"""
    )
    dashboard_port, notify_port = free_port(), free_port()
    env = {
        "MOCLO_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}",
        "MOCLO_INFLUX_URL": f"http://127.0.0.1:{free_port()}",
        "MOCLO_HTTP_LISTEN": "off",
        "MOCLO_SERVE_LISTEN": f"127.0.0.1:{dashboard_port}",
        "MOCLO_NOTIFY_FILE": str(notify_file),
        "MOCLO_NOTIFY_LISTEN": f"127.0.0.1:{notify_port}",
    }
    process = _moclo(
        "up", "--data-dir", str(tmp_path / "stack"), "--devices", "cow_tracker=3",
        "--interval", "500ms", "--incident-every", "5s", "--seed", "1", env=env,
    )  # fmt: skip
    output = Output(process)
    try:
        line = wait_until(lambda: output.has("Notifier"), timeout_s=60, what="the notifier line")
        assert str(notify_file) in line and f"127.0.0.1:{notify_port}/healthz" in line
        health = httpx.get(f"http://127.0.0.1:{notify_port}/healthz", timeout=5).json()
        assert health["ok"] and health["mqtt_connected"], health
        (message, *_) = http_receiver.wait_for("/farmer", timeout_s=90)
        body = message.json()["message"]
        # The link goes to this dashboard, signed with the secret up made for serve and it.
        assert f"http://127.0.0.1:{dashboard_port}/ack/" in body, body
        assert (tmp_path / "stack" / "notify" / "outbox.sqlite").exists()
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, output.text()
    finally:
        output.close()
    assert "Traceback" not in output.text()


def test_moclo_up_with_a_broken_notify_file_exits_2_before_starting_servers(
    tmp_path: Path,
) -> None:
    notify_file = tmp_path / "notify.toml"
    notify_file.write_text('[[people]]\nname = "farmer"\nchanels = []\n')
    env = {
        "MOCLO_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}",
        "MOCLO_INFLUX_URL": f"http://127.0.0.1:{free_port()}",
        "MOCLO_NOTIFY_FILE": str(notify_file),
    }
    process = _moclo("up", "--data-dir", str(tmp_path / "stack"), env=env)
    output = Output(process)
    try:
        assert process.wait(60) == 2
    finally:
        output.close()
    assert f"{notify_file}:3:" in output.text() and "Traceback" not in output.text()
    assert not (tmp_path / "stack").exists(), "no server was started"


def test_a_link_sent_before_moclo_up_restarts_is_still_accepted_after(tmp_path: Path) -> None:
    """`moclo up` made a new link secret at every start, so every link already in an inbox (or
    in a message waiting in the outbox for quiet hours or a retry) was refused after a restart
    as "not an acknowledgement link moclo made". The secret is now kept in the data folder."""
    stack = tmp_path / "stack"
    before = link_secret(stack).get_secret_value().encode()
    token = make_ack_token(before, "0123456789ab", "farmer", expires=int(time.time()) + 3600)
    after = link_secret(stack).get_secret_value().encode()  # the next `moclo up`
    assert verify_ack_token(after, token).person == "farmer"
    kept = stack / "notify" / "link-secret"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    # Control: another stack's secret refuses the link, so the check above can fail.
    other = link_secret(tmp_path / "other").get_secret_value().encode()
    with pytest.raises(AckLinkInvalid):
        verify_ack_token(other, token)


def test_a_link_secret_cut_short_by_a_crash_is_made_anew(tmp_path: Path) -> None:
    kept = tmp_path / "notify" / "link-secret"
    kept.parent.mkdir()
    kept.write_text("")  # killed between creating the file and writing it
    secret = link_secret(tmp_path).get_secret_value()
    assert len(secret) >= LINK_SECRET_CHARS
    assert kept.read_text() == secret


def _held(port: int = 0) -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_the_dashboard_keeps_its_port_across_restarts_when_the_configured_one_is_taken(
    tmp_path: Path,
) -> None:
    """Links to the dashboard (one-tap acknowledgements, alert pages) are in inboxes: when the
    configured port is taken, `moclo up` used to pick a new free port at every start, so every
    link already sent pointed nowhere after a restart."""
    with _held() as configured:
        port = configured.getsockname()[1]
        first = dashboard_port("127.0.0.1", port, tmp_path)
        assert first != port
        # A restart, the configured port still taken: the same port as last time.
        assert dashboard_port("127.0.0.1", port, tmp_path) == first
        # Control: the one kept is taken too, so another is chosen (and kept from then on).
        with _held(first):
            second = dashboard_port("127.0.0.1", port, tmp_path)
        assert second not in (first, port)
        assert dashboard_port("127.0.0.1", port, tmp_path) == second
    # The configured port free again: it wins.
    assert dashboard_port("127.0.0.1", port, tmp_path) == port
