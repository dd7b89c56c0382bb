"""An operator of another tenant asking about my devices, on the broker as moclo configures it
(the registry's password and ACL files on a real Mosquitto): the ACL lets an account write only
its own tenant's request topics, and drops anything else unanswered (MQTT 3.1.1 has no
refusal), so `moclo command` would wait out its whole `--wait`. With the registry at hand, the
CLI refuses at once (exit 3) and says why; the owner's request beside it, the positive
control, reaches ingest's topic."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from access.registry import Registry
from core.settings import Settings
from devices.topics import COMMAND_REQUESTS, request_topic
from tests.helpers import moclo, wait_until
from tests.test_command_cli import _flags, closed_broker


def test_another_tenants_operator_is_refused_at_once_and_the_owner_gets_through(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(tmp_path / "closed.sqlite")
    registry.add_device("home", "car", "car-1")
    owner = registry.add_account("operator", "owner", tenant="home")
    farmer = registry.add_account("operator", "farmer", tenant="farm")
    p = settings.topic_prefix
    with closed_broker(registry, tmp_path, p) as (url, ingest_eye):
        flags = [*_flags(settings)]
        flags[1] = url
        monkeypatch.setenv("MOCLO_REGISTRY", str(tmp_path / "closed.sqlite"))
        monkeypatch.setenv("MOCLO_MQTT_USERNAME", farmer.username)
        monkeypatch.setenv("MOCLO_MQTT_PASSWORD", farmer.password)
        attempts = [
            ["command", "home", "car-1", "unlock", "--wait", "--timeout", "60s"],
            ["desired", "set", "home", "car-1", "locked=false", "--wait", "--timeout", "60s"],
        ]
        for attempt in attempts:
            started = time.monotonic()
            result = moclo(*attempt, *flags)
            assert result.returncode == 3, result.stderr
            assert "account 'farmer' belongs to tenant 'farm', not 'home'" in result.stdout
            assert time.monotonic() - started < 30  # not the whole --wait
            assert farmer.password not in result.stdout + result.stderr
        # The positive control: the owner, the same command, reaches ingest's topic (no ingest
        # runs here, so nobody answers: exit 7 after a short --timeout).
        monkeypatch.setenv("MOCLO_MQTT_USERNAME", owner.username)
        monkeypatch.setenv("MOCLO_MQTT_PASSWORD", owner.password)
        result = moclo("command", "home", "car-1", "unlock", "--timeout", "1s", *flags)
        assert result.returncode == 7, result.stderr
        topic = request_topic(p, "home", COMMAND_REQUESTS, "owner")
        wait_until(lambda: any(t == topic for t, _ in ingest_eye.messages), timeout_s=10)
        assert {t for t, _ in ingest_eye.take()} == {topic}  # the owner's, and only it
