"""The description of one device type: its reading model, its default rules, an example."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from devices.base import Reading
from devices.commands import CommandSpec, DesiredSpec
from devices.rules import Rule


@dataclass(frozen=True, slots=True)
class DeviceType:
    name: str
    description: str
    reading: type[Reading]
    rules: tuple[Rule, ...] = ()
    example: dict[str, Any] = field(default_factory=dict)
    # What the type can be told to do, and which of its settings a person may want.
    commands: tuple[CommandSpec, ...] = ()
    desired: DesiredSpec | None = None

    def __post_init__(self) -> None:
        names = [command.name for command in self.commands]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: two commands share a name: {names}")
        # A rule on a field the reading does not have would never fire; fail at import instead.
        for rule in self.rules:
            problem = self.rule_problem(rule)
            if problem is not None:
                raise ValueError(f"{self.name}: rule {rule.name}: {problem}")

    def command(self, name: str) -> CommandSpec:
        """The command called `name`; KeyError says which commands this type has."""
        for command in self.commands:
            if command.name == name:
                return command
        known = ", ".join(c.name for c in self.commands) or "none"
        raise KeyError(f"{self.name} has no command {name!r}; its commands: {known}")

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
