"""`GET /api/devices/{tenant}/{device_id}/places`: the places a device's map draws, that is
the shapes of its geofence rules and the destinations of its arrival rules, as they apply to
this device (the type's defaults with the rules file on top, `RuleBook.rules_for`, exactly
what ingest judges it by). Same scoping as the other device routes: 403 for a tenant outside
the token's, 404 for a device it does not have.

The rules file (MOCLO_RULES_FILE) is read once when serve starts, by the function ingest uses
(`ingest/rules_in_force.py` `load_rulebook`), so a file ingest refuses is refused here too, before
anything is served; serve started with another file than ingest's would draw other places
than those ingest judges by, so both read the same setting.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, Field

from devices.place_rules import ArrivalRule, GeofenceRule, Where
from devices.rule_base import Severity
from devices.rules import Rule
from ingest.alerts.rulebook import RuleBook
from serve.auth import AUTH_ERRORS, Caller
from serve.errors import ErrorBody
from serve.routes.commands import device_type_of
from serve.state import Influx

router = APIRouter()


class Place(BaseModel):
    rule: str = Field(description="the rule's name")
    kind: Literal["geofence", "arrival"]
    shape: Literal["circle", "polygon", "point"] = Field(
        description="a geofence's circle or polygon; an arrival rule's destination is a point"
    )
    where: Where | None = Field(description="a geofence's: raised inside or outside it")
    center: tuple[float, float] | None = Field(description="[lat, lon] of a circle or a point")
    radius_m: float | None = Field(description="a circle's radius in metres")
    polygon: list[tuple[float, float]] | None = Field(description="a polygon's [lat, lon] corners")
    within_s: float | None = Field(description="an arrival rule's: raised this long before")
    severity: Severity
    condition: str = Field(description="what raises the alert, as `moclo rules list` says it")


class Places(BaseModel):
    tenant: str
    device_id: str
    device_type: str
    rules_file: str | None = Field(description="the rules file in force, or none (defaults)")
    places: list[Place]


def keep(app: FastAPI, rulebook: RuleBook) -> None:
    """Keeps the rules in force, read once by serve/server.py before anything is served."""
    app.state.rulebook = rulebook


def place_of(rule: Rule) -> Place | None:
    """The place a rule is about, or None for a rule that has none (a threshold)."""
    if isinstance(rule, ArrivalRule):
        return Place(
            rule=rule.name, kind="arrival", shape="point", where=None, center=rule.center,
            radius_m=None, polygon=None, within_s=rule.within_s, severity=rule.severity,
            condition=rule.condition()[0],
        )  # fmt: skip
    if isinstance(rule, GeofenceRule):
        polygon = None if rule.polygon is None else list(rule.polygon)
        return Place(
            rule=rule.name, kind="geofence", shape="circle" if polygon is None else "polygon",
            where=rule.where, center=rule.center, radius_m=rule.radius_m, polygon=polygon,
            within_s=None, severity=rule.severity, condition=rule.condition()[0],
        )  # fmt: skip
    return None


@router.get(
    "/api/devices/{tenant}/{device_id}/places",
    response_model=Places,
    responses={**AUTH_ERRORS, 404: {"model": ErrorBody}},
    tags=["devices"],
)
async def places(
    who: Caller, client: Influx, request: Request, tenant: str, device_id: str
) -> Places:
    """The geofences and arrival destinations of the rules in force for this device."""
    device_type = await device_type_of(client, who, tenant, device_id)
    book: RuleBook = request.app.state.rulebook
    rules = book.rules_for(tenant, device_type.name, device_id)
    return Places(
        tenant=tenant,
        device_id=device_id,
        device_type=device_type.name,
        rules_file=book.source or None,
        places=[p for p in map(place_of, rules) if p is not None],
    )
