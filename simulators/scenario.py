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

    obey = true              # optional: devices obey commands and desired state (docs/acting.md)

    [faults]                 # optional: rates per reading (see simulators/faults.py)
    malformed_json = 0.001
    duplicate = 0.01

    [command_faults]         # optional: rates per command (see simulators/downlink.py)
    reject = 0.1             # answers `rejected`
    ignore = 0.1             # answers nothing: moclo marks it `expired`

    [[event]]
    tenant = "de-wei-farm"
    device = "cow-0007"
    kind = "fever"           # one of the type's episode kinds, or "offline" (any type)
    at = "06:00"             # the first 06:00 of the run, "day 2 06:00", "+3h", or RFC 3339
    duration = "6h"

Times of day are local time on the farm and in the homes (UTC+1), as in the behaviour models.

`kind = "offline"` works for every device type: from `at` for `duration` the device publishes
nothing at all (its battery died, its Wi-Fi dropped), then carries on at its usual interval
without sending the readings it missed; its `seq` continues from the last reading it made.
The readings not made are counted in the summary (`offline_skipped`). See
`simulators.fleet.SimulatedDevice`.
"""

from __future__ import annotations

import time
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.durations import parse_duration
from devices.base import parse_timestamp
from simulators.downlink import CommandFaults
from simulators.faults import FaultRates
from simulators.fleet import FleetSpec
from simulators.run import ScriptedEvent, SimulationOptions, build_fleet


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
    obey: bool = False
    command_faults: dict[str, float] = {}


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
    """(name, options) from a scenario file or the name of a shipped scenario.

    Every fleet and event is checked here (a fleet is built and thrown away), so a mistake is
    reported with the file's name rather than in the middle of a run. Unless the file gives a
    `start`, the run's start is chosen when it runs (after --burst or --speed), and event times
    like "06:00" are resolved against it then.
    """
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
        options = _options(spec)
        build_fleet(options, "check", options.resolved_start(time.time() if now is None else now))
    except ValueError as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    return spec.name, options


def _options(spec: _Scenario) -> SimulationOptions:
    speed = 1.0 if spec.speed == "burst" else float(spec.speed)
    if speed <= 0:
        raise ValueError('speed must be positive, or "burst"')
    start = None
    if spec.start:
        try:
            start = parse_timestamp(spec.start) / 1e9
        except ValueError as exc:
            raise ValueError(f"start: {exc}") from None
    return SimulationOptions(
        fleets=tuple(
            FleetSpec(
                tenant=f.tenant,
                device_type=f.type,
                count=f.count,
                interval_s=parse_duration(f.interval) if f.interval else None,
                id_pattern=f.id_pattern,
                incident_every_s=parse_duration(f.incident_every) if f.incident_every else None,
            )
            for f in spec.fleet
        ),
        events=tuple(
            ScriptedEvent(e.tenant, e.device, e.kind, e.at, parse_duration(e.duration))
            for e in spec.event
        ),
        duration_s=parse_duration(spec.duration),
        seed=spec.seed,
        burst=spec.speed == "burst",
        speed=speed,
        start=start,
        faults=FaultRates.parse(",".join(f"{k}={v}" for k, v in spec.faults.items()))
        if spec.faults
        else None,
        obey=spec.obey,
        command_faults=CommandFaults.parse(
            ",".join(f"{k}={v}" for k, v in spec.command_faults.items())
        )
        if spec.command_faults
        else None,
    )
