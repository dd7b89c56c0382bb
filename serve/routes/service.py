"""What is public and holds no data: `/healthz` for probes, and the dashboard's page (its
static files are mounted by serve/api.py)."""

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
