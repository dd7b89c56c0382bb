"""`moclo query`: checks the request, asks InfluxDB, prints a table, CSV or the JSON document.

Errors are one `moclo: …` line on stderr: exit 2 for a request that cannot be answered as asked
(QueryError: a bad id, field, time or duration, an unknown device), exit 1 when InfluxDB cannot
be reached or refuses (left to `moclo.cli.main`, which prints InfluxError's message). Argument
parsing is in `moclo/query_args.py`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import Sequence

import orjson

from core.settings import Settings
from query.errors import QueryError
from query.render import render_csv, render_table
from query.request import parse_series_request
from query.series import SeriesResult, run_series
from query.series_query import SeriesQuery
from storage.database import open_influx


def query(
    settings: Settings,
    *,
    output: str = "table",
    device_id: str | None = None,
    device_type: str | None = None,
    tenant: str | None = None,
    fields: Sequence[str] = (),
    since: str | None = None,
    start: str | None = None,
    end: str | None = None,
    every: str | None = None,
    agg: str | None = None,
    group_by: str | None = None,
) -> int:
    """Runs one `moclo query` and prints its answer in `output` (table, csv or json)."""
    try:
        request = parse_series_request(
            device_id=device_id,
            device_type=device_type,
            tenant=tenant,
            fields=fields,
            since=since,
            start=start,
            end=end,
            every=every,
            agg=agg,
            group_by=group_by,
        )
        result = asyncio.run(_run(settings, request))
    except QueryError as exc:
        print(f"moclo: {exc}", file=sys.stderr)
        return 2
    try:
        if output == "json":
            sys.stdout.buffer.write(orjson.dumps(result.to_json()) + b"\n")
        elif output == "csv":
            sys.stdout.write(render_csv(result))
        else:
            print(render_table(result, width=shutil.get_terminal_size((100, 24)).columns))
        sys.stdout.flush()
    except BrokenPipeError:
        # `moclo query ... | head`: the reader has what it wanted. Python would complain when
        # it flushes stdout at exit, so stdout goes to /dev/null from here on.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if result.truncated and output != "table":
        print(
            f"moclo: only the newest {result.point_limit:,} points of each series were "
            "printed: narrow the range, or aggregate with --every",
            file=sys.stderr,
        )
    return 0


async def _run(settings: Settings, request: SeriesQuery) -> SeriesResult:
    async with open_influx(settings) as client:
        return await run_series(client, request)
