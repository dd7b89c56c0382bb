"""Sending through Apprise to the tests' real receivers: what arrives, what a refusal and a
dead channel are reported as, and that a channel that hangs holds back no other channel."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from notify.dispatch import Delivery
from notify.model import Channel
from notify.senders import NOTIFICATION_ID_HEADER, AppriseSender, Channels, SendResult
from tests.receivers import HttpReceiver, SmtpReceiver


def _delivery(url: str, n: int = 0, *, title: str = "Battery low") -> Delivery:
    return Delivery(
        id=f"msg-{n}/0",
        message_id=f"msg-{n}",
        person="dr-jansen",
        channel=Channel(url=url, label=f"channel {n}"),
        title=title,
        body=f"pm-0001 battery at 12 % (message {n})",
        tenant="cardiology",
        subject_ids=("a1",),
        level=1,
        attempt=1,
    )


def test_a_mail_and_a_json_post_arrive_with_the_delivery_id(
    smtp_receiver: SmtpReceiver, http_receiver: HttpReceiver
) -> None:
    sender = AppriseSender(timeout_s=5)
    mail = _delivery(smtp_receiver.url("jansen@example.org"), 1)
    hook = _delivery(f"json://{http_receiver.base}/jansen", 2)
    for delivery in (mail, hook):
        sent = sender.send(delivery.channel, delivery.title, delivery.body, delivery_id=delivery.id)
        assert sent == SendResult(ok=True)
    (received,) = smtp_receiver.wait_for(lambda m: "message 1" in m.text)
    assert received.subject == "Battery low" and received.recipients == ("jansen@example.org",)
    (request,) = http_receiver.wait_for("/jansen")
    assert request.json()["message"] == hook.body
    # Receivers can drop a duplicate (a retry after a lost answer) by this id.
    assert request.headers[NOTIFICATION_ID_HEADER.lower()] == "msg-2/0"


def test_no_log_line_holds_a_channels_token_even_at_debug(
    http_receiver: HttpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sender = AppriseSender(timeout_s=5)
    http_receiver.fail("/down", 500)
    for path in ("/up", "/down"):  # a success and a failure, each with its token
        channel = Channel(url=f"json://{http_receiver.base}{path}?+Authorization=tok-d3adb33f")
        sender.send(channel, "title", "body", delivery_id="m/0")
    ntfy = Channel(url="ntfy://127.0.0.1:1/secret-topic-d3adb33f")  # nothing listens there
    assert not sender.send(ntfy, "title", "body", delivery_id="m/1").ok
    assert http_receiver.on("/up"), "positive control: the message went out"
    assert "d3adb33f" not in caplog.text


def test_a_url_apprise_does_not_understand_is_refused_for_good() -> None:
    result = AppriseSender(timeout_s=2).send(
        Channel(url="nosuchservice://token-abc"), "t", "b", delivery_id="m/0"
    )
    assert not result.ok and result.permanent
    assert "token-abc" not in result.detail and "nosuchservice://" in result.detail


def test_a_failing_server_is_a_retryable_failure(http_receiver: HttpReceiver) -> None:
    http_receiver.fail("/down", 503)
    sender = AppriseSender(timeout_s=5)
    result = sender.send(
        Channel(url=f"json://{http_receiver.base}/down"), "t", "b", delivery_id="m"
    )
    assert not result.ok and not result.permanent and "refused" in result.detail
    control = sender.send(Channel(url=f"json://{http_receiver.base}/up"), "t", "b", delivery_id="m")
    assert control.ok, "positive control: the same server's other path accepts"


def test_a_hanging_channel_holds_back_no_other_channel(http_receiver: HttpReceiver) -> None:
    http_receiver.hang("/dead")
    dead = [_delivery(f"json://{http_receiver.base}/dead", n) for n in range(3)]
    alive = _delivery(f"json://{http_receiver.base}/alive", 9)
    outcomes: dict[str, tuple[SendResult, float]] = {}

    async def scenario() -> None:
        stop = asyncio.Event()
        began = time.monotonic()
        channels = Channels(
            AppriseSender(timeout_s=2),
            lambda d, r: outcomes.__setitem__(d.id, (r, time.monotonic() - began)),
            attempt_timeout_s=2,
        )
        for delivery in (*dead, alive):  # the live one queued last, behind the dead ones
            channels.submit(delivery)
        runner = asyncio.create_task(channels.run(stop))
        deadline = time.monotonic() + 30
        while len(outcomes) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # polling a deadline-bounded wait
        stop.set()
        await runner

    asyncio.run(scenario())
    result, at = outcomes[alive.id]
    assert result.ok
    assert http_receiver.on("/alive"), "the live channel's message did not arrive"
    first_dead, first_dead_at = outcomes[dead[0].id]
    assert not first_dead.ok and not first_dead.permanent
    # The live message was sent while the dead channel was still waiting for its first answer.
    assert at < first_dead_at, (at, first_dead_at)
    assert all(not outcomes[d.id][0].ok for d in dead)
