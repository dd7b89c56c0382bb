"""What the notify file says, and what is notified.

The notify file (`MOCLO_NOTIFY_FILE`, TOML, checked with FILE:LINE errors by `notify/file.py`)
is per tenant: people and their channels, on-call rotations, and routes. A route matches alert
changes (and automation notices) by tenant, device type, rule, severity and device pattern,
and says who is told at each escalation step, how long to gather changes into one message
(`group_wait`), and how often to remind while the alert is open (`repeat`).

A target names who a step tells: `NAME` (a person), `oncall:ROTATION` (whoever is on call in
that rotation now) or `oncall:ROTATION#N` (the N-th in line: 1 is the one on call, 2 the next
in the rotation's order, …).

A `Subject` is one thing to notify about: an alert change (`raised`, `acknowledged`,
`resolved`) or an automation's notice. Its `key` is what makes it unique, so the same change
seen twice (ingest replaying after a restart) is notified once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Literal
from urllib.parse import urlsplit

from devices.rule_base import Severity

SubjectKind = Literal["alert", "notice"]
SubjectState = Literal["raised", "acknowledged", "resolved", "notice"]


@dataclass(frozen=True, slots=True)
class Channel:
    """One way to reach a person: an Apprise URL (`mailto://…`, `ntfys://…`, `json://…`,
    `pover://…`). The URL may hold a token: only `shown` is ever logged, stored or displayed."""

    url: str = field(repr=False)
    label: str = ""  # given in the file; else the scheme and host

    @property
    def shown(self) -> str:
        """The label, else the scheme, plus the host where it names a server and not a key:
        `pover://USER@TOKEN` and `ntfy://TOPIC` hold their secret where a host would be."""
        if self.label:
            return self.label
        try:
            parts = urlsplit(self.url)
            host = (parts.hostname or "") if parts.scheme in _SERVER_HOST_SCHEMES else ""
        except ValueError:
            return "<invalid url>"
        return f"{parts.scheme}://{host}" if host else f"{parts.scheme}://…"


# Apprise schemes whose host is a server's name; any other's host may be a token or a topic.
_SERVER_HOST_SCHEMES = frozenset(
    {"mailto", "mailtos", "json", "jsons", "form", "forms", "xml", "xmls", "http", "https"}
)


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily window, in the person's time zone, when only `breakthrough` severity or higher
    reaches them; what is held is sent when the window ends, if still open. `start` > `end`
    spans midnight (22:00–07:00)."""

    start: time
    end: time
    breakthrough: Severity = "critical"


@dataclass(frozen=True, slots=True)
class Person:
    name: str
    tenants: tuple[str, ...]  # whose alerts they may be told about (a vet may serve farms)
    channels: tuple[Channel, ...]
    time_zone: str = "UTC"  # an IANA name, checked against zoneinfo
    quiet_hours: tuple[QuietHours, ...] = ()
    account: str = ""  # the login or API token name that acknowledges as this person; else name


@dataclass(frozen=True, slots=True)
class Override:
    """`person` is on call (first in line) from `start` to `end` (aware datetimes)."""

    person: str
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Rotation:
    """People take turns, each for `shift_s` (a day, a week), the first shift starting at
    `handoff` (an aware datetime in `time_zone`, so 08:00 stays 08:00 across DST)."""

    name: str
    tenant: str
    people: tuple[str, ...]
    handoff: datetime
    shift_s: float = 7 * 24 * 3600.0
    time_zone: str = "UTC"
    overrides: tuple[Override, ...] = ()


@dataclass(frozen=True, slots=True)
class Target:
    """Who a step tells: a person, or the `depth`-th in line of a rotation (1 = on call)."""

    kind: Literal["person", "oncall"]
    name: str
    depth: int = 1


@dataclass(frozen=True, slots=True)
class EscalationStep:
    after_s: float  # since the alert was raised; the first step's is 0
    notify: tuple[Target, ...]


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    tenant: str
    steps: tuple[EscalationStep, ...]
    device_types: tuple[str, ...] = ()  # empty: any
    rules: tuple[str, ...] = ()  # alert rules or automation names; empty: any
    devices: tuple[str, ...] = ()  # fnmatch patterns on the device id; empty: any
    min_severity: Severity = "info"
    kinds: tuple[SubjectKind, ...] = ("alert", "notice")
    group_wait_s: float = 30.0  # gather changes of one group into one message
    group_by: tuple[str, ...] = ("tenant", "rule")
    repeat_s: float | None = None  # remind while open and not acknowledged; None: never
    resolved: bool = True  # tell the people already told when it is resolved/acknowledged
    continue_matching: bool = False  # also try the routes after this one (Alertmanager's)
    line: int = 0  # where it is in the file, for messages


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    people: Mapping[str, Person]
    rotations: Mapping[str, Rotation]
    routes: tuple[Route, ...]
    source: str = "<notify file>"


@dataclass(frozen=True, slots=True)
class Subject:
    """One alert change or notice, as the notifier sees it (built from what ingest publishes:
    `storage.alert_record.parse_alert`, or a `devices.commands.Notice`)."""

    kind: SubjectKind
    id: str  # the alert id, or the notice's own id (automation, alert and ts)
    state: SubjectState
    tenant: str
    device_type: str
    device_id: str
    rule: str  # the alert's rule, or the automation's name
    severity: Severity
    message: str
    ts_ns: int
    acknowledged_by: str = ""

    @property
    def key(self) -> str:
        """Unique per change: the same change seen twice is notified once."""
        return f"{self.kind}:{self.id}:{self.state}"
