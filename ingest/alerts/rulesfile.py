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

import dataclasses
import difflib
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from core.durations import parse_duration
from devices.catalogue import DEVICE_TYPES
from devices.rules import RULE_KINDS, GeofenceRule, Rule
from devices.topics import IDENTIFIER_RULE, is_identifier
from devices.types import DeviceType
from ingest.alerts.rulebook import Override, RuleBook

# Rule names become InfluxDB tag values and parts of alert ids: keep them plain.
NAME_RULE = "^[a-z0-9][a-z0-9_-]{0,62}$"
_NAME = re.compile(NAME_RULE)

SCOPE_KEYS = ("device_type", "name", "tenant", "device", "kind", "enabled")
DURATIONS = {
    "for": "for_s",
    "clear_for": "clear_for_s",
    "window": "window_s",
    "recent": "recent_s",
    "min_history": "min_history_s",
    "at_least": "at_least_s",
    "within": "within_s",
    "detour": "detour_s",
}
_TOML_KEY = {field: key for key, field in DURATIONS.items()}
_NUMBERS = {"raise_at", "clear_at", "after_intervals", "radius_m", "margin_m", "above", "below"}
_NUMBERS |= {"arrived_m", "min_speed_kmh"}
_INTEGERS = {"min_readings", "clear_readings"}
_TEXTS = {"field", "direction", "while_field", "compare", "baseline", "where"}
_TEXTS |= {"lat_field", "lon_field", "speed_field", "severity", "message"}
_ZERO = re.compile(r"\s*0+(?:\.0*)?\s*(?:ms|s|m|h|d)?\s*")


def _settings_of(cls: type[Rule]) -> tuple[str, ...]:
    keys = [_TOML_KEY.get(f.name, f.name) for f in dataclasses.fields(cls) if f.name != "name"]
    return (*keys, "above", "below") if "direction" in keys else tuple(keys)


# The TOML keys each kind takes, besides SCOPE_KEYS.
SETTINGS: dict[str, tuple[str, ...]] = {k: _settings_of(cls) for k, cls in RULE_KINDS.items()}
_ANY_SETTING = {key for keys in SETTINGS.values() for key in keys}


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
    entries: dict[_Key, Override | _Broken] = {_key_of(o): o for o in book.overrides}
    counts = {"overrides": 0, "new": 0, "disabled": 0}
    for o in book.overrides:
        device = book.catalogue.get(o.device_type)
        defaults = {r.name: r for r in device.rules} if device else {}
        base = _base_of(_key_of(o), defaults, entries)
        counts["disabled" if o.rule is None else "new" if base is None else "overrides"] += 1
    return Tally(**counts)


_Key = tuple[str, str, str | None, str | None]  # device type, name, tenant, device


class _Broken:
    """An entry that has problems: entries that would start from it are not built."""


_BROKEN = _Broken()


def _key_of(o: Override) -> _Key:
    return (o.device_type, o.name, o.tenant, o.device_id)


def _base_of(
    key: _Key, defaults: Mapping[str, Rule], entries: Mapping[_Key, Override | _Broken]
) -> Override | Rule | _Broken | None:
    """What the entry at `key` starts from: the nearest wider entry that is not switched off,
    else the type's default, else None (a new rule)."""
    device_type, name, tenant, device = key
    wider: list[_Key] = []
    if device is not None:
        wider.append((device_type, name, tenant, None))
    if tenant is not None:
        wider.append((device_type, name, None, None))
    for parent in wider:
        found = entries.get(parent)
        if isinstance(found, _Broken) or (found is not None and found.rule is not None):
            return found
    return defaults.get(name)


@dataclasses.dataclass
class _Entry:
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
    def key(self) -> _Key:
        return (self.device_type, self.name, self.tenant, self.device)

    @property
    def scope(self) -> int:
        return 2 if self.device is not None else 1 if self.tenant is not None else 0

    @property
    def settings(self) -> dict[str, Any]:
        return {k: v for k, v in self.table.items() if k not in SCOPE_KEYS}


class _Lines:
    """Where things are in the text: tomllib reports no positions for values."""

    _RULE = re.compile(r"""\s*\[\[\s*(?:rule|"rule"|'rule')\s*\]\]\s*(?:#.*)?""")
    # A table header, not a row of a multi-line array such as a polygon's corners.
    _HEADER = re.compile(r"""\s*\[\[?\s*[A-Za-z_"'][^\],#]*\]\]?\s*(?:#.*)?""")

    def __init__(self, text: str) -> None:
        self.lines = text.split("\n")  # TOML counts lines by \n alone
        self.rules = [n for n, line in enumerate(self.lines, 1) if self._RULE.fullmatch(line)]
        self.headers = [n for n, line in enumerate(self.lines, 1) if self._HEADER.fullmatch(line)]

    def table(self, index: int) -> int:
        """The line of the index-th `[[rule]]` header."""
        if index < len(self.rules):
            return self.rules[index]
        return self.top("rule")  # written as an inline array: the best we can do

    def key(self, index: int, key: str) -> int:
        """The line of `key` in the index-th `[[rule]]` table, else the table's header."""
        start = self.table(index)
        end = next((h for h in self.headers if h > start), len(self.lines) + 1)
        return self._find(key, start + 1, end) or start

    def top(self, key: str) -> int:
        """The line of a top-level key (before any table) or table, else 1."""
        end = self.headers[0] if self.headers else len(self.lines) + 1
        header = re.compile(rf"""\s*\[\[?\s*["']?{re.escape(key)}["']?\s*[\].]""")
        tables = (n for n, line in enumerate(self.lines, 1) if header.match(line))
        return self._find(key, 1, end) or next(tables, 1)

    def _find(self, key: str, start: int, end: int) -> int:
        pattern = re.compile(rf"""\s*["']?{re.escape(key)}["']?\s*[=.]""")
        lines = range(start, min(end, len(self.lines) + 1))
        return next((n for n in lines if pattern.match(self.lines[n - 1])), 0)


class _Parser:
    def __init__(self, text: str, source: str, catalogue: Mapping[str, DeviceType]) -> None:
        self.text = text
        self.source = source
        self.catalogue = catalogue
        self.lines = _Lines(text)
        self.problems: list[tuple[int, str]] = []

    def parse(self) -> list[Override]:
        try:
            document = tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as exc:
            line = _error_line(exc, self.text)
            raise RulesFileError([f"{self.source}:{line}: not valid TOML: {exc}"]) from None
        entries = [e for i, t in enumerate(self._tables(document)) if (e := self._entry(i, t))]
        first: dict[_Key, int] = {}
        for entry in (e for e in entries if e.usable):
            line = self.lines.table(entry.index)
            if entry.key in first:
                what = f"set twice for the same scope (first at line {first[entry.key]})"
                self._problem(entry, line, what + ": merge the two entries")
                entry.usable = False
            first.setdefault(entry.key, line)
        # Wider scopes first, so that narrower entries can start from them (see _base_of).
        built: dict[_Key, Override | _Broken] = {}
        overrides: dict[int, Override] = {}
        for entry in sorted(entries, key=lambda e: e.scope):
            result = self._build(entry, built)
            built.setdefault(entry.key, result)
            if isinstance(result, Override):
                overrides[entry.index] = result
        if self.problems:
            self.problems.sort(key=lambda p: p[0])  # stable: a line's problems stay in order
            raise RulesFileError([text for _, text in self.problems])
        return [overrides[i] for i in sorted(overrides)]

    def _problem(self, entry: _Entry | None, line: int, what: str) -> None:
        label = f"rule {entry.name} ({entry.device_type}): " if entry else ""
        self.problems.append((line, f"{self.source}:{line}: {label}{what}"))

    def _tables(self, document: dict[str, Any]) -> list[Any]:
        for key in document:
            if key != "rule":
                hint = _did_you_mean(key, ["rule"])
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

    def _entry(self, index: int, table: Any) -> _Entry | None:
        line = self.lines.table(index)
        if not isinstance(table, dict):
            self._problem(None, line, "write each rule as a [[rule]] table of keys")
            return None
        device_type, name = table.get("device_type"), table.get("name")
        entry = _Entry(
            index,
            table,
            device_type=device_type if isinstance(device_type, str) else "?",
            name=name if isinstance(name, str) else f"#{index + 1}",
        )

        def bad(key: str, what: str) -> None:
            self._problem(entry, self.lines.key(index, key) if key in table else line, what)
            entry.usable = False

        if not isinstance(device_type, str) or device_type not in self.catalogue:
            hint = _did_you_mean(str(device_type), self.catalogue)
            what = "is missing" if device_type is None else f"{device_type!r} is unknown{hint}"
            bad("device_type", f"device_type {what}; known: {', '.join(sorted(self.catalogue))}")
        if name is None:
            bad("name", "name is missing: a rule's name to change it, or a new name (and kind)")
        elif not isinstance(name, str) or not _NAME.fullmatch(name):
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

    def _build(self, entry: _Entry, built: Mapping[_Key, Override | _Broken]) -> Override | _Broken:
        index, settings, header = entry.index, entry.settings, self.lines.table(entry.index)
        device = self.catalogue.get(entry.device_type)
        defaults = {r.name: r for r in device.rules} if device else {}
        base = _base_of(entry.key, defaults, built) if device and entry.usable else _BROKEN
        if isinstance(base, _Broken):
            # Still worth saying which keys are wrong; the rest would only be echoes.
            self._unknown_keys(entry, entry.kind)
            return _BROKEN
        base_rule = base.rule if isinstance(base, Override) else base
        kind = entry.kind or (base_rule.kind if base_rule else None)
        before = len(self.problems)
        self._unknown_keys(entry, kind)
        names = f"{entry.device_type} rules: {', '.join(defaults) or 'none'}"
        hint = _did_you_mean(entry.name, defaults)
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
        values = self._values(entry, settings) if entry.enabled else {}
        if len(self.problems) > before or kind is None:
            return _BROKEN
        if not entry.enabled:
            return self._override(entry, None)

        rule_class = RULE_KINDS[kind]
        if base_rule is None:
            missing = [
                _TOML_KEY.get(f.name, f.name)
                for f in dataclasses.fields(rule_class)
                if f.name not in values and f.name != "name" and f.default is dataclasses.MISSING
            ]
            if missing:
                also = " (above = X or below = X give both)" if "raise_at" in missing else ""
                self._problem(entry, header, f"a new {kind} rule needs {', '.join(missing)}{also}")
                return _BROKEN
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
            self._problem(entry, line, str(exc) + _inherited(str(exc), base_rule, settings, where))
            return _BROKEN
        trouble = device.rule_problem(rule) if device else None
        if trouble is not None:
            self._problem(entry, self._blame(index, trouble, settings), trouble)
            return _BROKEN
        return self._override(entry, rule)

    def _override(self, entry: _Entry, rule: Rule | None) -> Override:
        line = self.lines.table(entry.index)
        return Override(entry.device_type, rule, entry.name, entry.tenant, entry.device, line)

    def _unknown_keys(self, entry: _Entry, kind: str | None) -> None:
        allowed = SETTINGS[kind] if kind else sorted(_ANY_SETTING)
        for key in entry.settings:
            if key not in allowed:
                self._problem(
                    entry, self.lines.key(entry.index, key), _unknown_key(key, kind, allowed)
                )

    def _values(self, entry: _Entry, settings: Mapping[str, Any]) -> dict[str, Any]:
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
                    values.update(direction=key, raise_at=_number(key, value))
                else:
                    values[DURATIONS.get(key, key)] = _convert(key, value)
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


def _convert(key: str, value: Any) -> Any:
    if key in DURATIONS:
        return _duration(key, value)
    if key in _NUMBERS:
        return _number(key, value)
    if key in _INTEGERS and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{key} must be a whole number, not {value!r}")
    if key in _TEXTS and not isinstance(value, str):
        raise ValueError(f"{key} must be a string (in quotes), not {value!r}")
    if key == "center":
        return _point(key, value)
    if key == "polygon":
        if not isinstance(value, list):
            raise ValueError("polygon must be a list of corners: [[lat, lon], [lat, lon], ...]")
        return tuple(_point("each polygon corner", corner) for corner in value)
    return value  # a setting without a TOML type here: the dataclass judges it


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number, not {value!r}")
    return float(value)


def _duration(key: str, value: Any) -> float:
    zero_ok = key != "at_least"
    allowed = 'e.g. "90s", "15m", "2h", "1d" or a number of seconds'
    allowed += ", or 0" if zero_ok else ", more than zero"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{key} must be a duration ({allowed}), not {value!r}")
    if isinstance(value, str):
        if zero_ok and _ZERO.fullmatch(value):
            return 0.0
        try:
            return parse_duration(value)
        except ValueError:
            raise ValueError(f"{key} = {value!r} is not a duration: use {allowed}") from None
    if not (value >= 0 if zero_ok else value > 0) or value == float("inf"):
        raise ValueError(f"{key} = {value!r} is not a duration: use {allowed}")
    return float(value)


def _point(key: str, value: Any) -> tuple[float, float]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, int | float) for v in value)
    ):
        raise ValueError(f"{key} must be [lat, lon] in degrees, e.g. [52.09, 5.12], not {value!r}")
    return (float(value[0]), float(value[1]))


def _unknown_key(key: str, kind: str | None, allowed: Sequence[str]) -> str:
    elsewhere = [k for k, keys in SETTINGS.items() if key in keys]
    if kind is not None and elsewhere:
        hint = f" ({key} is a setting of {' and '.join(elsewhere)} rules)"
    else:
        hint = _did_you_mean(key, [*allowed, *SCOPE_KEYS])
    what = f"a {kind} rule" if kind else "a rule"
    return (
        f"unknown key {key!r}{hint}; {what} takes {', '.join(allowed)} "
        f"(besides {', '.join(SCOPE_KEYS)})"
    )


def _inherited(message: str, base: Rule | None, settings: Mapping[str, Any], where: str) -> str:
    """For a change that clashes with what it kept: the kept settings the message names."""
    if base is None:
        return ""
    given = set(settings)
    if given & {"above", "below"}:
        given |= {"direction", "raise_at"}
    kept = []
    for f in dataclasses.fields(base):
        key = _TOML_KEY.get(f.name, f.name)
        if key not in given and re.search(rf"(?<![\w.]){re.escape(key)}(?![\w.])", message):
            kept.append(f"{key} = {getattr(base, f.name)!r}")
    return f" ({where} has {', '.join(kept)}; give it here too)" if kept else ""


def _did_you_mean(word: str, choices: Sequence[str] | Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _error_line(exc: tomllib.TOMLDecodeError, text: str) -> int:
    found = re.search(r"\(at line (\d+), column \d+\)", str(exc))
    if found:
        return int(found.group(1))
    return text.count("\n") + 1  # "(at end of document)"
