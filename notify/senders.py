"""Sending: each channel (one Apprise URL) has its own queue and its own worker, so a dead
channel (a server that never answers) holds back nothing but its own messages.

Apprise's calls are synchronous underneath (and `async_notify` runs some plugins inline), so
every attempt runs on the channel's own thread, never on the event loop; Apprise bounds it by
`timeout`, and the worker bounds it again a little later, in case a plugin ignores the
deadline. The outcome goes to `report`: the service passes it to `Dispatcher.delivered`, which
retries with back-off or gives up.

What Apprise tells us: whether the URL is one it understands (if not, no retry will help: the
delivery is refused for good) and whether the service accepted the message, failed or timed out
(all retried: Apprise 2 does not tell a 4xx refusal from an outage). A channel URL may hold a
token: only `Channel.shown` and the URL's scheme are ever logged, counted or reported.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote, urlsplit

import apprise

from notify.dispatch import Delivery
from notify.model import Channel

log = logging.getLogger("moclo.notify")
# Apprise logs what it sends to (URLs, ntfy topics, mail addresses, payloads), at every level
# from DEBUG to ERROR: a channel's secrets. Its log stays closed; the outcome is reported and
# logged here, by the channel's label.
logging.getLogger("apprise").setLevel(logging.CRITICAL + 10)

NOTIFICATION_ID_HEADER = "X-Moclo-Notification-Id"
# Apprise's generic webhooks take `+Name=value` as an HTTP header: there receivers see our
# delivery id, the same on a retry, and can drop a duplicate.
_HEADER_SCHEMES = frozenset({"json", "jsons", "form", "forms", "xml", "xmls"})
_BACKSTOP_S = 5.0  # beyond Apprise's own deadline, before the worker stops waiting


@dataclass(frozen=True, slots=True)
class SendResult:
    ok: bool
    permanent: bool = False  # no retry can help (Apprise does not understand the URL)
    detail: str = ""


class Sender(Protocol):
    """Sends one message through one channel, synchronously (it runs on the channel's thread)."""

    def send(self, channel: Channel, title: str, body: str, *, delivery_id: str) -> SendResult: ...


def scheme(channel: Channel) -> str:
    """The channel's kind for metrics and logs (`mailto`, `json`, `ntfys`): never a secret."""
    try:
        return urlsplit(channel.url).scheme or "unknown"
    except ValueError:
        return "invalid"


class AppriseSender:
    """Sends through Apprise: one `Apprise()` per attempt holding the channel's one URL."""

    def __init__(self, *, timeout_s: float = 10.0) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be more than 0")
        self.timeout_s = timeout_s

    def send(self, channel: Channel, title: str, body: str, *, delivery_id: str) -> SendResult:
        url = channel.url
        kind = scheme(channel)
        if kind in _HEADER_SCHEMES:
            joiner = "&" if "?" in url else "?"
            url = f"{url}{joiner}+{NOTIFICATION_ID_HEADER}={quote(delivery_id, safe='')}"
        sender = apprise.Apprise()
        if not sender.add(url):
            return SendResult(
                ok=False,
                permanent=True,
                detail=f"Apprise does not understand this {kind}:// URL; check the channel "
                "in the notify file (`moclo notify test PERSON` tries it)",
            )
        result = sender.notify(title=title, body=body, timeout=self.timeout_s)
        status = result.status
        if status == apprise.AppriseResultStatus.SUCCESS:
            return SendResult(ok=True)
        if status == apprise.AppriseResultStatus.TIMEOUT:
            return SendResult(ok=False, detail=f"no answer within {self.timeout_s:g}s")
        return SendResult(
            ok=False, detail=f"{kind} refused it or could not be reached ({status.name.lower()})"
        )


Report = Callable[[Delivery, SendResult], None]


class _ChannelWorker:
    """One channel's queue, thread and worker task."""

    def __init__(self, name: str, queue_size: int) -> None:
        self.name = name
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue(queue_size)
        # One thread: a hung attempt holds back only this channel's next one.
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)


class Channels:
    """Every channel's worker, started on first use under one TaskGroup (`run`)."""

    def __init__(
        self,
        sender: Sender,
        report: Report,
        *,
        attempt_timeout_s: float = 10.0,
        queue_size: int = 1000,
    ) -> None:
        self._sender = sender
        self._report = report
        self._timeout_s = attempt_timeout_s + _BACKSTOP_S
        self._queue_size = queue_size
        self._workers: dict[str, _ChannelWorker] = {}
        self._tasks: asyncio.TaskGroup | None = None

    @property
    def queued(self) -> int:
        return sum(worker.queue.qsize() for worker in self._workers.values())

    def submit(self, delivery: Delivery) -> None:
        """Queues `delivery` on its channel; a full queue is reported as a failed attempt (the
        dispatcher retries it later), never waited for."""
        # Keyed by a hash of the URL: the URL itself is a secret and must not name a thread.
        key = hashlib.sha256(delivery.channel.url.encode()).hexdigest()[:12]
        worker = self._workers.get(key)
        if worker is None:
            worker = _ChannelWorker(f"channel-{scheme(delivery.channel)}-{key}", self._queue_size)
            self._workers[key] = worker
            if self._tasks is not None:  # else run() starts it
                self._tasks.create_task(self._work(worker), name=worker.name)
        try:
            worker.queue.put_nowait(delivery)
        except asyncio.QueueFull:
            self._report(delivery, SendResult(ok=False, detail="its channel's queue is full"))

    async def run(self, stop: asyncio.Event) -> None:
        """Runs the workers until `stop`; what is queued then stays claimed in the outbox and
        is due again after a restart."""
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                for worker in self._workers.values():  # submitted before run()
                    tasks.create_task(self._work(worker), name=worker.name)
                await stop.wait()
                raise _Stopping
        except* _Stopping:
            pass
        finally:
            self._tasks = None
            for worker in self._workers.values():
                worker.thread.shutdown(wait=False, cancel_futures=True)
            self._workers.clear()

    async def _work(self, worker: _ChannelWorker) -> None:
        loop = asyncio.get_running_loop()
        while True:
            delivery = await worker.queue.get()
            send = functools.partial(
                self._sender.send,
                delivery.channel,
                delivery.title,
                delivery.body,
                delivery_id=delivery.id,
            )
            attempt = loop.run_in_executor(worker.thread, send)
            try:
                result = await asyncio.wait_for(attempt, self._timeout_s)
            except TimeoutError:
                result = SendResult(ok=False, detail=f"no answer within {self._timeout_s:g}s")
            except Exception as exc:  # a plugin's bug must not end the channel's worker
                # Only the type: a message may quote the URL, and its token.
                result = SendResult(ok=False, detail=f"the sender failed: {type(exc).__name__}")
                log.error("channel %s: sending failed: %s", delivery.channel.shown, result.detail)
            self._report(delivery, result)


class _Stopping(Exception):
    """Ends the TaskGroup of `Channels.run`, cancelling every worker."""
