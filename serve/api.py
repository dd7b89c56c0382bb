"""The HTTP API and the dashboard's files, as one FastAPI application.

Every endpoint reads through `query/` (the same code as `moclo query` and `moclo alerts`), so
the API, the CLI and the dashboard cannot disagree. Identifiers in parameters are checked
against the identifier rule before anything reaches InfluxQL, and quoted there as well.

Errors are JSON `{"error": "..."}`: 400 for a bad parameter, 404 for an unknown device, 503
when InfluxDB cannot be reached. The OpenAPI description is at `/api/openapi.json`; the
interactive docs page is off, because FastAPI's loads its script from a CDN and the dashboard
promises to fetch nothing from the internet.
"""

from __future__ import annotations

import time
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from devices.base import format_timestamp
from devices.rules import Severity
from devices.topics import IDENTIFIER_RULE, is_identifier
from ingest.alerts.record import Alert
from ingest.influx import InfluxClient, InfluxError
from moclo.durations import parse_duration
from query.alerts import SEVERITY_RANK, AlertFilter, alert_json, current_alerts, device_episodes
from query.errors import QueryError, UnknownDevice
from query.fleet import DeviceSummary as StoredDevice
from query.fleet import find_device, list_devices, list_tenants
from query.request import parse_series_request
from query.series import run_series
from serve.live import LiveHub, StreamFilter, event_stream

STATIC = resources.files("serve") / "static"
_NS = 1_000_000_000


class BadParameter(ValueError):
    """A parameter that breaks a rule; the message says which and what is allowed."""


class ErrorBody(BaseModel):
    error: str = Field(description="what was wrong and what to do")


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


def create_app(client: InfluxClient, hub: LiveHub) -> FastAPI:
    """The application; `client` and `hub` live as long as the process (see serve/server.py)."""
    app = FastAPI(
        title="moclo",
        summary="Devices, their time series and their alerts; a live stream of both.",
        version="1",
        openapi_url="/api/openapi.json",
        docs_url=None,
        redoc_url=None,
        responses={400: {"model": ErrorBody}, 503: {"model": ErrorBody}},
    )

    @app.exception_handler(BadParameter)
    async def _bad_parameter(_: Request, exc: BadParameter) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(QueryError)
    async def _bad_query(_: Request, exc: QueryError) -> JSONResponse:
        status = 404 if isinstance(exc, UnknownDevice) else 400
        return JSONResponse({"error": str(exc)}, status_code=status)

    @app.exception_handler(InfluxError)
    async def _no_database(_: Request, exc: InfluxError) -> JSONResponse:
        return JSONResponse(
            {"error": f"the database is not answering ({exc}); try again shortly"},
            status_code=503,
        )

    @app.get("/api/tenants", response_model=TenantList, tags=["devices"])
    async def tenants() -> TenantList:
        """Every tenant with stored readings."""
        return TenantList(tenants=await list_tenants(client))

    @app.get("/api/devices", response_model=DeviceList, tags=["devices"])
    async def devices(
        tenant: Annotated[str | None, Query(description="one tenant (default: all)")] = None,
        type: Annotated[str | None, Query(description="one device type")] = None,
    ) -> DeviceList:
        """Every device with its newest reading and its open alerts."""
        tenant = _identifier("tenant", tenant)
        found = await list_devices(client, tenant=tenant, device_type=type)
        alerts, _ = await current_alerts(client, AlertFilter(tenant=tenant), now_ns=time.time_ns())
        return DeviceList(devices=[_summary(d, alerts) for d in found])

    @app.get(
        "/api/devices/{tenant}/{device_id}",
        response_model=DeviceView,
        responses={404: {"model": ErrorBody}},
        tags=["devices"],
    )
    async def device(tenant: str, device_id: str) -> DeviceView:
        """One device with its newest reading and its open alerts."""
        _identifier("tenant", tenant)
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
        responses={404: {"model": ErrorBody}},
        tags=["series"],
    )
    async def series(
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
        parameters and the same JSON document as `moclo query --format json`."""
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
        result = await run_series(client, request)
        return result.to_json()

    @app.get("/api/alerts", response_model=AlertList, tags=["alerts"])
    async def alerts(
        tenant: Annotated[str | None, Query()] = None,
        device: Annotated[str | None, Query()] = None,
        severity: Annotated[Severity, Query(description="at least this severe")] = "info",
        since: Annotated[str | None, Query(description="raised within, e.g. 6h")] = None,
        all: Annotated[bool, Query(description="also resolved ones")] = False,
    ) -> AlertList:
        """Open alerts (with `all`, also resolved ones), critical first, then the newest: the
        list `moclo alerts --json` prints."""
        since_s = None if since is None else _duration("since", since)
        found, _ = await current_alerts(
            client,
            AlertFilter(
                tenant=_identifier("tenant", tenant),
                device_id=_identifier("device", device),
                min_severity=severity,
                since_s=since_s,
                include_resolved=all,
            ),
            now_ns=time.time_ns(),
        )
        return AlertList(alerts=[alert_json(a) for a in found])

    @app.get("/api/episodes", response_model=EpisodeList, tags=["alerts"])
    async def episodes(
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
            tenant=_identifier("tenant", tenant),
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
        responses={200: {"content": {"text/event-stream": {}}}},
        tags=["live"],
    )
    async def stream(
        tenant: Annotated[list[str] | None, Query(description="repeat for several")] = None,
        device: Annotated[str | None, Query()] = None,
        readings: Annotated[bool, Query(description="also the newest readings")] = True,
    ) -> StreamingResponse:
        """Server-Sent Events: `hello` first; `alert` for every alert change as ingest
        publishes it (the JSON of `moclo alerts --json`); `readings` every 250 ms with the
        newest validated reading of each device that sent one; `overflow` before the stream
        closes when the client reads too slowly (reconnect and reload)."""
        tenants = None if not tenant else frozenset(_checked("tenant", t) for t in tenant)
        wants = StreamFilter(
            tenants=tenants, device_id=_identifier("device", device), readings=readings
        )
        return StreamingResponse(
            event_stream(hub, wants),
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

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app


def _identifier(kind: str, value: str | None) -> str | None:
    return None if value is None else _checked(kind, value)


def _checked(kind: str, value: str) -> str:
    if not is_identifier(value):
        raise BadParameter(f"{kind} {value!r} is not valid: {IDENTIFIER_RULE}")
    return value


def _duration(kind: str, text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise BadParameter(f"{kind}: {exc}") from None


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
