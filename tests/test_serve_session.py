"""The dashboard's session, tried from the attacker's side against a real `moclo serve`: the
cookie holds a random session id, never the token; a forged, signed-out, expired or revoked
session is refused on the API and on the live stream, while a live session next to it works.
Time is the server's injected clock, moved by the test: nothing sleeps."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.settings import Settings
from serve.auth import SESSION_ABSOLUTE_S, SESSION_COOKIE, SESSION_IDLE_S
from tests.conftest import RunningServe
from tests.helpers import moclo, wait_until


class Clock:
    """The server's wall clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def served(settings: Settings, tmp_path: Path, clock: Clock) -> Iterator[RunningServe]:
    update = {"serve_listen": "127.0.0.1:0", "registry": str(tmp_path / "registry.sqlite")}
    with RunningServe(settings.model_copy(update=update), clock=clock) as running:
        yield running


def sign_in(serve: RunningServe, token: str) -> str:
    """Signs in as the dashboard does; returns the session cookie's value."""
    with httpx.Client(base_url=serve.url, timeout=10) as browser:
        answer = browser.post("/api/session", json={"token": token})
        assert answer.status_code == 200, answer.text
        value = browser.cookies.get(SESSION_COOKIE)
        assert value
        return value


def status(serve: RunningServe, path: str, cookie: str) -> int:
    """The status of a GET carrying only this session cookie (the stream's: its first answer)."""
    with (
        httpx.Client(base_url=serve.url, cookies={SESSION_COOKIE: cookie}, timeout=10) as browser,
        browser.stream("GET", path) as answer,
    ):
        return answer.status_code


def refused_everywhere(serve: RunningServe, cookie: str) -> bool:
    return all(status(serve, path, cookie) == 401 for path in ("/api/session", "/api/stream"))


def works_everywhere(serve: RunningServe, cookie: str) -> bool:
    return all(status(serve, path, cookie) == 200 for path in ("/api/session", "/api/stream"))


def test_the_cookie_is_a_random_session_id_not_the_token(served: RunningServe) -> None:
    token = served.token(["farm"], role="viewer", name="screen")
    with httpx.Client(base_url=served.url, timeout=10) as browser:
        answer = browser.post("/api/session", json={"token": token})
        assert answer.status_code == 200
        set_cookie = answer.headers["set-cookie"]
        secret = token[len("moclo_0123456789ab_") :]  # the secret may hold "_" itself
        assert token not in set_cookie and secret not in set_cookie and token not in answer.text
        flags = {part.strip().lower() for part in set_cookie.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/api"} <= flags
        assert f"max-age={SESSION_ABSOLUTE_S}" in flags
        cookie = browser.cookies[SESSION_COOKIE]
    assert works_everywhere(served, cookie)  # the positive control
    # Forged: a random id of the same form, and the token itself (what the cookie used to be).
    assert refused_everywhere(served, secrets.token_urlsafe(32))
    assert refused_everywhere(served, token)
    assert refused_everywhere(served, cookie[:-1] + ("A" if cookie[-1] != "A" else "B"))


def test_signing_out_ends_the_session_on_the_server(served: RunningServe) -> None:
    token = served.token(["farm"], role="viewer")
    kept, other = sign_in(served, token), sign_in(served, token)
    with (
        httpx.Client(
            base_url=served.url,
            cookies={SESSION_COOKIE: kept},
            timeout=httpx.Timeout(10),  # a stream that is not ended fails the test by this
        ) as browser,
        browser.stream("GET", "/api/stream") as stream,
    ):
        assert stream.status_code == 200
        out = browser.delete("/api/session", headers={"Origin": served.url})
        assert out.status_code == 204
        # A copy of the cookie kept by an attacker is worth nothing now.
        assert refused_everywhere(served, kept)
        # The stream opened with it is ended too (its validity is checked every 2 s).
        names = [line[7:] for line in stream.iter_lines() if line.startswith("event: ")]
        assert names[0] == "hello" and names[-1] == "unauthorized", names
    # Another session of the same token is not affected: the positive control.
    assert works_everywhere(served, other)


def test_signing_in_again_ends_the_browsers_previous_session(served: RunningServe) -> None:
    token = served.token(["farm"], role="viewer")
    with httpx.Client(base_url=served.url, timeout=10) as browser:
        assert browser.post("/api/session", json={"token": token}).status_code == 200
        first = browser.cookies[SESSION_COOKIE]
        assert browser.post("/api/session", json={"token": token}).status_code == 200
        second = browser.cookies[SESSION_COOKIE]
    assert first != second
    assert refused_everywhere(served, first)
    assert works_everywhere(served, second)


def test_revoking_the_token_ends_its_sessions(served: RunningServe) -> None:
    kept = sign_in(served, served.token(["farm"], role="viewer", name="wall"))
    control = sign_in(served, served.token(["farm"], role="viewer", name="desk"))
    assert works_everywhere(served, kept)
    # Revoked by the CLI: another process, through the registry file.
    revoked = moclo("tokens", "revoke", "wall", "--registry", served.settings.registry)
    assert revoked.returncode == 0, revoked.stderr
    wait_until(lambda: refused_everywhere(served, kept), timeout_s=5, what="the session ended")
    assert works_everywhere(served, control)


def test_a_session_expires_when_idle_and_at_its_absolute_lifetime(
    served: RunningServe, clock: Clock
) -> None:
    token = served.token(["farm"], role="viewer")
    idle, busy = sign_in(served, token), sign_in(served, token)
    # Busy is used just before each idle limit; idle is left alone.
    clock.now += SESSION_IDLE_S - 60
    assert works_everywhere(served, busy)
    clock.now += 120
    assert refused_everywhere(served, idle)
    assert works_everywhere(served, busy)  # the positive control: use kept it alive
    while clock.now + SESSION_IDLE_S - 60 < 1_800_000_000 + SESSION_ABSOLUTE_S:
        clock.now += SESSION_IDLE_S - 60
        assert works_everywhere(served, busy)
    clock.now = 1_800_000_000 + SESSION_ABSOLUTE_S + 1
    assert refused_everywhere(served, busy)
    # A new sign-in with the same token works: it is the session that ended, not the token.
    assert works_everywhere(served, sign_in(served, token))


def test_a_session_survives_a_restart_of_serve(
    settings: Settings, tmp_path: Path, clock: Clock
) -> None:
    update = {"serve_listen": "127.0.0.1:0", "registry": str(tmp_path / "registry.sqlite")}
    chosen = settings.model_copy(update=update)
    with RunningServe(chosen, clock=clock) as first:
        cookie = sign_in(first, first.token(["farm"], role="viewer"))
    with RunningServe(chosen, clock=clock) as second:
        assert works_everywhere(second, cookie)
        assert refused_everywhere(second, secrets.token_urlsafe(32))


def secure_cookie(serve: RunningServe, token: str, *, via: str) -> bool:
    """Whether signing in through a TLS proxy at address `via` (which says so with
    `X-Forwarded-Proto: https`) gets a `Secure` cookie."""
    transport = httpx.HTTPTransport(local_address=via)
    with httpx.Client(base_url=serve.url, transport=transport, timeout=10) as proxy:
        answer = proxy.post(
            "/api/session", json={"token": token}, headers={"X-Forwarded-Proto": "https"}
        )
        assert answer.status_code == 200, answer.text
        flags = {part.strip().lower() for part in answer.headers["set-cookie"].split(";")[1:]}
        return "secure" in flags


def test_the_cookie_is_secure_behind_a_tls_proxy_only_when_serve_trusts_the_proxy(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What docs/security.md says about a TLS-terminating proxy: serve (uvicorn) believes
    `X-Forwarded-Proto` only from the addresses in FORWARDED_ALLOW_IPS (default: loopback), so
    a proxy on another address (another host, another container) must be named there, or the
    session cookie is sent without `Secure`. 127.0.0.2 stands for such a proxy."""
    update = {"serve_listen": "127.0.0.1:0", "registry": str(tmp_path / "registry.sqlite")}
    chosen = settings.model_copy(update=update)
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    with RunningServe(chosen) as serve:
        token = serve.token(["farm"], role="viewer")
        assert secure_cookie(serve, token, via="127.0.0.1")  # a proxy on the same host
        assert not secure_cookie(serve, token, via="127.0.0.2")  # anywhere else: not believed
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "127.0.0.2")
    with RunningServe(chosen) as serve:
        assert secure_cookie(serve, token, via="127.0.0.2")
        assert not secure_cookie(serve, token, via="127.0.0.3")


def test_behind_a_proxy_sign_in_needs_the_pages_host_passed_on(served: RunningServe) -> None:
    """What docs/security.md says about a proxy: the Origin check compares the page's host with
    `Host` (or `X-Forwarded-Host`), so a proxy that sends its upstream's address as `Host`
    (nginx's default) and no `X-Forwarded-Host` gets every sign-in refused."""
    token = served.token(["farm"], role="viewer")
    page = {"Origin": "https://dash.example.org"}
    with httpx.Client(base_url=served.url, timeout=10) as proxy:
        upstream_host = proxy.post("/api/session", json={"token": token}, headers=page)
        assert upstream_host.status_code == 403, upstream_host.text
        for passed_on in ({"Host": "dash.example.org"}, {"X-Forwarded-Host": "dash.example.org"}):
            answer = proxy.post("/api/session", json={"token": token}, headers=page | passed_on)
            assert answer.status_code == 200, (passed_on, answer.text)
