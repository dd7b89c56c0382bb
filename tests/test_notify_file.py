"""The notify file: what it says becomes the model, and every kind of mistake is reported at
its own line with what to write, never showing a channel's URL (a secret)."""

from __future__ import annotations

import string
from datetime import UTC, datetime, time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notify.file import NotifyFileError, load_notify_file, parse_notify
from notify.model import EscalationStep, Target

SECRET = "tk_9f8e7d6c5b4a"  # in every channel URL of the tests; must never be shown
ENVIRON = {"BAKKER_URL": f"ntfys://ntfy.example.org/{SECRET}"}

PEOPLE = f"""\
[[people]]
name = "dr-jansen"
tenants = ["cardiology"]
time_zone = "Europe/Amsterdam"
account = "jansen"
channels = [
  {{ url = "mailtos://jansen:{SECRET}@smtp.example.org?to=j@example.org", label = "jansen mail" }},
]
quiet_hours = [ {{ from = "22:00", to = "07:00", breakthrough = "critical" }} ]

[[people]]
name = "dr-bakker"
tenants = ["cardiology"]
channels = [ {{ url_env = "BAKKER_URL" }} ]

[[people]]
name = "dr-visser"
tenants = ["cardiology"]
channels = [ {{ url = "pover://user@{SECRET}" }} ]

[[people]]
name = "farmer"
tenants = ["de-wei-farm"]
channels = [ {{ url = "ntfy://{SECRET}" }} ]
"""

ROTATION = """
[[rotations]]
name = "cardiology"
tenant = "cardiology"
people = ["dr-jansen", "dr-bakker", "dr-visser"]
shift = "7d"
handoff = "2026-11-30T08:00"
time_zone = "Europe/Amsterdam"
overrides = [ { person = "dr-visser", from = "2026-12-24T18:00", to = "2026-12-27T08:00" } ]
"""

ROUTE = """
[[routes]]
name = "pacemakers"
tenant = "cardiology"
device_types = ["pacemaker"]
min_severity = "warning"
group_wait = "10s"
repeat = "1h"
steps = [ { after = "0s", notify = ["oncall:cardiology"] },
          { after = "10m", notify = ["oncall:cardiology#2"] },
          { after = "20m", notify = ["dr-visser"] } ]
"""


def parse(text: str) -> object:
    return parse_notify(text, "notify.toml", environ=ENVIRON)


def test_the_contracts_sketch_reads_as_written() -> None:
    config = parse_notify(PEOPLE + ROTATION + ROUTE, "notify.toml", environ=ENVIRON)
    jansen = config.people["dr-jansen"]
    assert (jansen.tenants, jansen.time_zone, jansen.account) == (
        ("cardiology",), "Europe/Amsterdam", "jansen",
    )  # fmt: skip
    assert jansen.quiet_hours[0].start == time(22) and jansen.quiet_hours[0].end == time(7)
    assert config.people["dr-bakker"].channels[0].url == ENVIRON["BAKKER_URL"]
    assert config.people["dr-bakker"].account == "dr-bakker"  # the name, when none is given
    rotation = config.rotations["cardiology"]
    assert rotation.handoff == datetime(2026, 11, 30, 7, tzinfo=UTC)  # 08:00 CET
    assert rotation.shift_s == 7 * 86400
    assert rotation.overrides[0].start == datetime(2026, 12, 24, 17, tzinfo=UTC)
    (route,) = config.routes
    assert route.steps == (
        EscalationStep(0, (Target("oncall", "cardiology", 1),)),
        EscalationStep(600, (Target("oncall", "cardiology", 2),)),
        EscalationStep(1200, (Target("person", "dr-visser"),)),
    )
    assert (route.group_wait_s, route.repeat_s, route.min_severity) == (10, 3600, "warning")
    assert route.line == (PEOPLE + ROTATION + ROUTE).split("\n").index("[[routes]]") + 1


def test_one_step_can_be_written_as_notify_and_defaults_are_filled_in() -> None:
    config = parse(PEOPLE + '[[routes]]\nname = "any"\ntenant = "de-wei-farm"\nnotify = "farmer"\n')
    (route,) = config.routes  # type: ignore[attr-defined]
    assert route.steps == (EscalationStep(0, (Target("person", "farmer"),)),)
    assert (route.group_wait_s, route.repeat_s, route.resolved) == (30, None, True)
    assert (route.kinds, route.group_by, route.min_severity) == (
        ("alert", "notice"), ("tenant", "rule"), "info",
    )  # fmt: skip


def test_channel_urls_come_from_a_file_or_the_environment_and_never_show(tmp_path: Path) -> None:
    secret_file = tmp_path / "jansen-url"
    secret_file.write_text(f"json://hooks.example.org/{SECRET}\n")
    text = PEOPLE.replace('url = "pover://user@' + SECRET + '"', f'url_file = "{secret_file}"')
    path = tmp_path / "notify.toml"
    path.write_text(text + ROTATION + ROUTE)
    config = load_notify_file(path, environ=ENVIRON)
    (channel,) = config.people["dr-visser"].channels
    assert channel.url == f"json://hooks.example.org/{SECRET}"  # stripped of its newline
    assert channel.shown == "json://hooks.example.org"
    assert SECRET in repr(ENVIRON)  # positive control: repr would show it if it were there
    assert SECRET not in repr(config)


CH = 'channels = [ { url = "ntfy://x" } ]'
ALL = PEOPLE + ROTATION + ROUTE


def someone(*lines: str) -> str:
    """The people, and one more ("a") whose table goes on with `lines`."""
    return PEOPLE + '[[people]]\nname = "a"\ntenants = ["t"]\n' + "\n".join(lines)


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old  # else the case would test nothing
    return text.replace(old, new, 1)


# Each file has one mistake, on the line marked `# <-`; the message says what to write.
BAD_CASES = {
    "toml-syntax": ('[[people]]\nname = "x # <-', "not valid TOML"),
    "unknown-table": (
        '[[person]] # <-\nname = "x"',
        "unknown table 'person' (did you mean 'people'?)",
    ),
    "unknown-person-key": (
        someone("chanels = [] # <-", CH),
        "unknown key 'chanels' (did you mean 'channels'?)",
    ),
    "person-without-name": (
        PEOPLE + '[[people]] # <-\ntenants = ["t"]\n' + CH,
        "name is required",
    ),
    "bad-tenant": (
        PEOPLE + '[[people]]\nname = "a"\ntenants = ["Big Farm"] # <-\n' + CH,
        "tenants: 'Big Farm' is not allowed",
    ),
    "no-channel": (someone("channels = [] # <-"), "needs at least one channel"),
    "missing-channels": (
        PEOPLE + '[[people]] # <-\nname = "a"\ntenants = ["t"]',
        "needs at least one channel",
    ),
    "two-url-sources": (
        someone(
            "channels = [",
            '  { url = "ntfy://x" },',
            f'  {{ url = "ntfy://{SECRET}", url_env = "X" }}, # <-',
            "]",
        ),
        "give exactly one of url, url_file",
    ),
    "url-file-unreadable": (
        someone(f'channels = [ {{ url_file = "/nonexistent/{SECRET}" }} ] # <-'),
        "cannot be read (No such file or directory)",
    ),
    "url-env-unset": (
        someone(f'channels = [ {{ url_env = "{SECRET.upper()}" }} ] # <-'),
        "url_env is not set or empty",
    ),
    "not-a-url": (
        someone(f'channels = [ {{ url = "{SECRET}" }} ] # <-'),
        "is not an Apprise URL",
    ),
    "unknown-channel-key": (
        someone(f'channels = [ {{ url = "ntfy://{SECRET}", lable = "x" }} ] # <-'),
        "unknown key 'lable' (did you mean 'label'?)",
    ),
    "bad-label": (
        someone('channels = [ { url = "ntfy://x", label = 7 } ] # <-'),
        "label must be text",
    ),
    "bad-account": (someone('account = "two words" # <-', CH), "account must be the login"),
    "bad-time-zone": (
        someone('time_zone = "Europe/Amsterdamm" # <-', CH),
        "is not a time zone: write an IANA name",
    ),
    "quiet-not-a-time": (
        someone(CH, "quiet_hours = [", '  { from = "22:00", to = "7am" }, # <-', "]"),
        "from and to are times of day",
    ),
    "quiet-empty": (
        someone(CH, 'quiet_hours = [ { from = "22:00", to = "22:00" } ] # <-'),
        "give the window a length",
    ),
    "quiet-breakthrough": (
        someone(CH, 'quiet_hours = [ { from = "22:00", to = "7:00", breakthrough = "x" } ] # <-'),
        "breakthrough is the lowest severity",
    ),
    "person-twice": (
        PEOPLE + '[[people]]\nname = "farmer" # <-\ntenants = ["t"]\n' + CH,
        "the name is used twice (first at line",
    ),
    "unknown-rotation-key": (
        PEOPLE + ROTATION + 'shifts = "1d" # <-',
        "unknown key 'shifts' (did you mean 'shift'?)",
    ),
    "rotation-unknown-person": (
        edit(PEOPLE + ROTATION, '"dr-visser"]', '"dr-vissr"] # <-'),
        "'dr-vissr' is not in [[people]] (did you mean 'dr-visser'?)",
    ),
    "rotation-other-tenant": (
        edit(PEOPLE + ROTATION, '"dr-visser"]', '"farmer"] # <-'),
        "farmer does not serve tenant cardiology",
    ),
    "rotation-person-twice": (
        edit(PEOPLE + ROTATION, '"dr-visser"]', '"dr-jansen"] # <-'),
        "dr-jansen is in people twice",
    ),
    "bad-shift": (edit(PEOPLE + ROTATION, '"7d"', '"a week" # <-'), "is not a duration"),
    "zero-shift": (edit(PEOPLE + ROTATION, '"7d"', '"0s" # <-'), "more than zero"),
    "tiny-shift": (edit(PEOPLE + ROTATION, '"7d"', '"1ms" # <-'), "must be at least 1800 seconds"),
    "far-off-handoff": (
        edit(PEOPLE + ROTATION, '"2026-11-30T08:00"', '"0001-01-01T00:00" # <-'),
        "handoff is not a date and time: when the first shift starts (1970 to 2200)",
    ),
    "no-handoff": (
        edit(
            edit(PEOPLE + ROTATION, 'handoff = "2026-11-30T08:00"', ""),
            "[[rotations]]",
            "[[rotations]] # <-",
        ),
        "handoff is required",
    ),
    "bad-handoff": (
        edit(PEOPLE + ROTATION, '"2026-11-30T08:00"', '"next monday" # <-'),
        "handoff is not a date and time",
    ),
    "override-unknown-person": (
        edit(PEOPLE + ROTATION, 'person = "dr-visser"', 'person = "dr-who"').replace(
            '08:00" } ]', '08:00" } ] # <-'
        ),
        "'dr-who' is not in [[people]]",
    ),
    "override-backwards": (
        edit(PEOPLE + ROTATION, '"2026-12-27T08:00" } ]', '"2026-12-20T08:00" } ] # <-'),
        "from before to",
    ),
    "overrides-overlap": (
        edit(
            edit(PEOPLE + ROTATION, '08:00" } ]', '08:00" } ] # <-'),
            "overrides = [ ",
            'overrides = [\n { person = "dr-bakker", from = "2026-12-24", to = "2026-12-25" },\n ',
        ),
        "overlaps the override of dr-bakker",
    ),
    "unknown-route-key": (
        ALL + "min_severty = 'critical' # <-",
        "unknown key 'min_severty' (did you mean 'min_severity'?)",
    ),
    "unknown-device-type": (
        edit(ALL, '["pacemaker"]', '["pacemakers"] # <-'),
        "'pacemakers' is unknown (did you mean 'pacemaker'?)",
    ),
    "bad-severity": (
        edit(ALL, '"warning"', '"high" # <-'),
        "min_severity must be one of info, warning, critical",
    ),
    "bad-group-wait": (
        edit(ALL, '"10s"', '"soon" # <-'),
        "group_wait: 'soon' is not a duration",
    ),
    "bad-repeat": (
        edit(ALL, '"1h"', '"0s" # <-'),
        "repeat: '0s': a duration must be more than zero",
    ),
    "tiny-repeat": (edit(ALL, '"1h"', '"1s" # <-'), "repeat: must be at least 60 seconds"),
    "bad-group-by": (ALL + 'group_by = ["cow"] # <-', "group_by: 'cow' is not allowed"),
    "bad-kinds": (
        ALL + 'kinds = ["alerts"] # <-',
        "kinds: 'alerts' is not allowed: alert or notice",
    ),
    "bad-boolean": (ALL + 'resolved = "yes" # <-', "resolved must be true or false"),
    "bad-devices": (ALL + 'devices = ["pm 7"] # <-', "devices: 'pm 7' is not allowed"),
    "first-step-later": (
        edit(edit(ALL, '{ after = "0s"', '{ after = "1m"'), "] },", "] }, # <-"),
        'step 1: after must be "0s"',
    ),
    "steps-not-increasing": (
        edit(
            ALL,
            '{ after = "20m", notify = ["dr-visser"] } ]',
            '{ after = "5m", notify = ["dr-visser"] } ] # <-',
        ),
        "step 3: after must be later than step 2's",
    ),
    "step-bad-after": (
        edit(edit(ALL, '{ after = "10m",', '{ after = "later",'), '#2"] },', '#2"] }, # <-'),
        "step 2: after: 'later' is not a duration",
    ),
    "step-unknown-key": (
        edit(edit(ALL, '"10m", notify', '"10m", tell'), '#2"] },', '#2"] }, # <-'),
        "unknown key 'tell'",
    ),
    "unknown-target-person": (
        edit(ALL, '["dr-visser"] } ]', '["dr-visse"] } ] # <-'),
        "'dr-visse' is not in [[people]] (did you mean 'dr-visser'?)",
    ),
    "target-not-of-tenant": (
        edit(ALL, '["dr-visser"] } ]', '["farmer"] } ] # <-'),
        "farmer does not serve tenant cardiology",
    ),
    "unknown-rotation": (
        edit(ALL, '["oncall:cardiology"] },', '["oncall:cardiolgy"] }, # <-'),
        "there is no rotation 'cardiolgy' (did you mean 'cardiology'?)",
    ),
    "too-deep": (
        edit(ALL, '"oncall:cardiology#2"] },', '"oncall:cardiology#4"] }, # <-'),
        "has 3 people in line: #1 to #3",
    ),
    "bad-target": (
        edit(ALL, '"oncall:cardiology#2"] },', '"cardiology#2"] }, # <-'),
        "is not a target",
    ),
    "rotation-of-another-tenant": (
        PEOPLE + ROTATION + '[[routes]]\nname = "cows"\ntenant = "de-wei-farm"\n'
        'notify = ["oncall:cardiology"] # <-',
        "rotation cardiology is tenant cardiology's, and this route is tenant de-wei-farm's",
    ),
    "steps-and-notify": (
        edit(ALL, '["oncall:cardiology"] },', '["oncall:cardiology"] }, # <-')
        + 'notify = ["dr-visser"]',
        "give either notify",
    ),
    "no-steps": (
        PEOPLE + '[[routes]] # <-\nname = "cows"\ntenant = "de-wei-farm"',
        "give either notify",
    ),
    "route-without-tenant": (
        PEOPLE + '[[routes]] # <-\nname = "cows"\nnotify = ["farmer"]',
        "tenant is required",
    ),
}


def _marked(text: str) -> int:
    return next(n for n, line in enumerate(text.split("\n"), 1) if line.endswith("# <-"))


@pytest.mark.parametrize(("text", "expected"), list(BAD_CASES.values()), ids=list(BAD_CASES))
def test_each_kind_of_mistake_is_reported_at_its_line(text: str, expected: str) -> None:
    with pytest.raises(NotifyFileError) as caught:
        parse(text)
    problems = caught.value.problems
    assert len(problems) >= 1
    line = _marked(text)
    # A step, a channel or an override is pointed at where its own `{` opens, however the
    # array is spread over lines; the marker is on the line of the mistake.
    assert any(p.startswith(f"notify.toml:{line}: ") and expected in p for p in problems), (
        f"wanted line {line}: …{expected}…; got {problems}"
    )
    assert SECRET not in str(caught.value) and SECRET.upper() not in str(caught.value)


def test_every_problem_is_reported_at_once_in_the_order_of_the_file() -> None:
    text = PEOPLE + ROTATION.replace('"7d"', '"soon"') + ROUTE.replace('"warning"', '"high"')
    with pytest.raises(NotifyFileError) as caught:
        parse(text)
    lines = [int(p.split(":")[1]) for p in caught.value.problems]
    assert len(lines) == 2 and lines == sorted(lines)


def test_an_unreadable_file_says_so_without_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(NotifyFileError, match=r"missing.toml: cannot read the notify file: No "):
        load_notify_file(tmp_path / "missing.toml")


VALID = ALL


@settings(max_examples=300, deadline=None)
@given(
    line=st.integers(min_value=0, max_value=VALID.count("\n")),
    replacement=st.text(alphabet=string.printable, max_size=60),
)
def test_a_damaged_file_is_a_file_error_never_a_crash_nor_a_leak(
    line: int, replacement: str
) -> None:
    lines = VALID.split("\n")
    lines[line] = replacement
    try:
        parse("\n".join(lines))
    except NotifyFileError as exc:
        assert SECRET not in str(exc)
        assert all(p.startswith("notify.toml:") for p in exc.problems)


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(min_value=0, max_value=len(VALID)))
def test_a_file_cut_short_is_a_file_error_never_a_crash_nor_a_leak(cut: int) -> None:
    try:
        parse(VALID[:cut])
    except NotifyFileError as exc:
        assert SECRET not in str(exc)


EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "notify.example.toml"
EXAMPLE_ENVIRON = {
    name: f"ntfys://ntfy.example.org/{SECRET}-{name.lower()}"
    for name in ("FARMER_NTFY_URL", "VET_PUSHOVER_URL", "VET_MAIL_URL", "JANSEN_NTFY_URL",
                 "BAKKER_SIGNAL_URL", "VISSER_NTFY_URL")
}  # fmt: skip


def test_the_example_file_parses_and_says_what_its_comments_say() -> None:
    config = load_notify_file(EXAMPLE, environ=EXAMPLE_ENVIRON)
    routes = {r.name: r for r in config.routes}
    assert routes["calving"].steps[0].notify == (
        Target("person", "farmer"),
        Target("person", "vet"),
    )
    assert routes["cow-fever"].group_wait_s == 60
    assert [s.after_s for s in routes["pacemakers"].steps] == [0, 600, 1200]
    assert routes["pacemakers"].steps[2].notify == (Target("person", "cardiology-ward"),)
    assert config.rotations["cardiology"].people == ("dr-jansen", "dr-bakker", "dr-visser")
    assert config.people["vet"].tenants == ("de-wei-farm", "kooistra-farm")
    assert SECRET not in repr(config)


def test_the_example_file_without_its_environment_says_which_lines_need_it() -> None:
    with pytest.raises(NotifyFileError) as caught:
        load_notify_file(EXAMPLE, environ={})
    assert len(caught.value.problems) == len(EXAMPLE_ENVIRON)
    assert all("url_env is not set" in p for p in caught.value.problems)
