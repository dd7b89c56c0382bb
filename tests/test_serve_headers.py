"""Every answer of `moclo serve` (the page, its files, the API, its errors, the live stream)
carries the security headers: a Content-Security-Policy that allows the page's own files and
nothing else (no inline script, no framing, no other host), `nosniff` and `no-referrer`."""

from __future__ import annotations

import httpx
import pytest

from serve.headers import CONTENT_SECURITY_POLICY
from tests.conftest import RunningServe

PATHS = [
    pytest.param("/", None, 200, id="page"),
    pytest.param("/static/app.js", None, 200, id="script"),
    pytest.param("/static/no-such-file.js", None, 404, id="missing-file"),
    pytest.param("/no-such-page", None, 404, id="unknown-path"),
    pytest.param("/api/openapi.json", None, 200, id="openapi"),
    pytest.param("/api/session", None, 401, id="api-unauthorized"),
    pytest.param("/api/session", "admin", 200, id="api"),
    pytest.param("/api/alerts?since=yesterday", "admin", 400, id="api-bad-parameter"),
    pytest.param("/api/stream", "admin", 200, id="live-stream"),
    pytest.param("/healthz", None, None, id="healthz"),
]


@pytest.mark.parametrize(("path", "who", "status"), PATHS)
def test_every_answer_carries_the_security_headers(
    serve: RunningServe, path: str, who: str | None, status: int | None
) -> None:
    headers = {} if who is None else {"Authorization": f"Bearer {serve.admin_token}"}
    with (
        httpx.Client(base_url=serve.url, headers=headers, timeout=10) as client,
        client.stream("GET", path) as answer,
    ):
        if status is not None:
            assert answer.status_code == status
        got = answer.headers
        assert got.get("content-security-policy") == CONTENT_SECURITY_POLICY
        assert got.get("x-content-type-options") == "nosniff"
        assert got.get("referrer-policy") == "no-referrer"
        assert got.get("x-frame-options") == "DENY"  # frame-ancestors for older browsers


def test_the_policy_allows_only_the_dashboards_own_files() -> None:
    directives = dict([*part.split(" ", 1), ""][:2] for part in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"  # no 'unsafe-inline', no 'unsafe-eval'
    assert directives["connect-src"] == "'self'"
    for name in ("object-src", "base-uri", "frame-ancestors"):
        assert directives[name] == "'none'", name
    assert "unsafe" not in CONTENT_SECURITY_POLICY
