"""`moclo query`'s arguments: its parser and the call into `moclo/query_cli.py`, which is
imported only when the command runs. Every value is checked in one place,
`query.request.parse_series_request`, which the HTTP API uses too."""

from __future__ import annotations

import argparse

from core.settings import Settings
from moclo.args import Commands, connection_flags

QUERY_EPILOG = """\
examples:
  moclo query cow-0007                             the last hour of one cow, every field
  moclo query cow-0007 --field body_temp_c --since 6h --every 5m
  moclo query cow-0007 --since 7d --every auto --agg max --format csv > week.csv
  moclo query cow-0007 --from 2026-11-22T06:00:00Z --to 2026-11-22T12:00:00Z --format json
  moclo query --type cow_tracker --tenant farm --since 1d --every 1h
                                                   the herd's hourly mean, one series
  moclo query --type cow_tracker --tenant farm --since 1d --every 1h --agg max \\
      --field body_temp_c --group-by device_id     one series per cow

times (--from, --to): RFC 3339 (2026-11-22T06:00:00Z), a date (2026-11-22, midnight UTC),
epoch seconds, now, or now-6h. Durations (--since, --every): 30s, 5m, 6h, 7d.
Buckets start at multiples of --every since the epoch (1d: midnight UTC); empty ones are left
out. Without --every the stored points are printed, the newest 10,000 per series at most.
--format json prints the document described in query/series.py (also served by the HTTP API).

exit status: 0 answered (also when there are no readings), 2 a bad request (an unknown device
or field, a bad time or duration), 1 InfluxDB unreachable or refusing.
"""


def add_parser(commands: Commands) -> None:
    """Adds `moclo query` to the top-level subcommands."""
    query = commands.add_parser(
        "query",
        help="the stored readings of a device or a fleet: raw, or aggregated per bucket",
        description="Reads time series from InfluxDB: one device's readings, or a fleet's (all\n"
        "devices of one type, --type) aggregated per bucket, over the fleet or per device.\n"
        "Aggregates are computed by InfluxDB. The table shows a sparkline per field below it.",
        epilog=QUERY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    query.add_argument(
        "device_id",
        nargs="?",
        metavar="DEVICE_ID",
        help="the device; leave out for a fleet query (--type)",
    )
    query.add_argument(
        "--type",
        dest="device_type",
        metavar="TYPE",
        help="the device type: a fleet query without DEVICE_ID (see `moclo devices types`)",
    )
    query.add_argument(
        "--tenant", help="the tenant (default: any; needed when an id is in several)"
    )
    query.add_argument(
        "--field",
        dest="fields",
        action="append",
        default=[],
        metavar="FIELD",
        help="a field to show, repeatable or comma-separated (default: every field)",
    )
    _time_flags(query)
    query.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help="table (with sparklines, default), csv, or json (the stable document)",
    )
    connection_flags(query)


def _time_flags(parser: argparse.ArgumentParser) -> None:
    """Which time range, and raw points or buckets of it."""
    when = parser.add_argument_group("time range (default: the last hour)")
    when.add_argument("--since", metavar="DURATION", help="up to now, e.g. 6h")
    when.add_argument("--from", dest="start", metavar="TIME", help="from this time, inclusive")
    when.add_argument("--to", dest="end", metavar="TIME", help="to this time, exclusive (now)")
    buckets = parser.add_argument_group("buckets (default: raw points)")
    buckets.add_argument(
        "--every",
        metavar="DURATION",
        help="one value per bucket of this size, e.g. 5m; auto: at most 600 round buckets",
    )
    buckets.add_argument(
        "--agg",
        metavar="AGG",
        help="per bucket: mean (default), min, max, last, count or sum",
    )
    buckets.add_argument(
        "--group-by",
        dest="group_by",
        metavar="device_id",
        help="a fleet: one series per device instead of one over the whole fleet",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """`moclo query`: prints the answer; returns the exit status."""
    from moclo import query_cli

    return query_cli.query(
        settings,
        output=args.format,
        device_id=args.device_id,
        device_type=args.device_type,
        tenant=args.tenant,
        fields=args.fields,
        since=args.since,
        start=args.start,
        end=args.end,
        every=args.every,
        agg=args.agg,
        group_by=args.group_by,
    )
