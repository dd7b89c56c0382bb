"""Automations files (TOML): when an alert of a rule changes on a device, act on another.

    [[automation]]
    name = "porch_light_when_near_home"   # required: names the automation in records
    tenant = "households"                 # required: a trigger and its action share a tenant
    device_type = "car"                   # required: the type of the device that triggers
    rule = "near_home"                    # required: the rule whose alert triggers
    device = "car-0001"                   # optional: only this device's alert
    on = "raised"                         # raised (default) or resolved
    enabled = true                        # default true; false keeps it in the file, idle

    [automation.command]                  # one action: a command ...
    device_type = "light"
    device = "light-0001"
    name = "switch"
    args = { state = "on" }

    # ... or a desired state:   [automation.desired]  device_type, device, state = {...}
    # ... or a notice:          [automation.notice]   message = "{device}: {message}"

A trigger is an alert change, so everything the rules engine does to damp noise (readings in
a row, hysteresis, a geofence's margin) is done before an automation sees it, and one alert
episode triggers an automation once: the action's id is made from the automation's name and
the alert's id and state, and the gateway executes an id once, also across restarts.

Actions are checked against the catalogue when the file is read: the command exists for the
type, its arguments are within bounds, a desired state names the type's settings. An
automation acts with an operator's clearance; a command only a clinician may send (a
pacemaker's) is refused here: a person must decide it. A notice's message may name
{tenant}, {device}, {device_type}, {rule}, {message} (the alert's) and {state}.

All problems are reported at once, one a line, as `FILE:LINE: automation NAME: what is wrong`.
"""

from __future__ import annotations

import string
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import ValidationError

from core.toml_lines import TomlLines, error_line
from devices.catalogue import DEVICE_TYPES
from devices.commands import admits
from devices.rules import Rule
from devices.topics import is_identifier
from devices.types import DeviceType

Trigger = Literal["raised", "resolved"]
TRIGGERS: tuple[Trigger, ...] = ("raised", "resolved")
ENTRY_KEYS = ("name", "tenant", "device_type", "rule", "device", "on", "enabled")
ACTIONS = ("command", "desired", "notice")
NOTICE_FIELDS = frozenset({"tenant", "device", "device_type", "rule", "message", "state"})
MAX_NOTICE = 500
# An automation acts as this role (devices/commands.py `admits`): an operator's clearance.
ROLE = "operator"


class AutomationsFileError(ValueError):
    """A file that cannot be used; the message lists every problem as FILE:LINE: ..."""


@dataclass(frozen=True, slots=True)
class CommandAction:
    device_type: str
    device: str
    name: str
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DesiredAction:
    device_type: str
    device: str
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NoticeAction:
    message: str


Action = CommandAction | DesiredAction | NoticeAction


@dataclass(frozen=True, slots=True)
class Automation:
    name: str
    tenant: str
    device_type: str
    rule: str
    device: str | None
    on: Trigger
    enabled: bool
    action: Action
    line: int = 0  # where its [[automation]] starts in its file, for messages

    def matches(self, tenant: str, device_type: str, device: str, rule: str, state: str) -> bool:
        """Whether an alert change (of this tenant, type, device, rule, to `state`) triggers
        this automation."""
        return (
            self.enabled
            and state == self.on
            and rule == self.rule
            and tenant == self.tenant
            and device_type == self.device_type
            and (self.device is None or device == self.device)
        )


class _Rules(Protocol):
    def rules_for(self, tenant: str, device_type: str, device_id: str) -> tuple[Rule, ...]: ...


def unknown_triggers(automations: Sequence[Automation], rules: _Rules, source: str) -> None:
    """AutomationsFileError if an enabled automation waits for a rule its device (or, with no
    device named, its type in its tenant) does not have: it would never act."""
    problems = []
    for a in automations:
        if not a.enabled:
            continue
        names = [r.name for r in rules.rules_for(a.tenant, a.device_type, a.device or "")]
        if a.rule not in names:
            scope = f"{a.device_type} {a.device}" if a.device else f"{a.device_type}s"
            problems.append(
                f"{source}:{a.line}: automation {a.name}: {scope} of tenant {a.tenant} have no "
                f"rule {a.rule!r} (theirs: {', '.join(names) or 'none'}); add it to the rules "
                "file (MOCLO_RULES_FILE), or name the device it is set for"
            )
    if problems:
        raise AutomationsFileError("\n".join(problems))


def load_automations_file(path: Path) -> tuple[Automation, ...]:
    """The automations in `path`; AutomationsFileError lists every problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AutomationsFileError(f"{path}: cannot read the automations file: {exc}") from None
    return parse_automations(text, str(path))


def parse_automations(
    text: str, source: str, *, catalogue: Mapping[str, DeviceType] = DEVICE_TYPES
) -> tuple[Automation, ...]:
    """The automations in `text`; `source` names the file in messages."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AutomationsFileError(f"{source}:{error_line(exc, text)}: {exc}") from None
    return _Parser(text, source, catalogue).parse(document)


class _Parser:
    def __init__(self, text: str, source: str, catalogue: Mapping[str, DeviceType]) -> None:
        self.lines = TomlLines(text, "automation")
        self.source = source
        self.catalogue = catalogue
        self.problems: list[tuple[int, str]] = []

    def parse(self, document: dict[str, Any]) -> tuple[Automation, ...]:
        unknown = [key for key in document if key != "automation"]
        for key in unknown:
            self._problem(self.lines.top(key), f"unknown top-level key {key!r}: use [[automation]]")
        entries = document.get("automation", [])
        if not isinstance(entries, list):
            self._problem(self.lines.top("automation"), "automation must be [[automation]] tables")
            entries = []
        found: list[Automation] = []
        names: set[str] = set()
        for index, entry in enumerate(entries):
            automation = self._entry(index, entry)
            if automation is None:
                continue
            if automation.name in names:
                self._problem(
                    self.lines.key(index, "name"),
                    f"automation {automation.name}: the name is used twice",
                )
            names.add(automation.name)
            found.append(automation)
        if self.problems:
            lines = sorted(self.problems)
            raise AutomationsFileError(
                "\n".join(f"{self.source}:{line}: {message}" for line, message in lines)
            )
        return tuple(found)

    def _problem(self, line: int, message: str) -> None:
        self.problems.append((line, message))

    def _entry(self, index: int, entry: Any) -> Automation | None:
        key_line = self.lines.key
        header = self.lines.table(index)
        if not isinstance(entry, dict):
            self._problem(header, "each [[automation]] must be a table")
            return None
        name = entry.get("name")
        label = f"automation {name}" if isinstance(name, str) else "automation"
        before = len(self.problems)

        def problem(key: str, message: str) -> None:
            self._problem(key_line(index, key) if key else header, f"{label}: {message}")

        for key in entry:
            if key not in ENTRY_KEYS and key not in ACTIONS:
                allowed = ", ".join((*ENTRY_KEYS, *ACTIONS))
                problem(key, f"unknown key {key!r}; an automation has {allowed}")
        if not (isinstance(name, str) and _plain(name)):
            problem("name", "name is required: lowercase letters, digits, - and _")
        tenant = entry.get("tenant")
        if not (isinstance(tenant, str) and is_identifier(tenant)):
            problem("tenant", "tenant is required: the tenant's id, as in the topics")
        device_type = entry.get("device_type")
        if device_type not in self.catalogue:
            known = ", ".join(sorted(self.catalogue))
            problem("device_type", f"device_type is required, one of {known}")
        rule = entry.get("rule")
        if not (isinstance(rule, str) and _plain(rule)):
            problem("rule", "rule is required: the name of the rule whose alert triggers")
        device = entry.get("device")
        if device is not None and not (isinstance(device, str) and is_identifier(device)):
            problem("device", "device must be a device id")
        on = entry.get("on", "raised")
        if on not in TRIGGERS:
            problem("on", f"on must be one of {', '.join(TRIGGERS)}, not {on!r}")
        enabled = entry.get("enabled", True)
        if not isinstance(enabled, bool):
            problem("enabled", "enabled must be true or false")
        action = self._action(index, entry, label)
        if len(self.problems) > before or action is None:
            return None
        return Automation(
            str(name), str(tenant), str(device_type), str(rule), device, on, enabled, action,
            header,
        )  # fmt: skip

    def _action(self, index: int, entry: dict[str, Any], label: str) -> Action | None:
        given = [key for key in ACTIONS if key in entry]
        if len(given) != 1:
            what = ", ".join(given) if given else "none"
            self._problem(
                self.lines.table(index),
                f"{label}: give exactly one action, [automation.command], "
                f"[automation.desired] or [automation.notice] (found: {what})",
            )
            return None
        kind = given[0]
        table = entry[kind]

        def problem(key: str, message: str) -> None:
            self._problem(self.lines.sub_key(index, kind, key), f"{label}: {kind}: {message}")

        if not isinstance(table, dict):
            problem("", "must be a table")
            return None
        if kind == "notice":
            return self._notice(table, problem)
        return self._device_action(kind, table, entry.get("tenant"), problem)

    def _notice(self, table: dict[str, Any], problem: Any) -> NoticeAction | None:
        for key in table:
            if key != "message":
                problem(key, f"unknown key {key!r}; a notice has message")
        message = table.get("message")
        if not (isinstance(message, str) and 0 < len(message) <= MAX_NOTICE):
            problem("message", f"message is required, up to {MAX_NOTICE} characters")
            return None
        try:
            names = {n for _, n, _, _ in string.Formatter().parse(message) if n is not None}
            if unknown := names - NOTICE_FIELDS:
                known = ", ".join(sorted(NOTICE_FIELDS))
                problem("message", f"message names {{{sorted(unknown)[0]}}}; it may use {known}")
                return None
            message.format(**{n: "x" for n in NOTICE_FIELDS})
        except (ValueError, KeyError, IndexError) as exc:
            problem("message", f"message is not a template: {exc}")
            return None
        return NoticeAction(message)

    def _device_action(
        self, kind: str, table: dict[str, Any], tenant: Any, problem: Any
    ) -> CommandAction | DesiredAction | None:
        allowed: tuple[str, ...] = (
            ("device_type", "device", "name", "args")
            if kind == "command"
            else ("device_type", "device", "state")
        )
        for key in table:
            if key not in allowed:
                problem(key, f"unknown key {key!r}; a {kind} has {', '.join(allowed)}")
        device = table.get("device")
        if not (isinstance(device, str) and is_identifier(device)):
            problem("device", f"device is required: the id of a device of tenant {tenant}")
        type_name = table.get("device_type")
        device_type = self.catalogue.get(type_name) if isinstance(type_name, str) else None
        if device_type is None:
            acting = sorted(n for n, t in self.catalogue.items() if t.commands or t.desired)
            problem("device_type", f"device_type is required, one of {', '.join(acting)}")
            return None
        if kind == "command":
            return self._command(device_type, str(device), table, problem)
        return self._desired(device_type, str(device), table, problem)

    def _command(
        self, device_type: DeviceType, device: str, table: dict[str, Any], problem: Any
    ) -> CommandAction | None:
        name = table.get("name")
        try:
            spec = device_type.command(str(name))
        except KeyError as exc:
            problem("name", str(exc.args[0]))
            return None
        if not admits(spec.clearance, ROLE):
            problem(
                "name",
                f"{device_type.name} {spec.name} needs a {spec.clearance}'s clearance; an "
                "automation acts as an operator, so a person must send it",
            )
            return None
        args = table.get("args", {})
        if not isinstance(args, dict):
            problem("args", 'args must be a table, e.g. args = { state = "on" }')
            return None
        try:
            checked = spec.arguments.model_validate(args)
        except ValidationError as exc:
            problem("args", _validation(exc))
            return None
        return CommandAction(device_type.name, device, spec.name, checked.model_dump())

    def _desired(
        self, device_type: DeviceType, device: str, table: dict[str, Any], problem: Any
    ) -> DesiredAction | None:
        spec = device_type.desired
        if spec is None:
            problem("device_type", f"{device_type.name} has no desired state")
            return None
        if not admits(spec.clearance, ROLE):
            problem("device_type", f"{device_type.name}'s desired state needs a {spec.clearance}")
            return None
        state = table.get("state")
        if not (isinstance(state, dict) and state):
            fields = ", ".join(spec.state.model_fields)
            problem("state", f"state is required: a table of {fields}")
            return None
        try:
            checked = spec.state.model_validate(state)
        except ValidationError as exc:
            problem("state", _validation(exc))
            return None
        return DesiredAction(device_type.name, device, checked.model_dump(exclude_unset=True))


def _plain(name: str) -> bool:
    return 0 < len(name) <= 63 and all(c.islower() or c.isdigit() or c in "-_" for c in name)


def _validation(exc: ValidationError) -> str:
    """pydantic's errors as one line: `setpoint_c: Input should be less than or equal to 35`."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "value"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
