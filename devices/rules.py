"""Alert rules as data: what counts as trouble for a device type.

Rules are plain values so that a rules file can add or override them later; the engine that
evaluates them lives in `ingest/alerts.py`. A threshold rule has hysteresis: it raises when the
value crosses `raise_at` and resolves only once the value is back past `clear_at`, so a value
hovering at the threshold does not raise and resolve on every reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["info", "warning", "critical"]
Direction = Literal["above", "below"]


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    """Raise when `field` is at or above (`direction="above"`) or below `raise_at`."""

    name: str
    field: str
    direction: Direction
    raise_at: float
    clear_at: float
    severity: Severity
    message: str

    def __post_init__(self) -> None:
        # A clear level on the wrong side of the raise level would resolve at once.
        if self.direction == "above" and not self.clear_at <= self.raise_at:
            raise ValueError(f"rule {self.name}: clear_at must be <= raise_at for 'above'")
        if self.direction == "below" and not self.clear_at >= self.raise_at:
            raise ValueError(f"rule {self.name}: clear_at must be >= raise_at for 'below'")

    def is_triggered(self, value: float) -> bool:
        """True when the value is in alarm (the raise side of `raise_at`)."""
        if self.direction == "above":
            return value >= self.raise_at
        return value < self.raise_at

    def is_cleared(self, value: float) -> bool:
        """True when the value is back on the safe side of `clear_at`."""
        if self.direction == "above":
            return value < self.clear_at
        return value >= self.clear_at


Rule = ThresholdRule
