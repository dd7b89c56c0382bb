"""Durations and times beyond what can be answered: huge, negative, NaN-ish, past the limits of
Python's `timedelta` and `datetime`, or reaching before InfluxDB's first storable instant
(1677). The API answers 400 saying what is allowed (never 500), and the CLI, which shares the
parsing, exits 2 with the same message."""

from __future__ import annotations

import httpx
import pytest

from core.settings import Settings
from moclo import alerts_args, query_args
from moclo.cli import build_parser
from tests.conftest import RunningServe
from tests.helpers import Influx
from tests.series_data import readings, store


@pytest.fixture
def one_cow(influx: Influx) -> None:
    """cow-a's last reading, so that a request within bounds has something to answer."""
    store(influx, [r for r in readings() if r.device_id == "cow-a"][-1:])


# (value, the words its error must hold): `what` names the parameter, then what is allowed.
BAD = [
    pytest.param("9" * 400, "too long", id="huge-digits-inf"),
    pytest.param("9" * 5000, "too long", id="beyond-int-digits-limit"),
    pytest.param("9" * 30 + "d", "too long", id="huge-days"),
    pytest.param("1e400", "not a duration", id="exponent"),
    pytest.param("-5m", "not a duration", id="negative"),
    pytest.param("0", "more than zero", id="zero"),
    pytest.param("nan", "not a duration", id="nan"),
    pytest.param("inf", "not a duration", id="inf"),
    pytest.param("1000000000d", "too long", id="overflow-at-timedelta"),
    pytest.param("800000d", "too long", id="overflow-at-datetime"),
    pytest.param("200000d", "too long", id="before-1677"),
]


def api_error(serve: RunningServe, path: str, **params: str) -> tuple[int, str]:
    answer = httpx.get(
        serve.url + path,
        params={"device": "cow-a", **params} if path == "/api/series" else params,
        headers={"Authorization": f"Bearer {serve.admin_token}"},
        timeout=10,
    )
    return answer.status_code, str(answer.json().get("error", answer.text))


def cli_error(
    settings: Settings, capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, str]:
    """Runs a `moclo` command line in this process up to its answer: the exit status and what
    it wrote to stderr (argparse's errors exit; the query's are returned)."""
    try:
        args = build_parser().parse_args(list(argv))
        run = query_args.run if argv[0] == "query" else alerts_args.run
        status = run(args, settings)
    except SystemExit as exc:
        status = int(exc.code or 0)
    return status, capsys.readouterr().err


PLACES = [
    ("series-since", "/api/series", "since", ("query", "cow-a", "--since")),
    ("series-every", "/api/series", "every", ("query", "cow-a", "--every")),
    ("alerts-since", "/api/alerts", "since", ("alerts", "--since")),
]
CASES = [
    pytest.param(path, param, argv, *bad.values, id=f"{place}-{bad.id}")
    for place, path, param, argv in PLACES
    for bad in BAD
    # A bucket longer than the range is fine: only `since` reaches back before 1677.
    if not (param == "every" and bad.id == "before-1677")
]


@pytest.mark.parametrize(("path", "param", "argv", "value", "words"), CASES)
def test_out_of_range_durations_are_400_and_exit_2_with_one_message(
    serve: RunningServe,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    path: str,
    param: str,
    argv: tuple[str, ...],
    value: str,
    words: str,
) -> None:
    status, error = api_error(serve, path, **{param: value})
    assert status == 400, error
    assert error.startswith(f"{param}") and words in error, error
    assert len(error) < 300, error  # a 5,000-digit value is not echoed whole
    # `--since=-5m`: as `--since -5m`, argparse would take the value for an option.
    code, said = cli_error(settings, capsys, *argv[:-1], f"{argv[-1]}={value}")
    assert code == 2, said
    assert error in said, said


@pytest.mark.parametrize(
    ("path", "param"),
    [("/api/series", "since"), ("/api/series", "every"), ("/api/alerts", "since")],
    ids=["series-since", "series-every", "alerts-since"],
)
def test_the_longest_allowed_duration_is_answered(
    one_cow: None, serve: RunningServe, path: str, param: str
) -> None:
    """The positive control: 100 years back (or buckets of 100 years) is within bounds."""
    status, error = api_error(serve, path, **{param: "36500d"})
    assert status == 200, error


def test_the_cli_answers_a_good_since(
    one_cow: None, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """The positive control on the CLI side: a 100-year `--since` is answered."""
    for argv in (("query", "cow-a", "--since", "36500d"), ("alerts", "--since", "36500d")):
        code, said = cli_error(settings, capsys, *argv)
        assert code == 0, said
