"""Building a rules file's entries into rules: each entry starts from the rule it changes (see
`base_of`), and is checked by that rule kind's own dataclass and against the device type's
readings. `rulesfile.py` reads the file into entries and reports the problems."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

from core.toml_lines import TomlLines
from devices.place_rules import GeofenceRule
from devices.rules import RULE_KINDS, Rule
from devices.types import DeviceType
from ingest.alerts.rulebook import Override
from ingest.alerts.rulekeys import (
    ANY_SETTING,
    DURATIONS,
    SCOPE_KEYS,
    SETTINGS,
    TOML_KEY,
    convert,
    did_you_mean,
    inherited,
    number,
    unknown_key,
)

Key = tuple[str, str, str | None, str | None]  # device type, name, tenant, device


class Broken:
    """An entry that has problems: entries that would start from it are not built."""


BROKEN = Broken()


def key_of(o: Override) -> Key:
    return (o.device_type, o.name, o.tenant, o.device_id)


def base_of(
    key: Key, defaults: Mapping[str, Rule], entries: Mapping[Key, Override | Broken]
) -> Override | Rule | Broken | None:
    """What the entry at `key` starts from: the nearest wider entry that is not switched off,
    else the type's default, else None (a new rule)."""
    device_type, name, tenant, device = key
    wider: list[Key] = []
    if device is not None:
        wider.append((device_type, name, tenant, None))
    if tenant is not None:
        wider.append((device_type, name, None, None))
    for parent in wider:
        found = entries.get(parent)
        if isinstance(found, Broken) or (found is not None and found.rule is not None):
            return found
    return defaults.get(name)


@dataclasses.dataclass
class Entry:
    index: int  # the n-th [[rule]]
    table: dict[str, Any]
    device_type: str
    name: str
    tenant: str | None = None
    device: str | None = None
    kind: str | None = None
    enabled: bool = True
    usable: bool = True  # its scope is sound, so its rule can be built

    @property
    def key(self) -> Key:
        return (self.device_type, self.name, self.tenant, self.device)

    @property
    def scope(self) -> int:
        return 2 if self.device is not None else 1 if self.tenant is not None else 0

    @property
    def settings(self) -> dict[str, Any]:
        return {k: v for k, v in self.table.items() if k not in SCOPE_KEYS}


class RuleBuilder:
    """Builds entries into overrides, widest scope first; each problem goes to `report`."""

    def __init__(
        self,
        lines: TomlLines,
        catalogue: Mapping[str, DeviceType],
        report: Callable[[Entry | None, int, str], None],
    ) -> None:
        self.lines = lines
        self.catalogue = catalogue
        self.report = report
        self.reported = 0

    def _problem(self, entry: Entry, line: int, what: str) -> None:
        self.reported += 1
        self.report(entry, line, what)

    def build(self, entry: Entry, built: Mapping[Key, Override | Broken]) -> Override | Broken:
        device = self.catalogue.get(entry.device_type)
        defaults = {r.name: r for r in device.rules} if device else {}
        base = base_of(entry.key, defaults, built) if device and entry.usable else BROKEN
        if isinstance(base, Broken):
            # Still worth saying which keys are wrong; the rest would only be echoes.
            self._unknown_keys(entry, entry.kind)
            return BROKEN
        base_rule = base.rule if isinstance(base, Override) else base
        kind = entry.kind or (base_rule.kind if base_rule else None)
        before = self.reported
        self._unknown_keys(entry, kind)
        self._refuse(entry, base_rule, defaults)
        values = self._values(entry, entry.settings) if entry.enabled else {}
        if self.reported > before or kind is None:
            return BROKEN
        if not entry.enabled:
            return self._override(entry, None)
        return self._make(entry, kind, base, values, device)

    def _refuse(self, entry: Entry, base_rule: Rule | None, defaults: Mapping[str, Rule]) -> None:
        """Reports an entry that cannot start from what it names: nothing to switch off or to
        change, settings on a rule switched off, or another kind than the rule it changes."""
        index, settings = entry.index, entry.settings
        names = f"{entry.device_type} rules: {', '.join(defaults) or 'none'}"
        hint = did_you_mean(entry.name, defaults)
        key, what = "", ""
        if not entry.enabled and base_rule is None:
            key, what = "enabled", f"there is no rule {entry.name}{hint} to switch off; {names}"
        elif not entry.enabled and settings:
            key = "enabled"
            what = f"a rule switched off takes no settings: remove {', '.join(settings)}, "
            what += "or enabled = false"
        elif base_rule is None and entry.kind is None:
            key = "name"
            what = f"there is no rule {entry.name}{hint} to change ({names}); to add a new "
            what += f"rule, give kind = one of {', '.join(RULE_KINDS)}"
        elif base_rule is not None and entry.kind not in (None, base_rule.kind):
            key = "kind"
            what = f"{entry.name} is a {base_rule.kind} rule: leave kind out to change it, or "
            what += f"give the new {entry.kind} rule a name of its own"
        if what:
            self._problem(entry, self.lines.key(index, key), what)

    def _make(
        self,
        entry: Entry,
        kind: str,
        base: Override | Rule | None,
        values: dict[str, Any],
        device: DeviceType | None,
    ) -> Override | Broken:
        """The entry's rule, new or changed from `base`, checked by its dataclass and device."""
        index, settings, header = entry.index, entry.settings, self.lines.table(entry.index)
        base_rule = base.rule if isinstance(base, Override) else base
        rule_class = RULE_KINDS[kind]
        if base_rule is None:
            missing = [
                TOML_KEY.get(f.name, f.name)
                for f in dataclasses.fields(rule_class)
                if f.name not in values and f.name != "name" and f.default is dataclasses.MISSING
            ]
            if missing:
                also = " (above = X or below = X give both)" if "raise_at" in missing else ""
                self._problem(entry, header, f"a new {kind} rule needs {', '.join(missing)}{also}")
                return BROKEN
        elif isinstance(base_rule, GeofenceRule):
            # A polygon replaces the circle, and the other way round.
            if "polygon" in values and not {"center", "radius_m"} & set(values):
                values.update(center=None, radius_m=None)
            elif {"center", "radius_m"} & set(values) and "polygon" not in values:
                values["polygon"] = None
        try:
            rule = (
                rule_class(name=entry.name, **values)
                if base_rule is None
                else dataclasses.replace(base_rule, **values)
            )
        except (ValueError, TypeError) as exc:
            where = f"line {base.line}" if isinstance(base, Override) else "the default"
            line = self._blame(index, str(exc), settings)
            self._problem(entry, line, str(exc) + inherited(str(exc), base_rule, settings, where))
            return BROKEN
        trouble = device.rule_problem(rule) if device else None
        if trouble is not None:
            self._problem(entry, self._blame(index, trouble, settings), trouble)
            return BROKEN
        return self._override(entry, rule)

    def _override(self, entry: Entry, rule: Rule | None) -> Override:
        line = self.lines.table(entry.index)
        return Override(entry.device_type, rule, entry.name, entry.tenant, entry.device, line)

    def _unknown_keys(self, entry: Entry, kind: str | None) -> None:
        allowed = SETTINGS[kind] if kind else sorted(ANY_SETTING)
        for key in entry.settings:
            if key not in allowed:
                self._problem(
                    entry, self.lines.key(entry.index, key), unknown_key(key, kind, allowed)
                )

    def _values(self, entry: Entry, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The dataclass arguments for `settings`; problems are reported as found."""
        values: dict[str, Any] = {}
        for key, value in settings.items():
            try:
                if key in ("above", "below"):
                    clash = [
                        k for k in ("direction", "raise_at", "above", "below") if k in settings
                    ]
                    if len(clash) > 1:
                        raise ValueError(
                            f"{key} = X stands for direction = {key!r} and raise_at = X: "
                            f"give one of {' or '.join(clash)}"
                        )
                    values.update(direction=key, raise_at=number(key, value))
                else:
                    values[DURATIONS.get(key, key)] = convert(key, value)
            except ValueError as exc:
                self._problem(entry, self.lines.key(entry.index, key), str(exc))
        return values

    def _blame(self, index: int, message: str, settings: Mapping[str, Any]) -> int:
        """The line of the given key the message names first, else the table's header."""
        named = []
        for key, value in settings.items():
            words = {key, "direction", "raise_at"} if key in ("above", "below") else {key}
            if isinstance(value, str):
                words.add(value)
            for word in words:
                found = re.search(rf"(?<![\w.]){re.escape(word)}(?![\w.])", message)
                if found:
                    named.append((found.start(), key))
        return self.lines.key(index, min(named)[1]) if named else self.lines.table(index)
