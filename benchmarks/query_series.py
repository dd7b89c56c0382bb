"""Section 2 of the read-side benchmark: one device's last 7 days at 5-minute means, timed
along three paths against the same InfluxDB, interleaved so they share the machine's moods:

- raw: the one InfluxQL statement `run_series` sends, POSTed to `/query` by httpx and parsed
  with orjson: what InfluxDB itself costs, the floor;
- library: `parse_series_request` + `run_series` (a device lookup in the series index, the
  statement, reshaping), then `SeriesResult.to_json()` timed apart;
- api: `GET /api/series` of `moclo serve` (a child process), as the dashboard asks it, with
  an admin token.

Each path asks for one field (temp_c) and for every field (no `field`: the type's number
fields). Cold: the first time any path asks about a device; warm: the same few devices again,
round after round. Every answer must hold one bucket per 5 minutes of the window, and each
cold answer's means must equal those computed from the generator (BenchmarkFailed if not).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import orjson

from benchmarks.alerts_stack import BenchmarkFailed
from benchmarks.query_data import DAY_MINUTES, DEVICE_TYPE, MINUTE_NS, Fleet
from devices.base import parse_timestamp
from devices.catalogue import DEVICE_TYPES
from devices.rfc3339 import format_shortest
from query.fleet import find_device, list_devices
from query.request import parse_series_request
from query.series import influxql, run_series
from query.series_query import SeriesQuery, field_kind
from storage.influx import InfluxClient

PATHS = ("raw", "library", "api")
VARIANTS: dict[str, tuple[str, ...]] = {"one field": ("temp_c",), "all fields": ()}
EVERY_MINUTES = 5
Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Window:
    first_minute: int
    last_minute: int  # exclusive

    @classmethod
    def last_days(cls, fleet: Fleet, days: int) -> Window:
        """The `days` before the history's end, cut at a 5-minute boundary."""
        last = fleet.end_minute - fleet.end_minute % EVERY_MINUTES
        return cls(max(fleet.start_minute, last - days * DAY_MINUTES), last)

    @property
    def start(self) -> str:
        return format_shortest(self.first_minute * MINUTE_NS)

    @property
    def end(self) -> str:
        return format_shortest(self.last_minute * MINUTE_NS)

    @property
    def buckets(self) -> int:
        """Buckets with readings: aligned to the epoch, so the first may be partial."""
        return (self.last_minute - 1) // EVERY_MINUTES - self.first_minute // EVERY_MINUTES + 1


@dataclass(slots=True)
class Answer:
    """One answer, whichever path: bucket times and, per field, the values."""

    times_ns: list[int]
    columns: dict[str, list[Any]]


@dataclass(slots=True)
class Samples:
    """Milliseconds per (path, variant, phase)."""

    ms: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)

    def add(self, path: str, variant: str, phase: str, ms: float) -> None:
        self.ms.setdefault((path, variant, phase), []).append(ms)


class Paths:
    """The three ways to ask, sharing one window; each returns (ms, Answer)."""

    def __init__(
        self, influx_url: str, db: str, api_url: str, window: Window, api_token: str
    ) -> None:
        self.window = window
        self.db = db
        self.client = InfluxClient(influx_url, db, timeout_s=60)
        self.influx = httpx.AsyncClient(base_url=influx_url, timeout=60)
        self.api = httpx.AsyncClient(
            base_url=api_url, timeout=60, headers={"Authorization": f"Bearer {api_token}"}
        )
        self.to_json_ms: list[float] = []

    async def close(self) -> None:
        await self.client.close()
        await self.influx.aclose()
        await self.api.aclose()

    def request(self, tenant: str, device_id: str, fields: tuple[str, ...]) -> SeriesQuery:
        return parse_series_request(
            device_id=device_id,
            tenant=tenant,
            fields=fields,
            start=self.window.start,
            end=self.window.end,
            every=f"{EVERY_MINUTES}m",
        )

    async def library(self, tenant: str, device_id: str, variant: str) -> tuple[float, Answer]:
        began = time.perf_counter()
        result = await run_series(self.client, self.request(tenant, device_id, VARIANTS[variant]))
        ms = (time.perf_counter() - began) * 1000
        json_began = time.perf_counter()
        result.to_json()
        self.to_json_ms.append((time.perf_counter() - json_began) * 1000)
        if influxql(result.query) != self.statement(tenant, device_id, variant):
            raise BenchmarkFailed(f"the raw path would not send what run_series sent: {result}")
        (series,) = result.series
        columns = {f: [row[i] for row in series.values] for i, f in enumerate(series.fields)}
        return ms, Answer(list(series.times_ns), columns)

    def statement(self, tenant: str, device_id: str, variant: str) -> str:
        """What `run_series` sends once it has looked the device up and chosen the fields."""
        fields = VARIANTS[variant] or tuple(
            f
            for f in DEVICE_TYPES[DEVICE_TYPE].reading.measurement_fields
            if field_kind(DEVICE_TYPE, f) == "number"
        )
        request = self.request(tenant, device_id, fields)
        return influxql(replace(request, device_type=DEVICE_TYPE))

    async def raw(self, tenant: str, device_id: str, variant: str) -> tuple[float, Answer]:
        statement = self.statement(tenant, device_id, variant)
        began = time.perf_counter()
        response = await self.influx.post(
            "/query", data={"db": self.db, "q": statement, "epoch": "ns"}
        )
        document = orjson.loads(response.content)
        ms = (time.perf_counter() - began) * 1000
        response.raise_for_status()
        (series,) = document["results"][0]["series"]
        names = series["columns"]
        columns = {n: [row[i] for row in series["values"]] for i, n in enumerate(names) if i}
        return ms, Answer([row[0] for row in series["values"]], columns)

    async def http(self, tenant: str, device_id: str, variant: str) -> tuple[float, Answer]:
        params: dict[str, Any] = {
            "device": device_id,
            "tenant": tenant,
            "from": self.window.start,
            "to": self.window.end,
            "every": f"{EVERY_MINUTES}m",
        }
        if VARIANTS[variant]:
            params["field"] = list(VARIANTS[variant])
        began = time.perf_counter()
        response = await self.api.get("/api/series", params=params)
        document = orjson.loads(response.content)
        ms = (time.perf_counter() - began) * 1000
        if response.status_code != 200:
            raise BenchmarkFailed(f"/api/series answered {response.status_code}: {document}")
        (series,) = document["series"]
        points = series["points"]
        columns = {f: [p[i + 1] for p in points] for i, f in enumerate(series["fields"])}
        return ms, Answer([parse_timestamp(p[0]) for p in points], columns)

    async def ask(
        self, path: str, tenant: str, device_id: str, variant: str
    ) -> tuple[float, Answer]:
        if path == "raw":
            return await self.raw(tenant, device_id, variant)
        if path == "library":
            return await self.library(tenant, device_id, variant)
        return await self.http(tenant, device_id, variant)


def check(fleet: Fleet, d: int, window: Window, answer: Answer, *, means: bool) -> None:
    """BenchmarkFailed unless `answer` has every bucket (and, with `means`, the right means)."""
    expected = fleet.expected_buckets(d, window.first_minute, window.last_minute, EVERY_MINUTES)
    if len(answer.times_ns) != len(expected):
        raise BenchmarkFailed(
            f"{fleet.device_id(d)}: {len(answer.times_ns)} buckets, expected {len(expected)}"
        )
    if not means:
        return
    for i, (bucket_ns, want) in enumerate(expected):
        if answer.times_ns[i] != bucket_ns:
            raise BenchmarkFailed(f"{fleet.device_id(d)}: bucket {i} at {answer.times_ns[i]}")
        for name, values in answer.columns.items():
            if abs(float(values[i]) - want[name]) > 1e-9 * max(1.0, abs(want[name])):
                raise BenchmarkFailed(
                    f"{fleet.device_id(d)}: mean {name} of bucket {format_shortest(bucket_ns)} is "
                    f"{values[i]}, expected {want[name]}"
                )


async def measure(
    paths: Paths,
    fleet: Fleet,
    *,
    cold_devices: int,
    warm_devices: int,
    warm_rounds: int,
    seed: int,
    progress: Progress,
) -> Samples:
    """Cold touches, then warm rounds; every answer checked (see the module's docstring)."""
    samples = Samples()
    order = list(range(fleet.devices))
    random.Random(seed).shuffle(order)
    touched = 0

    def next_device() -> int:
        nonlocal touched
        d = order[touched % len(order)]
        touched += 1
        return d

    async def one(path: str, d: int, variant: str, phase: str) -> None:
        ms, answer = await paths.ask(path, fleet.tenant(d), fleet.device_id(d), variant)
        check(fleet, d, paths.window, answer, means=phase == "cold")
        samples.add(path, variant, phase, ms)

    progress(f"  cold: {cold_devices} devices per path and variant…")
    for k in range(cold_devices):
        for variant in VARIANTS:
            for path in PATHS[k % len(PATHS) :] + PATHS[: k % len(PATHS)]:  # rotate who is first
                await one(path, next_device(), variant, "cold")
    warm = [order[i % len(order)] for i in range(warm_devices)]
    progress(f"  warm: {warm_rounds} rounds over {len(warm)} devices…")
    for _ in range(warm_rounds):
        for d in warm:
            for variant in VARIANTS:
                for path in PATHS:
                    await one(path, d, variant, "warm")
    return samples


async def extras(paths: Paths, fleet: Fleet, *, repeats: int) -> dict[str, list[float]]:
    """Pieces that explain the paths: the device lookup every library call makes first, and
    the dashboard's fleet list (`list_devices`, what /api/devices reads) over this history."""
    out: dict[str, list[float]] = {"lookup": [], "list_devices": []}
    for k in range(repeats):
        d = k % fleet.devices
        began = time.perf_counter()
        await find_device(paths.client, fleet.device_id(d), tenant=fleet.tenant(d))
        out["lookup"].append((time.perf_counter() - began) * 1000)
    for _ in range(max(1, repeats // 10)):
        began = time.perf_counter()
        found = await list_devices(
            paths.client, tenant=None, device_type=DEVICE_TYPE, now_ns=fleet.end_minute * MINUTE_NS
        )
        out["list_devices"].append((time.perf_counter() - began) * 1000)
        if len(found) != fleet.devices:
            raise BenchmarkFailed(f"list_devices found {len(found)} of {fleet.devices} devices")
    return out
