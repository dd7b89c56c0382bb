"""`moclo notify check` and `moclo oncall show`, run as a user would: the notify file alone,
no broker or database; channel URLs (secrets) never printed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serve.notify_file import NotifyFileReader
from tests.helpers import moclo

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "notify.example.toml"
SECRET = "tk_5e4d3c2b1a"
VARIABLES = (
    "FARMER_NTFY_URL",
    "VET_PUSHOVER_URL",
    "VET_MAIL_URL",
    "JANSEN_NTFY_URL",
    "BAKKER_SIGNAL_URL",
    "VISSER_NTFY_URL",
)


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example's channel URLs, each holding SECRET, as the notifier's environment."""
    for name in VARIABLES:
        monkeypatch.setenv(name, f"ntfys://ntfy.example.org/{SECRET}-{name.lower()}")
    monkeypatch.setenv("VET_MAIL_URL", f"mailtos://vet:{SECRET}@smtp.example.org?to=v@ex.org")
    monkeypatch.delenv("MOCLO_NOTIFY_FILE", raising=False)


def test_check_summarises_a_good_file_showing_channels_by_label_only(environment: None) -> None:
    result = moclo("notify", "check", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    first, *rest = result.stdout.splitlines()
    assert first == f"{EXAMPLE}: OK: 6 people, 1 rotation, 5 routes"
    assert any("vet's phone, vet's practice mail" in line for line in rest)
    assert any("dr-jansen → dr-bakker → dr-visser" in line for line in rest)
    assert any("after 10m: oncall:cardiology#2" in line for line in rest)
    assert SECRET not in result.stdout + result.stderr


def test_check_shows_a_channel_without_label_by_its_scheme_and_server(
    environment: None, tmp_path: Path
) -> None:
    text = EXAMPLE.read_text().replace(', label = "vet\'s practice mail"', "")
    (tmp_path / "notify.toml").write_text(text)
    result = moclo("notify", "check", str(tmp_path / "notify.toml"))
    assert result.returncode == 0, result.stderr
    assert "vet's phone, mailtos://smtp.example.org" in result.stdout
    assert SECRET not in result.stdout


def test_check_of_a_bad_file_exits_2_with_each_problem_at_its_line(
    environment: None, tmp_path: Path
) -> None:
    text = EXAMPLE.read_text().replace('"oncall:cardiology#2"', '"oncall:cardiology#5"')
    text = text.replace('"calving_soon"', '"calving_soon", 7')
    (tmp_path / "notify.toml").write_text(text)
    result = moclo("notify", "check", str(tmp_path / "notify.toml"))
    assert result.returncode == 2
    problems = result.stderr.splitlines()
    lines = text.split("\n")
    assert len(problems) == 2
    for problem, needle in zip(problems, ['"calving_soon", 7', "#5"], strict=True):
        line = int(problem.split(":")[1])
        assert needle in lines[line - 1], (problem, lines[line - 1])
    assert SECRET not in result.stdout + result.stderr


def test_check_reads_the_setting_and_says_so_when_there_is_none(
    environment: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = moclo("notify", "check")
    assert result.returncode == 2
    assert "set MOCLO_NOTIFY_FILE" in result.stderr
    monkeypatch.setenv("MOCLO_NOTIFY_FILE", str(EXAMPLE))
    assert moclo("notify", "check").returncode == 0


def test_oncall_show_marks_the_override_and_the_line_behind_it(environment: None) -> None:
    result = moclo("oncall", "show", "--file", str(EXAMPLE), "--at", "2026-12-24T20:00")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "cardiology (tenant cardiology, Europe/Amsterdam)"
    assert lines[1] == (
        "  on call at Thu 2026-12-24 20:00 CET: dr-visser (override) until Sun 2026-12-27 08:00 CET"
    )
    assert lines[2] == "  then in line: #2 dr-jansen, #3 dr-bakker"
    assert lines[4] == "    Sun 2026-12-27 08:00 CET – Mon 2026-12-28 08:00 CET  dr-jansen"


def test_oncall_show_as_json_across_the_change_to_summer_time(environment: None) -> None:
    def show(at: str) -> dict[str, object]:
        result = moclo("oncall", "show", "--file", str(EXAMPLE), "--at", at, "--json")
        assert result.returncode == 0, result.stderr
        (view,) = json.loads(result.stdout)
        return view  # type: ignore[no-any-return]

    before, after = show("2027-03-29T07:59"), show("2027-03-29T08:00")
    assert before["in_line"] == ["dr-bakker", "dr-visser", "dr-jansen"]
    assert after["in_line"] == ["dr-visser", "dr-jansen", "dr-bakker"]
    assert after["at"] == "2027-03-29T08:00:00+02:00"  # 08:00 summer time, not 07:00
    assert show("2027-03-29T06:00:00+00:00")["in_line"][0] == "dr-visser"  # the same instant
    shifts = after["shifts"]
    assert isinstance(shifts, list) and shifts[0]["end"] == "2027-04-05T08:00:00+02:00"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["--tenant", "de-wei-farm"],
            "has no rotation of tenant 'de-wei-farm'; tenants with rotations: cardiology",
        ),
        (["--at", "christmas"], "--at 'christmas' is not a time: write e.g. 2026-12-24T20:00"),
    ],
    ids=["tenant-without-rotation", "not-a-time"],
)
def test_oncall_show_refuses_what_it_cannot_show(
    environment: None, arguments: list[str], message: str
) -> None:
    result = moclo("oncall", "show", "--file", str(EXAMPLE), *arguments)
    assert result.returncode == 2 and message in result.stderr
    assert moclo("oncall", "show", "--file", str(EXAMPLE)).returncode == 0  # positive control


@pytest.mark.parametrize("command", [["notify", "check"], ["oncall", "show"]])
def test_help_gives_examples(command: list[str]) -> None:
    result = moclo(*command, "--help")
    assert result.returncode == 0 and "examples:" in result.stdout
    assert "MOCLO_NOTIFY_FILE" in result.stdout


def test_the_docs_show_what_oncall_show_prints(environment: None) -> None:
    page = (EXAMPLE.parent.parent / "docs" / "notifications.md").read_text()
    command = "$ moclo oncall show --file deploy/notify.example.toml --at 2026-12-24T20:00\n"
    shown = page.split(command, 1)[1].split("```", 1)[0].splitlines()
    result = moclo("oncall", "show", "--file", str(EXAMPLE), "--at", "2026-12-24T20:00")
    printed = result.stdout.splitlines()
    documented = [line for line in shown if line.strip() != "…"]
    assert len(documented) >= 5 and documented == printed[: len(documented)]


def test_oncall_show_needs_no_channel_secret_as_the_docs_run_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/notifications.md runs `moclo oncall show` on the example where the notifier does
    not run (a laptop): it reads names, not how anyone is reached, so an unset `url_env` is no
    reason to refuse. It exited 2 listing every unset variable."""
    for name in (*VARIABLES, "MOCLO_NOTIFY_FILE"):
        monkeypatch.delenv(name, raising=False)
    result = moclo("oncall", "show", "--file", str(EXAMPLE), "--at", "2026-12-24T20:00")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[2] == "  then in line: #2 dr-jansen, #3 dr-bakker"
    # Control: the check of the file the notifier will read still says what is missing there.
    checked = moclo("notify", "check", str(EXAMPLE))
    assert checked.returncode == 2 and "url_env is not set" in checked.stderr


def test_readers_of_names_never_read_a_channels_secret_file(tmp_path: Path) -> None:
    """Serve and `moclo oncall show` read a `url_file` channel as a stand-in: the secret file
    (mounted into the notifier's container only, or readable by its user only) is neither
    needed nor opened. Serve refused the whole notify file without it: no on-call panel, every
    acknowledgement link a 503."""
    secret_file = tmp_path / "jansen-mail"  # not there: mounted for the notifier only
    path = tmp_path / "notify.toml"
    path.write_text(
        f"""
[[people]]
name = "dr-jansen"
tenants = ["cardiology"]
channels = [ {{ url_file = "{secret_file}", label = "jansen mail" }} ]

[[rotations]]
name = "cardiology"
tenant = "cardiology"
people = ["dr-jansen"]
handoff = "2026-11-30T08:00"
"""
    )
    config = NotifyFileReader(str(path)).config()
    assert config is not None and "dr-jansen" in config.people
    shown = moclo("oncall", "show", "--file", str(path), "--at", "2026-12-24T20:00")
    assert shown.returncode == 0 and "dr-jansen" in shown.stdout, shown.stderr
    # Control: the notifier's own reading (and its check) needs the file and says so.
    checked = moclo("notify", "check", str(path))
    assert checked.returncode == 2 and "url_file cannot be read" in checked.stderr
