"""The one place that turns what people type (`moclo query` flags, HTTP query parameters) into a
checked `SeriesQuery`, or a QueryError that says what was wrong and what to write instead.

- the range: `since` (a duration back from now), or `start` (and `end`, default now), as any
  form of `query.times.parse_time`; neither: the last hour. `since` with `start` or `end` is an
  error, as is `end` without `start`.
- `every`: None, empty or `raw` for raw points, a duration (`5m`, whole seconds), or `auto`: the
  smallest round bucket (1s, 2s, 5s, 10s, 15s, 30s, 1m, ..., 12h, 1d, 2d, 7d, 30d, 365d) that
  gives at most 600 buckets over the range.
- `agg`: mean (default), min, max, last, count or sum; only with `every`.
- `fields`: names, each may also be a comma-separated list; none: every field.
- `group_by`: `device_id` (one series per device of a fleet), or None.
Empty strings count as not given, so `?tenant=` in a URL means any tenant.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from query.errors import QueryError
from query.names import check_device_id, check_device_type, check_field_name, check_tenant
from query.series_query import AGGS, Agg, SeriesQuery
from query.times import NS, auto_bucket, parse_seconds, parse_since, parse_time

AUTO_BUCKETS = 600
DEFAULT_SINCE_S = 3600


def parse_series_request(
    *,
    device_id: str | None = None,
    device_type: str | None = None,
    tenant: str | None = None,
    fields: Iterable[str] = (),
    since: str | None = None,
    start: str | None = None,
    end: str | None = None,
    every: str | None = None,
    agg: str | None = None,
    group_by: str | None = None,
    now_ns: int | None = None,
) -> SeriesQuery:
    """A checked SeriesQuery from people's strings; QueryError (with `param`) if one is wrong.

    Names are checked first (so a hostile one is refused as such), then the range, then the
    buckets. Whether the device and its fields exist is known only to `run_series`.
    """
    now_ns = time.time_ns() if now_ns is None else now_ns
    device_id, device_type, tenant = _given(device_id), _given(device_type), _given(tenant)
    if device_id is not None:
        check_device_id(device_id)
    if device_type is not None:
        check_device_type(device_type)
    if tenant is not None:
        check_tenant(tenant)
    names = _field_names(fields)
    chosen_agg = _agg(_given(agg))
    by_device = _group_by(_given(group_by))
    start_ns, end_ns = _range(_given(since), _given(start), _given(end), now_ns)
    every_s = _every(_given(every), start_ns, end_ns)
    if every_s is None and _given(agg) is not None:
        raise QueryError(f"agg {agg} needs buckets: give every too (e.g. 5m, or auto)", param="agg")
    return SeriesQuery(
        start_ns=start_ns,
        end_ns=end_ns,
        device_id=device_id,
        device_type=device_type,
        tenant=tenant,
        fields=names,
        every_s=every_s,
        agg=chosen_agg,
        group_by_device=by_device,
    )


def _given(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    return value.strip()


def _field_names(fields: Iterable[str]) -> tuple[str, ...]:
    if isinstance(fields, str):  # one name, or one comma-separated list, not its letters
        fields = [fields]
    names: list[str] = []
    for item in fields:
        for name in item.split(","):
            name = name.strip()
            if name and check_field_name(name) not in names:
                names.append(name)
    return tuple(names)


def _agg(text: str | None) -> Agg:
    if text is None:
        return "mean"
    for name in AGGS:
        if text == name:
            return name
    raise QueryError(f"agg {text!r} is not one of {', '.join(AGGS)}", param="agg")


def _group_by(text: str | None) -> bool:
    if text is None:
        return False
    if text != "device_id":
        raise QueryError(
            f"cannot group by {text!r}: group by device_id (one series per device), or leave "
            "it out to aggregate over the fleet",
            param="group_by",
        )
    return True


def _range(since: str | None, start: str | None, end: str | None, now_ns: int) -> tuple[int, int]:
    if since is not None:
        if start is not None or end is not None:
            raise QueryError("give since (e.g. 6h), or from and to, not both", param="since")
        parse_since(since, now_ns=now_ns)  # not back before InfluxDB's first instant
        seconds = parse_seconds(since, param="since", name="since")
        return now_ns - seconds * NS, now_ns
    if start is None:
        if end is not None:
            raise QueryError(
                "to needs from too (or use since, e.g. 6h, for the time up to now)", param="end"
            )
        return now_ns - DEFAULT_SINCE_S * NS, now_ns
    start_ns = parse_time(start, now_ns=now_ns, param="start", name="from")
    end_ns = now_ns if end is None else parse_time(end, now_ns=now_ns, param="end", name="to")
    return start_ns, end_ns


def _every(text: str | None, start_ns: int, end_ns: int) -> int | None:
    if text is None or text == "raw":
        return None
    if text == "auto":
        if end_ns <= start_ns:
            return None  # the empty range is SeriesQuery's to report
        return auto_bucket(start_ns, end_ns, AUTO_BUCKETS)
    return parse_seconds(text, param="every", name="every")
