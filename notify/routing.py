"""Who is told about what: the routes a change matches, and the people a step's targets are.

Routes are tried in the file's order; the first that matches is taken, and the ones after it
too while each matched route says `continue_matching` (Alertmanager's `continue`). A route
matches a change of its own tenant only, so a route can never tell a tenant's people about
another tenant's devices.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from fnmatch import fnmatchcase

from devices.rule_base import SEVERITIES
from notify.model import NotifyConfig, Person, Route, Subject, Target
from notify.oncall import on_call


def matching_routes(config: NotifyConfig, subject: Subject) -> tuple[Route, ...]:
    """The routes `subject` goes by: the first that matches, and after it the further
    matching ones while the last one taken has `continue_matching`."""
    taken: list[Route] = []
    for route in config.routes:
        if not matches(route, subject):
            continue
        taken.append(route)
        if not route.continue_matching:
            break
    return tuple(taken)


def matches(route: Route, subject: Subject) -> bool:
    """Whether `route` is for `subject`: its tenant, and each filter the route gives."""
    return (
        subject.tenant == route.tenant
        and subject.kind in route.kinds
        and (not route.device_types or subject.device_type in route.device_types)
        and (not route.rules or subject.rule in route.rules)
        and (not route.devices or any(fnmatchcase(subject.device_id, p) for p in route.devices))
        and SEVERITIES.index(subject.severity) >= SEVERITIES.index(route.min_severity)
    )


def recipients(
    config: NotifyConfig, targets: Sequence[Target], at: datetime, *, tenant: str | None = None
) -> tuple[Person, ...]:
    """The people `targets` name at the aware instant `at` (on-call targets resolved then),
    each once, in the targets' order. With `tenant`, only people who serve that tenant: the
    notify file refuses a route naming anyone else, and this holds for a config built
    otherwise, too. A target naming nobody (a person or rotation not in `config`, a depth
    beyond the rotation's line) names nobody, rather than failing the whole step."""
    found: dict[str, Person] = {}
    for target in targets:
        for name in _names(config, target, at):
            person = config.people.get(name)
            if person is None or name in found:
                continue
            if tenant is not None and tenant not in person.tenants:
                continue
            found[name] = person
    return tuple(found.values())


def _names(config: NotifyConfig, target: Target, at: datetime) -> tuple[str, ...]:
    if target.kind == "person":
        return (target.name,)
    rotation = config.rotations.get(target.name)
    if rotation is None:
        return ()
    line = on_call(rotation, at)
    return (line[target.depth - 1],) if 1 <= target.depth <= len(line) else ()
