"""Every answer of `moclo serve` (the page, its files, the API, its errors, the live stream)
carries the security headers: a Content-Security-Policy that allows the page's own files and
nothing else (no inline script, no framing, no other host), `nosniff` and `no-referrer`; a map
tile server an operator chose is the one more source of images, and nothing more."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from core.settings import Settings, SettingsError
from serve.headers import CONTENT_SECURITY_POLICY
from tests.conftest import RunningServe

PATHS = [
    pytest.param("/", None, 200, id="page"),
    pytest.param("/static/app.js", None, 200, id="script"),
    pytest.param("/static/no-such-file.js", None, 404, id="missing-file"),
    pytest.param("/manifest.webmanifest", None, 200, id="web-app-manifest"),
    pytest.param("/sw.js", None, 200, id="service-worker"),
    pytest.param("/static/icons/icon-192.png", None, 200, id="icon"),
    pytest.param("/ack/not-a-token", None, 404, id="ack-link-page"),  # links off here
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
    # The web app's manifest and service worker: from the server itself, like everything else.
    assert directives["manifest-src"] == "'self'"
    assert directives["worker-src"] == "'self'"
    for name in ("object-src", "base-uri", "frame-ancestors"):
        assert directives[name] == "'none'", name
    assert "unsafe" not in CONTENT_SECURITY_POLICY


def test_a_chosen_tile_server_is_the_one_more_source_of_images(
    settings: Settings, tmp_path: Path
) -> None:
    update = {
        "serve_listen": "127.0.0.1:0",
        "registry": str(tmp_path / "registry.sqlite"),
        "map_tiles": "https://{s}.tile.example.org/{z}/{x}/{y}.png",
        "map_attribution": "© the example tile makers",
    }
    with RunningServe(settings.model_copy(update=update)) as serve:
        page = httpx.get(serve.url + "/", timeout=10)
        policy = page.headers["content-security-policy"]
        images = next(p for p in policy.split("; ") if p.startswith("img-src"))
        assert images == "img-src 'self' data: https://*.tile.example.org"
        # Nothing else widened: scripts and requests stay with the dashboard's own server.
        assert policy.replace(" https://*.tile.example.org", "") == CONTENT_SECURITY_POLICY
        with serve.client(serve.admin_token) as client:
            shown = client.get("/api/map").json()
        assert shown == {"tiles": update["map_tiles"], "attribution": update["map_attribution"]}


@pytest.mark.parametrize(
    "template",
    [
        "https://tile.example.org/{z}/{x}.png",  # no {y}
        "javascript:alert(1)//{z}/{x}/{y}",
        "https://tile.example.org/{z}/{x}/{y}.png 'unsafe-inline'",  # widening the policy
        "https://a{s}.example.org/{z}/{x}/{y}.png",  # a wildcard CSP cannot express
        "https://*/{z}/{x}/{y}.png",  # every https host
        "https://{s}.*/{z}/{x}/{y}.png",  # the same, behind {s}
        "https://tile.example.org:*/{z}/{x}/{y}.png",  # every port
    ],
)
def test_a_tile_template_that_could_widen_the_policy_is_refused(template: str) -> None:
    with pytest.raises(SettingsError, match=r"MOCLO_MAP_TILES.*URL template"):
        Settings.load({"MOCLO_MAP_TILES": template})
    # Positive control: a plain template is taken.
    assert Settings.load({"MOCLO_MAP_TILES": "https://t.example.org/{z}/{x}/{y}.png"}).map_tiles
