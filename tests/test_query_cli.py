"""`moclo query` as a person runs it against a real InfluxDB (table, CSV, JSON, errors), and the
table's sparklines on their own."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import pytest

from core.settings import Settings
from devices.rfc3339 import format_shortest
from moclo.stack import free_port
from query.render import BARS, render_table, sparkline
from query.series import SeriesResult, TimeSeries
from query.series_query import SeriesQuery
from tests.helpers import Influx
from tests.series_data import NS, T0, Stored, expected_buckets, readings, store

FROM_NS = (T0 + 10 * 60) * NS
TO_NS = (T0 + 70 * 60) * NS
RANGE = ["--from", format_shortest(FROM_NS), "--to", format_shortest(TO_NS)]


def query(
    settings: Settings, *args: str, columns: int = 100, influx_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "moclo.cli",
            "query",
            *args,
            "--influx-url",
            influx_url or settings.influx_url,
            "--influx-db",
            settings.influx_db,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": str(columns)},
    )


@pytest.fixture
def stored(influx: Influx) -> list[Stored]:
    data = readings()
    store(influx, data)
    return data


def test_json_is_the_document_with_influxdb_aggregates(
    settings: Settings, stored: list[Stored]
) -> None:
    result = query(
        settings,
        "--type",
        "cow_tracker",
        "--tenant",
        "farm",
        "--field",
        "body_temp_c",
        "--every",
        "10m",
        "--agg",
        "max",
        "--group-by",
        "device_id",
        "--format",
        "json",
        *RANGE,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["query"]["agg"] == "max" and document["query"]["every"] == "10m"
    expected = expected_buckets(
        [r for r in stored if r.tenant == "farm"],
        field="body_temp_c",
        agg="max",
        every_s=600,
        start_ns=FROM_NS,
        end_ns=TO_NS,
        key=lambda r: r.device_id,
    )
    assert [s["device_id"] for s in document["series"]] == ["cow-a", "cow-b"]
    for s in document["series"]:
        assert s["points"] == [
            [format_shortest(t), v] for t, v in sorted(expected[s["device_id"]].items())
        ]


def test_csv_has_a_header_and_a_row_per_point(settings: Settings, stored: list[Stored]) -> None:
    result = query(settings, "cow-b", "--field", "activity,seq", "--format", "csv", *RANGE)
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    mine = [r for r in stored if r.device_id == "cow-b" and FROM_NS <= r.ts_ns < TO_NS]
    assert rows[0] == ["time", "activity", "seq"]
    assert rows[1:] == [
        [format_shortest(r.ts_ns), str(r.values["activity"]), str(r.values["seq"])] for r in mine
    ]
    fleet = query(
        settings,
        "--type",
        "cow_tracker",
        "--group-by",
        "device_id",
        "--every",
        "30m",
        "--agg",
        "count",
        "--field",
        "seq",
        "--format",
        "csv",
        *RANGE,
    )
    rows = list(csv.reader(io.StringIO(fleet.stdout)))
    assert rows[0] == ["time", "tenant", "device_id", "seq"]
    # Buckets of 30 minutes from T0, cut by the range (minutes 10 to 69); cow-a was silent in
    # minutes 40 to 49.
    assert rows[1:4] == [
        [format_shortest((T0 + 0) * NS), "farm", "cow-a", "20"],
        [format_shortest((T0 + 1800) * NS), "farm", "cow-a", "20"],
        [format_shortest((T0 + 3600) * NS), "farm", "cow-a", "10"],
    ]
    assert [r[2] for r in rows[1:]] == ["cow-a"] * 3 + ["cow-b"] * 3 + ["cow-z"] * 3


def test_the_table_has_aligned_columns_and_a_sparkline_per_field(
    settings: Settings, stored: list[Stored]
) -> None:
    result = query(
        settings, "th-1", "--field", "temp_c", "--field", "heating", "--every", "5m",
        "--agg", "max", *RANGE, columns=80,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("th-1 (thermostat, tenant home) · max per 5m · ")
    assert lines[1].split() == ["time", "temp_c", "heating"]
    assert len(lines[2:]) >= 12 and all(len(line) == len(lines[1]) for line in lines[2:14])
    expected = expected_buckets(
        [r for r in stored if r.device_id == "th-1"],
        field="temp_c",
        agg="max",
        every_s=300,
        start_ns=FROM_NS,
        end_ns=TO_NS,
    )[None]
    spark = next(line for line in lines if line.startswith("temp_c  "))
    bars = spark.split()[1]
    assert len(bars) == 12 and set(bars) <= set(BARS)
    assert f"min {min(expected.values()):g}" in spark and f"max {max(expected.values()):g}" in spark
    # The highest bucket is the highest bar, the lowest the lowest.
    ordered = [v for _, v in sorted(expected.items())]
    assert bars[ordered.index(max(ordered))] == BARS[-1]
    assert bars[ordered.index(min(ordered))] == BARS[0]
    heating = expected_buckets(
        [r for r in stored if r.device_id == "th-1"],
        field="heating",
        agg="max",
        every_s=300,
        start_ns=FROM_NS,
        end_ns=TO_NS,
    )[None].values()
    legend = f"min {int(min(heating))}  max {int(max(heating))}"
    assert next(line for line in lines if line.startswith("heating ")).endswith(legend)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cow-q", "--since", "1d"], "no device 'cow-q' is stored in any tenant (searched farm"),
        (["cow-a", "--field", "temp_c"], "cow_tracker has no field 'temp_c'; its fields: body_"),
        (["cow-a", "--from", "2026-11-23", "--to", "2026-11-22"], "must be before"),
        (["cow-a", "--since", "6x"], "since: '6x' is not a duration"),
        (["cow-a", "--from", "yesterday"], "from 'yesterday' is not a time"),
        (["cow-a", "--since", "7d", "--every", "1m"], "more than 10,000: use every 2m or more"),
        (["cow-a", "--agg", "max"], "agg max needs buckets"),
        (["--type", "cow_tracker"], "a fleet's raw points come per device"),
        (["x' OR 1=1"], "device id \"x' OR 1=1\" is not valid"),
        (["cow-a", "--tenant", "a\"; DROP DATABASE x"], "is not valid: a tenant matches"),
    ],
    ids=[
        "unknown-device",
        "unknown-field",
        "from-after-to",
        "bad-duration",
        "bad-time",
        "too-many-buckets",
        "agg-without-every",
        "fleet-raw",
        "injection-device",
        "injection-tenant",
    ],
)  # fmt: skip
def test_a_bad_request_is_one_line_and_exit_2(
    settings: Settings, stored: list[Stored], args: list[str], message: str
) -> None:
    result = query(settings, *args)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("moclo: ")
    assert message in result.stderr


def test_an_unreachable_database_exits_1_saying_what_to_set(settings: Settings) -> None:
    result = query(settings, "cow-a", influx_url=f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "cannot reach InfluxDB" in result.stderr and "--influx-url" in result.stderr
    missing = query(settings, "cow-a")  # this test stored nothing: no database
    assert missing.returncode == 1
    assert f"no database {settings.influx_db!r}" in missing.stderr


def test_help_has_examples() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "moclo.cli", "query", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "examples:" in result.stdout and "--group-by device_id" in result.stdout


# -- sparklines ------------------------------------------------------------------------------


def test_a_sparkline_spans_its_bars_from_min_to_max() -> None:
    times = [i * 60 * NS for i in range(8)]
    line = sparkline(times, [1, 2, 3, 4, 5, 6, 7, 8], start_ns=0, end_ns=8 * 60 * NS, columns=8)
    assert line == "▁▂▃▄▅▆▇█"


def test_a_sparkline_leaves_gaps_blank_and_draws_flat_data_mid_height() -> None:
    times = [0, 60 * NS, 5 * 60 * NS]
    line = sparkline(times, [2.0, None, 2.0], start_ns=0, end_ns=6 * 60 * NS, columns=6)
    assert line == "▄    ▄"


def test_many_points_are_drawn_in_the_columns_there_are() -> None:
    # 1,000 points rising then falling: 5 columns, each the mean of its 200 points (99.5,
    # 299.5, 449.5, ...), on the scale of all of them (0 to 499).
    values = [min(i, 999 - i) for i in range(1000)]
    line = sparkline([i * NS for i in range(1000)], values, start_ns=0, end_ns=1000 * NS, columns=5)
    assert line == "▂▅▇▅▂"


def test_a_long_series_is_downsampled_to_the_terminal_width() -> None:
    n = 600
    asked = SeriesQuery(
        start_ns=0,
        end_ns=n * 60 * NS,
        device_id="cow-a",
        device_type="cow_tracker",
        fields=("body_temp_c",),
        every_s=60,
    )
    s = TimeSeries(
        "farm",
        "cow_tracker",
        "cow-a",
        ("body_temp_c",),
        tuple(i * 60 * NS for i in range(n)),
        tuple((38.0 + i / n,) for i in range(n)),
    )
    text = render_table(SeriesResult(asked, (s,)), width=60)
    spark = text.splitlines()[-1]
    assert len(spark) <= 60 and spark.startswith("body_temp_c  ▁")
    assert "█  min 38  max 38.9983" in spark
