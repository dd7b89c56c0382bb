"""`moclo up` with MOCLO_NOTIFY_FILE: the notifier runs as one more part of the stack, logged
in with its own account, and the simulated fleet's fevers reach the farmer's (real) receiver
with a one-tap acknowledgement link to this dashboard. Without the file, no notifier."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from moclo.stack import free_port
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
