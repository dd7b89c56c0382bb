"""What every alert rule has, whatever its kind: a name, a severity, a message template, and
the lifecycle settings that damp noise and flapping (devices/rules.py says how they are
judged); and how durations read in rules."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import ClassVar, Literal

Severity = Literal["info", "warning", "critical"]


SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")


MAX_DURATION_S = 365 * 86_400.0


# What a rule's message may name; each kind fills the ones that mean something for it.
MESSAGE_FIELDS = frozenset(
    {"value", "baseline", "delta", "distance_m", "silent_for", "field", "eta", "minutes"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleBase:
    name: str
    severity: Severity
    message: str
    for_s: float = 0.0  # the condition holds this long before the alert is raised
    min_readings: int = 1  # ... and for this many consecutive readings
    clear_for_s: float = 0.0  # clear this long before the alert is resolved
    clear_readings: int = 1  # ... and for this many consecutive readings

    kind: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}")
        if not all(0 <= v <= MAX_DURATION_S for v in (self.for_s, self.clear_for_s)):
            raise ValueError("for and clear_for must be durations from zero to 365d")
        if self.min_readings < 1 or self.clear_readings < 1:
            raise ValueError("min_readings and clear_readings must be at least 1")
        try:
            parsed = list(string.Formatter().parse(self.message))
        except ValueError as exc:
            raise ValueError(f"message {self.message!r} is not a template: {exc}") from None
        for _, _, spec, _ in parsed:
            # `{value:{x}}` nests a lookup; `{value:.999999999f}` builds a gigabyte.
            if spec and ("{" in spec or any(int(n) > 40 for n in re.findall(r"\d+", spec))):
                raise ValueError(f"message {self.message!r}: format {spec!r} is not allowed")
        names = [name for _, name, _, _ in parsed]
        for name in names:
            if name is not None and name not in MESSAGE_FIELDS:
                known = ", ".join(sorted(MESSAGE_FIELDS))
                raise ValueError(f"message names {{{name}}}; it may use {known}")
        try:  # numbers are floats, silent_for and field are text: `{value:d}` cannot work
            self.message.format(
                value=1.5,
                baseline=1.5,
                delta=1.5,
                distance_m=1.5,
                silent_for="1m",
                field="f",
                eta="18:40 UTC",
                minutes=1.5,
            )
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            raise ValueError(f"message {self.message!r} cannot be filled in: {exc}") from None

    @property
    def fields(self) -> tuple[str, ...]:
        """The reading fields this rule reads (checked against the device type)."""
        return ()

    def damping(self) -> tuple[str, str]:
        """What holds an alert back: (before raising, before resolving)."""
        return (
            _damping(self.for_s, self.min_readings),
            _damping(self.clear_for_s, self.clear_readings),
        )


def _damping(seconds: float, readings: int) -> str:
    parts = []
    if seconds:
        parts.append(f"for {format_seconds(seconds)}")
    if readings > 1:
        parts.append(f"{readings} readings in a row")
    return f" ({', '.join(parts)})" if parts else ""


def format_seconds(seconds: float) -> str:
    """`90` → `1m30s`, `7200` → `2h`: how durations read in rule descriptions and messages."""
    remaining = round(seconds)
    if remaining <= 0:
        return f"{seconds:g}s"
    out = ""
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        if remaining >= size:
            out += f"{remaining // size}{unit}"
            remaining %= size
    return out
