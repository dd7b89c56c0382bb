"""The main commands as a user runs them: `moclo up`, `moclo ingest` (`moclo alerts` has
its own file, test_alerts_cli.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from core.mqtt import MqttEndpoint, make_client
from core.settings import Settings
from devices.topics import telemetry_topic
from moclo.stack import free_port, port_open
from tests.helpers import Influx, connack_code, cow_json, moclo, publish_all, wait_until


class Output:
    """A child process's output lines, collected on a thread so the test can wait on them."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.process = process
        assert process.stdout is not None
        self._thread = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append(line.rstrip("\n"))

    def has(self, text: str) -> str | None:
        return next((line for line in self.lines if text in line), None)

    def text(self) -> str:
        return "\n".join(self.lines)

    def close(self) -> None:
        """Kills the process if a test left it running, then reads its output to the end."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)
        self._thread.join(30)
        assert self.process.stdout is not None
        self.process.stdout.close()


def _moclo(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "moclo.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_moclo_up_starts_everything_shows_readings_and_alerts_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    mqtt_port, influx_port, http_port = free_port(), free_port(), free_port()
    dashboard_port = free_port()
    env = {
        "MOCLO_MQTT_URL": f"mqtt://127.0.0.1:{mqtt_port}",
        "MOCLO_INFLUX_URL": f"http://127.0.0.1:{influx_port}",
        "MOCLO_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "MOCLO_SERVE_LISTEN": f"127.0.0.1:{dashboard_port}",
    }
    process = _moclo(
        "up",
        "--data-dir",
        str(tmp_path / "stack"),
        "--interval",
        "500ms",
        "--incident-every",
        "10s",
        "--seed",
        "1",
        env=env,
    )
    output = Output(process)
    try:
        banner = wait_until(lambda: output.has("moclo is up"), timeout_s=60, what="moclo up banner")
        # It opens with the dashboard, which answers, and shows the fleet's alerts.
        dashboard = f"http://127.0.0.1:{dashboard_port}/"
        assert banner.strip() == f"moclo is up. Dashboard: {dashboard}"
        assert "<title>moclo</title>" in httpx.get(dashboard, timeout=5).text
        assert output.has(f"mqtt://127.0.0.1:{mqtt_port}  (started here")
        assert output.has(f"http://127.0.0.1:{influx_port}  db=moclo  (started here")
        wait_until(
            lambda: output.has("ALERT warning  fever"), timeout_s=60, what="a fever alert on screen"
        )
        wait_until(
            lambda: any(
                "readings stored" in line and "readings stored 0 " not in line
                for line in output.lines
            ),
            timeout_s=60,
            what="status line",
        )
        assert port_open("127.0.0.1", mqtt_port) and port_open("127.0.0.1", influx_port)
        assert output.has(f"http://127.0.0.1:{http_port}/healthz")
        assert httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=5).json()["ok"]
        # Closed by default: the API wants a token, the broker refuses anonymous clients.
        assert httpx.get(f"{dashboard}api/alerts", timeout=5).status_code == 401
        token = (tmp_path / "stack" / "dashboard-token").read_text().strip()
        assert oct((tmp_path / "stack" / "dashboard-token").stat().st_mode & 0o777) == "0o600"
        assert token not in output.text()
        signed_in = {"Authorization": f"Bearer {token}"}
        fevers = wait_until(
            lambda: httpx.get(
                f"{dashboard}api/alerts", params={"all": True}, headers=signed_in, timeout=5
            ).json()["alerts"],
            what="alerts through the API",
        )
        anonymous = make_client(MqttEndpoint.from_url(f"mqtt://127.0.0.1:{mqtt_port}"), "anon")
        refused: list[object] = []
        anonymous.on_connect = lambda c, u, f, reason, p: refused.append(reason)
        anonymous.connect("127.0.0.1", mqtt_port)
        anonymous.loop_start()
        try:
            wait_until(lambda: refused, what="the broker's answer to an anonymous client")
        finally:
            anonymous.loop_stop()
            anonymous.disconnect()
        assert refused[0].is_failure, refused  # type: ignore[attr-defined]
        # A device registered while the stack runs may log in at once: the broker reloaded.
        registry = Path(os.environ["MOCLO_REGISTRY"])  # the test's own (tests/conftest.py)
        broker_files = registry.parent / "broker"
        assert (broker_files / "passwords").exists() and (broker_files / "acl").exists()
        logins = tmp_path / "new-device.csv"
        added = moclo(
            "devices", "add", "demo-farm", "cow_tracker", "cow-9999",
            "--credentials-out", str(logins),
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        assert "reloaded" in added.stdout + added.stderr
        _, _, username, password = logins.read_text().splitlines()[1].split(",")
        assert connack_code(mqtt_port, username, password) == 0
        assert "fever" in {a["rule"] for a in fevers}

        # Secrets used the ways that could leak them: a wrong-password login with another
        # secret as the password, a rejected reading, a token that is not one, a revoked one.
        assert connack_code(mqtt_port, username, token) == 135
        endpoint = MqttEndpoint("127.0.0.1", mqtt_port, username, password, False)
        publisher = make_client(endpoint, "demo-farm.cow-9999")
        publisher.connect("127.0.0.1", mqtt_port)
        publisher.loop_start()
        try:
            topic = "moclo/demo-farm/cow_tracker/cow-9999/telemetry"
            publisher.publish(topic, cow_json(int(time.time()), 1), qos=1).wait_for_publish(10)
            publisher.publish(topic, b'{"ts": "not a time"}', qos=1).wait_for_publish(10)
        finally:
            publisher.loop_stop()
            publisher.disconnect()
        influx = Influx(env["MOCLO_INFLUX_URL"], "moclo")
        wait_until(
            lambda: influx.count("moclo_rejected", "error", "device_type = 'cow_tracker'"),
            what="the bad reading in moclo_rejected",
        )
        made = moclo("tokens", "create", "visitor", "--tenant", "demo-farm")
        visitor = made.stdout.strip()
        assert made.returncode == 0 and visitor, made.stderr
        assert moclo("tokens", "revoke", "visitor").returncode == 0
        for bearer in (visitor, token + "x"):  # a revoked token counts within a second
            answer = wait_until(
                lambda b=bearer: _refused(f"{dashboard}api/alerts", b),  # type: ignore[misc]
                what="the token to be refused",
            )
            assert bearer not in answer.text
        secrets = {"dashboard token": token, "device password": password, "API token": visitor}
        stored = json.dumps(influx.query("SELECT * FROM moclo_rejected"))
        metrics = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=5).text
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0, output.text()
    finally:
        output.close()
    wait_until(lambda: output.has("stopped cleanly"), what="clean stop message")
    assert not port_open("127.0.0.1", mqtt_port), "mosquitto was stopped"
    assert not port_open("127.0.0.1", influx_port), "influxd was stopped"
    assert "Traceback" not in output.text()
    assert (tmp_path / "stack" / "mosquitto" / "data" / "mosquitto.db").exists()

    # The whole run, searched for every secret it issued: moclo up's output (ingest's and
    # serve's logs), the rejected store, /metrics, and every file the stack left (the broker's
    # and InfluxDB's logs, the spool, the alert state, the registry and the broker's files,
    # which hold hashes), but for the token's own file and the device's credentials file.
    places = {"moclo up's output": output.text(), "moclo_rejected": stored, "/metrics": metrics}
    kept = {tmp_path / "stack" / "dashboard-token", logins}
    for root in (tmp_path / "stack", registry.parent):
        for path in root.rglob("*"):
            if path.is_file() and path not in kept:
                places[str(path)] = path.read_bytes().decode("latin-1")
    assert len(places) > 10 and any("mosquitto.log" in p for p in places)
    leaks = [(what, where) for what, s in secrets.items() for where, t in places.items() if s in t]
    assert leaks == [], leaks


def _refused(url: str, bearer: str) -> httpx.Response | None:
    answer = httpx.get(url, headers={"Authorization": f"Bearer {bearer}"}, timeout=5)
    return answer if answer.status_code == 401 else None


def test_moclo_ingest_stops_on_sigterm_with_a_summary(settings: Settings) -> None:
    env = {
        "MOCLO_MQTT_URL": settings.mqtt_url,
        "MOCLO_INFLUX_URL": settings.influx_url,
        "MOCLO_INFLUX_DB": settings.influx_db,
        "MOCLO_TOPIC_PREFIX": settings.topic_prefix,
        "MOCLO_SPOOL_DIR": settings.spool_dir,
        "MOCLO_HTTP_LISTEN": settings.http_listen,
    }
    process = _moclo("--log-format", "json", "ingest", "--client-id", settings.ingest_id, env=env)
    output = Output(process)
    try:
        ready = wait_until(lambda: output.has("ingesting"), what="ingest ready")
        entry = json.loads(ready)  # structured logs: one JSON object per line
        assert entry["level"] == "info" and entry["logger"] == "moclo.ingest"
        assert entry["message"].startswith("ingesting ")
        topic = telemetry_topic(settings.topic_prefix, "farm", "cow_tracker", "cow-1")
        publish_all(
            settings.mqtt_url,
            [
                (
                    topic,
                    cow_json(int(time.time()) - 100 + i, i, body_temp_c=38.6),
                )
                for i in range(10)
            ]
            + [(topic, b"nope")],
        )
        wait_until(lambda: output.has("rejected (bad_json)"), what="rejection logged")
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, output.text()
    finally:
        output.close()
    wait_until(lambda: output.has("ingest stopped"), what="summary")
    assert output.has("ingest stopped: 11 messages, 10 readings stored, 1 rejected")


def test_moclo_ingest_explains_an_unreachable_database(settings: Settings) -> None:
    port = free_port()
    result = moclo(
        "ingest",
        "--influx-url",
        f"http://127.0.0.1:{port}",
        "--mqtt-url",
        settings.mqtt_url,
    )
    assert result.returncode == 1
    assert f"cannot reach InfluxDB at http://127.0.0.1:{port}" in result.stderr
    assert "MOCLO_INFLUX_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_every_command_and_the_environment() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "moclo.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    for word in (
        "up",
        "ingest",
        "simulate",
        "devices",
        "alerts",
        "MOCLO_MQTT_URL",
        "MOCLO_INFLUX_TOKEN",
    ):
        assert word in result.stdout


def test_servers_started_by_moclo_up_die_with_it_even_on_sigkill(tmp_path: Path) -> None:
    mqtt_port, influx_port = free_port(), free_port()
    env = {
        "MOCLO_MQTT_URL": f"mqtt://127.0.0.1:{mqtt_port}",
        "MOCLO_INFLUX_URL": f"http://127.0.0.1:{influx_port}",
        "MOCLO_HTTP_LISTEN": "off",
    }
    process = _moclo("up", "--data-dir", str(tmp_path / "stack"), "--no-simulator", env=env)
    output = Output(process)
    try:
        wait_until(lambda: output.has("moclo is up"), timeout_s=60, what="moclo up banner")
        process.kill()
        process.wait(30)
    finally:
        output.close()
    wait_until(
        lambda: not port_open("127.0.0.1", mqtt_port) and not port_open("127.0.0.1", influx_port),
        what="servers gone",
    )


def test_a_second_sigterm_exits_at_once_and_loses_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    from moclo.stack import InfluxServer

    database = InfluxServer(tmp_path / "influx", free_port())
    database.start()
    http_port = free_port()
    env = {
        "MOCLO_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "MOCLO_MQTT_URL": settings.mqtt_url,
        "MOCLO_INFLUX_URL": database.url,
        "MOCLO_INFLUX_DB": settings.influx_db,
        "MOCLO_TOPIC_PREFIX": settings.topic_prefix,
        "MOCLO_SPOOL_DIR": settings.spool_dir,
    }
    topic = telemetry_topic(settings.topic_prefix, "farm", "cow_tracker", "cow-1")

    def reading(seq: int) -> tuple[str, bytes]:
        return topic, cow_json(int(time.time()) - 100 + seq, seq, body_temp_c=38.6)

    try:
        process = _moclo("ingest", "--client-id", settings.ingest_id, env=env)
        output = Output(process)
        try:
            wait_until(lambda: output.has("ingesting"), what="ingest ready")
            assert database.pid is not None
            os.kill(database.pid, signal.SIGSTOP)  # InfluxDB hangs: the next write waits
            publish_all(settings.mqtt_url, [reading(1)])
            wait_until(
                lambda: (
                    "moclo_messages_received_total 1.0"
                    in httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=5).text
                ),
                what="the reading in ingest's hands",
            )
            process.send_signal(signal.SIGTERM)
            wait_until(lambda: output.has("SIGTERM: stopping cleanly"), what="first signal")
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 128 + signal.SIGTERM  # the immediate exit, not a clean stop
            # The exit can come before the reader thread has taken the last line from the pipe.
            wait_until(lambda: output.has("SIGTERM again: exiting at once"), what="second signal")
        finally:
            output.close()
        os.kill(database.pid, signal.SIGCONT)
        # The reading was never acknowledged, so the next ingest gets it again.
        again = _moclo("ingest", "--client-id", settings.ingest_id, env=env)
        output = Output(again)
        try:
            wait_until(
                lambda: Influx(database.url, settings.influx_db).count("cow_tracker", "seq") == 1,
                what="the reading stored after all",
            )
        finally:
            again.send_signal(signal.SIGTERM)
            output.close()
    finally:
        database.stop()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_moclo_serve_stops_cleanly_on_one_signal(
    settings: Settings, signum: signal.Signals
) -> None:
    # While uvicorn serves it takes the signal first and raises it again for moclo's handlers
    # once it has closed: the signal must count once, not as a second one (exit at once).
    env = {
        "MOCLO_MQTT_URL": settings.mqtt_url,
        "MOCLO_INFLUX_URL": settings.influx_url,
        "MOCLO_INFLUX_DB": settings.influx_db,
        "MOCLO_TOPIC_PREFIX": settings.topic_prefix,
        "MOCLO_REGISTRY": settings.registry,
        "MOCLO_SERVE_LISTEN": f"127.0.0.1:{free_port()}",
    }
    process = _moclo("serve", env=env)
    output = Output(process)
    try:
        url = wait_until(lambda: output.has("dashboard: "), what="serve ready").split()[-1]
        assert httpx.get(f"{url}api/openapi.json", timeout=5).status_code == 200
        process.send_signal(signum)
        assert process.wait(30) == 0, output.text()
    finally:
        output.close()
    name = signal.Signals(signum).name
    assert [line for line in output.lines if "stopping cleanly" in line] == [
        f"{name}: stopping cleanly (again to exit at once)"
    ]
    assert "exiting at once" not in output.text() and "Traceback" not in output.text()
