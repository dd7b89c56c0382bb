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

import asyncio
import dataclasses
import time
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from access.sessions import Sessions
from access.tokens import Principal, Tokens
from core.settings import Settings
from devices.base import format_timestamp
from devices.rules import Severity
from devices.topics import IDENTIFIER_RULE, is_identifier
from query.alerts import (
    SEVERITY_RANK,
    AlertFilter,
    alert_json,
    alert_order,
    current_alerts,
    device_episodes,
)
from query.errors import UnknownDevice
from query.fleet import DeviceSummary as StoredDevice
from query.fleet import find_device, list_devices, list_tenants
from query.request import parse_series_request
from query.series import run_series
from query.times import parse_since
from serve import acks, auth, errors
from serve.auth import Caller, require_tenant
from serve.errors import BadParameter, ErrorBody
from serve.live import LiveHub, StreamFilter, event_stream
from storage.alert_record import Alert
from storage.influx import InfluxClient

STATIC = resources.files("serve") / "static"
_NS = 1_000_000_000


class TenantList(BaseModel):
    tenants: list[str]


class DeviceView(BaseModel):
    tenant: str
    device_type: str
    device_id: str
    last_seen: str = Field(description="RFC 3339 time of the newest stored reading")
    last: dict[str, Any] = Field(description="the newest stored reading's fields")
    open_alerts: int
    worst_severity: Severity | None = Field(description="of the open alerts, if any")


class DeviceList(BaseModel):
    devices: list[DeviceView]


class AlertList(BaseModel):
    alerts: list[dict[str, Any]] = Field(description="objects as `moclo alerts --json` prints")


class EpisodeList(BaseModel):
    episodes: list[dict[str, Any]]


class SeriesDocument(BaseModel):
    """The document `moclo query --format json` prints (described in query/series.py)."""

    model_config = {"extra": "allow"}


def create_app(
    settings: Settings,
    client: InfluxClient,
    hub: LiveHub,
    tokens: Tokens,
    sessions: Sessions,
    *,
    ack_timeout_s: float = 10.0,
) -> FastAPI:
    """The application; `client`, `hub`, `tokens` and `sessions` live as long as the process
    (see serve/server.py)."""
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
    auth.install(app, tokens, sessions)
    api: dict[int | str, dict[str, Any]] = {401: {"model": ErrorBody}, 403: {"model": ErrorBody}}

    async def scoped_alerts(who: Principal, query: AlertFilter) -> list[Alert]:
        """`current_alerts` within the token's tenants: one tenant's, or each of them merged."""
        now_ns = time.time_ns()
        if query.tenant is not None or who.tenants is None:
            return (await current_alerts(client, query, now_ns=now_ns))[0]
        merged = []
        for tenant in sorted(who.tenants):
            one = dataclasses.replace(query, tenant=tenant)
            merged += (await current_alerts(client, one, now_ns=now_ns))[0]
        return sorted(merged, key=alert_order)

    @app.get("/api/tenants", response_model=TenantList, responses=api, tags=["devices"])
    async def tenants(who: Caller) -> TenantList:
        """Every tenant with stored readings (that the token sees)."""
        return TenantList(tenants=[t for t in await list_tenants(client) if who.sees(t)])

    @app.get("/api/devices", response_model=DeviceList, responses=api, tags=["devices"])
    async def devices(
        who: Caller,
        tenant: Annotated[
            str | None, Query(description="one tenant (default: all the token's)")
        ] = None,
        type: Annotated[str | None, Query(description="one device type")] = None,
    ) -> DeviceList:
        """Every device with its newest reading and its open alerts."""
        tenant = _tenant(who, tenant)
        found = await list_devices(client, tenant=tenant, device_type=type, scope=who.tenants)
        alerts = await scoped_alerts(who, AlertFilter(tenant=tenant))
        return DeviceList(devices=[_summary(d, alerts) for d in found])

    @app.get(
        "/api/devices/{tenant}/{device_id}",
        response_model=DeviceView,
        responses={**api, 404: {"model": ErrorBody}},
        tags=["devices"],
    )
    async def device(who: Caller, tenant: str, device_id: str) -> DeviceView:
        """One device with its newest reading and its open alerts."""
        _tenant(who, tenant)
        _identifier("device_id", device_id)
        ref = await find_device(client, device_id, tenant=tenant)
        found = [
            d
            for d in await list_devices(client, tenant=tenant, device_type=ref.device_type)
            if d.device_id == device_id
        ]
        if not found:
            raise UnknownDevice(f"no device {device_id!r} in tenant {tenant!r}")
        alerts, _ = await current_alerts(
            client, AlertFilter(tenant=tenant, device_id=device_id), now_ns=time.time_ns()
        )
        return _summary(found[0], alerts)

    @app.get(
        "/api/series",
        response_model=SeriesDocument,
        responses={**api, 404: {"model": ErrorBody}},
        tags=["series"],
    )
    async def series(
        who: Caller,
        device: Annotated[str | None, Query(description="one device id")] = None,
        type: Annotated[str | None, Query(description="a fleet: every device of a type")] = None,
        tenant: Annotated[str | None, Query()] = None,
        field: Annotated[list[str] | None, Query(description="repeat for several")] = None,
        since: Annotated[str | None, Query(description="e.g. 6h, 7d (default 1h)")] = None,
        from_: Annotated[str | None, Query(alias="from", description="RFC 3339")] = None,
        to: Annotated[str | None, Query(description="RFC 3339 (default: now)")] = None,
        every: Annotated[str | None, Query(description="bucket, e.g. 5m, or auto")] = None,
        agg: Annotated[
            Literal["mean", "min", "max", "last", "count", "sum"] | None,
            Query(description="with every (default mean)"),
        ] = None,
        group_by: Annotated[Literal["device_id"] | None, Query()] = None,
    ) -> dict[str, Any]:
        """A device's (or a fleet's) fields over time, aggregated by InfluxDB: the same
        parameters and the same JSON document as `moclo query --format json`. A device is
        looked for, and a fleet aggregated, within the token's tenants only."""
        request = parse_series_request(
            device_id=device,
            device_type=type,
            tenant=tenant,
            fields=tuple(field or ()),
            since=since,
            start=from_,
            end=to,
            every=every,
            agg=agg,
            group_by=group_by,
            now_ns=time.time_ns(),
        )
        if request.tenant is not None:
            require_tenant(who, request.tenant)
        elif who.tenants is not None and len(who.tenants) == 1:
            (only,) = who.tenants  # so the document names it, rather than null for "all"
            request = dataclasses.replace(request, tenant=only)
        result = await run_series(client, dataclasses.replace(request, scope=who.tenants))
        return result.to_json()

    @app.get("/api/alerts", response_model=AlertList, responses=api, tags=["alerts"])
    async def alerts(
        who: Caller,
        tenant: Annotated[str | None, Query(description="default: all the token's")] = None,
        device: Annotated[str | None, Query()] = None,
        severity: Annotated[Severity, Query(description="at least this severe")] = "info",
        since: Annotated[str | None, Query(description="raised within, e.g. 6h")] = None,
        all: Annotated[bool, Query(description="also resolved ones")] = False,
    ) -> AlertList:
        """Open alerts (with `all`, also resolved ones), critical first, then the newest: the
        list `moclo alerts --json` prints."""
        since_s = None if since is None else parse_since(since, now_ns=time.time_ns())
        found = await scoped_alerts(
            who,
            AlertFilter(
                tenant=_tenant(who, tenant),
                device_id=_identifier("device", device),
                min_severity=severity,
                since_s=since_s,
                include_resolved=all,
            ),
        )
        return AlertList(alerts=[alert_json(a) for a in found])

    @app.get("/api/episodes", response_model=EpisodeList, responses=api, tags=["alerts"])
    async def episodes(
        who: Caller,
        tenant: str,
        device: str,
        since: Annotated[str | None, Query(description="e.g. 3d (default 1h)")] = None,
        from_: Annotated[str | None, Query(alias="from")] = None,
        to: Annotated[str | None, Query()] = None,
    ) -> EpisodeList:
        """One device's alert episodes (raise to resolve, or still open) that overlap a time
        range: what the dashboard marks on its charts."""
        window = parse_series_request(
            device_id=_identifier("device", device),
            device_type=None,
            tenant=_tenant(who, tenant),
            fields=(),
            since=since,
            start=from_,
            end=to,
            every=None,
            agg=None,
            group_by=None,
            now_ns=time.time_ns(),
        )
        found = await device_episodes(
            client,
            tenant=tenant,
            device_id=device,
            start_ns=window.start_ns,
            end_ns=window.end_ns,
        )
        return EpisodeList(episodes=[e.as_dict() for e in found])

    @app.get(
        "/api/stream",
        response_class=StreamingResponse,
        responses={**api, 200: {"content": {"text/event-stream": {}}}},
        tags=["live"],
    )
    async def stream(
        request: Request,
        who: Caller,
        tenant: Annotated[list[str] | None, Query(description="repeat for several")] = None,
        device: Annotated[str | None, Query()] = None,
        readings: Annotated[bool, Query(description="also the newest readings")] = True,
    ) -> StreamingResponse:
        """Server-Sent Events, at most 8 streams at once per token (429 beyond): `hello`
        first; `alert` for every alert change as ingest publishes it (the JSON of `moclo alerts
        --json`); `readings` every 250 ms with the newest validated reading of each device that
        sent one; `overflow` before the stream closes when the client reads too slowly
        (reconnect and reload); `unauthorized` before it closes when its token was revoked or
        its session ended. Only the token's tenants are ever sent."""
        chosen = None if not tenant else frozenset(_checked("tenant", t) for t in tenant)
        for name in sorted(chosen or ()):
            require_tenant(who, name)
        wants = StreamFilter(
            tenants=chosen or who.tenants,
            device_id=_identifier("device", device),
            readings=readings,
        )

        signed_in = auth.still_signed_in(request, who)

        async def still_valid() -> bool:
            return await asyncio.to_thread(signed_in)

        ended = "the session ended" if request.state.session else "the token was revoked"
        # Reserved here, so that a stream over the token's limit is refused before any answer.
        reserved = hub.reserve(wants, owner=who.token_id)

        async def release() -> None:
            # Also when the answer ends before the stream's generator ever ran.
            hub.release(reserved)

        return StreamingResponse(
            event_stream(hub, reserved, still_valid=still_valid, ended=ended),
            background=BackgroundTask(release),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @app.get("/healthz", tags=["service"])
    async def healthz() -> JSONResponse:
        """200 while the database answers and the live stream is subscribed, else 503."""
        database = await client.ping()
        live = hub.connected.is_set()
        body = {"ok": database and live, "database": database, "live_stream": live}
        return JSONResponse(body, status_code=200 if database and live else 503)

    acks.install(app, settings, client, timeout_s=ack_timeout_s)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app


def _tenant(who: Principal, tenant: str | None) -> str | None:
    """A tenant parameter: None, or a valid name (else 400) that the token sees (else 403)."""
    return None if tenant is None else require_tenant(who, _checked("tenant", tenant))


def _identifier(kind: str, value: str | None) -> str | None:
    return None if value is None else _checked(kind, value)


def _checked(kind: str, value: str) -> str:
    if not is_identifier(value):
        raise BadParameter(f"{kind} {value!r} is not valid: {IDENTIFIER_RULE}")
    return value


def _summary(device: StoredDevice, alerts: list[Alert]) -> DeviceView:
    mine = [a for a in alerts if a.tenant == device.tenant and a.device_id == device.device_id]
    worst = max(mine, key=lambda a: SEVERITY_RANK[a.severity]).severity if mine else None
    return DeviceView(
        tenant=device.tenant,
        device_type=device.device_type,
        device_id=device.device_id,
        last_seen=format_timestamp(device.last_seen_ns),
        last=dict(device.last),
        open_alerts=len(mine),
        worst_severity=worst,
    )
