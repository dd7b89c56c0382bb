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
            problem = self.rule_problem(rule)
            if problem is not None:
                raise ValueError(f"{self.name}: rule {rule.name}: {problem}")

    def rule_problem(self, rule: Rule) -> str | None:
        """Why `rule` cannot watch this type's readings, or None if it can."""
        fields = self.reading.model_fields
        flag = getattr(rule, "while_field", None)
        for name in rule.fields:
            if name not in self.reading.measurement_fields:
                known = ", ".join(self.reading.measurement_fields)
                return f"{self.name} readings have no field {name!r} (they have {known})"
            kind = fields[name].annotation
            if name == flag:
                if kind is not bool:
                    return f"while_field {name!r} must be a true/false field"
            elif kind not in (int, float):
                return f"field {name!r} is not a number"
        return None

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of one reading as it travels on the wire."""
        schema = self.reading.model_json_schema()
        schema["title"] = self.name
        schema["description"] = self.description
        if self.example:
            schema["examples"] = [self.example]
        return schema
