"""`moclo engine-auth`, the auth service as a command of its own (docker-compose's `engine`
profile runs it): it answers RabbitMQ below the secret path given in the environment, and
nobody else; it refuses to start without a real secret; the secret never appears in its
output."""

from __future__ import annotations

import secrets
import signal
from pathlib import Path
from urllib.parse import urlencode

from access.registry import Registry
from moclo.stack import free_port
from tests.helpers import wait_until
from tests.test_commands import Output, _moclo
from tests.test_engine_auth import ask


def test_engine_auth_answers_only_below_the_secret_from_the_environment(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.sqlite")
    device = registry.add_device("farm", "cow_tracker", "c1")
    secret, port = secrets.token_hex(24), free_port()
    env = {"MOCLO_REGISTRY": str(registry.path), "MOCLO_ENGINE_AUTH_SECRET": secret}
    process = _moclo("engine-auth", "--listen", f"127.0.0.1:{port}", env=env)
    output = Output(process)
    try:
        wait_until(lambda: output.has("answering RabbitMQ"), what="engine-auth listening")
        known = urlencode({"username": device.username, "password": device.password}).encode()
        guessed = urlencode({"username": device.username, "password": "guess"}).encode()
        url = f"http://127.0.0.1:{port}/{secret}"
        assert ask(url, "/user", known) == (200, b"allow")  # positive control: RabbitMQ
        assert ask(url, "/user", guessed) == (200, b"deny")
        stranger = f"http://127.0.0.1:{port}"
        assert ask(stranger, "/user", known) == (404, b"deny")  # no secret: nothing learnt
        assert ask(f"{stranger}/{secret[:-1]}", "/user", known)[1] == b"deny"
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        output.close()
    assert secret not in output.text() and "stopped" in output.text()


def test_engine_auth_refuses_to_start_without_a_real_secret(tmp_path: Path) -> None:
    env = {"MOCLO_REGISTRY": str(tmp_path / "r.sqlite"), "MOCLO_ENGINE_AUTH_SECRET": "short"}
    process = _moclo("engine-auth", "--listen", f"127.0.0.1:{free_port()}", env=env)
    output = Output(process)
    try:
        assert process.wait(30) == 2
    finally:
        output.close()
    assert "MOCLO_ENGINE_AUTH_SECRET" in output.text() and "openssl rand" in output.text()
