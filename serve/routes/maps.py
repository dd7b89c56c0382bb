"""`/api/map`: what the dashboard's maps draw on. The tile server is an operator's choice
(MOCLO_MAP_TILES), none by default: the maps then draw positions on a plain background with a
scale, and the page fetches nothing from the internet."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, Field

from core.settings import Settings
from serve.auth import AUTH_ERRORS, Caller

router = APIRouter()


class MapSetting(BaseModel):
    tiles: str | None = Field(description="a tile URL template ({z}/{x}/{y}), or none")
    attribution: str | None = Field(description="the credit the tile server asks for")


def keep(app: FastAPI, settings: Settings) -> None:
    app.state.map = MapSetting(
        tiles=settings.map_tiles or None, attribution=settings.map_attribution or None
    )


@router.get("/api/map", response_model=MapSetting, responses=AUTH_ERRORS, tags=["devices"])
async def map_setting(who: Caller, request: Request) -> MapSetting:
    """The map tile server, if the operator chose one."""
    setting: MapSetting = request.app.state.map
    return setting
