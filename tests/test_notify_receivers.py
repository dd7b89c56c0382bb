"""The tests' real receivers, and which Apprise URLs reach them (Apprise 2.x): the facts the
notification tests build on, checked against the real servers."""

from __future__ import annotations

import asyncio
import time

import apprise
import httpx
import pytest

from tests.receivers import HttpReceiver, SmtpReceiver


def _send(url: str, title: str, body: str, timeout_s: float = 0) -> bool:
    sender = apprise.Apprise()
    assert sender.add(url), "Apprise did not understand the URL"
    return bool(asyncio.run(sender.async_notify(title=title, body=body, timeout=timeout_s)))


def test_mailto_with_insecure_mode_reaches_a_plain_local_smtp_server(
    smtp_receiver: SmtpReceiver,
) -> None:
    assert _send(smtp_receiver.url("dr-jansen@example.org"), "Battery low", "pm-0001: 12 %")
    (mail,) = smtp_receiver.wait_for(lambda m: m.subject == "Battery low")
    assert mail.recipients == ("dr-jansen@example.org",)
    assert mail.sender == "moclo@example.org"
    assert "pm-0001: 12 %" in mail.text


@pytest.mark.parametrize(
    ("scheme", "path", "expected"),
    [
        ("json", "/hook", {"title": "Fever", "message": "cow-0007", "type": "info"}),
        ("ntfy", "/farm-alerts", {"topic": "farm-alerts", "title": "Fever", "message": "cow-0007"}),
    ],
    ids=["json", "ntfy"],
)
def test_json_and_ntfy_urls_post_json_to_a_local_http_server(
    http_receiver: HttpReceiver, scheme: str, path: str, expected: dict[str, str]
) -> None:
    assert _send(f"{scheme}://{http_receiver.base}{path}", "Fever", "cow-0007")
    # ntfy:// posts to the server's root and names the topic in the body.
    (request,) = http_receiver.wait_for("/hook" if scheme == "json" else "/")
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/json"
    assert expected.items() <= request.json().items()


def test_a_failing_receiver_is_a_failure_and_records_nothing(http_receiver: HttpReceiver) -> None:
    http_receiver.fail("/down", 503)
    assert not _send(f"json://{http_receiver.base}/down", "x", "y")
    assert http_receiver.arrived == 1 and http_receiver.received == []
    assert _send(f"json://{http_receiver.base}/up", "x", "y"), "positive control"


def test_a_hanging_receiver_holds_the_request_until_released(http_receiver: HttpReceiver) -> None:
    release = http_receiver.hang("/dead")
    began = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"http://{http_receiver.base}/dead", content=b"{}", timeout=0.5)
    assert time.monotonic() - began >= 0.5
    release.set()
    answer = httpx.post(f"http://{http_receiver.base}/alive", content=b"{}", timeout=5)
    assert answer.status_code == 200, "positive control: other paths answer"
