"""The webhook's signature, from the receiver's side: a real ingest POSTs an alert change to a
real HTTP receiver, which verifies it with the code docs/notifications.md gives ("Signed
webhooks"). An attacker's forged, altered or replayed POST fails that check; ours passes."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from core.settings import Settings, SettingsError
from core.webhook_signature import sign
from devices.topics import telemetry_topic
from ingest.options import IngestOptions
from tests.conftest import RunningIngest
from tests.helpers import cow_json, publish_all
from tests.receivers import HttpReceiver, Request

SECRET = "webhook-secret-0123456789"
T0 = int(time.time()) - 3600

Verify = Callable[..., bool]


@pytest.fixture
def verify(repo_root: Path) -> Verify:
    """`verify_moclo_webhook` exactly as the documentation gives it to receivers."""
    page = (repo_root / "docs" / "notifications.md").read_text()
    section = page.split("## Signed webhooks", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/notifications.md", "exec"), namespace)
    function: Verify = namespace["verify_moclo_webhook"]
    return function


@pytest.fixture
def signed_post(
    settings: Settings, http_receiver: HttpReceiver, caplog: pytest.LogCaptureFixture
) -> Request:
    """A fever alert raised by a real ingest and POSTed, signed, to the receiver."""
    caplog.set_level(logging.DEBUG)
    settings = settings.model_copy(
        update={
            "webhook_url": SecretStr(f"http://{http_receiver.base}/hook"),
            "webhook_secret": SecretStr(SECRET),
        }
    )
    topic = telemetry_topic(settings.topic_prefix, "farm", "cow_tracker", "cow-5")
    with RunningIngest(settings, IngestOptions(linger_s=0.05)):
        publish_all(
            settings.mqtt_url,
            [(topic, cow_json(T0 + i, i, body_temp_c=t)) for i, t in enumerate([40.0, 40.1, 40.2])],
        )
        (request,) = http_receiver.wait_for("/hook")
    assert SECRET not in caplog.text, "the secret reached a log"
    return request


def _headers(request: Request, **changes: str) -> httpx.Headers:
    headers = httpx.Headers(request.headers)
    headers.update(changes)
    return headers


def test_ingests_webhook_post_verifies_with_the_documented_code(
    signed_post: Request, verify: Verify
) -> None:
    assert signed_post.json()["state"] == "raised"
    assert re.fullmatch(r"sha256=[0-9a-f]{64}", signed_post.headers["x-moclo-signature"])
    assert abs(int(signed_post.headers["x-moclo-timestamp"]) - time.time()) < 60
    assert verify(SECRET.encode(), _headers(signed_post), signed_post.body)


def test_an_attackers_altered_or_forged_post_fails_verification(
    signed_post: Request, verify: Verify
) -> None:
    secret, body = SECRET.encode(), signed_post.body
    headers = _headers(signed_post)
    assert verify(secret, headers, body), "positive control: the real POST verifies"
    altered = body.replace(b'"raised"', b'"resolved"')
    assert altered != body
    assert not verify(secret, headers, altered), "an altered body passed"
    assert not verify(b"a-guessed-secret-000000", headers, body), "a wrong secret passed"
    forged = sign(b"the-attackers-own-secret", int(headers["x-moclo-timestamp"]), altered)
    assert not verify(secret, _headers(signed_post, **{"X-Moclo-Signature": forged}), altered)
    # Moving the timestamp (to make an old capture look fresh) breaks the signature.
    later = str(int(headers["x-moclo-timestamp"]) + 1)
    assert not verify(secret, _headers(signed_post, **{"X-Moclo-Timestamp": later}), body)
    unsigned: Mapping[str, str] = {"content-type": "application/json"}
    assert not verify(secret, httpx.Headers(unsigned), body), "an unsigned POST passed"


def test_a_replayed_post_is_refused_once_its_timestamp_is_old(
    signed_post: Request, verify: Verify, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret, headers = SECRET.encode(), _headers(signed_post)
    assert verify(secret, headers, signed_post.body), "positive control: fresh, it verifies"
    sent = int(headers["x-moclo-timestamp"])
    monkeypatch.setattr(time, "time", lambda: sent + 301.0)  # the receiver's clock, later
    assert not verify(secret, headers, signed_post.body), "a replay 5 minutes later passed"


def test_the_secret_is_never_a_flag_and_never_echoed(tmp_path: Path) -> None:
    from moclo.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["ingest", "--webhook-secret", SECRET])
    with pytest.raises(SettingsError) as caught:
        Settings.load({"MOCLO_WEBHOOK_SECRET": "short"})
    assert "short" not in str(caught.value) and "MOCLO_WEBHOOK_SECRET" in str(caught.value)
    (tmp_path / "secret").write_text(SECRET + "\n")
    settings = Settings.load({"MOCLO_WEBHOOK_SECRET_FILE": str(tmp_path / "secret")})
    assert settings.webhook_secret_value == SECRET.encode()
    assert SECRET not in repr(settings)
