"""Who is asking, and which tenants they may see: every `/api/*` endpoint needs a token
(`moclo tokens create`, see access/tokens.py), sent as `Authorization: Bearer <token>` or, from
the dashboard, as the session cookie that `POST /api/session` sets (serve/routes/session.py).
`/healthz`, `/api/openapi.json`, the dashboard's page and its static files are public and hold
no data.

- 401 (with `WWW-Authenticate: Bearer`): no token, or one that is malformed, unknown or revoked.
  No message ever repeats what was presented.
- 403: the token may not do that: a tenant outside its tenants, an acknowledgement with a
  viewer's token, a change sent with the cookie from a page of another site.
- Scope is decided here, from the token alone: a `tenant` parameter can only narrow what the
  token sees, never widen it; without one, a token sees all of its tenants and nothing else.

The session cookie holds a session id, never the token (access/sessions.py): a random id kept
hashed in the registry, ended by signing out, after 12 h unused or 7 days at most, and by
revoking the token it was made from (within about a second, also from another process). The
cookie is HttpOnly (the page's script cannot read it), SameSite=Strict (no other site's page
can send it), Secure when served over https, and limited to `/api`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from access import sessions as session_store
from access.tokens import Principal, Tokens
from serve.errors import ErrorBody, Forbidden, Unauthorized

SESSION_COOKIE = "moclo_session"
SESSION_IDLE_S = session_store.IDLE_S
SESSION_ABSOLUTE_S = session_store.ABSOLUTE_S
SESSION_ENDED = (
    "your dashboard session has ended (signed out, unused for 12 h, 7 days old, or its token "
    "was revoked): sign in again"
)
SIGN_IN = (
    "sign in: send `Authorization: Bearer <token>`, or sign in on the dashboard; "
    "`moclo tokens create` makes a token"
)
NOT_VALID = (
    "this token is not valid (malformed, unknown or revoked): `moclo tokens list` shows the "
    "active ones; ask for a new one if yours was revoked"
)
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The answers every endpoint that takes a `Caller` may give, for its OpenAPI description.
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody},
    403: {"model": ErrorBody},
}

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="a token made by `moclo tokens create`: `Authorization: Bearer moclo_…`",
)
session_cookie = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    scheme_name="session",
    description="the dashboard's session, set by POST /api/session",
)


def signed_in(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    session: Annotated[str | None, Depends(session_cookie)],
) -> Principal:
    """The dependency every `/api/*` endpoint takes: the asker, or Unauthorized.

    Synchronous, so FastAPI runs it on its thread pool: the token check reads the registry
    file (`app.state.tokens`) at most once a second, a session check (`app.state.sessions`) is
    one indexed read of it, and neither runs on the event loop.
    """
    tokens: Tokens = request.app.state.tokens
    request.state.session = None
    if request.headers.get("authorization") is not None:
        if bearer is None:
            raise Unauthorized("the Authorization header must read `Bearer <token>`")
        who = tokens.authenticate(bearer.credentials)
        if who is None:
            raise Unauthorized(NOT_VALID)
        return who
    if not session:
        raise Unauthorized(SIGN_IN)
    if request.method not in _SAFE_METHODS:
        same_site(request)
    who = session_principal(request.app, session)
    if who is None:
        raise Unauthorized(SESSION_ENDED)
    request.state.session = session  # so a live stream can check that it goes on
    return who


def session_principal(app: FastAPI, session_id: str) -> Principal | None:
    """Who the live session `session_id` was made for, or None: unknown, signed out, expired,
    or its token revoked. Reads the registry: call it off the event loop."""
    found = app.state.sessions.check(session_id)
    if found is None:
        return None
    tokens: Tokens = app.state.tokens
    return tokens.active_principal(found.token_id)


def still_signed_in(request: Request, who: Principal) -> Callable[[], bool]:
    """Whether the caller of `request` may still be served (for a long answer: the live
    stream): its token is active and, if it came with a session, the session is live."""
    app, session = request.app, request.state.session
    tokens: Tokens = app.state.tokens
    if session is None:
        return lambda: tokens.is_active(who.token_id)
    return lambda: session_principal(app, session) is not None


Caller = Annotated[Principal, Depends(signed_in)]


def same_site(request: Request) -> None:
    """Forbidden if a browser says the request comes from a page of another site. SameSite
    already keeps the cookie from such requests; this is the second lock on the door.

    Behind a reverse proxy, the page's host is the proxy's: it must pass `Host` through, or
    say it in `X-Forwarded-Host` (a page of another site cannot set that header on a request
    to us without a CORS preflight, which this server never answers)."""
    origin = request.headers.get("origin")
    if origin is None:
        return  # not a browser's cross-site request: browsers send Origin with these
    ours = {request.headers.get("host"), request.headers.get("x-forwarded-host")}
    if urlsplit(origin).netloc not in ours:
        raise Forbidden("a change must come from the dashboard's own page")


def require_tenant(who: Principal, tenant: str) -> str:
    """`tenant` if the token sees it, else Forbidden (naming only the token's own tenants)."""
    if not who.sees(tenant):
        raise Forbidden(
            f"this token sees {who.scope_words()} only: ask for "
            f"{'one of those' if who.tenants and len(who.tenants) > 1 else 'that'}, "
            "or leave tenant out"
        )
    return tenant
