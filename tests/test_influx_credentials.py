"""An InfluxDB URL with `user:password@` is treated like the MQTT password: refused as a flag
(it would show in `ps`), masked wherever the URL is shown, and sent as basic auth."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from moclo.stack import InfluxServer, free_port
from storage.influx import InfluxClient, InfluxRefused
from tests.helpers import moclo

SECRET = "s3cr3t-pw"


class AuthInfluxServer(InfluxServer):
    """The same InfluxDB 1.6.7 as the suite's, with authentication switched on."""

    def write_config(self) -> None:
        super().write_config()
        text = self.config_path.read_text()
        self.config_path.write_text(text.replace("auth-enabled = false", "auth-enabled = true"))


@pytest.fixture(scope="module")
def auth_influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    server = AuthInfluxServer(tmp_path_factory.mktemp("influx-auth"), free_port())
    server.start()
    # With no user yet, 1.x lets anyone create the first admin; after that it wants a login.
    query = f"CREATE USER admin WITH PASSWORD '{SECRET}' WITH ALL PRIVILEGES"
    httpx.post(f"{server.url}/query", data={"q": query}, timeout=10).raise_for_status()
    yield server
    server.stop()


def with_login(server: InfluxServer, password: str = SECRET) -> str:
    return f"http://admin:{password}@{server.host}:{server.port}"


def test_url_credentials_are_sent_as_basic_auth_to_a_real_influxdb(
    auth_influx: InfluxServer,
) -> None:
    async def write_and_count(url: str) -> int:
        client = InfluxClient(url, "creds")
        try:
            await client.ensure_database()
            await client.write(["m,t=a v=1i 1"])
            [series] = await client.query('SELECT count("v") FROM "m"')
            return int(series.rows()[0]["count"])
        finally:
            await client.close()

    assert asyncio.run(write_and_count(with_login(auth_influx))) == 1
    # The control: this server does want the password.
    with pytest.raises(InfluxRefused):
        asyncio.run(write_and_count(with_login(auth_influx, "wrong")))


@pytest.mark.parametrize("command", [["ingest"], ["query", "cow-1", "--since", "1h"], ["up"]])
def test_a_password_in_the_influx_url_flag_is_refused(command: list[str], tmp_path: Path) -> None:
    url = f"http://admin:{SECRET}@127.0.0.1:{free_port()}"
    if command == ["up"]:  # were the flag let through, up's servers would live in tmp_path
        command = [*command, "--data-dir", str(tmp_path / "stack"), "--duration", "1s"]
    result = moclo(*command, "--influx-url", url, timeout_s=60)
    assert result.returncode == 2, result.stderr
    assert "--influx-url" in result.stderr
    assert "MOCLO_INFLUX_URL" in result.stderr and "MOCLO_INFLUX_TOKEN" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_control_an_influx_url_flag_with_a_user_but_no_password_is_accepted() -> None:
    port = free_port()
    result = moclo("ingest", "--influx-url", f"http://admin@127.0.0.1:{port}", timeout_s=60)
    assert result.returncode == 1, result.stderr  # past the flags, to the absent database
    assert f"cannot reach InfluxDB at http://127.0.0.1:{port}" in result.stderr


def test_errors_naming_the_database_mask_the_password(
    auth_influx: InfluxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOCLO_INFLUX_URL", with_login(auth_influx))
    result = moclo("query", "cow-1", "--since", "1h", "--influx-db", "never_written", timeout_s=60)
    assert result.returncode == 1, result.stderr
    assert "has no database 'never_written'" in result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert f"http://admin:***@127.0.0.1:{auth_influx.port}" in result.stderr


def test_an_unreachable_database_error_does_not_show_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    monkeypatch.setenv("MOCLO_INFLUX_URL", f"http://admin:{SECRET}@127.0.0.1:{port}")
    result = moclo("ingest", timeout_s=60)
    assert result.returncode == 1, result.stderr
    assert f"cannot reach InfluxDB at http://127.0.0.1:{port}" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_moclo_up_never_prints_the_influx_password(
    auth_influx: InfluxServer, tmp_path: Path, mosquitto_free_env: dict[str, str]
) -> None:
    """`moclo up` against a database that wants a login: it works (ingest logs in with the
    URL's credentials), and neither its banner nor its suggested commands show the password."""
    env = {**mosquitto_free_env, "MOCLO_INFLUX_URL": with_login(auth_influx)}
    result = subprocess.run(
        [sys.executable, "-m", "moclo.cli", "up", "--data-dir", str(tmp_path / "stack"),
         "--no-simulator", "--duration", "3s"],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert SECRET not in output
    assert f"http://admin:***@127.0.0.1:{auth_influx.port}" in output  # the masked form
    assert "moclo is up" in output


@pytest.fixture
def mosquitto_free_env() -> dict[str, str]:
    import os

    return {
        **os.environ,
        "MOCLO_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}",
        "MOCLO_HTTP_LISTEN": "off",
    }


def test_a_password_holding_an_at_sign_is_masked_whole(
    auth_influx: InfluxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `user:p@ss@host` works (the URL's last @ ends the login, as urlsplit and httpx read it),
    # so no part of such a password may show either.
    password = "pa@ss-tail-x7"
    query = f"CREATE USER atsign WITH PASSWORD '{password}' WITH ALL PRIVILEGES"
    httpx.post(
        f"{auth_influx.url}/query", data={"q": query}, auth=("admin", SECRET), timeout=10
    ).raise_for_status()
    url = f"http://atsign:{password}@{auth_influx.host}:{auth_influx.port}"
    monkeypatch.setenv("MOCLO_INFLUX_URL", url)
    result = moclo("query", "cow-1", "--since", "1h", "--influx-db", "never_written", timeout_s=60)
    assert result.returncode == 1, result.stderr
    assert "has no database 'never_written'" in result.stderr  # it did log in
    assert "ss-tail-x7" not in result.stdout + result.stderr
    assert f"http://atsign:***@127.0.0.1:{auth_influx.port}" in result.stderr
