"""TEMPORARY: minimal stand-ins for the `notify-rules` part, with the contract's signatures.

`notify/routing.py` (`matching_routes`, `recipients`), `notify/oncall.py` (`on_call`) and
`notify/quiet.py` (`quiet_until`) are being written in parallel; the dispatcher needs them now.
This module is deleted when they land: nothing but `notify/dispatch.py` may import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from zoneinfo import ZoneInfo

from devices.rule_base import SEVERITIES, Severity
from notify.model import NotifyConfig, Person, Rotation, Route, Subject, Target


def _rank(severity: Severity) -> int:
    return SEVERITIES.index(severity)


def _matches(route: Route, subject: Subject) -> bool:
    return (
        route.tenant == subject.tenant
        and subject.kind in route.kinds
        and (not route.device_types or subject.device_type in route.device_types)
        and (not route.rules or subject.rule in route.rules)
        and (not route.devices or any(fnmatchcase(subject.device_id, p) for p in route.devices))
        and _rank(subject.severity) >= _rank(route.min_severity)
    )


def matching_routes(config: NotifyConfig, subject: Subject) -> tuple[Route, ...]:
    found: list[Route] = []
    for route in config.routes:
        if _matches(route, subject):
            found.append(route)
            if not route.continue_matching:
                break
    return tuple(found)


def on_call(rotation: Rotation, at: datetime) -> tuple[str, ...]:
    people = list(rotation.people)
    if people:
        turn = int((at - rotation.handoff).total_seconds() // rotation.shift_s) % len(people)
        people = people[turn:] + people[:turn]
    for override in rotation.overrides:
        if override.start <= at < override.end:
            people = [override.person, *(p for p in people if p != override.person)]
    return tuple(people)


def recipients(config: NotifyConfig, targets: Sequence[Target], at: datetime) -> tuple[Person, ...]:
    names: list[str] = []
    for target in targets:
        if target.kind == "person":
            names.append(target.name)
        else:
            line = on_call(config.rotations[target.name], at)
            if len(line) >= target.depth:
                names.append(line[target.depth - 1])
    return tuple(config.people[n] for n in dict.fromkeys(names) if n in config.people)


def quiet_until(person: Person, severity: Severity, at: datetime) -> datetime | None:
    local = at.astimezone(ZoneInfo(person.time_zone))
    for window in person.quiet_hours:
        if _rank(severity) >= _rank(window.breakthrough):
            continue
        now = local.timetz().replace(tzinfo=None)
        spans_midnight = window.start > window.end
        inside = (
            (now >= window.start or now < window.end)
            if spans_midnight
            else window.start <= now < window.end
        )
        if not inside:
            continue
        end = local.replace(hour=window.end.hour, minute=window.end.minute, second=0, microsecond=0)
        if end <= local:
            end += timedelta(days=1)
        return end.astimezone(at.tzinfo)
    return None
