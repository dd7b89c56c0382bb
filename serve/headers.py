"""The security headers on every answer of `moclo serve`: the page, its files, the API, its
errors and the live stream alike, so no path is forgotten.

- Content-Security-Policy: the page may run only its own script files (no inline script, no
  `eval`, nothing from another host), load only its own style sheets, images and fonts, and
  fetch only from its own server (the API and the live stream). No plugin, no `<base>` that
  moves relative URLs elsewhere, and no other site may frame it (clickjacking an acknowledge
  button). uPlot sets element styles from script, which CSP allows; the page has no inline
  `style` attribute or `<style>` element, so `style-src` needs no 'unsafe-inline' either.
  Leaflet (the maps) does the same. Images may also come from the one map tile server an
  operator chose (MOCLO_MAP_TILES); by default there is none. The web app's manifest and its
  service worker come from the server itself (`manifest-src`, `worker-src`), like the rest.
- X-Frame-Options: DENY, the same for browsers that predate `frame-ancestors`.
- X-Content-Type-Options: nosniff: a JSON answer is never run as a script or shown as a page.
- Referrer-Policy: no-referrer: a device id in a dashboard URL is sent to no one.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def content_security_policy(*, images_from: str | None = None) -> str:
    """The policy; `images_from`: one more source of images, the map tile server an operator
    chose (MOCLO_MAP_TILES, checked by `core.settings.map_tile_source`), and nothing else."""
    return "; ".join(
        part.replace("img-src 'self' data:", f"img-src 'self' data: {images_from}")
        if images_from and part.startswith("img-src")
        else part
        for part in _POLICY
    )


_POLICY = (
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    "connect-src 'self'",
    "manifest-src 'self'",
    "worker-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
)
CONTENT_SECURITY_POLICY = content_security_policy()
_OTHER_HEADERS = (
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
HEADERS = ((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()), *_OTHER_HEADERS)
_NAMES = frozenset(name for name, _ in HEADERS)


class SecurityHeaders:
    """ASGI middleware adding HEADERS to every HTTP answer (replacing any of the same name).
    Plain ASGI rather than Starlette's BaseHTTPMiddleware, which adds a task per request and
    wraps the live stream's body."""

    def __init__(self, app: ASGIApp, *, images_from: str | None = None) -> None:
        self.app = app
        policy = content_security_policy(images_from=images_from).encode()
        self._headers = ((b"content-security-policy", policy), *_OTHER_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", ()) if k.lower() not in _NAMES]
                message["headers"] = [*kept, *self._headers]
            await send(message)

        await self.app(scope, receive, with_headers)
