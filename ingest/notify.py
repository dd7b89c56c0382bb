"""Alert notifiers: tell people (a log line) and other systems (a webhook) about alert changes.

Guarantees:
- `submit()` never blocks, awaits or does I/O: it appends to a bounded deque in O(1). The alert
  path calls it inline, so a slow or dead webhook can never stall ingestion.
- Memory is bounded by `queue_size`. When the queue is full the OLDEST queued notification is
  dropped, because a receiver gains more from the latest change than from an old one. The alert
  itself is still stored and published elsewhere; only this webhook misses the change.
- Every submitted notification ends up counted once: `skipped` (below `min_severity`), `dropped`
  (overflow, or still queued when the stop drain ran out), `failed` (refused with a 4xx, or every
  attempt failed), `sent` (2xx), or it is still `queued`. `retries` counts extra attempts.
- Delivery is in submission order, one at a time. Connection errors, timeouts, 429 and 5xx are
  retried with capped, fully jittered backoff (honouring Retry-After); other statuses are not.
- The webhook URL may carry a secret; only scheme://host[:port] is ever logged or raised.
- With a secret (MOCLO_WEBHOOK_SECRET), each attempt is signed afresh (core/webhook_signature):
  `X-Moclo-Timestamp` and `X-Moclo-Signature: sha256=HMAC(secret, f"{ts}.{body}")`, so a
  receiver can tell the POST came from us and refuse a replay. The secret is never logged.
- Nothing a send raises leaves `run()` but cancellation: an error no retry can mend (httpx
  refusing the URL, or anything unexpected) counts the notification as `failed`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from core.settings import Settings
from core.webhook_signature import signature_headers

log = logging.getLogger("moclo.notify")
alert_log = logging.getLogger("moclo.alerts")

SEVERITIES = ("info", "warning", "critical")
_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
_DROP_LOG_INTERVAL_S = 30.0
_EXCERPT_CHARS = 200


class Notification(Protocol):
    @property
    def alert_id(self) -> str: ...
    @property
    def state(self) -> str: ...  # "raised" | "acknowledged" | "resolved"
    @property
    def severity(self) -> str: ...  # "info" | "warning" | "critical"
    def to_json(self) -> bytes: ...  # the JSON body to POST
    def describe(self) -> str: ...  # one human line, for the log notifier


class Notifier(Protocol):
    def submit(self, n: Notification) -> None: ...
    async def run(self, stop: asyncio.Event) -> None: ...


@dataclass(slots=True)
class NotifierStats:
    sent: int = 0
    failed: int = 0
    dropped: int = 0
    skipped: int = 0
    retries: int = 0


def redact_url(url: str) -> str:
    """scheme://host[:port] of `url`: user-info, path, query and fragment may all hold secrets."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}" + ("" if port is None else f":{port}")


def _check_url(url: str) -> None:
    allowed = "webhook url must be http://host[:port][/path] or https://host[:port][/path]"
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number in 0-65535
    except ValueError:
        raise ValueError(f"{allowed}; its host or port is not valid") from None
    # The message names the scheme and never the URL itself, which may hold a token.
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{allowed}; got scheme {parts.scheme or '(none)'!r}")
    if not parts.hostname:
        raise ValueError(f"{allowed}; it has no host")


class LogNotifier:
    """Logs every change on "moclo.alerts": a raised critical alert at WARNING, others at INFO."""

    def submit(self, n: Notification) -> None:
        level = logging.WARNING if (n.severity, n.state) == ("critical", "raised") else logging.INFO
        if alert_log.isEnabledFor(level):
            alert_log.log(level, "%s", n.describe())

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()  # nothing to deliver in the background


@dataclass(frozen=True, slots=True)
class _Outcome:
    sent: bool = False
    retry: bool = False
    retry_after_s: float | None = None
    reason: str = ""


class _DrainOver(Exception):
    """The next retry would start after the stop drain's deadline."""


class WebhookNotifier:
    """POSTs each change's JSON to one URL from a bounded queue; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        max_attempts: int = 5,
        queue_size: int = 10_000,
        min_severity: str = "info",
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,  # only paces the overflow warnings
        secret: bytes | None = None,
        wall_clock: Callable[[], float] = time.time,  # the signature's timestamp
    ) -> None:
        _check_url(url)
        if min_severity not in _RANK:
            allowed = ", ".join(SEVERITIES)
            raise ValueError(f"min_severity must be one of {allowed}; got {min_severity!r}")
        if (
            timeout_s <= 0
            or max_attempts < 1
            or queue_size < 1
            or min(backoff_base_s, backoff_cap_s) < 0
        ):
            raise ValueError(
                "need timeout_s > 0, max_attempts >= 1, queue_size >= 1, backoffs >= 0"
            )
        self.target = redact_url(url)  # the only form of the URL that is safe to show
        self.stats = NotifierStats()
        self._url = url
        self._timeout_s = timeout_s
        self._max_attempts = max_attempts
        self._min_rank = _RANK[min_severity]
        self._backoff = (backoff_base_s, backoff_cap_s)
        self._rng = rng or random.Random()
        self._clock = clock
        self._secret = secret or None
        self._wall_clock = wall_clock
        self._queue: deque[Notification] = deque(maxlen=queue_size)
        self._wake = asyncio.Event()
        self._refusals_logged: set[int] = set()
        self._drop_logged_at: float | None = None
        self._drops_unlogged = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    def submit(self, n: Notification) -> None:
        # An unknown severity is delivered rather than silently filtered out.
        if _RANK.get(n.severity, len(SEVERITIES)) < self._min_rank:
            self.stats.skipped += 1
            return
        if len(self._queue) == self._queue.maxlen:
            self._queue.popleft()
            self._count_dropped()
        self._queue.append(n)
        self._wake.set()

    async def run(self, stop: asyncio.Event, *, drain_s: float = 5.0) -> None:
        """Deliver until `stop` is set, then drain for at most `drain_s` seconds and return."""
        headers = {"Content-Type": "application/json", "User-Agent": "moclo"}
        async with (
            httpx.AsyncClient(headers=headers, timeout=self._timeout_s) as client,
            asyncio.TaskGroup() as tg,
        ):
            drain = asyncio.timeout(None)  # given a deadline once stop is set
            try:
                async with drain:
                    arm = tg.create_task(
                        self._arm_drain(stop, drain, drain_s), name="webhook-drain"
                    )
                    try:
                        await self._deliver_queued(client, stop, drain)
                    finally:
                        arm.cancel()
            except (TimeoutError, _DrainOver):
                pass  # the drain ran out; what is left is counted just below
        if left := len(self._queue):
            self._queue.clear()
            self.stats.dropped += left
            msg = "webhook %s: stopping, %d notification(s) not sent within %.1f s (dropped)"
            log.warning(msg, self.target, left, drain_s)

    async def _arm_drain(self, stop: asyncio.Event, drain: asyncio.Timeout, drain_s: float) -> None:
        await stop.wait()
        drain.reschedule(asyncio.get_running_loop().time() + drain_s)
        self._wake.set()  # an idle worker must notice the stop

    async def _deliver_queued(
        self, client: httpx.AsyncClient, stop: asyncio.Event, drain: asyncio.Timeout
    ) -> None:
        while True:
            if not self._queue:
                if stop.is_set():
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            n = self._queue.popleft()
            try:
                await self._deliver(client, n, drain)
            except _DrainOver:
                self._put_back(n)
                raise
            except Exception as exc:
                # Whatever else a send raises stays here: a notifier must never stop ingest.
                # Only the type is logged, as a message may quote the URL and its token.
                self.stats.failed += 1
                log.error(
                    "webhook %s: could not send alert %s (%s): unexpected %s; carrying on",
                    self.target,
                    n.alert_id,
                    n.state,
                    type(exc).__name__,
                )
            except BaseException:
                self._put_back(n)
                raise

    def _put_back(self, n: Notification) -> None:
        """Interrupted (drain over, or cancelled): not delivered, so back to the head, where
        whoever empties the queue counts it."""
        if len(self._queue) < (self._queue.maxlen or 0):
            self._queue.appendleft(n)
        else:
            self._count_dropped()

    async def _deliver(
        self, client: httpx.AsyncClient, n: Notification, drain: asyncio.Timeout
    ) -> None:
        headers = {"X-Moclo-Alert-Id": n.alert_id, "X-Moclo-Alert-State": n.state}
        if not all(v.isascii() and v.isprintable() for v in headers.values()):
            outcome = _Outcome(reason="alert id or state is not a valid HTTP header value")
        else:
            body, loop = n.to_json(), asyncio.get_running_loop()
            for attempt in range(1, self._max_attempts + 1):
                outcome = await self._attempt(client, body, headers)
                if outcome.sent:
                    self.stats.sent += 1
                    return
                if not outcome.retry or attempt == self._max_attempts:
                    break
                delay = outcome.retry_after_s
                if delay is None:  # full jitter, so many webhooks do not retry in step
                    base, cap = self._backoff
                    delay = self._rng.uniform(0.0, min(cap, base * 2.0 ** min(attempt - 1, 60)))
                deadline = drain.when()
                if deadline is not None and loop.time() + delay >= deadline:
                    raise _DrainOver
                self.stats.retries += 1
                await asyncio.sleep(delay)  # backoff, not synchronisation
            if outcome.retry:
                outcome = _Outcome(reason=f"{outcome.reason}, after {attempt} attempt(s)")
        self.stats.failed += 1
        why = outcome.reason
        log.warning(
            "webhook %s: gave up on alert %s (%s): %s", self.target, n.alert_id, n.state, why
        )

    async def _attempt(
        self, client: httpx.AsyncClient, body: bytes, headers: dict[str, str]
    ) -> _Outcome:
        if self._secret is not None:
            # Signed per attempt: a retry carries a fresh timestamp, so a receiver refusing
            # old ones does not refuse our own late retries.
            now = int(self._wall_clock())
            headers = {**headers, **signature_headers(self._secret, now, body)}
        try:
            # httpx's timeout bounds each read; this bounds the whole attempt.
            async with (
                asyncio.timeout(self._timeout_s),
                client.stream("POST", self._url, content=body, headers=headers) as response,
            ):
                status = response.status_code
                if 200 <= status < 300:
                    return _Outcome(sent=True)
                excerpt = await _excerpt(response)
        except (TimeoutError, httpx.TimeoutException):
            return _Outcome(retry=True, reason=f"no response within {self._timeout_s} s")
        except httpx.HTTPError as exc:  # connection refused, reset, protocol error: may pass
            return _Outcome(retry=True, reason=f"{type(exc).__name__}: {exc}"[:_EXCERPT_CHARS])
        except (httpx.InvalidURL, httpx.StreamError, ValueError) as exc:
            # httpx refused the URL itself (a host that is not valid IDNA raises a ValueError
            # from the idna package): no retry will change that. Its message may quote the URL
            # and so its token: only the type is kept.
            return _Outcome(reason=f"httpx cannot send to this URL ({type(exc).__name__})")
        if status == 429 or status >= 500:
            return _Outcome(
                retry=True, retry_after_s=self._retry_after(response), reason=f"HTTP {status}"
            )
        # Any other status (4xx, or a 3xx we do not follow) will not change on a retry.
        if status not in self._refusals_logged:
            self._refusals_logged.add(status)
            msg = "webhook %s: HTTP %d is permanent, not retried (logged once per status): %r"
            log.warning(msg, self.target, status, excerpt)
        return _Outcome(reason=f"HTTP {status}, not retryable")

    def _retry_after(self, response: httpx.Response) -> float | None:
        try:
            seconds = float(response.headers.get("Retry-After", ""))
        except ValueError:
            return None  # absent, or an HTTP date: our own backoff is good enough
        return min(max(seconds, 0.0), self._backoff[1]) if math.isfinite(seconds) else None

    def _count_dropped(self) -> None:
        self.stats.dropped += 1
        self._drops_unlogged += 1
        now = self._clock()
        if self._drop_logged_at is None or now - self._drop_logged_at >= _DROP_LOG_INTERVAL_S:
            msg = "webhook %s: queue full, dropped the oldest %d notification(s) (%d in total)"
            log.warning(msg, self.target, self._drops_unlogged, self.stats.dropped)
            self._drop_logged_at, self._drops_unlogged = now, 0


async def _excerpt(response: httpx.Response) -> str:
    """At most 200 characters of the body, reading no more than needed from a possibly huge one."""
    data = b""
    try:
        async for chunk in response.aiter_bytes():
            data += chunk
            if len(data) >= 4 * _EXCERPT_CHARS:
                break
    except httpx.HTTPError:
        pass  # the excerpt is only decoration for a log line; the status decides
    return data.decode("utf-8", "replace")[:_EXCERPT_CHARS]


class Notifiers:
    """Fans each change out to several notifiers and runs their workers under one TaskGroup."""

    def __init__(self, notifiers: Sequence[Notifier]) -> None:
        self.notifiers = tuple(notifiers)

    def submit(self, n: Notification) -> None:
        for notifier in self.notifiers:
            notifier.submit(n)

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            for i, notifier in enumerate(self.notifiers):
                tg.create_task(notifier.run(stop), name=f"notify-{i}-{type(notifier).__name__}")


def notifiers_from(
    settings: Settings, *, log_alerts: bool
) -> tuple[WebhookNotifier | None, Notifiers]:
    """The log (unless `moclo up` prints alerts itself) and the webhook, if one is set."""
    notifiers: list[LogNotifier | WebhookNotifier] = []
    if log_alerts:
        notifiers.append(LogNotifier())
    webhook = None
    if settings.webhook_url is not None:
        webhook = WebhookNotifier(
            settings.webhook_url.get_secret_value(),
            min_severity=settings.webhook_min_severity,
            secret=settings.webhook_secret_value,
        )
        notifiers.append(webhook)
    return webhook, Notifiers(notifiers)
