"""`/api/session`: the dashboard signs in with a token and gets a session cookie, asks who is
signed in, and signs out. What the cookie holds and how long a session lives is told in
serve/auth.py, which checks it on every other request."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from access.sessions import Sessions
from access.tokens import Tokens
from serve.auth import (
    NOT_VALID,
    SESSION_ABSOLUTE_S,
    SESSION_COOKIE,
    Caller,
    same_site,
    session_cookie,
)
from serve.errors import ErrorBody, Unauthorized

router = APIRouter()


class WhoView(BaseModel):
    token_id: str
    name: str = Field(description="the token's name; acknowledgements are made by it")
    role: str = Field(description="viewer, operator (may acknowledge) or admin")
    tenants: list[str] | None = Field(description="the tenants it sees; null: every tenant")


class SignIn(BaseModel):
    token: str = Field(max_length=200, description="a token made by `moclo tokens create`")


@router.post(
    "/api/session",
    response_model=WhoView,
    responses={401: {"model": ErrorBody}},
    tags=["session"],
)
def sign_in(
    request: Request,
    body: SignIn,
    previous: Annotated[str | None, Depends(session_cookie)],
) -> JSONResponse:
    """Signs the dashboard in: checks the token and starts a session, whose id (not the
    token) goes into an HttpOnly, SameSite=Strict cookie (Secure over https) that the
    page's requests and its live stream then carry. It ends on sign-out, after 12 h
    unused, after 7 days, or when the token is revoked."""
    same_site(request)
    tokens: Tokens = request.app.state.tokens
    sessions: Sessions = request.app.state.sessions
    who = tokens.authenticate(body.token)
    if who is None:
        raise Unauthorized(NOT_VALID)
    if previous:
        sessions.end(previous)  # the browser forgets it now: it must not live on elsewhere
    session_id = sessions.create(who.token_id)
    response = JSONResponse(who.to_json())
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=SESSION_ABSOLUTE_S,
        path="/api",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


@router.get(
    "/api/session",
    response_model=WhoView,
    responses={401: {"model": ErrorBody}},
    tags=["session"],
)
def session(who: Caller) -> dict[str, Any]:
    """Who is signed in: the token's name, role and tenants."""
    return who.to_json()


@router.delete("/api/session", status_code=204, tags=["session"])
def sign_out(request: Request, session: Annotated[str | None, Depends(session_cookie)]) -> Response:
    """Signs the dashboard out: the session ends on the server (a copy of the cookie is
    worth nothing from now on) and the cookie is forgotten; the token stays valid."""
    same_site(request)
    if session:
        sessions: Sessions = request.app.state.sessions
        sessions.end(session)
    response = Response(status_code=204)
    response.delete_cookie(
        SESSION_COOKIE,
        path="/api",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response
