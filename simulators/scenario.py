"""Scenario files (TOML): tenants, fleets, time, speed, seed and scripted events in one place.

    name = "Dairy farm"
    seed = 7
    duration = "1d"          # simulated time covered
    speed = 1440             # simulated seconds per real second ("a day in a minute"),
                             # or "burst" (as fast as the broker takes it); default 1
    start = "2026-11-22T00:00:00+01:00"   # optional; default: the run ends now

    [[fleet]]
    tenant = "de-wei-farm"
    type = "cow_tracker"
    count = 120
    interval = "30s"         # optional: the type's own default
    id_pattern = "cow-{n:04d}"   # optional
    incident_every = "30d"   # optional: random episodes per device

    [faults]                 # optional: rates per reading (see simulators/faults.py)
    malformed_json = 0.001
    duplicate = 0.01

    [[event]]
    tenant = "de-wei-farm"
    device = "cow-0007"
    kind = "fever"           # one of the type's episode kinds
    at = "06:00"             # the first 06:00 of the run, "day 2 06:00", "+3h", or RFC 3339
    duration = "6h"

Times of day are local time on the farm and in the homes (UTC+1), as in the behaviour models.
"""

from __future__ import annotations

import re
import time
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from devices.base import parse_timestamp
from moclo.durations import parse_duration
from simulators.faults import FaultRates
from simulators.fleet import FleetSpec
from simulators.run import ScriptedEvent, SimulationOptions

UTC_OFFSET_S = 3600
_AT = re.compile(r"(?:day\s+(\d+)\s+)?(\d{1,2}):(\d{2})")


class ScenarioError(ValueError):
    """A scenario file that cannot be run; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Fleet(_Strict):
    tenant: str
    type: str
    count: Annotated[int, Field(gt=0, le=1_000_000)]
    interval: str | None = None
    id_pattern: str | None = None
    incident_every: str | None = None


class _Event(_Strict):
    tenant: str
    device: str
    kind: str
    at: str
    duration: str


class _Scenario(_Strict):
    name: str
    description: str = ""
    seed: int = 0
    duration: str
    speed: float | Literal["burst"] = 1.0
    start: str | None = None
    fleet: Annotated[list[_Fleet], Field(min_length=1)]
    event: list[_Event] = []
    faults: dict[str, float] = {}


def shipped() -> dict[str, Path]:
    """The scenarios that come with moclo, by name."""
    folder = resources.files("simulators") / "scenarios"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".toml")}


def resolve(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    known = shipped()
    if name_or_path in known:
        return known[name_or_path]
    raise ScenarioError(
        f"no scenario file {name_or_path!r}; shipped scenarios: {', '.join(sorted(known))}"
    )


def load_scenario(name_or_path: str, *, now: float | None = None) -> tuple[str, SimulationOptions]:
    """(name, options) from a scenario file or the name of a shipped scenario."""
    path = resolve(name_or_path)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    try:
        spec = _Scenario.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ScenarioError(f"{path}: {problems}") from None
    try:
        return spec.name, _options(spec, time.time() if now is None else now)
    except ValueError as exc:
        raise ScenarioError(f"{path}: {exc}") from None


def _options(spec: _Scenario, now: float) -> SimulationOptions:
    duration = parse_duration(spec.duration)
    burst = spec.speed == "burst"
    speed = 1.0 if spec.speed == "burst" else float(spec.speed)
    if speed <= 0:
        raise ValueError('speed must be positive, or "burst"')
    fleets = tuple(
        FleetSpec(
            tenant=f.tenant,
            device_type=f.type,
            count=f.count,
            interval_s=parse_duration(f.interval) if f.interval else None,
            id_pattern=f.id_pattern,
            incident_every_s=parse_duration(f.incident_every) if f.incident_every else None,
        )
        for f in spec.fleet
    )
    options = SimulationOptions(
        fleets=fleets,
        duration_s=duration,
        seed=spec.seed,
        burst=burst,
        speed=speed,
        start=parse_timestamp(spec.start) / 1e9 if spec.start else None,
    )
    start = options.resolved_start(now)
    events = tuple(
        ScriptedEvent(e.tenant, e.device, e.kind, _at(e.at, start), parse_duration(e.duration))
        for e in spec.event
    )
    return SimulationOptions(
        fleets=fleets,
        events=events,
        duration_s=duration,
        seed=spec.seed,
        burst=burst,
        speed=speed,
        start=start,
        faults=FaultRates.parse(",".join(f"{k}={v}" for k, v in spec.faults.items()))
        if spec.faults
        else None,
    )


def _at(text: str, start: float) -> float:
    """An event time: "+3h", "06:00", "day 2 06:00", or RFC 3339."""
    text = text.strip()
    if text.startswith("+"):
        return start + parse_duration(text[1:])
    if match := _AT.fullmatch(text):
        day, hours, minutes = int(match.group(1) or 1), int(match.group(2)), int(match.group(3))
        if day < 1 or hours > 23 or minutes > 59:
            raise ValueError(f"event time {text!r}: day from 1, hours 0..23, minutes 0..59")
        # The first such time of day at or after the start is day 1.
        local_midnight = (start + UTC_OFFSET_S) // 86_400 * 86_400 - UTC_OFFSET_S
        first = local_midnight + hours * 3600 + minutes * 60
        if first < start:
            first += 86_400
        return first + (day - 1) * 86_400
    try:
        return parse_timestamp(text) / 1e9
    except ValueError:
        raise ValueError(
            f"event time {text!r}: write +3h, 06:00, day 2 06:00 or an RFC 3339 time"
        ) from None
