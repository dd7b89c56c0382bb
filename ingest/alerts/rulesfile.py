"""Rules files (TOML): change, add or switch off alert rules per device type, tenant or device.

    # Rules override or add to each device type's defaults.
    [[rule]]
    device_type = "cow_tracker"     # required
    name = "fever"                  # an existing default: only the keys you give change
    tenant = "de-wei-farm"          # optional: only this tenant
    device = "cow-0007"             # optional (needs tenant): only this device
    raise_at = 39.8
    clear_at = 39.4
    for = "15m"                     # durations as strings: for, clear_for, window, recent,
                                    # min_history, at_least
    severity = "critical"

    [[rule]]                        # a new rule: kind required
    device_type = "car"
    tenant = "family-jansen"
    device = "car-0001"
    name = "near_home"
    kind = "geofence"
    where = "inside"
    center = [52.09, 5.12]
    radius_m = 1000
    severity = "info"
    message = "near home: turn the lights on"

    [[rule]]
    device_type = "cow_tracker"
    name = "not_moving"
    enabled = false                 # switch a rule off (here, or for a tenant/device)

Keys are the settings of the rule kinds in `devices/rules.py`, by their field names, except:

- durations drop the `_s`: `for`, `clear_for`, `window`, `recent`, `min_history`, `at_least`,
  `within`, `detour`, written as "90s", "15m", "2h", "1d" or a plain number of seconds; 0
  ("0", "0s") is allowed for all but `at_least`;
- `center = [lat, lon]` and `polygon = [[lat, lon], ...]` (degrees) for geofences and arrivals;
- `above = 39.5` is short for `direction = "above"` and `raise_at = 39.5`; `below = 5` likewise.

Which rule an entry starts from: the rule that applies at its scope without it, that is the
same tenant's entry (for a device entry), else the type-wide entry in the file, else the device
type's default with that name. It keeps everything the entry does not give (so `kind` may be
left out, and if given must match). A name found nowhere is a new rule: it needs `kind` and that
kind's required settings. `enabled = false` switches a rule off at the entry's scope, and
`enabled = true` brings back a rule switched off at a wider one. Precedence when ingest picks a
device's rules is in `rulebook.py`: default < type-wide < tenant < device.

Every rule is built by its own dataclass, so it is checked exactly as the defaults are, and
against the device type's readings (`DeviceType.rule_problem`). All problems are reported at
once, one a line, as `FILE:LINE: rule NAME (TYPE): what is wrong and what is allowed`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from core.toml_lines import TomlLines, error_line
from devices.catalogue import DEVICE_TYPES
from devices.rules import RULE_KINDS
from devices.topics import IDENTIFIER_RULE, is_identifier
from devices.types import DeviceType
from ingest.alerts.rulebook import Override, RuleBook
from ingest.alerts.rulebuild import Broken, Entry, Key, RuleBuilder, base_of, key_of
from ingest.alerts.rulekeys import (
    NAME_RULE,
    RULE_NAME,
    did_you_mean,
)


class RulesFileError(ValueError):
    """A rules file that cannot be used. The message is every problem, one a line, each as
    `FILE:LINE: rule NAME (TYPE): what is wrong and what is allowed`; also in `problems`."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


class Tally(NamedTuple):
    overrides: int  # entries that change a rule that exists anyway
    new: int  # entries that add a rule
    disabled: int  # entries that switch a rule off


def load_rules_file(path: Path) -> RuleBook:
    """The defaults with the rules file at `path` on top; RulesFileError lists what is wrong."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM from Windows editors is fine
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesFileError([f"{path}: cannot read the rules file: {exc}"]) from None
    return parse_rules(text, str(path))


def parse_rules(
    text: str, source: str, *, catalogue: Mapping[str, DeviceType] = DEVICE_TYPES
) -> RuleBook:
    """The defaults with the rules in `text` on top; `source` names the file in messages."""
    return RuleBook(_Parser(text, source, catalogue).parse(), catalogue=catalogue, source=source)


def tally(book: RuleBook) -> Tally:
    """How many of the book's entries change, add or switch off a rule."""
    entries: dict[Key, Override | Broken] = {key_of(o): o for o in book.overrides}
    counts = {"overrides": 0, "new": 0, "disabled": 0}
    for o in book.overrides:
        device = book.catalogue.get(o.device_type)
        defaults = {r.name: r for r in device.rules} if device else {}
        base = base_of(key_of(o), defaults, entries)
        counts["disabled" if o.rule is None else "new" if base is None else "overrides"] += 1
    return Tally(**counts)


class _Parser:
    def __init__(self, text: str, source: str, catalogue: Mapping[str, DeviceType]) -> None:
        self.text = text
        self.source = source
        self.catalogue = catalogue
        self.lines = TomlLines(text, "rule")
        self.problems: list[tuple[int, str]] = []

    def parse(self) -> list[Override]:
        try:
            document = tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as exc:
            line = error_line(exc, self.text)
            raise RulesFileError([f"{self.source}:{line}: not valid TOML: {exc}"]) from None
        entries = [e for i, t in enumerate(self._tables(document)) if (e := self._entry(i, t))]
        first: dict[Key, int] = {}
        for entry in (e for e in entries if e.usable):
            line = self.lines.table(entry.index)
            if entry.key in first:
                what = f"set twice for the same scope (first at line {first[entry.key]})"
                self._problem(entry, line, what + ": merge the two entries")
                entry.usable = False
            first.setdefault(entry.key, line)
        # Wider scopes first, so that narrower entries can start from them (see base_of).
        builder = RuleBuilder(self.lines, self.catalogue, self._problem)
        built: dict[Key, Override | Broken] = {}
        overrides: dict[int, Override] = {}
        for entry in sorted(entries, key=lambda e: e.scope):
            result = builder.build(entry, built)
            built.setdefault(entry.key, result)
            if isinstance(result, Override):
                overrides[entry.index] = result
        if self.problems:
            self.problems.sort(key=lambda p: p[0])  # stable: a line's problems stay in order
            raise RulesFileError([text for _, text in self.problems])
        return [overrides[i] for i in sorted(overrides)]

    def _problem(self, entry: Entry | None, line: int, what: str) -> None:
        label = f"rule {entry.name} ({entry.device_type}): " if entry else ""
        self.problems.append((line, f"{self.source}:{line}: {label}{what}"))

    def _tables(self, document: dict[str, Any]) -> list[Any]:
        for key in document:
            if key != "rule":
                hint = did_you_mean(key, ["rule"])
                self._problem(
                    None,
                    self.lines.top(key),
                    f"unknown top-level key {key!r}{hint}; a rules file holds only [[rule]] tables",
                )
        tables = document.get("rule", [])
        if not isinstance(tables, list):
            self._problem(None, self.lines.top("rule"), "write each rule as a [[rule]] table")
            return []
        return tables

    def _entry(self, index: int, table: Any) -> Entry | None:
        line = self.lines.table(index)
        if not isinstance(table, dict):
            self._problem(None, line, "write each rule as a [[rule]] table of keys")
            return None
        device_type, name = table.get("device_type"), table.get("name")
        entry = Entry(
            index,
            table,
            device_type=device_type if isinstance(device_type, str) else "?",
            name=name if isinstance(name, str) else f"#{index + 1}",
        )

        def bad(key: str, what: str) -> None:
            self._problem(entry, self.lines.key(index, key) if key in table else line, what)
            entry.usable = False

        if not isinstance(device_type, str) or device_type not in self.catalogue:
            hint = did_you_mean(str(device_type), self.catalogue)
            what = "is missing" if device_type is None else f"{device_type!r} is unknown{hint}"
            bad("device_type", f"device_type {what}; known: {', '.join(sorted(self.catalogue))}")
        if name is None:
            bad("name", "name is missing: a rule's name to change it, or a new name (and kind)")
        elif not isinstance(name, str) or not RULE_NAME.fullmatch(name):
            bad("name", f"name {name!r} must match {NAME_RULE} (it becomes an InfluxDB tag)")
        for key in ("tenant", "device"):
            value = table.get(key)
            if value is None:
                continue
            if not isinstance(value, str) or not is_identifier(value):
                bad(key, f"{key} {value!r} must match {IDENTIFIER_RULE}")
            else:
                setattr(entry, key, value)
        if "device" in table and "tenant" not in table:
            bad("device", "device needs tenant too: a device id is only unique within a tenant")
        enabled = table.get("enabled", True)
        if not isinstance(enabled, bool):
            bad("enabled", f"enabled must be true or false, not {enabled!r}")
        else:
            entry.enabled = enabled
        kind = table.get("kind")
        if kind is not None:
            if not isinstance(kind, str) or kind not in RULE_KINDS:
                bad("kind", f"kind {kind!r} must be one of {', '.join(RULE_KINDS)}")
            else:
                entry.kind = kind
        return entry
