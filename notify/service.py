"""The notifier service (`moclo notify run`): MQTT in, the dispatcher's outbox, channels out.

Tasks, under one TaskGroup:
- `take`: each alert change or notice from the feed (feed.py) is read into a Subject, taken by
  the dispatcher (durable on return: an SQLite commit), and only then acknowledged (PUBACK), in
  arrival order. Anything else is refused with its reason, counted and acknowledged;
- `dispatch`: whatever the dispatcher says is due goes to its channel's worker (senders.py);
  each outcome goes back to `Dispatcher.delivered`, which retries or gives up;
- `timeline`: the dispatcher's events are written to InfluxDB (`moclo_notifications`); while
  InfluxDB is down they stay in the outbox and are written when it is back, and nothing waits
  for them;
- `reload`: the notify file is read again when it changes; a file with mistakes is refused
  (each FILE:LINE logged) and the last good one stays in force;
- `channels`: the channel workers; `/healthz` and `/metrics` are served beside them.

Time comes from `clock` (the dispatcher's), so tests can move it: escalation minutes pass
without waiting. Nothing a person's server, a channel or InfluxDB answers stops the service;
an outbox that cannot be written does (then nothing is acknowledged, and the broker delivers
it again after the restart).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from core.http_endpoint import serve
from core.settings import Settings
from notify.dispatch import Delivery, Dispatcher
from notify.feed import AlertFeed
from notify.file import NotifyFileError, load_notify_file
from notify.links import make_ack_token
from notify.metrics import NotifierStats, routes
from notify.model import NotifyConfig
from notify.senders import AppriseSender, Channels, Sender, SendResult, scheme
from notify.subjects import Refusal, read_subject
from storage.influx import InfluxClient, InfluxError
from storage.notifications import NotificationEvent

# What arrived together is taken in one commit: a storm of a thousand alerts costs a few
# dozen fsyncs, not a thousand, on the cores ingest needs (benchmarks/notify_storm.py).
TAKE_BATCH = 200

log = logging.getLogger("moclo.notify")

DEFAULT_CLIENT_ID = "moclo-notify"
LINK_LIFETIME_S = 24 * 3600
_TIMELINE_BACKOFF_S = (1.0, 30.0)
_LAST_TIMELINE_S = 2.0


def client_id(settings: Settings) -> str:
    """The notifier's MQTT client id, which names its persistent session: its login (moclo's
    brokers name a session by it anyway), else `moclo-notify`."""
    return settings.mqtt.username or DEFAULT_CLIENT_ID


class Notifier:
    def __init__(
        self,
        settings: Settings,
        config: NotifyConfig,
        stop: asyncio.Event,
        *,
        clock: Callable[[], float] = time.time,
        sender: Sender | None = None,
        attempt_timeout_s: float = 10.0,
        max_attempts: int = 8,
        tick_s: float = 1.0,
        reload_every_s: float = 2.0,
    ) -> None:
        self.settings = settings
        self.stop = stop
        self.clock = clock
        self.stats = NotifierStats()
        self.max_attempts = max_attempts
        self.tick_s = tick_s
        self.reload_every_s = reload_every_s
        self.dispatcher = Dispatcher(
            config,
            Path(settings.notify_outbox),
            clock=clock,
            ack_link=self._ack_link,
            max_attempts=max_attempts,
        )
        self.feed = AlertFeed(
            settings.mqtt, client_id=client_id(settings), prefix=settings.topic_prefix
        )
        self.channels = Channels(
            sender or AppriseSender(timeout_s=attempt_timeout_s),
            self._report,
            attempt_timeout_s=attempt_timeout_s,
        )
        self.influx = InfluxClient(
            settings.influx_url, settings.influx_db, token=settings.influx_token_value
        )
        self.http_port: int | None = None
        self._wake = asyncio.Event()
        self._counted: set[NotificationEvent] = set()  # escalations counted in /metrics
        self._database_ready = False

    def _ack_link(self, alert_id: str, person: str) -> str | None:
        secret, public = self.settings.notify_link_secret_value, self.settings.public_url
        if not secret or not public:
            return None
        # Checked by serve against the real clock, whatever clock the dispatcher runs on.
        expires = int(time.time()) + LINK_LIFETIME_S
        return f"{public}/ack/{make_ack_token(secret, alert_id, person, expires=expires)}"

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Runs until `stop` is set; what is owed stays in the outbox for the next start."""
        server = None
        try:
            await self.feed.start()
            self.stats.mqtt_connected = True
            listen = self.settings.notify_listen
            if listen != "off":
                host, _, port = listen.rpartition(":")
                server = await serve(host, int(port), routes(self.stats, self.dispatcher.owed))
                self.http_port = server.sockets[0].getsockname()[1]
            log.info(
                "notifier: following %s on %s; outbox %s%s",
                " and ".join(self.feed.subscriptions),
                self.settings.mqtt.display(),
                self.settings.notify_outbox,
                f"; health on http://{listen.rpartition(':')[0]}:{self.http_port}/healthz"
                if self.http_port
                else "",
            )
            if ready is not None:
                ready.set()
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.channels.run(self.stop), name="channels")
                tasks.create_task(self._take(), name="take")
                tasks.create_task(self._dispatch(), name="dispatch")
                tasks.create_task(self._timeline(), name="timeline")
                tasks.create_task(self._reload(), name="reload")
        finally:
            if server is not None:
                server.close()
            await self.feed.close()
            await self.influx.close()
            self.dispatcher.close()

    async def _until_stopped(
        self,
        delay_s: float | None,
        *,
        wake: bool = False,
        also: asyncio.Future[bool] | None = None,
    ) -> bool:
        """Waits `delay_s` (None: no limit), less if `wake` and something woke the dispatcher
        or `also` is done; True once `stop` is set."""
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(self.stop.wait())]
        if wake:
            waiters.append(asyncio.ensure_future(self._wake.wait()))
        try:
            await asyncio.wait(
                [*waiters, *([also] if also else [])],
                timeout=delay_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
        return self.stop.is_set()

    async def _take(self) -> None:
        while not self.stop.is_set():
            getting = asyncio.ensure_future(self.feed.get_batch(TAKE_BATCH))
            stopping = asyncio.ensure_future(self.stop.wait())
            await asyncio.wait({getting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not getting.done():
                getting.cancel()
                return
            messages = getting.result()
            subjects = []
            for message in messages:
                subject = read_subject(self.settings.topic_prefix, message.topic, message.payload)
                if isinstance(subject, Refusal):
                    self.stats.refused[subject.reason] += 1
                    log.warning(
                        "notifier: dropped a message on %s: %s", message.topic, subject.detail
                    )
                else:
                    subjects.append(subject)
            if subjects:
                # One SQLite commit for what arrived together, off the event loop. If it
                # raises, nothing is acknowledged.
                await asyncio.to_thread(self.dispatcher.take_all, subjects)
                self.stats.taken += len(subjects)
                self._wake.set()
            for message in messages:  # in arrival order, as the broker needs them
                self.feed.ack(message)
            self.stats.mqtt_connected = self.feed.connected

    async def _dispatch(self) -> None:
        while True:
            # Cleared before asking: a change taken while due() runs wakes the next wait.
            self._wake.clear()
            due = await asyncio.to_thread(self.dispatcher.due)
            for delivery in due:
                self.channels.submit(delivery)
            wake = self.dispatcher.next_wake()
            wait = self.tick_s if wake is None else max(0.0, wake - self.clock())
            # Never a busy loop, and never longer than a tick: a test's clock may jump.
            wait = min(self.tick_s, max(wait, 0.0 if due else 0.02))
            self.stats.mqtt_connected = self.feed.connected
            if await self._until_stopped(wait, wake=True):
                return

    def _report(self, delivery: Delivery, result: SendResult) -> None:
        """A channel's answer: to the outbox first, then to /metrics and the log."""
        self.dispatcher.delivered(
            delivery, ok=result.ok, detail=result.detail, permanent=result.permanent
        )
        if result.ok:
            outcome = "sent"
        elif result.permanent or delivery.attempt >= self.max_attempts:
            outcome = "failed"
            log.warning(
                "notifier: gave up on message %s to %s via %s: %s",
                delivery.message_id,
                delivery.person,
                delivery.channel.shown,
                result.detail,
            )
        else:
            outcome = "retried"
        self.stats.notifications[(scheme(delivery.channel), outcome)] += 1
        if delivery.level > 1:  # told because the step before was not acknowledged in time
            self.stats.escalated_notifications[(scheme(delivery.channel), outcome)] += 1
        self._wake.set()

    async def _timeline(self) -> None:
        """The dispatcher's events into InfluxDB; what cannot be written now stays owed."""
        backoff = _TIMELINE_BACKOFF_S[0]
        while True:
            events = await asyncio.to_thread(self.dispatcher.events)
            self._count_escalations(events)
            delay = self.tick_s
            if events:
                writing = asyncio.ensure_future(self._write_timeline(events))
                # A slow InfluxDB never holds up a stop: the events stay in the outbox.
                if await self._until_stopped(None, also=writing):
                    writing.cancel()
                    return
                if writing.result():
                    backoff = _TIMELINE_BACKOFF_S[0]
                    delay = 0.0 if len(events) >= 1000 else self.tick_s
                else:
                    delay, backoff = backoff, min(backoff * 2, _TIMELINE_BACKOFF_S[1])
            if await self._until_stopped(delay):
                await self._last_timeline()
                return

    async def _last_timeline(self) -> None:
        """On a stop, what the last moments added, if InfluxDB takes it within a moment;
        else it waits in the outbox for the next start."""
        with suppress(TimeoutError):
            async with asyncio.timeout(_LAST_TIMELINE_S):
                events = await asyncio.to_thread(self.dispatcher.events)
                self._count_escalations(events)
                if events:
                    await self._write_timeline(events)

    def _count_escalations(self, events: list[NotificationEvent]) -> None:
        for event in events:
            if event.event == "escalated" and event not in self._counted:
                self._counted.add(event)
                self.stats.escalated[event.tenant] += 1

    async def _write_timeline(self, events: list[NotificationEvent]) -> bool:
        try:
            if not self._database_ready:
                await self.influx.ensure_database()
                self._database_ready = True
            await self.influx.write([event.to_line() for event in events])
        except InfluxError as exc:
            if self.stats.influx_available:
                log.warning("notifier: timeline kept in the outbox: %s", exc)
            self.stats.influx_available = False
            return False
        await asyncio.to_thread(self.dispatcher.events_stored, events)
        self._counted.difference_update(events)
        self.stats.timeline_written += len(events)
        self.stats.influx_available = True
        return True

    async def _reload(self) -> None:
        """Reads the notify file again when it changes; keeps the last good one on mistakes."""
        if not self.settings.notify_file:
            await self.stop.wait()
            return
        path = Path(self.settings.notify_file)
        seen = _stamp(path)
        while not await self._until_stopped(self.reload_every_s):
            stamp = _stamp(path)
            if stamp == seen:
                continue
            seen = stamp
            try:
                config = await asyncio.to_thread(load_notify_file, path)
            except NotifyFileError as exc:
                log.error(
                    "notifier: the notify file changed and cannot be used; the last good one "
                    "stays in force until it is fixed:\n%s",
                    exc,
                )
                continue
            self.dispatcher.reload(config)
            self._wake.set()
            log.info("notifier: read the notify file %s again", path)


def _stamp(path: Path) -> tuple[int, int] | None:
    with suppress(OSError):
        status = path.stat()
        return (status.st_mtime_ns, status.st_size)
    return None


def load_config(settings: Settings) -> NotifyConfig:
    """The notify file of MOCLO_NOTIFY_FILE; NotifyFileError lists its mistakes."""
    if not settings.notify_file:
        raise NotifyFileError(
            ["MOCLO_NOTIFY_FILE is not set: point it at the notify file (people, channels, "
             "routes; see deploy/notify.example.toml)"]
        )  # fmt: skip
    return load_notify_file(Path(settings.notify_file))


async def run_notifier(
    settings: Settings, stop: asyncio.Event, *, ready: asyncio.Event | None = None
) -> None:
    """`moclo notify run`: the notify file read (NotifyFileError if it has mistakes), then
    the service until `stop`."""
    config = load_config(settings)
    await Notifier(settings, config, stop).run(ready)
