"""The notifier for tests: `Notifier` on its own thread and event loop (like RunningIngest),
with a clock the test can move, and notify files written per test for the real receivers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from core.settings import Settings
from notify.service import Notifier, load_config
from tests.threaded import ThreadedService


class MovableClock:
    """Real time plus an offset the test adds to: escalation minutes pass at once."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s

    def advance(self, seconds: float) -> None:
        self.offset_s += seconds


class RunningNotifier(ThreadedService):
    name = "notifier"

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        attempt_timeout_s: float = 5.0,
        tick_s: float = 0.1,
        reload_every_s: float = 0.2,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.notifier: Notifier | None = None
        self._options = {
            "attempt_timeout_s": attempt_timeout_s,
            "tick_s": tick_s,
            "reload_every_s": reload_every_s,
        }
        super().__init__()

    def get(self, path: str) -> httpx.Response:
        assert self.notifier is not None and self.notifier.http_port
        return httpx.get(f"http://127.0.0.1:{self.notifier.http_port}{path}", timeout=5)

    async def serve(self, stop: asyncio.Event) -> None:
        ready, waiter = self.ready_event()
        self.notifier = Notifier(
            self.settings,
            load_config(self.settings),
            stop,
            clock=self.clock,
            **self._options,  # type: ignore[arg-type]
        )
        try:
            await self.notifier.run(ready)
        finally:
            waiter.cancel()


def notifier_settings(settings: Settings, tmp_path: Path, notify_toml: str) -> Settings:
    """The test's settings with a notify file holding `notify_toml`, an outbox and a free
    port for /metrics, all in the test's folder, and a login of its own (the test broker takes
    any), which names the notifier's persistent session: no test inherits another's."""
    path = tmp_path / "notify.toml"
    path.write_text(notify_toml)
    return settings.model_copy(
        update={
            "notify_file": str(path),
            "notify_outbox": str(tmp_path / "notify" / "outbox.sqlite"),
            "notify_listen": "127.0.0.1:0",
            "mqtt_username": f"notify-{settings.topic_prefix}",
        }
    )


def environment(settings: Settings, **more: str) -> dict[str, str]:
    """`settings` as the environment of a `moclo` child process."""
    return {
        "MOCLO_MQTT_URL": settings.mqtt_url,
        **({"MOCLO_MQTT_USERNAME": settings.mqtt_username} if settings.mqtt_username else {}),
        "MOCLO_INFLUX_URL": settings.influx_url,
        "MOCLO_INFLUX_DB": settings.influx_db,
        "MOCLO_TOPIC_PREFIX": settings.topic_prefix,
        "MOCLO_SPOOL_DIR": settings.spool_dir,
        "MOCLO_INGEST_CLIENT_ID": settings.ingest_id,
        "MOCLO_HTTP_LISTEN": "off",
        **({"MOCLO_NOTIFY_FILE": settings.notify_file} if settings.notify_file else {}),
        "MOCLO_NOTIFY_OUTBOX": settings.notify_outbox,
        **more,
    }
