"""The `moclo` command line itself: the rules file flag, how a bad rules file is reported, and
the shape of the CLI modules (small, and quick to load for `moclo --help`)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from moclo.stack import free_port
from tests.helpers import moclo

BAD_RULES = """\
[[rule]]
device_type = "cow_tracker"
name = "fever"
raise_at = "hot"
"""
GOOD_RULES = """\
[[rule]]
device_type = "cow_tracker"
name = "fever"
raise_at = 39.8
"""


def _nowhere() -> list[str]:
    """Connection flags that lead nowhere: a command that tried to connect would exit 1."""
    port = free_port()
    return ["--mqtt-url", f"mqtt://127.0.0.1:{port}", "--influx-url", f"http://127.0.0.1:{port}"]


@pytest.fixture
def rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.delenv("MOCLO_RULES_FILE", raising=False)
    (tmp_path / "bad.toml").write_text(BAD_RULES)
    (tmp_path / "good.toml").write_text(GOOD_RULES)
    return {"bad": tmp_path / "bad.toml", "good": tmp_path / "good.toml"}


@pytest.mark.parametrize(
    ("flag", "environment"),
    [("bad", None), ("bad", "good"), (None, "bad")],
    ids=["flag", "flag-over-environment", "environment"],
)
def test_ingest_with_a_bad_rules_file_exits_2_before_connecting(
    rules: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    flag: str | None,
    environment: str | None,
) -> None:
    if environment:
        monkeypatch.setenv("MOCLO_RULES_FILE", str(rules[environment]))
    result = moclo("ingest", *(["--rules", str(rules[flag])] if flag else []), *_nowhere())
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("moclo: the rules file has problems:\n")
    assert f"{rules['bad']}:4: rule fever (cow_tracker): raise_at" in result.stderr
    assert "Traceback" not in result.stderr
    assert "cannot reach" not in result.stderr


def test_the_rules_flag_wins_over_the_environment(
    rules: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOCLO_RULES_FILE", str(rules["bad"]))
    result = moclo("ingest", "--rules", str(rules["good"]), *_nowhere())
    # Past the rules, ingest goes on to the database, which is not there.
    assert result.returncode == 1, result.stderr
    assert "cannot reach InfluxDB" in result.stderr
    assert "rules file" not in result.stderr


def test_ingest_with_a_missing_rules_file_names_it_and_the_setting(
    rules: dict[str, Path], tmp_path: Path
) -> None:
    missing = tmp_path / "missing.toml"
    result = moclo("ingest", "--rules", str(missing), *_nowhere())
    assert result.returncode == 2, result.stderr
    assert f"{missing}: cannot read the rules file" in result.stderr
    assert "--rules" in result.stderr and "MOCLO_RULES_FILE" in result.stderr
    assert "Traceback" not in result.stderr


def test_up_with_a_bad_rules_file_exits_2_before_starting_servers(
    rules: dict[str, Path], tmp_path: Path
) -> None:
    data_dir = tmp_path / "stack"
    result = moclo("up", "--rules", str(rules["bad"]), "--data-dir", str(data_dir), *_nowhere())
    assert result.returncode == 2, result.stderr
    assert f"{rules['bad']}:4:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not data_dir.exists(), "no local server was started"


@pytest.mark.parametrize("command", ["ingest", "up"])
def test_help_of_ingest_and_up_shows_the_rules_flag(command: str) -> None:
    result = moclo(command, "--help")
    assert result.returncode == 0
    assert "--rules FILE" in result.stdout
    assert "moclo rules check" in result.stdout
    for variable in ("MOCLO_RULES_FILE", "MOCLO_WEBHOOK_URL", "MOCLO_WEBHOOK_MIN_SEVERITY"):
        assert variable in result.stdout


def test_help_loads_neither_the_simulators_nor_the_alert_machinery() -> None:
    """`moclo --help` must stay quick: command groups import their work when they run."""
    probe = (
        "import sys, moclo.cli; moclo.cli.build_parser(); "
        "print(' '.join(m for m in ('simulators.run', 'moclo.alerts_cli', 'moclo.rules_cli', "
        "'ingest.alerts.rulesfile', 'ingest.service', 'aiomqtt', 'fastapi', 'uvicorn', "
        "'query.series', 'moclo.notify_cli', 'notify.file') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=True
    )
    assert loaded.stdout.split() == []


def test_every_module_of_the_command_line_stays_small(repo_root: Path) -> None:
    sizes = {
        path.name: len(path.read_text(encoding="utf-8").splitlines())
        for path in sorted((repo_root / "moclo").rglob("*.py"))
    }
    assert sizes and {name: n for name, n in sizes.items() if n >= 600} == {}


def test_serve_on_a_taken_port_says_how_to_choose_another() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = moclo("serve", "--listen", f"127.0.0.1:{port}", *_nowhere())
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "--listen or MOCLO_SERVE_LISTEN" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_of_serve_names_its_setting_and_the_api_description() -> None:
    serve = moclo("serve", "--help")
    assert serve.returncode == 0 and "--listen HOST:PORT" in serve.stdout
    assert "MOCLO_SERVE_LISTEN" in serve.stdout and "/api/openapi.json" in serve.stdout


def test_ingest_with_a_bad_automations_file_exits_2_before_connecting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "automations.toml"
    bad.write_text('[[automation]]\nname = "x"\ntenant = "t"\n')
    monkeypatch.setenv("MOCLO_AUTOMATIONS_FILE", str(bad))
    result = moclo("ingest", *_nowhere())
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("moclo: the automations file has problems:\n")
    assert f"{bad}:1: automation x: device_type is required" in result.stderr
    assert "Traceback" not in result.stderr and "cannot reach" not in result.stderr


def test_ingest_leaves_out_httpx_own_command_line() -> None:
    """httpx imports its command line (click, rich, pygments: about 4.5 MB resident) whenever
    they are installed; `moclo` marks it absent (moclo/__init__.py), and httpx still works."""
    leaves = "rich", "pygments", "httpx._main"
    probe = (
        "import sys, {}; import httpx; httpx.Client().close(); "
        f"print(' '.join(m for m in {leaves!r} if sys.modules.get(m) is not None))"
    )
    run = [sys.executable, "-c"]
    loaded = subprocess.run(
        [*run, probe.format("moclo.cli, ingest.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert loaded.stdout.split() == []
    # Control: without moclo first, the same imports do load it (rich is installed here).
    control = subprocess.run(
        [*run, probe.format("core.settings")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert control.stdout.split() == list(leaves)


def test_ingest_imports_prometheus_client_only_when_scraped() -> None:
    """ingest/http.py imports ingest/metrics.py at the first scrape of /metrics (0.4-1.5 MB for an
    ingest that nobody scrapes); that the scrape works is test_operations.py's."""
    probe = (
        "import sys, moclo.cli, ingest.service, ingest.http; loaded = 'prometheus_client' in "
        "sys.modules; import ingest.metrics; print(loaded, 'prometheus_client' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["False", "True"]
