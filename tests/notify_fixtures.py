"""Notify configurations and alert changes built in code, and a clock the test moves, for the
dispatcher's tests and benchmark (the notify file's parser is tested on its own)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

from devices.rule_base import Severity
from notify.dispatch import Delivery, Dispatcher
from notify.model import (
    Channel,
    EscalationStep,
    NotifyConfig,
    Person,
    QuietHours,
    Rotation,
    Route,
    Subject,
    SubjectState,
    Target,
)

# 2026-12-07 02:00 in Amsterdam (01:00 UTC), a Monday night.
NIGHT = datetime(2026, 12, 7, 1, 0, tzinfo=UTC).timestamp()


class FakeClock:
    def __init__(self, start: float = NIGHT) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def to(self, when: float) -> None:
        assert when >= self.now, "the clock only moves forward"
        self.now = when


def person(
    name: str,
    tenant: str = "farm-7",
    *,
    channels: int = 1,
    quiet: tuple[QuietHours, ...] = (),
    time_zone: str = "Europe/Amsterdam",
) -> Person:
    return Person(
        name=name,
        tenants=(tenant,),
        channels=tuple(
            Channel(url=f"json://localhost:9/{name}/{i}?token=SECRET-{name}-{i}")
            for i in range(channels)
        ),
        time_zone=time_zone,
        quiet_hours=quiet,
    )


def who(*names: str) -> tuple[Target, ...]:
    """Targets from names: `oncall:ROT#N` or a person's name."""
    targets = []
    for name in names:
        if name.startswith("oncall:"):
            rotation, _, depth = name.removeprefix("oncall:").partition("#")
            targets.append(Target("oncall", rotation, int(depth or 1)))
        else:
            targets.append(Target("person", name))
    return tuple(targets)


def route(
    name: str = "fever",
    tenant: str = "farm-7",
    *steps: tuple[float, tuple[Target, ...]],
    **options: Any,
) -> Route:
    return replace(
        Route(
            name=name,
            tenant=tenant,
            steps=tuple(EscalationStep(after, targets) for after, targets in steps),
            group_wait_s=10.0,
        ),
        **options,
    )


def config(
    people: Sequence[Person], routes: Sequence[Route], rotations: Sequence[Rotation] = ()
) -> NotifyConfig:
    return NotifyConfig(
        people={p.name: p for p in people},
        rotations={r.name: r for r in rotations},
        routes=tuple(routes),
    )


def alert(
    alert_id: str,
    state: SubjectState = "raised",
    *,
    device: str = "",
    tenant: str = "farm-7",
    device_type: str = "cow",
    rule: str = "fever",
    severity: Severity = "warning",
    ts: float = NIGHT,
    by: str = "",
) -> Subject:
    return Subject(
        kind="alert",
        id=alert_id,
        state=state,
        tenant=tenant,
        device_type=device_type,
        device_id=device or f"{device_type}-{alert_id}",
        rule=rule,
        severity=severity,
        message=f"{rule} on {device or alert_id}",
        ts_ns=int(ts * 1e9),
        acknowledged_by=by,
    )


def send_all(dispatcher: Dispatcher, *, ok: bool = True) -> list[Delivery]:
    """Everything due, each reported delivered (or failed)."""
    out = dispatcher.due()
    for delivery in out:
        dispatcher.delivered(delivery, ok=ok, detail="" if ok else "connection refused")
    return out


def open_dispatcher(cfg: NotifyConfig, path: Path, clock: FakeClock, **kw: Any) -> Dispatcher:
    return Dispatcher(cfg, path, clock=clock, **kw)


QUIET_NIGHTS = (QuietHours(start=time(22, 0), end=time(7, 0), breakthrough="critical"),)
