"""Alert notifiers against a real HTTP server on loopback: order, retries, refusals, a webhook
that hangs or is gone, overflow, filtering, stopping, and a URL secret that never reaches a log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass, field

import pytest

from ingest.notify import (
    LogNotifier,
    Notifiers,
    NotifierStats,
    WebhookNotifier,
    redact_url,
)

SECRET = "s3cr3t-t0ken"


@dataclass(frozen=True)
class Change:
    alert_id: str
    state: str = "raised"
    severity: str = "warning"

    def to_json(self) -> bytes:
        return json.dumps({"id": self.alert_id, "state": self.state}).encode()

    def describe(self) -> str:
        return f"{self.severity} alert {self.alert_id} {self.state}"


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


# (status, extra headers, body); None: never answer; TRICKLE: answer a header line at a time,
# each well within a read timeout, and never finish.
TRICKLE = "trickle"
Reply = tuple[int, dict[str, str], bytes] | None | str
OK: Reply = (200, {}, b"ok")


@dataclass
class FakeWebhook:
    """A tiny HTTP/1.1 server on 127.0.0.1 that records requests and answers from a script."""

    replies: Sequence[Reply] = ()
    default: Reply = OK
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._script = deque(self.replies)
        self._arrived = asyncio.Event()
        self._release = asyncio.Event()  # lets hanging handlers finish at the end
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> FakeWebhook:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._release.set()
        self._server.close()
        await self._server.wait_closed()
        if self._handlers:
            _, stuck = await asyncio.wait(self._handlers, timeout=5)
            for task in stuck:
                task.cancel()

    def url(self, path: str = f"/hooks/abc?token={SECRET}") -> str:
        return f"http://user:{SECRET}@127.0.0.1:{self.port}{path}"

    async def wait_for_requests(self, n: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.requests) < n:
                self._arrived.clear()
                await self._arrived.wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while request := await _read_request(reader):
                self.requests.append(request)
                self._arrived.set()
                reply = self._script.popleft() if self._script else self.default
                if reply is None:
                    await self._release.wait()
                    return
                if reply == TRICKLE:
                    await self._trickle(writer)
                    return
                assert isinstance(reply, tuple)
                status, headers, body = reply
                head = f"HTTP/1.1 {status} Scripted\r\nContent-Length: {len(body)}\r\n"
                head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
                writer.write(head.encode() + body)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client gave up on this connection, which some tests make it do
        finally:
            self._handlers.discard(task)
            writer.close()

    async def _trickle(self, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n")
        while not self._release.is_set():
            writer.write(b"X-Slow: 1\r\n")
            await writer.drain()
            with contextlib.suppress(TimeoutError):  # the pace of a slow server, not a sync
                await asyncio.wait_for(self._release.wait(), 0.05)


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    line = await reader.readline()
    if not line:
        return None
    method, target, _ = line.decode().split(" ", 2)
    headers = {}
    while (header := await reader.readline()) not in (b"\r\n", b""):
        name, value = header.decode().split(":", 1)
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(method, target, headers, body)


async def burst(notifier: WebhookNotifier, drain_s: float = 10.0) -> None:
    """Deliver what is queued and return: stop is already set, so `run` only drains."""
    stop = asyncio.Event()
    stop.set()
    async with asyncio.timeout(drain_s + 5):
        await notifier.run(stop, drain_s=drain_s)


async def stop_within(worker: asyncio.Task[None], stop: asyncio.Event, seconds: float) -> None:
    stop.set()
    async with asyncio.timeout(seconds):
        await worker


class WatchedStats(NotifierStats):
    """NotifierStats that wake waiters on every change, so a test waits on a condition."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()
        super().__init__()

    def __setattr__(self, name: str, value: object) -> None:
        super().__setattr__(name, value)
        if name != "changed":
            self.changed.set()

    async def until(self, condition: Callable[[NotifierStats], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition(self):
                self.changed.clear()
                await self.changed.wait()


class MaxJitter(random.Random):
    """Backoff always at its upper bound, so a test can tell backoff from Retry-After."""

    def uniform(self, a: float, b: float) -> float:
        return b


def ids(hook: FakeWebhook) -> list[str]:
    return [r.headers["x-moclo-alert-id"] for r in hook.requests]


def test_delivers_in_order_with_body_and_headers(caplog: pytest.LogCaptureFixture) -> None:
    changes = [Change(f"a{i}", state) for i, state in enumerate(("raised", "acknowledged"))]
    changes.append(Change("a2", "resolved", "critical"))

    async def scenario() -> tuple[FakeWebhook, WebhookNotifier]:
        async with FakeWebhook() as hook:
            notifier = WebhookNotifier(hook.url())
            notifier.stats = stats = WatchedStats()
            stop = asyncio.Event()
            worker = asyncio.create_task(notifier.run(stop), name="webhook")
            notifier.submit(changes[0])
            await stats.until(lambda s: s.sent == 1)  # so the worker is now idle, waiting
            for change in changes[1:]:
                notifier.submit(change)  # wakes it
            await stats.until(lambda s: s.sent == 3)
            await stop_within(worker, stop, 5.0)  # an idle worker notices the stop
        return hook, notifier

    hook, notifier = asyncio.run(scenario())
    assert ids(hook) == ["a0", "a1", "a2"]
    for request, change in zip(hook.requests, changes, strict=True):
        assert request.method == "POST"
        assert request.target == f"/hooks/abc?token={SECRET}"
        assert request.body == change.to_json()
        assert request.headers["content-type"] == "application/json"
        assert request.headers["user-agent"] == "moclo"
        assert request.headers["x-moclo-alert-id"] == change.alert_id
        assert request.headers["x-moclo-alert-state"] == change.state
        assert request.headers["authorization"].startswith("Basic ")  # from the URL's user-info
    assert astuple(notifier.stats) == astuple(NotifierStats(sent=3))
    assert notifier.queued == 0
    assert SECRET not in caplog.text


def test_retries_server_errors_then_succeeds() -> None:
    async def scenario() -> tuple[FakeWebhook, WebhookNotifier]:
        async with FakeWebhook([(500, {}, b"oops"), (503, {}, b"busy")]) as hook:
            notifier = WebhookNotifier(hook.url(), backoff_base_s=0.001)
            notifier.submit(Change("a0"))
            await burst(notifier)
        return hook, notifier

    hook, notifier = asyncio.run(scenario())
    assert ids(hook) == ["a0"] * 3
    assert len({r.body for r in hook.requests}) == 1
    assert notifier.stats == NotifierStats(sent=1, retries=2)


@pytest.mark.parametrize(
    ("status", "retry_after", "cap_s"),
    [
        pytest.param(503, "0", 60.0, id="zero-instead-of-a-minute-of-backoff"),
        pytest.param(429, "0.1", 60.0, id="fractional-on-429"),
        pytest.param(429, "3600", 0.05, id="capped-at-backoff-cap"),
    ],
)
def test_honours_retry_after(status: int, retry_after: str, cap_s: float) -> None:
    # Backoff alone would wait cap_s or more: longer than the drain in the first two cases.
    async def scenario() -> WebhookNotifier:
        async with FakeWebhook([(status, {"Retry-After": retry_after}, b"")]) as hook:
            notifier = WebhookNotifier(
                hook.url(), backoff_base_s=cap_s, backoff_cap_s=cap_s, rng=MaxJitter()
            )
            notifier.submit(Change("a0"))
            await burst(notifier, drain_s=5.0)
        return notifier

    assert asyncio.run(scenario()).stats == NotifierStats(sent=1, retries=1)


def test_gives_up_after_max_attempts(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> tuple[FakeWebhook, WebhookNotifier]:
        async with FakeWebhook(default=(500, {}, b"down")) as hook:
            notifier = WebhookNotifier(hook.url(), max_attempts=3, backoff_base_s=0.001)
            notifier.submit(Change("a0"))
            notifier.submit(Change("a1"))
            await burst(notifier)
        return hook, notifier

    hook, notifier = asyncio.run(scenario())
    assert ids(hook) == ["a0"] * 3 + ["a1"] * 3
    assert notifier.stats == NotifierStats(failed=2, retries=4)
    assert "gave up on alert a0 (raised): HTTP 500, after 3 attempt(s)" in caplog.text


@pytest.mark.parametrize("status", [400, 401, 404])
def test_a_client_error_is_not_retried(status: int, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> tuple[FakeWebhook, WebhookNotifier]:
        async with FakeWebhook(default=(status, {}, b"no such hook " + b"x" * 500)) as hook:
            notifier = WebhookNotifier(hook.url(), backoff_base_s=0.001)
            notifier.submit(Change("a0"))
            notifier.submit(Change("a1", "resolved"))
            await burst(notifier)
        return hook, notifier

    hook, notifier = asyncio.run(scenario())
    assert ids(hook) == ["a0", "a1"]
    assert notifier.stats == NotifierStats(failed=2)
    refusals = [r for r in caplog.records if "permanent" in r.getMessage()]
    assert len(refusals) == 1  # once per status, not once per notification
    excerpt = refusals[0].args[-1] if isinstance(refusals[0].args, tuple) else None
    assert isinstance(excerpt, str)
    assert excerpt.startswith("no such hook") and len(excerpt) == 200
    assert f"gave up on alert a1 (resolved): HTTP {status}, not retryable" in caplog.text
    assert SECRET not in caplog.text
    assert "127.0.0.1" in caplog.text


def test_a_hanging_webhook_times_out_while_submit_keeps_queueing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> WebhookNotifier:
        async with FakeWebhook(default=None) as hook:  # accepts, reads, never answers
            notifier = WebhookNotifier(hook.url(), timeout_s=0.2, max_attempts=1)
            stop = asyncio.Event()
            worker = asyncio.create_task(notifier.run(stop, drain_s=0.1), name="webhook")
            notifier.submit(Change("stuck"))
            await hook.wait_for_requests(1)
            for i in range(1000):  # the worker is stuck in a request: nothing waits for it
                notifier.submit(Change(f"n{i}"))
            assert notifier.queued == 1000
            assert notifier.stats == NotifierStats()
            await hook.wait_for_requests(2)  # the first attempt timed out; the next is on
            assert notifier.stats.failed == 1
            await stop_within(worker, stop, 0.1 + 1.5)
        return notifier

    stats = asyncio.run(scenario()).stats
    assert stats.sent == 0
    assert stats.failed + stats.dropped == 1001
    assert "gave up on alert stuck (raised): no response within 0.2 s" in caplog.text


def test_a_slow_trickle_is_cut_at_timeout_s(caplog: pytest.LogCaptureFixture) -> None:
    # Every read arrives within the read timeout; only a bound on the whole attempt ends it.
    async def scenario() -> WebhookNotifier:
        async with FakeWebhook(default=TRICKLE) as hook:
            notifier = WebhookNotifier(hook.url(), timeout_s=0.3, max_attempts=1)
            notifier.submit(Change("a0"))
            await burst(notifier, drain_s=3)
        return notifier

    assert asyncio.run(scenario()).stats == NotifierStats(failed=1)
    assert "gave up on alert a0 (raised): no response within 0.3 s" in caplog.text


def test_a_full_queue_drops_the_oldest(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> tuple[FakeWebhook, WebhookNotifier]:
        async with FakeWebhook() as hook:
            notifier = WebhookNotifier(hook.url(), queue_size=3)
            for i in range(6):
                notifier.submit(Change(f"a{i}"))
            assert (notifier.queued, notifier.stats.dropped) == (3, 3)
            await burst(notifier)
        return hook, notifier

    hook, notifier = asyncio.run(scenario())
    assert ids(hook) == ["a3", "a4", "a5"]
    assert notifier.stats == NotifierStats(sent=3, dropped=3)
    drops = [r for r in caplog.records if "queue full" in r.getMessage()]
    assert len(drops) == 1  # rate-limited: the first drop is reported, the next ones counted


def test_overflow_warnings_are_paced_and_carry_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    notifier = WebhookNotifier("http://127.0.0.1:9/hook", queue_size=1, clock=lambda: now[0])
    # The first submit fills the queue; each later one drops: at 0 (reported), 10, 29.9, 30
    # (reported: 30 s since the last report), 45 and 61 (reported).
    for t in (0.0, 0.0, 10.0, 29.9, 30.0, 45.0, 61.0):
        now[0] = 1000.0 + t
        notifier.submit(Change(f"at-{t}"))
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "webhook http://127.0.0.1:9: queue full, dropped the oldest 1 notification(s) (1 in total)",
        "webhook http://127.0.0.1:9: queue full, dropped the oldest 3 notification(s) (4 in total)",
        "webhook http://127.0.0.1:9: queue full, dropped the oldest 2 notification(s) (6 in total)",
    ]
    assert (notifier.stats.dropped, notifier.queued) == (6, 1)


def test_min_severity_skips_lesser_changes() -> None:
    async def scenario() -> tuple[FakeWebhook, WebhookNotifier]:
        async with FakeWebhook() as hook:
            notifier = WebhookNotifier(hook.url(), min_severity="warning")
            for severity in ("info", "warning", "critical", "info"):
                notifier.submit(Change(severity, severity=severity))
            assert notifier.queued == 2
            await burst(notifier)
        return hook, notifier

    hook, notifier = asyncio.run(scenario())
    assert ids(hook) == ["warning", "critical"]
    assert notifier.stats == NotifierStats(sent=2, skipped=2)


def test_stop_with_a_dead_webhook_returns_within_the_drain(
    caplog: pytest.LogCaptureFixture,
) -> None:
    drain_s = 0.5

    async def scenario(port: int) -> WebhookNotifier:
        notifier = WebhookNotifier(
            f"http://127.0.0.1:{port}/hook", timeout_s=0.2, backoff_base_s=0.05
        )
        for i in range(20):
            notifier.submit(Change(f"a{i}"))
        stop = asyncio.Event()
        stop.set()
        # A bound against hanging for ever, not a timing claim: the drain's own deadline is
        # checked below through what was dropped.
        async with asyncio.timeout(drain_s + 10):
            await notifier.run(stop, drain_s=drain_s)
        return notifier

    with socket.socket() as bound_not_listening:  # connections to it are refused
        bound_not_listening.bind(("127.0.0.1", 0))
        notifier = asyncio.run(scenario(bound_not_listening.getsockname()[1]))
    stats = notifier.stats
    assert (stats.sent, notifier.queued) == (0, 0)
    assert stats.dropped >= 1 and stats.failed + stats.dropped == 20
    assert f"{stats.dropped} notification(s) not sent within 0.5 s" in caplog.text


def test_the_drain_ends_early_when_the_next_retry_would_not_fit() -> None:
    async def scenario(port: int) -> WebhookNotifier:
        notifier = WebhookNotifier(
            f"http://127.0.0.1:{port}/hook", backoff_base_s=60, backoff_cap_s=60, rng=MaxJitter()
        )
        notifier.submit(Change("a0"))
        stop = asyncio.Event()
        stop.set()
        async with asyncio.timeout(5):  # far less than the drain: no point waiting it out
            await notifier.run(stop, drain_s=30)
        return notifier

    with socket.socket() as bound_not_listening:
        bound_not_listening.bind(("127.0.0.1", 0))
        notifier = asyncio.run(scenario(bound_not_listening.getsockname()[1]))
    assert notifier.stats == NotifierStats(dropped=1)


def test_a_cancelled_worker_puts_the_notification_back() -> None:
    async def scenario() -> WebhookNotifier:
        async with FakeWebhook(default=None) as hook:
            notifier = WebhookNotifier(hook.url())
            worker = asyncio.create_task(notifier.run(asyncio.Event()), name="webhook")
            notifier.submit(Change("a0"))
            await hook.wait_for_requests(1)
            worker.cancel()
            with pytest.raises(asyncio.CancelledError):
                await worker
        return notifier

    notifier = asyncio.run(scenario())
    assert (notifier.queued, notifier.stats) == (1, NotifierStats())


def test_an_alert_id_unfit_for_a_header_fails_alone(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> tuple[FakeWebhook, WebhookNotifier]:
        async with FakeWebhook() as hook:
            notifier = WebhookNotifier(hook.url())
            notifier.submit(Change("bad\r\nX-Injected: 1"))
            notifier.submit(Change("a1"))
            await burst(notifier)
        return hook, notifier

    hook, notifier = asyncio.run(scenario())
    assert ids(hook) == ["a1"]
    assert notifier.stats == NotifierStats(sent=1, failed=1)
    assert "not a valid HTTP header value" in caplog.text


def test_log_notifier_levels(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="moclo.alerts")
    notifier = LogNotifier()
    notifier.submit(Change("a0", "raised", "critical"))
    notifier.submit(Change("a0", "resolved", "critical"))
    notifier.submit(Change("a1", "raised", "warning"))
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("moclo.alerts", "WARNING", "critical alert a0 raised"),
        ("moclo.alerts", "INFO", "critical alert a0 resolved"),
        ("moclo.alerts", "INFO", "warning alert a1 raised"),
    ]


def test_notifiers_fan_out_and_run_together(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="moclo.alerts")

    async def scenario() -> FakeWebhook:
        async with FakeWebhook() as hook:
            notifiers = Notifiers([LogNotifier(), WebhookNotifier(hook.url())])
            notifiers.submit(Change("a0"))
            notifiers.submit(Change("a1"))
            stop = asyncio.Event()
            stop.set()
            async with asyncio.timeout(10):
                await notifiers.run(stop)
        return hook

    assert ids(asyncio.run(scenario())) == ["a0", "a1"]
    assert [r.getMessage() for r in caplog.records if r.name == "moclo.alerts"] == [
        "warning alert a0 raised",
        "warning alert a1 raised",
    ]


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        (f"https://user:{SECRET}@hooks.example.com/p/{SECRET}?t={SECRET}#f", "https://hooks.example.com"),
        (f"http://hooks.example.com:8080/x?token={SECRET}", "http://hooks.example.com:8080"),
        (f"http://{SECRET}@[::1]:9000/", "http://[::1]:9000"),
        ("http://host:notaport/", "<invalid url>"),
    ],
    ids=["user-info-path-query", "port-kept", "ipv6", "bad-port"],
)  # fmt: skip
def test_redact_url_keeps_only_scheme_host_and_port(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"ftp://hooks.example.com/x?token={SECRET}", "got scheme 'ftp'"),
        (f"hooks.example.com/x?token={SECRET}", "got scheme '(none)'"),
        (f"https:///x?token={SECRET}", "it has no host"),
        (f"https://hooks.example.com:99999/?token={SECRET}", "host or port is not valid"),
        ("", "got scheme '(none)'"),
    ],
    ids=["ftp", "no-scheme", "no-host", "bad-port", "empty"],
)
def test_a_bad_url_is_refused_saying_what_is_allowed(url: str, message: str) -> None:
    with pytest.raises(ValueError, match="must be http://") as raised:
        WebhookNotifier(url)
    assert message in str(raised.value)
    assert SECRET not in str(raised.value)


def test_a_bad_severity_is_refused_saying_what_is_allowed() -> None:
    with pytest.raises(ValueError, match=r"one of info, warning, critical; got 'debug'"):
        WebhookNotifier("https://hooks.example.com/x", min_severity="debug")
