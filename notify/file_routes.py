"""The notify file's `[[rotations]]` and `[[routes]]`, checked against its people.

    [[rotations]]
    name = "cardiology"
    tenant = "cardiology"
    people = ["dr-jansen", "dr-bakker", "dr-visser"]   # the order of the shifts
    shift = "7d"                                       # each one's turn (default 7d)
    handoff = "2026-11-30T08:00"                       # the first shift, wall-clock time in:
    time_zone = "Europe/Amsterdam"                     # (default UTC)
    overrides = [ { person = "dr-visser", from = "2026-12-24T18:00", to = "2026-12-27T08:00" } ]

    [[routes]]
    name = "pacemakers"
    tenant = "cardiology"              # required; its targets must all serve this tenant
    device_types = ["pacemaker"]       # these match when given (empty: any) ...
    rules = ["battery_low"]            # ... alert rules, or automations (for notices)
    devices = ["pm-*"]                 # ... device ids, as shell patterns
    min_severity = "warning"           # ... and this severity or higher (default info)
    kinds = ["alert"]                  # alert changes, automation notices (default both)
    group_wait = "10s"                 # gather changes into one message (default 30s, or 0s)
    group_by = ["tenant", "rule"]      # which changes go into one message (the default)
    repeat = "1h"                      # remind while open and unacknowledged (default never)
    resolved = true                    # tell who was told when it is acknowledged or resolved
    continue_matching = false          # also try the routes after this one
    steps = [ { after = "0s",  notify = ["oncall:cardiology"] },
              { after = "10m", notify = ["oncall:cardiology#2"] },
              { after = "20m", notify = ["cardiology-ward"] } ]
    # or, with one step: notify = ["farmer", "vet"]

A target is a person's name, `oncall:ROTATION` (who is on call there) or `oncall:ROTATION#N`
(the N-th in line: 2 is whoever is next in the rotation's order).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from devices.catalogue import DEVICE_TYPES
from devices.topics import IDENTIFIER
from notify.file_entry import NAME, NAME_RULE, Entry, did_you_mean, moment, read_duration
from notify.model import (
    EscalationStep,
    Override,
    Person,
    Rotation,
    Route,
    SubjectKind,
    Target,
)

ROTATION_KEYS = ("name", "tenant", "people", "shift", "handoff", "time_zone", "overrides")
OVERRIDE_KEYS = ("person", "from", "to")
ROUTE_KEYS = (
    "name",
    "tenant",
    "device_types",
    "rules",
    "devices",
    "min_severity",
    "kinds",
    "group_wait",
    "group_by",
    "repeat",
    "resolved",
    "continue_matching",
    "steps",
    "notify",
)
STEP_KEYS = ("after", "notify")
# What a route may group by: the Subject's attributes of these names.
GROUP_BY = ("tenant", "rule", "device_type", "device_id", "severity", "kind")
# A turn shorter than half an hour is a slip (and would make thousands of shifts a day); a
# reminder more than once a minute is noise.
MIN_SHIFT_S = 1800.0
MIN_REPEAT_S = 60.0
KINDS: tuple[SubjectKind, ...] = ("alert", "notice")
_KIND = re.compile("alert|notice")
_GROUP_BY = re.compile("|".join(GROUP_BY))
_TARGET = re.compile(r"(?:oncall:)?([a-z0-9][a-z0-9_-]{0,62})(?:#(\d{1,2}))?")
_PATTERN = re.compile(r"[a-z0-9*?\[\]!_-]{1,63}")
PATTERN_RULE = "a device id, or a shell pattern such as cow-00* or pm-?"


@dataclass(frozen=True, slots=True)
class Known:
    """What targets may name: the good people and rotations read so far, and the names of
    those refused (whose problems are reported already)."""

    people: Mapping[str, Person]
    rotations: Mapping[str, Rotation] = field(default_factory=dict)
    refused_people: frozenset[str] = frozenset()
    refused_rotations: frozenset[str] = frozenset()


def read_rotation(entry: Entry, known: Known) -> Rotation | None:
    entry.unknown_keys(entry.data, ROTATION_KEYS)
    name = entry.name()
    tenant = _tenant(entry)
    members = entry.names(
        "people", rule=NAME, allowed=NAME_RULE, example='["dr-jansen", "dr-bakker"]', required=True
    )
    for person in members:
        _member(entry, "people", None, person, tenant, known)
    twice = sorted({p for p in members if members.count(p) > 1})
    if twice:
        entry.bad("people", f"{twice[0]} is in people twice: list each once, in turn order")
    shift = entry.duration("shift", 7 * 86_400.0, least=MIN_SHIFT_S)
    zone = entry.zone()
    handoff = moment(entry.data.get("handoff"), zone)
    if handoff is None:
        entry.bad(
            "handoff",
            f"handoff {'is not a date and time' if 'handoff' in entry.data else 'is required'}:"
            " when the first shift starts (1970 to 2200), in the rotation's time_zone, e.g. "
            'handoff = "2026-11-30T08:00"',
        )
    overrides = _overrides(entry, zone, tenant, known)
    if not entry.ok or handoff is None or shift is None:
        return None
    return Rotation(name, tenant, members, handoff, shift, zone, overrides)


def _tenant(entry: Entry) -> str:
    tenant = entry.data.get("tenant")
    if not (isinstance(tenant, str) and IDENTIFIER.fullmatch(tenant)):
        entry.bad(
            "tenant",
            'tenant is required: the tenant\'s id, as in the topics, e.g. tenant = "cardiology"',
        )
        return ""
    return tenant


def _member(
    entry: Entry, key: str, item: int | None, person: str, tenant: str, known: Known
) -> bool:
    """Whether `person` is in the file and serves `tenant`; a problem otherwise."""
    people = known.people
    if person in known.refused_people:
        return False  # its own problems are reported; naming it is not one more
    if person not in people:
        hint = did_you_mean(person, people)
        entry.bad(
            key, f"{person!r} is not in [[people]]{hint}: add them, or correct the name", item
        )
        return False
    if tenant and tenant not in people[person].tenants:
        entry.bad(
            key,
            f"{person} does not serve tenant {tenant} (their tenants: "
            f"{', '.join(people[person].tenants)}): add {tenant!r} to their tenants, or "
            "name someone who does",
            item,
        )
        return False
    return True


def _overrides(entry: Entry, zone: str, tenant: str, known: Known) -> tuple[Override, ...]:
    items = entry.data.get("overrides", [])
    example = (
        'overrides = [ { person = "dr-visser", from = "2026-12-24T18:00", '
        'to = "2026-12-27T08:00" } ]'
    )
    if not isinstance(items, list) or not all(isinstance(o, dict) for o in items):
        entry.bad("overrides", f"overrides must be a list: {example}")
        return ()
    found: list[tuple[int, Override]] = []
    for i, item in enumerate(items):
        entry.unknown_keys(item, OVERRIDE_KEYS, key="overrides", item=i, what="an override")
        person = item.get("person")
        start, end = moment(item.get("from"), zone), moment(item.get("to"), zone)
        if not isinstance(person, str):
            entry.bad("overrides", f"override {i + 1}: person is required: {example}", i)
        elif not _member(entry, "overrides", i, person, tenant, known):
            pass  # said by _member
        elif start is None or end is None or end <= start:
            entry.bad(
                "overrides",
                f"override {i + 1}: from and to are date-times in the "
                'rotation\'s time_zone, from before to, e.g. from = "2026-12-24T18:00", '
                'to = "2026-12-27T08:00"',
                i,
            )
        else:
            found.append((i, Override(person, start, end)))
    for (_, a), (j, b) in zip(
        sorted(found, key=_start), sorted(found, key=_start)[1:], strict=False
    ):
        if b.start < a.end:
            entry.bad(
                "overrides",
                f"override {j + 1} overlaps the override of {a.person}: "
                "one person is on call at a time; end one where the next starts",
                j,
            )
    return tuple(o for _, o in found)


def _start(pair: tuple[int, Override]) -> datetime:
    return pair[1].start


def read_route(entry: Entry, known: Known) -> Route | None:
    entry.unknown_keys(entry.data, ROUTE_KEYS)
    name = entry.name()
    tenant = _tenant(entry)
    types = entry.names("device_types", rule=NAME, allowed=NAME_RULE, example='["pacemaker"]')
    for unknown in (t for t in types if t not in DEVICE_TYPES):
        entry.bad(
            "device_types",
            f"device type {unknown!r} is unknown"
            f"{did_you_mean(unknown, DEVICE_TYPES)}; known: {', '.join(DEVICE_TYPES)}",
        )
    rules = entry.names("rules", rule=NAME, allowed=NAME_RULE, example='["fever", "calving"]')
    devices = entry.names("devices", rule=_PATTERN, allowed=PATTERN_RULE, example='["cow-00*"]')
    given = entry.names("kinds", rule=_KIND, allowed="alert or notice", example='["alert"]')
    group_by = entry.names(
        "group_by", rule=_GROUP_BY, allowed=", ".join(GROUP_BY), example='["tenant", "rule"]'
    )
    route = Route(
        name,
        tenant,
        _steps(entry, tenant, known),
        types,
        rules,
        devices,
        entry.severity("min_severity", "info"),
        tuple(k for k in KINDS if k in given) or KINDS,
        entry.duration("group_wait", 30.0, zero=True) or 0.0,
        group_by or ("tenant", "rule"),
        entry.duration("repeat", None, least=MIN_REPEAT_S),
        entry.boolean("resolved", True),
        entry.boolean("continue_matching", False),
        entry.header,
    )
    return route if entry.ok else None


def _steps(entry: Entry, tenant: str, known: Known) -> tuple[EscalationStep, ...]:
    if ("steps" in entry.data) == ("notify" in entry.data):
        entry.bad(
            "steps",
            'give either notify = ["farmer", "vet"] (one step) or steps = '
            '[ { after = "0s", notify = […] }, { after = "10m", notify = […] } ]',
        )
        return ()
    if "notify" in entry.data:
        targets = _targets(entry, "notify", None, entry.data["notify"], tenant, known)
        return (EscalationStep(0.0, targets),)
    items = entry.data["steps"]
    if not isinstance(items, list) or not items or not all(isinstance(s, dict) for s in items):
        entry.bad("steps", 'steps must be a list: [ { after = "0s", notify = ["vet"] } ]')
        return ()
    steps: list[EscalationStep] = []
    for i, item in enumerate(items):
        entry.unknown_keys(item, STEP_KEYS, key="steps", item=i, what="a step")
        after = _after(entry, i, item.get("after"), steps[-1].after_s if steps else None)
        targets = _targets(entry, "steps", i, item.get("notify"), tenant, known)
        if after is not None:
            steps.append(EscalationStep(after, targets))
    return tuple(steps)


def _after(entry: Entry, i: int, value: Any, previous: float | None) -> float | None:
    seconds, problem = read_duration(value, zero=True)
    if seconds is None:
        entry.bad("steps", f"step {i + 1}: after: {problem}", i)
    elif i == 0 and seconds != 0:
        entry.bad(
            "steps",
            'step 1: after must be "0s": the first step tells people when the '
            "alert is raised; later steps escalate",
            i,
        )
    elif previous is not None and seconds <= previous:
        entry.bad(
            "steps",
            f"step {i + 1}: after must be later than step {i}'s: each step "
            "escalates after the one before it (times count from the raise)",
            i,
        )
    else:
        return seconds
    return None


def _targets(
    entry: Entry,
    key: str,
    item: int | None,
    value: Any,
    tenant: str,
    known: Known,
) -> tuple[Target, ...]:
    where = f"step {item + 1}: " if item is not None else ""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        entry.bad(
            key,
            f'{where}notify must name who is told: ["dr-jansen", '
            '"oncall:cardiology", "oncall:cardiology#2"]',
            item,
        )
        return ()
    targets = []
    for text in names:
        target = _target(entry, key, item, where, text, tenant, known)
        if target is not None:
            targets.append(target)
    return tuple(targets)


def _target(
    entry: Entry,
    key: str,
    item: int | None,
    where: str,
    text: str,
    tenant: str,
    known: Known,
) -> Target | None:
    match = _TARGET.fullmatch(text)
    if match is None or (match.group(2) and not text.startswith("oncall:")):
        entry.bad(
            key,
            f"{where}{text!r} is not a target: write a person's name, "
            '"oncall:ROTATION" or "oncall:ROTATION#2" (the second in line)',
            item,
        )
        return None
    name = match.group(1)
    if not text.startswith("oncall:"):
        ok = _member(entry, key, item, name, tenant, known)
        return Target("person", name) if ok else None
    rotation = known.rotations.get(name)
    depth = int(match.group(2) or 1)
    if name in known.refused_rotations:
        pass  # its own problems are reported; naming it is not one more
    elif rotation is None:
        entry.bad(
            key,
            f"{where}{text}: there is no rotation {name!r}"
            f"{did_you_mean(name, known.rotations)} in [[rotations]]",
            item,
        )
    elif tenant and rotation.tenant != tenant:
        entry.bad(
            key,
            f"{where}{text}: rotation {name} is tenant {rotation.tenant}'s, and "
            f"this route is tenant {tenant}'s: name a rotation of {tenant}",
            item,
        )
    elif not 1 <= depth <= len(rotation.people):
        entry.bad(
            key,
            f"{where}{text}: rotation {name} has {len(rotation.people)} people "
            f"in line: #1 to #{len(rotation.people)}",
            item,
        )
    else:
        return Target("oncall", name, depth)
    return None
