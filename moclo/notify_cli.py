"""`moclo notify check` and `moclo oncall show`: whether a notify file is good before the
notifier is started with it, and who is on call. Argument parsing is in `moclo/notify_args.py`.
Channel URLs are secrets: only `Channel.shown` (the label, else the scheme) is printed."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from core.settings import ENVIRONMENT
from notify.file import NAMES_ONLY, NotifyFileError, load_notify_file
from notify.model import NotifyConfig, Person, Rotation, Route, Target
from notify.oncall import on_call, override_at, shifts
from notify.walltime import to_instant

NOTIFY_FILE_VARIABLE = ENVIRONMENT["notify_file"]
NEXT_SHIFTS = 4  # shown after the current one


def check_notify(path: Path | None) -> int:
    """Prints a summary of a good notify file (exit 0), or every problem to stderr (exit 2)."""
    config = _load(path)
    if config is None:
        return 2
    counts = [
        _plural(len(config.people), "person", "people"),
        _plural(len(config.rotations), "rotation"),
        _plural(len(config.routes), "route"),
    ]
    print(f"{config.source}: OK: {', '.join(counts)}")
    if config.people:
        print("people:")
        print(_table([_person_row(p) for p in config.people.values()]))
    if config.rotations:
        print("rotations:")
        print(_table([_rotation_row(r) for r in config.rotations.values()]))
    if config.routes:
        print("routes:")
        print(_table([_route_row(r) for r in config.routes]))
    return 0


def show_oncall(*, file: Path | None, at: str | None, tenant: str | None, as_json: bool) -> int:
    """Prints who is on call in each rotation (of `tenant`) at `at` (default now), and the next
    shifts; exit 2 for a bad file, time or tenant. Names only: a `url_env` need not be set."""
    config = _load(file, environ=NAMES_ONLY)
    if config is None:
        return 2
    rotations = [r for r in config.rotations.values() if tenant is None or r.tenant == tenant]
    if tenant is not None and not rotations:
        tenants = sorted({r.tenant for r in config.rotations.values()})
        print(
            f"moclo: {config.source} has no rotation of tenant {tenant!r}; tenants with "
            f"rotations: {', '.join(tenants) or 'none'}",
            file=sys.stderr,
        )
        return 2
    try:
        views = [_view(r, _moment(at, r.time_zone)) for r in rotations]
    except ValueError as exc:
        print(f"moclo: {exc}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(views, indent=2, ensure_ascii=False))
    elif not views:
        print(f"{config.source} has no rotations")
    for view in [] if as_json else views:
        _print_view(view)
    return 0


def _load(path: Path | None, *, environ: Mapping[str, str] = os.environ) -> NotifyConfig | None:
    if path is None:
        value = os.environ.get(NOTIFY_FILE_VARIABLE)
        if not value:
            print(
                f"moclo: name the notify file (FILE or --file), or set {NOTIFY_FILE_VARIABLE}",
                file=sys.stderr,
            )
            return None
        path = Path(value)
    try:
        return load_notify_file(path, environ=environ)
    except NotifyFileError as exc:
        print(exc, file=sys.stderr)
        return None


def _moment(text: str | None, zone: str) -> datetime:
    """--at as an aware instant: now, an ISO time with an offset, or one in `zone`."""
    if text is None or text == "now":
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"--at {text!r} is not a time: write e.g. 2026-12-24T20:00 (in each "
            "rotation's time zone) or 2026-12-24T20:00+01:00"
        ) from None
    if value.tzinfo is None:
        return to_instant(value, ZoneInfo(zone))
    return value.astimezone(UTC)


def _view(rotation: Rotation, at: datetime) -> dict[str, Any]:
    """Who is on call in `rotation` at `at`, and the shifts from then on (JSON-ready)."""
    zone = ZoneInfo(rotation.time_zone)
    pieces = _pieces(rotation, at)
    return {
        "rotation": rotation.name,
        "tenant": rotation.tenant,
        "time_zone": rotation.time_zone,
        "at": at.astimezone(zone).isoformat(),
        "in_line": list(on_call(rotation, at)),
        "override": override_at(rotation, at) is not None,
        "shifts": [
            {
                "start": a.astimezone(zone).isoformat(),
                "end": b.astimezone(zone).isoformat(),
                "person": person,
                "override": override_at(rotation, a) is not None,
            }
            for a, b, person in pieces
        ],
    }


def _pieces(rotation: Rotation, at: datetime) -> list[tuple[datetime, datetime, str]]:
    """The shift at `at` and the next ones, each whole: the window grows until they fit (a
    rotation that starts next year has one long first turn), up to two years."""
    span = max(timedelta(seconds=rotation.shift_s) * (NEXT_SHIFTS + 2), timedelta(days=2))
    while True:
        pieces = shifts(rotation, at, at + span)
        if len(pieces) > NEXT_SHIFTS + 1 or span > timedelta(days=730):
            return pieces[: NEXT_SHIFTS + 1]
        span *= 2


def _print_view(view: dict[str, Any]) -> None:
    line, current = view["in_line"], view["shifts"][0]
    zone = ZoneInfo(view["time_zone"])
    mark = " (override)" if view["override"] else ""
    print(f"{view['rotation']} (tenant {view['tenant']}, {view['time_zone']})")
    until = _shown(current["end"], zone)
    print(f"  on call at {_shown(view['at'], zone)}: {line[0]}{mark} until {until}")
    if len(line) > 1:
        print(f"  then in line: {', '.join(f'#{i} {p}' for i, p in enumerate(line[1:], 2))}")
    print("  next shifts:")
    for shift in view["shifts"][1:]:
        mark = "  (override)" if shift["override"] else ""
        start, end = _shown(shift["start"], zone), _shown(shift["end"], zone)
        print(f"    {start} – {end}  {shift['person']}{mark}")


def _shown(iso: str, zone: ZoneInfo) -> str:
    moment = datetime.fromisoformat(iso).astimezone(zone)
    return f"{moment:%a %Y-%m-%d %H:%M} {moment.tzname() or ''}".rstrip()


def _person_row(person: Person) -> list[str]:
    quiet = "; ".join(
        f"quiet {q.start:%H:%M}–{q.end:%H:%M} unless {q.breakthrough}" for q in person.quiet_hours
    )
    channels = ", ".join(c.shown for c in person.channels)
    return [person.name, ", ".join(person.tenants), person.time_zone, channels, quiet]


def _rotation_row(rotation: Rotation) -> list[str]:
    zone = ZoneInfo(rotation.time_zone)
    handoff = rotation.handoff.astimezone(zone)
    overrides = _plural(len(rotation.overrides), "override") if rotation.overrides else ""
    return [
        rotation.name,
        rotation.tenant,
        " → ".join(rotation.people),
        f"{_duration(rotation.shift_s)} shifts from {handoff:%Y-%m-%d %H:%M} {rotation.time_zone}",
        overrides,
    ]


def _route_row(route: Route) -> list[str]:
    what = [", ".join(route.device_types) or "any type", ", ".join(route.rules) or "any rule"]
    if route.devices:
        what.append(", ".join(route.devices))
    steps = "; then ".join(
        (f"after {_duration(s.after_s)}: " if s.after_s else "") + ", ".join(map(_target, s.notify))
        for s in route.steps
    )
    extra = [f"group {_duration(route.group_wait_s)}" if route.group_wait_s else "at once"]
    if route.repeat_s:
        extra.append(f"repeat {_duration(route.repeat_s)}")
    if route.continue_matching:
        extra.append("continue")
    return [
        route.name,
        route.tenant,
        f"{' '.join(what)} ≥{route.min_severity}",
        f"→ {steps}",
        ", ".join(extra),
    ]


def _target(target: Target) -> str:
    if target.kind == "person":
        return target.name
    return f"oncall:{target.name}" + (f"#{target.depth}" if target.depth > 1 else "")


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _plural(n: int, word: str, plural: str = "") -> str:
    return f"{n} {word}" if n == 1 else f"{n} {plural or word + 's'}"
