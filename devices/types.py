"""The description of one device type: its reading model, its default rules, an example."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from devices.base import Reading
from devices.rules import Rule


@dataclass(frozen=True, slots=True)
class DeviceType:
    name: str
    description: str
    reading: type[Reading]
    rules: tuple[Rule, ...] = ()
    example: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A rule on a field the reading does not have would never fire; fail at import instead.
        for rule in self.rules:
            if rule.field not in self.reading.measurement_fields:
                raise ValueError(
                    f"{self.name}: rule {rule.name} watches unknown field {rule.field}"
                )

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of one reading as it travels on the wire."""
        schema = self.reading.model_json_schema()
        schema["title"] = self.name
        schema["description"] = self.description
        if self.example:
            schema["examples"] = [self.example]
        return schema
