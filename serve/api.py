"""The HTTP API and the dashboard's files, as one FastAPI application.

Every endpoint reads through `query/` (the same code as `moclo query` and `moclo alerts`), so
the API, the CLI and the dashboard cannot disagree. Identifiers in parameters are checked
against the identifier rule before anything reaches InfluxQL, and quoted there as well.

Every `/api/*` endpoint needs a token and answers only within the token's tenants (see
serve/auth.py): a tenant named outside them is a 403; without one, each list holds the token's
tenants alone; a device or an alert of another tenant is a 404, as if it did not exist.

Errors are JSON `{"error": "..."}`: 400 for a bad parameter, 401 without a valid token, 403 for
what the token may not do, 404 for an unknown device, 503 when InfluxDB cannot be reached. The
OpenAPI description is at `/api/openapi.json`; the interactive docs page is off, because
FastAPI's loads its script from a CDN and the dashboard promises to fetch nothing from the
internet.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from access.sessions import Sessions
from access.tokens import Tokens
from core.settings import Settings
from ingest.alerts.rulebook import RuleBook
from serve import errors, state
from serve.errors import ErrorBody
from serve.live import LiveHub
from serve.routes import (
    ack_link,
    alerts,
    automation_trail,
    command_history,
    commands,
    devices,
    maps,
    oncall,
    places,
    series,
    service,
    session,
    stream,
    timeline,
)
from serve.routes.acknowledgements import Acknowledger
from serve.routes.acknowledgements import router as acknowledgements
from storage.influx import InfluxClient


def create_app(
    settings: Settings,
    client: InfluxClient,
    hub: LiveHub,
    tokens: Tokens,
    sessions: Sessions,
    rulebook: RuleBook,
    *,
    acknowledgement_timeout_s: float = 10.0,
) -> FastAPI:
    """The application; `client`, `hub`, `tokens`, `sessions` and `rulebook` (the rules in
    force, for the maps' places) live as long as the process (see serve/server.py). The
    endpoints are in serve/routes/, one router per concern; what they share is kept on
    `app.state` (serve/state.py), not closed over."""
    app = FastAPI(
        title="moclo",
        summary="Devices, their time series and their alerts; a live stream of both.",
        version="1",
        openapi_url="/api/openapi.json",
        docs_url=None,
        redoc_url=None,
        responses={400: {"model": ErrorBody}, 503: {"model": ErrorBody}},
    )
    errors.install(app)
    state.keep(app, client=client, hub=hub, tokens=tokens, sessions=sessions)
    Acknowledger(settings, timeout_s=acknowledgement_timeout_s).keep(app)
    commands.keep(app, settings)
    maps.keep(app, settings)
    places.keep(app, rulebook)
    oncall.keep(app, settings)
    ack_link.keep(app, settings)
    for routes in (
        session, devices, commands, command_history, maps, places, automation_trail, series,
        alerts, timeline, oncall, stream,
    ):  # fmt: skip
        app.include_router(routes.router)
    app.include_router(acknowledgements)
    app.include_router(ack_link.router)
    app.include_router(service.router)
    app.mount("/static", StaticFiles(directory=str(service.STATIC)), name="static")
    return app
