"""The InfluxDB HTTP API that 1.x serves natively and 2.x/3.x serve for compatibility.

`POST /write` (line protocol) and `GET|POST /query` (InfluxQL). InfluxDB 2.x maps `db` to the
bucket of that name and takes `Authorization: Token …`; 1.x takes the same header when auth is
on, or basic auth from the URL. influxdb-client (the v2 library) is not used: it speaks only
`/api/v2`, which Debian's InfluxDB 1.6.7 does not serve, so it could not be tested here.

Errors are translated here into two kinds that say what to do next:
- `InfluxUnavailable`: try again later (after `retry_after` seconds when the server said so);
- `InfluxRefused`: the request itself is wrong; retrying the same request cannot succeed.
  `InfluxPartialWrite`, one of them: InfluxDB refused some of the points of a write (beyond
  the retention, a field type conflict, a line it cannot parse). 1.x answers 400, 2.x 422
  (older 2.x 500), 3.x 400, each with "partial write" in the body; the points it accepted are
  stored (so writing them again only overwrites them with the same values).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson


class InfluxError(Exception):
    """Base of the errors this module raises."""


class InfluxUnavailable(InfluxError):
    """InfluxDB could not take the request now: down, slow, overloaded. Retry."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InfluxRefused(InfluxError):
    """InfluxDB refused the request; `status` tells why (400 bad data, 401/403 auth, ...)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class InfluxPartialWrite(InfluxRefused):
    """InfluxDB refused some points of a write for their content and (1.x, 2.x, 3.x) stored
    the others; the answer does not say which. Retrying the same write cannot succeed."""


def is_beyond_retention(error: str) -> bool:
    """Did InfluxDB refuse a point for being older than the retention (any version)?"""
    return "beyond retention" in error


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    tags: dict[str, str]
    columns: list[str]
    values: list[list[Any]]

    def rows(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.values]


class InfluxClient:
    """A small async client for `/ping`, `/write` and `/query` against one database."""

    def __init__(
        self,
        url: str,
        database: str,
        *,
        token: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        parts = urlsplit(url)
        auth = None
        if parts.username:
            auth = httpx.BasicAuth(parts.username, parts.password or "")
            host = parts.hostname or ""
            host = f"[{host}]" if ":" in host else host  # an IPv6 address keeps its brackets
            parts = parts._replace(netloc=host + (f":{parts.port}" if parts.port else ""))
        headers = {"Authorization": f"Token {token}"} if token else {}
        self.url = urlunsplit(parts).rstrip("/")
        self.database = database
        self._http = httpx.AsyncClient(
            base_url=self.url, auth=auth, headers=headers, timeout=timeout_s
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def ping(self) -> bool:
        try:
            response = await self._http.get("/ping")
        except httpx.HTTPError:
            return False
        return response.status_code == 204

    async def ensure_database(self) -> None:
        """Creates the database if it is missing (idempotent on 1.x).

        InfluxDB 2.x/3.x answer CREATE DATABASE with an error; there the bucket must exist
        already, which SHOW DATABASES confirms.
        """
        try:
            await self.query(f"CREATE DATABASE {quote_identifier(self.database)}", db=None)
            return
        except InfluxRefused:
            pass
        names = {
            row["name"] for s in await self.query("SHOW DATABASES", db=None) for row in s.rows()
        }
        if self.database not in names:
            raise InfluxRefused(
                f"database {self.database!r} does not exist at {self.url} and could not be "
                "created: create it (InfluxDB 1.x) or a bucket of that name (2.x/3.x)",
                status=404,
            )

    async def retention_s(self) -> float | None:
        """How long InfluxDB keeps new points of this database, in seconds; None: forever.

        2.x: the bucket's expiry (`/api/v2/buckets?name=`), where the token may read buckets;
        1.x: the duration of the database's default retention policy (`0s`: forever). 2.x and
        3.x answer SHOW RETENTION POLICIES with placeholders, so it is asked only where there
        is no bucket API (404). Raises InfluxRefused when the retention cannot be read (the
        token may not, no such bucket), InfluxUnavailable when InfluxDB does not answer.
        """
        try:
            response = await self._http.get("/api/v2/buckets", params={"name": self.database})
        except httpx.HTTPError as exc:
            raise InfluxUnavailable(f"cannot reach InfluxDB at {self.url}: {exc!r}") from exc
        if response.status_code == 200:
            for bucket in orjson.loads(response.content).get("buckets") or []:
                if bucket.get("name") == self.database:
                    expiry = [
                        float(rule.get("everySeconds") or 0)
                        for rule in bucket.get("retentionRules") or []
                        if rule.get("type", "expire") == "expire"
                    ]
                    return min(expiry) if expiry and min(expiry) > 0 else None
            raise InfluxRefused(
                f"the bucket API lists no bucket named {self.database!r}", status=404
            )
        if response.status_code != 404:
            _raise_for_status(response, "reading the bucket's retention")
            raise InfluxRefused(
                f"reading the bucket's retention answered {response.status_code}",
                status=response.status_code,
            )
        policies = await self.query(
            f"SHOW RETENTION POLICIES ON {quote_identifier(self.database)}", db=None
        )
        for series in policies:
            for row in series.rows():
                if row.get("default"):
                    seconds = go_duration_s(str(row["duration"]))
                    return seconds if seconds > 0 else None
        raise InfluxRefused(
            f"database {self.database!r} has no default retention policy", status=404
        )

    async def write(self, lines: Sequence[str], *, sent: asyncio.Event | None = None) -> None:
        """Writes line protocol with nanosecond timestamps; raises InfluxError on failure.

        `sent`, if given, is set once the request has gone out, while InfluxDB works on it."""
        body = "\n".join(lines).encode()
        try:
            response = await self._http.post(
                "/write",
                params={"db": self.database, "precision": "ns"},
                content=body,
                extensions=None if sent is None else {"trace": _when_sent(sent)},
            )
        except httpx.TimeoutException as exc:
            raise InfluxUnavailable(f"write to {self.url} timed out: {exc!r}") from exc
        except httpx.HTTPError as exc:
            raise InfluxUnavailable(f"cannot reach InfluxDB at {self.url}: {exc!r}") from exc
        _raise_for_status(response, "write")

    async def query(self, influxql: str, *, db: str | None = "", epoch: str = "ns") -> list[Series]:
        """Runs InfluxQL and returns its series; `db=""` means this client's database."""
        params = {"q": influxql, "epoch": epoch}
        database = self.database if db == "" else db
        if database is not None:
            params["db"] = database
        try:
            response = await self._http.post("/query", data=params)
        except httpx.HTTPError as exc:
            raise InfluxUnavailable(
                f"cannot reach InfluxDB at {self.url} ({exc!r}): is it running? Set "
                "MOCLO_INFLUX_URL or --influx-url to where it listens"
            ) from exc
        _raise_for_status(response, "query")
        document = orjson.loads(response.content)
        if "error" in document:
            raise InfluxRefused(f"query failed: {document['error']}", status=400)
        series: list[Series] = []
        for result in document.get("results", []):
            if "error" in result:
                raise InfluxRefused(f"query failed: {result['error']}", status=400)
            for s in result.get("series", []):
                series.append(
                    Series(s.get("name", ""), s.get("tags") or {}, s["columns"], s["values"])
                )
        return series


def _when_sent(sent: asyncio.Event) -> Callable[[str, dict[str, Any]], Awaitable[None]]:
    """An httpcore trace hook (the `trace` request extension) that sets `sent` once the
    request body is written."""

    async def trace(event: str, info: dict[str, Any]) -> None:
        if event.endswith(".send_request_body.complete"):
            sent.set()

    return trace


def _raise_for_status(response: httpx.Response, what: str) -> None:
    status = response.status_code
    if status < 300:
        return
    detail = _error_text(response)
    if "partial write" in detail and status in (400, 422, 500):
        # Some points refused for their content, the rest stored: 1.x and 3.x say so with 400,
        # 2.x with 422, older 2.x with 500, which is then no outage and must not be retried.
        raise InfluxPartialWrite(f"{what} answered {status}: {detail}", status=status)
    # 429 and 503 are how InfluxDB (and proxies before it) say "later"; other 5xx are server
    # faults that a later attempt may not meet.
    if status in (429, 503) or status >= 500:
        raise InfluxUnavailable(
            f"{what} answered {status}: {detail}", retry_after=_retry_after(response)
        )
    if status in (401, 403):
        raise InfluxRefused(
            f"{what} answered {status} (not authorised): set MOCLO_INFLUX_TOKEN or put "
            f"user:password in MOCLO_INFLUX_URL. Server said: {detail}",
            status=status,
        )
    # 400: bad line protocol; 404: database not found; 413: body too large; 422 (2.x): points
    # it cannot take. None succeeds when repeated as is.
    raise InfluxRefused(f"{what} answered {status}: {detail}", status=status)


def _error_text(response: httpx.Response) -> str:
    """The server's own words: 1.x and 3.x put them in `error`, 2.x in `message`."""
    try:
        document = orjson.loads(response.content)
        return str(document.get("error") or document.get("message") or response.text)[:500]
    except (orjson.JSONDecodeError, AttributeError):
        return response.text[:500]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date; the caller's own backoff is a fine substitute


_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|h|m|s)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "h": 3600.0, "m": 60.0, "s": 1.0}


def go_duration_s(text: str) -> float:
    """Seconds in a Go duration as InfluxDB prints it: `24h0m0s`, `168h0m0s`, `0s`."""
    parts = _GO_DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ValueError(f"{text!r} is not a duration InfluxDB prints (like 24h0m0s)")
    return sum(float(number) * _GO_UNITS[unit] for number, unit in parts)


def quote_identifier(name: str) -> str:
    """An InfluxQL identifier in double quotes, so no name can end the statement."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def influxql_literal(value: str) -> str:
    """An InfluxQL string literal in single quotes."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
