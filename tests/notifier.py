"""The notifier for tests: `Notifier` on its own thread and event loop (like RunningIngest),
with a clock the test can move, and notify files written per test for the real receivers."""

from __future__ import annotations

import asyncio
import faulthandler
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from core.settings import Settings
from notify.service import Notifier, load_config


class MovableClock:
    """Real time plus an offset the test adds to: escalation minutes pass at once."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s

    def advance(self, seconds: float) -> None:
        self.offset_s += seconds


class RunningNotifier:
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
        self.error: BaseException | None = None
        self._options = {
            "attempt_timeout_s": attempt_timeout_s,
            "tick_s": tick_s,
            "reload_every_s": reload_every_s,
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="notifier", daemon=True)

    def __enter__(self) -> RunningNotifier:
        self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError("the notifier did not become ready in 30s")
        if self.error is not None:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        if self._thread.is_alive():
            self._dump_tasks()
            raise AssertionError("the notifier did not stop within 30s")
        if self.error is not None:
            raise self.error

    def _dump_tasks(self) -> None:
        """Where it hangs: every thread, and every task of its event loop (to stderr)."""
        faulthandler.dump_traceback(all_threads=True)
        dumped = threading.Event()

        def dump() -> None:
            for task in asyncio.all_tasks():
                task.print_stack(file=sys.stderr)
            dumped.set()

        if self._loop is not None:
            self._loop.call_soon_threadsafe(dump)
            dumped.wait(5)

    def get(self, path: str) -> httpx.Response:
        assert self.notifier is not None and self.notifier.http_port
        return httpx.get(f"http://127.0.0.1:{self.notifier.http_port}{path}", timeout=5)

    def _main(self) -> None:
        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            ready = asyncio.Event()
            waiter = asyncio.ensure_future(ready.wait())
            waiter.add_done_callback(lambda _: self._ready.set())
            self.notifier = Notifier(
                self.settings,
                load_config(self.settings),
                self._stop,
                clock=self.clock,
                **self._options,  # type: ignore[arg-type]
            )
            try:
                await self.notifier.run(ready)
            finally:
                waiter.cancel()

        try:
            asyncio.run(run())
        except BaseException as exc:  # surfaced to the test by __enter__/__exit__
            self.error = exc
        finally:
            self._ready.set()


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
