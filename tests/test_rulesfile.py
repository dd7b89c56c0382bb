"""Rules files: a partial change keeps the rest of the default, scopes resolve in the documented
order, every mistake is reported at its line with what to do, and `moclo rules list/check` show
it. No broker needed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from devices.catalogue import DEVICE_TYPES
from devices.place_rules import GeofenceRule
from devices.rules import RULE_KINDS, AbsenceRule, ThresholdRule
from ingest.alerts.rulebook import RuleBook
from ingest.alerts.rulekeys import DURATIONS, INTEGERS, NUMBERS, SCOPE_KEYS, SETTINGS, TEXTS
from ingest.alerts.rulesfile import (
    RulesFileError,
    load_rules_file,
    parse_rules,
    tally,
)
from tests.helpers import moclo

EXAMPLE = Path(__file__).parent.parent / "deploy" / "rules.example.toml"
COW = DEVICE_TYPES["cow_tracker"]


def rules(text: str) -> RuleBook:
    return parse_rules(text, "rules.toml")


def rule(
    book: RuleBook, name: str, tenant: str = "t", device: str = "d", type_: str = "cow_tracker"
) -> Any:
    """The rule called `name` that `rules_for` gives a device, or None."""
    found = {r.name: r for r in book.rules_for(tenant, type_, device)}
    return found.get(name)


def default(name: str, type_: str = "cow_tracker") -> Any:
    return next(r for r in DEVICE_TYPES[type_].rules if r.name == name)


def test_a_partial_change_keeps_the_rest_of_the_default() -> None:
    book = rules('[[rule]]\ndevice_type = "cow_tracker"\nname = "fever"\nraise_at = 39.8\n')
    fever = rule(book, "fever")
    assert isinstance(fever, ThresholdRule)
    assert fever.raise_at == 39.8
    before = default("fever")
    assert (fever.field, fever.direction, fever.clear_at, fever.message, fever.min_readings) == (
        before.field,
        before.direction,
        before.clear_at,
        before.message,
        before.min_readings,
    )
    # The other rules of the type are still there, untouched.
    assert {r.name for r in book.rules_for("t", "cow_tracker", "d")} == {r.name for r in COW.rules}


def test_scopes_resolve_type_wide_then_tenant_then_device() -> None:
    book = rules(
        """\
[[rule]]
device_type = "cow_tracker"
name = "fever"
tenant = "farm-a"
device = "cow-1"
for = "15m"

[[rule]]
device_type = "cow_tracker"
name = "fever"
raise_at = 39.7

[[rule]]
device_type = "cow_tracker"
name = "fever"
tenant = "farm-a"
raise_at = 40.0
severity = "critical"
"""
    )
    assert rule(book, "fever", "farm-b", "cow-1").raise_at == 39.7  # type-wide only
    tenant_wide = rule(book, "fever", "farm-a", "cow-2")
    assert (tenant_wide.raise_at, tenant_wide.severity, tenant_wide.for_s) == (40.0, "critical", 0)
    # The device's entry, written first, still starts from its tenant's.
    device = rule(book, "fever", "farm-a", "cow-1")
    assert (device.raise_at, device.severity, device.for_s) == (40.0, "critical", 900.0)
    assert device.clear_at == default("fever").clear_at


def test_effective_lists_what_rules_for_gives_and_where_it_comes_from() -> None:
    book = load_rules_file(EXAMPLE)
    for tenant, device in (("de-wei-farm", "cow-0001"), ("households", "car-0001"), ("x", "y")):
        for device_type in DEVICE_TYPES:
            effective = book.effective(device_type, tenant, device)
            assert tuple(r for r, _ in effective) == book.rules_for(tenant, device_type, device)
    origins = {r.name: o for r, o in book.effective("cow_tracker", "de-wei-farm")}
    assert origins["silent"] is None  # a default
    assert origins["fever"] is not None and origins["fever"].line == 15
    # Without a tenant only type-wide entries count.
    assert {r.name for r, _ in book.effective("cow_tracker")} == {r.name for r in COW.rules}


def test_enabled_false_switches_off_and_true_brings_back() -> None:
    book = rules(
        """\
[[rule]]
device_type = "cow_tracker"
name = "not_moving"
enabled = false

[[rule]]
device_type = "cow_tracker"
name = "not_moving"
tenant = "night-grazing"
enabled = true
"""
    )
    assert rule(book, "not_moving", "farm") is None
    assert rule(book, "fever", "farm") is not None
    assert rule(book, "not_moving", "night-grazing") == default("not_moving")
    assert tally(book) == (1, 0, 1)


def test_a_new_rule_with_shorthands_and_durations() -> None:
    book = rules(
        """\
[[rule]]
device_type = "thermostat"
tenant = "flats"
name = "too-warm"
kind = "threshold"
field = "temp_c"
above = 26
clear_at = 25
for = "0"
clear_for = 600
min_readings = 2
severity = "info"
message = "room at {value:.1f} °C"

[[rule]]
device_type = "thermostat"
name = "silent"
at_least = "1h"
after_intervals = 3
"""
    )
    warm = rule(book, "too-warm", "flats", type_="thermostat")
    assert warm == ThresholdRule(
        name="too-warm",
        field="temp_c",
        direction="above",
        raise_at=26,
        clear_at=25,
        clear_for_s=600,
        min_readings=2,
        severity="info",
        message="room at {value:.1f} °C",
    )
    assert rule(book, "too-warm", "other", type_="thermostat") is None
    silent = rule(book, "silent", type_="thermostat")
    assert isinstance(silent, AbsenceRule)
    assert (silent.at_least_s, silent.after_intervals) == (3600, 3)
    assert tally(book) == (1, 1, 0)


@pytest.mark.parametrize("zero", ['"0"', '"0s"', "0", "0.0", '"0m"'])
def test_zero_is_a_duration_where_it_means_at_once(zero: str) -> None:
    book = rules(
        f'[[rule]]\ndevice_type = "cow_tracker"\nname = "not_moving"\nfor = {zero}\n'
        f"clear_for = {zero}\n"
    )
    assert rule(book, "not_moving").for_s == 0


def test_a_geofence_can_change_shape() -> None:
    book = rules(
        """\
[[rule]]
device_type = "car"
name = "home"
kind = "geofence"
where = "inside"
center = [52.07, 4.30]
radius_m = 500
severity = "info"
message = "home"

[[rule]]
device_type = "car"
tenant = "jansen"
name = "home"
polygon = [
  [52.06, 4.29],
  [52.08, 4.29],
  [52.08, 4.31],
]
"""
    )
    assert rule(book, "home", type_="car").center == (52.07, 4.30)
    fenced = rule(book, "home", "jansen", type_="car")
    assert isinstance(fenced, GeofenceRule)
    assert (fenced.center, fenced.radius_m, fenced.where) == (None, None, "inside")
    assert fenced.polygon is not None and len(fenced.polygon) == 3


def test_every_setting_of_every_kind_can_be_written() -> None:
    # A field added to a rule kind must get a TOML type in rulekeys.py, or it would reach the
    # dataclass unchecked.
    typed = set(DURATIONS) | NUMBERS | INTEGERS | TEXTS | {"center", "polygon"}
    for kind in RULE_KINDS:
        assert set(SETTINGS[kind]) <= typed, kind
        assert not set(SETTINGS[kind]) & set(SCOPE_KEYS)


FEVER = '[[rule]]\ndevice_type = "cow_tracker"\nname = "fever"\n'
PASTURE = """\
[[rule]]
device_type = "cow_tracker"
name = "pasture"
kind = "geofence"
where = "outside"
polygon = [
  [52.08, 5.11],
  [52.09, 5.11],
  [52.09, 5.12]
]
severity = "info"
message = "out"
"""


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        pytest.param(
            "[[rule]]\ndevice_type = cow_tracker\n", 2, "not valid TOML: Invalid value", id="toml"
        ),
        pytest.param('colour = "red"\n' + FEVER, 1, "unknown top-level key 'colour'", id="top-key"),
        pytest.param(
            '[rule]\ndevice_type = "cow_tracker"\n', 1, "write each rule as a [[rule]]", id="table"
        ),
        pytest.param(
            FEVER + "raise = 40\n",
            4,
            "rule fever (cow_tracker): unknown key 'raise' (did you mean raise_at?); "
            "a threshold rule takes severity, message, for,",
            id="unknown-key",
        ),
        pytest.param(
            FEVER + 'window = "1h"\n',
            4,
            "unknown key 'window' (window is a setting of delta rules)",
            id="key-of-another-kind",
        ),
        pytest.param(
            '[[rule]]\nname = "fever"\ndevice_type = "cow"\n',
            3,
            "rule fever (cow): device_type 'cow' is unknown; known: blood_pressure, car, cow_",
            id="device-type",
        ),
        pytest.param(
            '\n[[rule]]\nname = "fever"\n',
            2,
            "rule fever (?): device_type is missing; known: blood_pressure,",
            id="no-device-type",
        ),
        pytest.param(
            FEVER + 'tenant = "De Wei"\n',
            4,
            "tenant 'De Wei' must match ^[a-z0-9][a-z0-9-]{0,62}$",
            id="tenant-id",
        ),
        pytest.param(
            FEVER + 'device = "cow-1"\n', 4, "device needs tenant too", id="device-without-tenant"
        ),
        pytest.param(
            '[[rule]]\ndevice_type = "cow_tracker"\nname = "Fever"\n',
            3,
            "rule Fever (cow_tracker): name 'Fever' must match ^[a-z0-9][a-z0-9_-]{0,62}$",
            id="name",
        ),
        pytest.param(
            FEVER + "raise_at = 40\n\n" + FEVER + "clear_at = 39\n",
            6,
            "set twice for the same scope (first at line 1): merge the two entries",
            id="duplicate",
        ),
        pytest.param(
            '[[rule]]\ndevice_type = "cow_tracker"\nname = "fevr"\nraise_at = 40\n',
            3,
            "there is no rule fevr (did you mean fever?) to change (cow_tracker rules: fever, "
            "not_moving, in_heat, calving_soon, silent); to add a new rule, give kind = one of",
            id="new-without-kind",
        ),
        pytest.param(
            FEVER + 'kind = "delta"\n',
            4,
            "fever is a threshold rule: leave kind out to change it, or give the new delta rule "
            "a name of its own",
            id="kind-mismatch",
        ),
        pytest.param(
            '[[rule]]\ndevice_type = "cow_tracker"\nname = "hot"\nkind = "level"\n',
            4,
            "kind 'level' must be one of threshold, delta, baseline, absence, geofence",
            id="unknown-kind",
        ),
        pytest.param(
            '[[rule]]\ndevice_type = "cow_tracker"\nname = "hot"\nkind = "threshold"\n'
            'field = "body_temp_c"\n',
            1,
            "a new threshold rule needs severity, message, direction, raise_at, clear_at "
            "(above = X or below = X give both)",
            id="new-missing-settings",
        ),
        pytest.param(
            FEVER + 'for = "15 min"\n',
            4,
            'for = \'15 min\' is not a duration: use e.g. "90s", "15m", "2h", "1d" or a '
            "number of seconds, or 0",
            id="duration",
        ),
        pytest.param(
            '[[rule]]\ndevice_type = "cow_tracker"\nname = "silent"\nat_least = "0"\n',
            4,
            'at_least = \'0\' is not a duration: use e.g. "90s", "15m", "2h", "1d" or a '
            "number of seconds, more than zero",
            id="zero-at-least",
        ),
        pytest.param(
            FEVER + 'raise_at = "40"\n', 4, "raise_at must be a number, not '40'", id="type"
        ),
        pytest.param(
            FEVER + "min_readings = 2.5\n",
            4,
            "min_readings must be a whole number, not 2.5",
            id="integer",
        ),
        pytest.param(
            FEVER + "\nabove = 39.0\n",
            5,
            "clear_at must be <= raise_at when the direction is 'above' (the default has "
            "clear_at = 39.2; give it here too)",
            id="merge-clash",
        ),
        pytest.param(
            FEVER + "above = 40\nraise_at = 40\n",
            4,
            "above = X stands for direction = 'above' and raise_at = X: give one of raise_at or "
            "above",
            id="shorthand-clash",
        ),
        pytest.param(
            FEVER + 'severity = "high"\n',
            4,
            "severity must be one of info, warning, critical",
            id="severity",
        ),
        pytest.param(
            FEVER + 'message = "fever {temp}"\n',
            4,
            "message names {temp}; it may use baseline, delta, distance_m, eta, field, minutes,",
            id="message",
        ),
        pytest.param(
            FEVER + 'field = "temperature"\n',
            4,
            "cow_tracker readings have no field 'temperature' (they have body_temp_c, activity,",
            id="field",
        ),
        pytest.param(
            '[[rule]]\ndevice_type = "thermostat"\nname = "heater_failure"\n'
            'while_field = "temp_c"\n',
            4,
            "while_field 'temp_c' must be a true/false field",
            id="while-field",
        ),
        pytest.param(
            '[[rule]]\ndevice_type = "cow_tracker"\nname = "sleepy"\nenabled = false\n',
            4,
            "there is no rule sleepy to switch off; cow_tracker rules: fever, not_moving,",
            id="disable-unknown",
        ),
        pytest.param(
            FEVER + "enabled = false\nraise_at = 40\n",
            4,
            "a rule switched off takes no settings: remove raise_at, or enabled = false",
            id="disabled-with-settings",
        ),
        pytest.param(
            FEVER + 'enabled = "no"\n', 4, "enabled must be true or false, not 'no'", id="enabled"
        ),
        pytest.param(
            '[[rule]]\ndevice_type = "car"\nname = "home"\nkind = "geofence"\nwhere = "inside"\n'
            "center = [52.0, 4.3]\nradius_m = 100\npolygon = [[1, 2], [2, 3], [3, 4]]\n"
            'severity = "info"\nmessage = "home"\n',
            6,
            "give either center and radius_m (a circle) or polygon",
            id="two-shapes",
        ),
        pytest.param(
            PASTURE.replace("[52.09, 5.12]", "[52.09]"),
            6,
            "each polygon corner must be [lat, lon] in degrees, e.g. [52.09, 5.12], not [52.09]",
            id="polygon-corner",
        ),
        pytest.param(
            PASTURE + "margin = 3\n",
            13,
            "unknown key 'margin' (did you mean margin_m?)",
            id="key-after-a-multi-line-array",
        ),
    ],
)
def test_each_mistake_is_reported_at_its_line(text: str, line: int, message: str) -> None:
    with pytest.raises(RulesFileError) as caught:
        rules(text)
    problems = caught.value.problems
    assert problems[0].startswith(f"rules.toml:{line}: "), problems
    assert message in problems[0], problems
    assert str(caught.value) == "\n".join(problems)


def test_every_problem_is_reported_at_once_in_line_order() -> None:
    text = (
        'oops = 1\n[[rule]]\ndevice_type = "cow"\nname = "x"\n\n'
        '[[rule]]\ndevice_type = "cow_tracker"\nname = "fever"\nabove = "hot"\nfor = "soon"\n'
    )
    with pytest.raises(RulesFileError) as caught:
        rules(text)
    lines = [p.split(":")[1] for p in caught.value.problems]
    assert lines == ["1", "3", "9", "10"], caught.value.problems


def test_an_unreadable_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(RulesFileError, match=r"missing\.toml: cannot read the rules file"):
        load_rules_file(tmp_path / "missing.toml")


def test_the_example_file_loads_and_shows_each_kind() -> None:
    book = load_rules_file(EXAMPLE)
    assert book.source == str(EXAMPLE)
    kinds = {o.rule.kind for o in book.overrides if o.rule is not None}
    assert kinds == set(RULE_KINDS)
    assert any(o.rule is None for o in book.overrides)
    fever = rule(book, "fever", "de-wei-farm", "cow-0007")
    assert (fever.raise_at, fever.for_s, fever.severity) == (39.8, 900, "critical")
    assert rule(book, "not_moving", "de-wei-farm") is None
    assert rule(book, "not_moving", "another-farm") is not None
    assert rule(book, "near_home", "households", "car-0001", "car") is not None
    assert rule(book, "near_home", "households", "car-0002", "car") is None


def test_cli_lists_the_rules_as_a_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOCLO_RULES_FILE", str(EXAMPLE))  # --file's default
    done = moclo("rules", "list", "--type", "cow_tracker", "--tenant", "de-wei-farm")
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    columns = ["TYPE", "NAME", "KIND", "SEVERITY", "RAISED WHEN", "RESOLVED WHEN", "FROM"]
    assert re.split(r"\s{2,}", header) == columns
    by_name = {row.split()[1]: row for row in rows}
    assert set(by_name) == {"fever", "in_heat", "calving_soon", "silent", "left_pasture"}
    assert "body_temp_c >= 39.8 (for 15m, 3 readings in a row)" in by_name["fever"]
    assert by_name["fever"].endswith(f"{EXAMPLE}:15")
    assert by_name["silent"].endswith("default")


def test_cli_lists_the_rules_as_json(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(FEVER + 'tenant = "farm"\nabove = 40\n')
    done = moclo("rules", "list", "--file", str(path), "--tenant", "farm", "--json")
    assert done.returncode == 0, done.stderr
    listed = {r["name"]: r for r in json.loads(done.stdout) if r["type"] == "cow_tracker"}
    assert listed["fever"]["from"] == f"{path}:1"
    assert listed["fever"]["tenant"] == "farm"
    assert listed["fever"]["settings"]["raise_at"] == 40
    assert listed["silent"]["from"] == "default"
    assert {r["type"] for r in json.loads(done.stdout)} == set(DEVICE_TYPES)


def test_cli_check_summarises_a_good_file() -> None:
    done = moclo("rules", "check", str(EXAMPLE))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{EXAMPLE}: 8 rules OK (2 overrides, 5 new, 1 disabled)\n"


def test_cli_check_exits_2_with_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(FEVER + "raise = 40\n\n" + '[[rule]]\ndevice_type = "cow"\nname = "x"\n')
    done = moclo("rules", "check", str(path))
    assert done.returncode == 2
    assert done.stdout == ""
    problems = done.stderr.splitlines()
    assert [p.split(": rule")[0] for p in problems] == [f"{path}:4", f"{path}:7"]
    listed = moclo("rules", "list", "--file", str(path))
    assert listed.returncode == 2
    assert listed.stderr == done.stderr


def test_list_without_a_file_shows_the_defaults_and_checks_its_flags(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from moclo.rules_cli import list_rules

    assert list_rules(file=None, as_json=True) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed) == sum(len(d.rules) for d in DEVICE_TYPES.values())
    assert {r["from"] for r in listed} == {"default"}
    assert list_rules(file=None, device_id="cow-1") == 2
    assert "--device needs --tenant" in capsys.readouterr().err
    assert list_rules(file=None, tenant="De Wei") == 2
    assert "--tenant 'De Wei' must match" in capsys.readouterr().err
