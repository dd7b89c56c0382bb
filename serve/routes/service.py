"""What is public and holds no data: `/healthz` for probes, and the dashboard's page with the
two files that make it an installable app: its manifest and its service worker (the other
static files are mounted by serve/api.py under /static)."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse

from serve.state import Hub, Influx

STATIC = resources.files("serve") / "static"

router = APIRouter()


@router.get("/healthz", tags=["service"])
async def healthz(client: Influx, hub: Hub) -> JSONResponse:
    """200 while the database answers and the live stream is subscribed, else 503."""
    database = await client.ping()
    live = hub.connected.is_set()
    body = {"ok": database and live, "database": database, "live_stream": live}
    return JSONResponse(body, status_code=200 if database and live else 503)


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(str(STATIC / "index.html"), headers={"Cache-Control": "no-cache"})


@router.get("/manifest.webmanifest", include_in_schema=False)
async def manifest() -> FileResponse:
    """What a phone needs to install the dashboard as an app: name, icons, colours."""
    return FileResponse(
        str(STATIC / "manifest.webmanifest"),
        media_type="application/manifest+json",
        headers={"Cache-Control": "no-cache"},
    )


@router.get("/sw.js", include_in_schema=False)
async def service_worker() -> FileResponse:
    """The service worker (serve/static/sw.js), served from / because a worker controls only
    the pages at or below its own path; `no-cache` so that a new version is taken at once."""
    return FileResponse(
        str(STATIC / "sw.js"),
        media_type="text/javascript",
        headers={"Cache-Control": "no-cache"},
    )
