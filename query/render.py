"""A `SeriesResult` for people (a table with a sparkline per field) and for spreadsheets (CSV).

The sparkline draws each field over the query's time range in at most `width` columns, with
▁▂▃▄▅▆▇█ scaled between the field's minimum and maximum (both printed beside it). Each column
is a slice of the range: it shows the mean of the values whose time falls in it, and is blank
when none does, so gaps in the data are gaps in the line. With fewer points or buckets than
columns, each gets a column of its own. true/false counts as 1/0; text is not drawn.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from devices.rfc3339 import format_shortest
from query.series import SeriesResult, TimeSeries, Value
from query.times import NS, bucket_count, format_every

BARS = "▁▂▃▄▅▆▇█"


def render_csv(result: SeriesResult) -> str:
    """A header row, then one row per point: time (RFC 3339), [tenant, device_id,] fields."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    fleet = result.query.group_by_device
    writer.writerow(["time", *(("tenant", "device_id") if fleet else ()), *result.query.fields])
    for s in result.series:
        who = (s.tenant or "", s.device_id or "") if fleet else ()
        for t, row in zip(s.times_ns, s.values, strict=True):
            writer.writerow([format_shortest(t), *who, *(_csv_cell(v) for v in row)])
    return out.getvalue()


def render_table(result: SeriesResult, *, width: int = 100) -> str:
    """Per series: a title line, aligned columns of its points, then one sparkline per field
    (below the table, so that a long table does not push them off the screen)."""
    blocks = [_block(result, s, width) for s in result.series]
    if not blocks:
        q = result.query
        where = f" in tenant {q.tenant}" if q.tenant else ""
        blocks = [
            f"no {q.device_type} readings{where} from {_second(q.start_ns)} to {_second(q.end_ns)}"
        ]
    if result.truncated:
        blocks.append(
            f"(only the newest {result.point_limit:,} points of each series are shown: "
            "narrow the range, or aggregate with --every)"
        )
    return "\n\n".join(blocks)


def sparkline(
    times_ns: Sequence[int],
    values: Sequence[Value],
    *,
    start_ns: int,
    end_ns: int,
    columns: int,
) -> str:
    """`values` (at `times_ns`) over [start, end) in `columns` characters; see the module doc."""
    numbers = [_number(v) for v in values]
    drawn = [(t, n) for t, n in zip(times_ns, numbers, strict=True) if n is not None]
    if not drawn or columns < 1:
        return ""
    low = min(n for _, n in drawn)
    high = max(n for _, n in drawn)
    slots: list[list[float]] = [[] for _ in range(columns)]
    span = end_ns - start_ns
    for t, n in drawn:
        column = (t - start_ns) * columns // span
        slots[min(columns - 1, max(0, column))].append(n)
    line = []
    for slot in slots:
        if not slot:
            line.append(" ")
        elif high == low:
            line.append(BARS[3])
        else:
            level = (sum(slot) / len(slot) - low) / (high - low) * (len(BARS) - 1)
            line.append(BARS[min(len(BARS) - 1, max(0, round(level)))])
    return "".join(line)


def _block(result: SeriesResult, s: TimeSeries, width: int) -> str:
    q = result.query
    who = s.device_id or f"all {q.device_type}"
    how = "raw points" if q.every_s is None else f"{q.agg} per {format_every(q.every_s)}"
    title = (
        f"{who} ({q.device_type}, tenant {s.tenant or 'any'}) · {how} · "
        f"{_second(q.start_ns)} to {_second(q.end_ns)} · {len(s.times_ns)} points"
    )
    if not s.times_ns:
        return f"{title}\n(no readings in this range)"
    header = ["time", *s.fields]
    rows = [
        [format_shortest(t), *(_table_cell(v) for v in row)]
        for t, row in zip(s.times_ns, s.values, strict=True)
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [title, _align(header, widths)]
    lines += [_align(r, widths) for r in rows]
    lines.append("")
    lines += _sparklines(q.start_ns, q.end_ns, q.every_s, s, width)
    return "\n".join(lines)


def _sparklines(
    start_ns: int, end_ns: int, every_s: int | None, s: TimeSeries, width: int
) -> list[str]:
    label = max(len(f) for f in s.fields)
    slots = len(s.times_ns) if every_s is None else bucket_count(start_ns, end_ns, every_s)
    if every_s is not None:
        # Buckets are placed by their start, which for the first may lie before `start`.
        start_ns = start_ns // (every_s * NS) * (every_s * NS)
        end_ns = start_ns + slots * every_s * NS
    out = []
    for i, field in enumerate(s.fields):
        column = [row[i] for row in s.values]
        numbers = [n for n in map(_number, column) if n is not None]
        if not numbers:
            note = "(text: not drawn)" if any(v is not None for v in column) else "(no values)"
            out.append(f"{field.ljust(label)}  {note}")
            continue
        legend = f"  min {_table_cell(min(numbers))}  max {_table_cell(max(numbers))}"
        columns = min(slots, max(8, width - label - 2 - len(legend)))
        line = sparkline(s.times_ns, column, start_ns=start_ns, end_ns=end_ns, columns=columns)
        out.append(f"{field.ljust(label)}  {line}{legend}")
    return out


def _second(ns: int) -> str:
    """A time in a title, to the second: `--since` ranges end at an odd nanosecond."""
    return format_shortest(ns // NS * NS)


def _align(cells: list[str], widths: list[int]) -> str:
    first, *rest = cells
    return "  ".join(
        [first.ljust(widths[0]), *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True))]
    )


def _number(value: Value) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


def _table_cell(value: Value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = f"{value:.4f}".rstrip("0").rstrip(".")
        return "0" if text == "-0" else text
    return str(value)


def _csv_cell(value: Value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)
