"""The read side's errors. Each message says what was wrong and what to do instead.

    QueryError (ValueError)    the request cannot be answered as asked: a malformed id, field,
     │                         duration or time range, too many buckets (HTTP: 400)
     ├── UnknownDevice         no such device, or no device of that type in that tenant (404)
     └── AmbiguousDevice       the id is stored under several tenants or types: name one (400)

`param` names the request parameter at fault, as `query.request.parse_series_request` calls it
(`device_id`, `device_type`, `tenant`, `fields`, `since`, `start`, `end`, `every`, `agg`,
`group_by`), or is None when the request as a whole is at fault.

InfluxDB's own failures are not QueryErrors: `storage.influx.InfluxUnavailable` (try again
later) and `InfluxRefused` pass through unchanged.
"""

from __future__ import annotations


class QueryError(ValueError):
    """The request is wrong; repeating it unchanged cannot succeed."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class UnknownDevice(QueryError):
    """No device by that id (in that tenant, of that type) was ever stored."""


class AmbiguousDevice(QueryError):
    """The device id exists in several tenants (or under several types): name one."""
