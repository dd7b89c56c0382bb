"""The read side against a real InfluxDB: every query form gives the aggregates that plain Python
computes from the same readings, and no id, field, tenant or type can reach InfluxQL unchecked."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from core.settings import Settings
from devices.rfc3339 import format_shortest
from query import fleet as fleet_module
from query import series as series_module
from query.errors import AmbiguousDevice, QueryError, UnknownDevice
from query.fleet import DeviceRef, find_device, list_devices, list_tenants
from query.request import parse_series_request
from query.series import SeriesResult, run_series
from query.series_query import AGGS, SeriesQuery
from storage.influx import InfluxClient
from tests.helpers import Influx
from tests.series_data import NS, T0, Stored, expected_buckets, readings, store

T = TypeVar("T")
NOW_NS = (T0 + 3 * 3600) * NS
FIVE_MINUTES = 300
# Not on bucket edges: the first and last buckets are cut by the range.
FROM_NS = (T0 + 2 * 60 + 30) * NS
TO_NS = (T0 + 97 * 60 + 10) * NS


def ask(settings: Settings, call: Callable[[InfluxClient], Awaitable[T]]) -> T:
    async def run() -> T:
        client = InfluxClient(settings.influx_url, settings.influx_db)
        try:
            return await call(client)
        finally:
            await client.close()

    return asyncio.run(run())


def series(settings: Settings, **request: Any) -> SeriesResult:
    query = parse_series_request(now_ns=NOW_NS, **request)
    return ask(settings, lambda client: run_series(client, query))


@pytest.fixture
def stored(influx: Influx) -> list[Stored]:
    data = readings()
    store(influx, data)
    return data


def window(**extra: Any) -> dict[str, Any]:
    return {"start": format_shortest(FROM_NS), "end": format_shortest(TO_NS), **extra}


def buckets_of(result: SeriesResult, index: int, field: str) -> dict[int, Any]:
    s = result.series[index]
    column = s.fields.index(field)
    return {t: row[column] for t, row in zip(s.times_ns, s.values, strict=True)}


def same(actual: dict[int, Any], expected: dict[int, Any]) -> bool:
    return actual.keys() == expected.keys() and all(
        actual[k] == pytest.approx(expected[k], rel=1e-12) for k in expected
    )


# -- aggregates, computed by InfluxDB, checked against Python ---------------------------------


@pytest.mark.parametrize("agg", AGGS)
def test_each_aggregate_of_one_device_per_bucket(
    settings: Settings, stored: list[Stored], agg: str
) -> None:
    result = series(
        settings,
        device_id="cow-a",
        fields=["body_temp_c", "activity"],
        **window(every="5m", agg=agg),
    )
    mine = [r for r in stored if r.device_id == "cow-a"]
    assert len(result.series) == 1 and result.series[0].device_id == "cow-a"
    assert result.query.tenant == "farm" and result.query.device_type == "cow_tracker"
    for field in ("body_temp_c", "activity"):
        expected = expected_buckets(
            mine, field=field, agg=agg, every_s=FIVE_MINUTES, start_ns=FROM_NS, end_ns=TO_NS
        )[None]
        assert same(buckets_of(result, 0, field), expected), field
    # Bucket times are bucket starts (the first lies before `from`); the silent ones are absent.
    times = result.series[0].times_ns
    assert times[0] == T0 * NS < FROM_NS
    assert all(t % (FIVE_MINUTES * NS) == 0 for t in times)
    assert (T0 + 40 * 60) * NS not in times and (T0 + 45 * 60) * NS not in times


@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("tenant", ["farm", None], ids=["one-tenant", "all-tenants"])
def test_each_aggregate_over_a_fleet(
    settings: Settings, stored: list[Stored], agg: str, tenant: str | None
) -> None:
    result = series(
        settings,
        device_type="cow_tracker",
        tenant=tenant,
        fields=["body_temp_c", "activity"],
        **window(every="5m", agg=agg),
    )
    fleet = [r for r in stored if r.device_type == "cow_tracker" and tenant in (None, r.tenant)]
    assert [(s.tenant, s.device_id) for s in result.series] == [(tenant, None)]
    for field in ("body_temp_c", "activity"):
        expected = expected_buckets(
            fleet, field=field, agg=agg, every_s=FIVE_MINUTES, start_ns=FROM_NS, end_ns=TO_NS
        )[None]
        assert same(buckets_of(result, 0, field), expected), field


@pytest.mark.parametrize("agg", ["mean", "last", "count"])
def test_a_fleet_grouped_by_device_has_a_series_per_device(
    settings: Settings, stored: list[Stored], agg: str
) -> None:
    result = series(
        settings,
        device_type="cow_tracker",
        fields=["body_temp_c"],
        group_by="device_id",
        **window(every="5m", agg=agg),
    )
    cows = [r for r in stored if r.device_type == "cow_tracker"]
    expected = expected_buckets(
        cows,
        field="body_temp_c",
        agg=agg,
        every_s=FIVE_MINUTES,
        start_ns=FROM_NS,
        end_ns=TO_NS,
        key=lambda r: (r.tenant, r.device_id),
    )
    keys = [(s.tenant, s.device_id) for s in result.series]
    assert keys == [("farm", "cow-a"), ("farm", "cow-b"), ("zoo", "cow-z")]
    for index, key in enumerate(keys):
        assert same(buckets_of(result, index, "body_temp_c"), expected[key]), key


def test_raw_points_are_the_stored_readings_oldest_first(
    settings: Settings, stored: list[Stored]
) -> None:
    result = series(settings, device_id="cow-b", **window())
    mine = [r for r in stored if r.device_id == "cow-b" and FROM_NS <= r.ts_ns < TO_NS]
    s = result.series[0]
    assert s.fields == (
        "body_temp_c",
        "activity",
        "rumination_min",
        "lat",
        "lon",
        "battery_pct",
    )
    assert list(s.times_ns) == [r.ts_ns for r in mine]
    assert [list(row) for row in s.values] == [[r.values[f] for f in s.fields] for r in mine]
    assert result.point_limit == series_module.MAX_RAW_POINTS and not result.truncated


def test_raw_points_over_the_limit_keep_the_newest_and_say_so(
    settings: Settings, stored: list[Stored], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(series_module, "MAX_RAW_POINTS", 5)
    result = series(settings, device_id="cow-b", fields=["seq"], **window())
    mine = [r for r in stored if r.device_id == "cow-b" and FROM_NS <= r.ts_ns < TO_NS]
    assert result.truncated and result.point_limit == 5
    assert list(result.series[0].times_ns) == [r.ts_ns for r in mine[-5:]]
    assert result.to_json()["truncated"] is True


def test_raw_points_of_a_fleet_come_per_device(settings: Settings, stored: list[Stored]) -> None:
    result = series(
        settings, device_type="cow_tracker", tenant="farm", group_by="device_id", fields=["seq"]
    )
    # The default range is the hour before now, which holds none of these readings.
    assert result.series == ()
    result = series(
        settings, device_type="cow_tracker", group_by="device_id", fields=["seq"], **window()
    )
    assert [s.device_id for s in result.series] == ["cow-a", "cow-b", "cow-z"]
    for s in result.series:
        mine = [
            r.values["seq"]
            for r in stored
            if r.device_id == s.device_id and FROM_NS <= r.ts_ns < TO_NS
        ]
        assert [row[0] for row in s.values] == mine


def test_since_is_the_window_up_to_now(settings: Settings, stored: list[Stored]) -> None:
    now_ns = (T0 + 100 * 60) * NS
    query = parse_series_request(device_id="cow-z", fields=["seq"], since="30m", now_ns=now_ns)
    result = ask(settings, lambda client: run_series(client, query))
    assert (query.start_ns, query.end_ns) == (now_ns - 1800 * NS, now_ns)
    assert [row[0] for row in result.series[0].values] == list(range(70, 100))


def test_every_auto_picks_a_round_bucket_and_influxdb_fills_it(
    settings: Settings, stored: list[Stored]
) -> None:
    result = series(settings, device_id="th-1", fields=["temp_c"], **window(every="auto"))
    # 94m40s over at most 600 buckets is at least 9.5s a bucket: the round size is 10s.
    assert result.query.every_s == 10
    mine = [r for r in stored if r.device_id == "th-1"]
    expected = expected_buckets(
        mine, field="temp_c", agg="mean", every_s=10, start_ns=FROM_NS, end_ns=TO_NS
    )[None]
    assert same(buckets_of(result, 0, "temp_c"), expected)


def test_true_false_fields_take_min_max_count_and_last_but_not_mean(
    settings: Settings, stored: list[Stored]
) -> None:
    mine = [r for r in stored if r.device_id == "th-1"]
    for agg in ("max", "min", "count", "last"):
        result = series(
            settings, device_id="th-1", fields=["heating"], **window(every="15m", agg=agg)
        )
        expected = expected_buckets(
            mine, field="heating", agg=agg, every_s=900, start_ns=FROM_NS, end_ns=TO_NS
        )[None]
        assert buckets_of(result, 0, "heating") == expected, agg
    with pytest.raises(QueryError, match="mean cannot take thermostat's field 'heating'"):
        series(settings, device_id="th-1", fields=["heating"], **window(every="15m"))
    # Without fields, mean shows the fields it can take.
    result = series(settings, device_id="th-1", **window(every="15m"))
    assert result.query.fields == ("temp_c", "setpoint_c", "humidity_pct")


def test_a_silent_device_has_one_empty_series(settings: Settings, stored: list[Stored]) -> None:
    start = format_shortest((T0 + 41 * 60) * NS)
    end = format_shortest((T0 + 49 * 60) * NS)
    result = series(settings, device_id="cow-a", start=start, end=end, every="1m")
    assert [(s.device_id, s.times_ns) for s in result.series] == [("cow-a", ())]


# -- the JSON document -----------------------------------------------------------------------


def test_the_json_document(settings: Settings, stored: list[Stored]) -> None:
    start, end = (T0 + 60) * NS, (T0 + 11 * 60) * NS
    result = series(
        settings,
        device_type="cow_tracker",
        tenant="farm",
        fields=["activity"],
        start=format_shortest(start),
        end=format_shortest(end),
        every="5m",
        agg="count",
        group_by="device_id",
    )
    assert result.to_json() == {
        "version": 1,
        "query": {
            "device_id": None,
            "device_type": "cow_tracker",
            "tenant": "farm",
            "fields": ["activity"],
            "from": format_shortest(start),
            "to": format_shortest(end),
            "every": "5m",
            "every_s": 300,
            "agg": "count",
            "group_by": "device_id",
        },
        "series": [
            {
                "tenant": "farm",
                "device_type": "cow_tracker",
                "device_id": device,
                "fields": ["activity"],
                "points": [
                    [format_shortest(T0 * NS), 4],  # minutes 1-4
                    [format_shortest((T0 + 300) * NS), 5],
                    [format_shortest((T0 + 600) * NS), 1],  # minute 10
                ],
            }
            for device in ("cow-a", "cow-b")
        ],
        "truncated": False,
        "point_limit": None,
    }


# -- finding devices and tenants -------------------------------------------------------------


def test_tenants_and_devices(settings: Settings, stored: list[Stored]) -> None:
    assert ask(settings, list_tenants) == ["farm", "home", "zoo"]
    devices = ask(settings, lambda c: list_devices(c, tenant=None, now_ns=NOW_NS))
    assert [(d.tenant, d.device_type, d.device_id) for d in devices] == [
        ("farm", "cow_tracker", "cow-a"),
        ("farm", "cow_tracker", "cow-b"),
        ("home", "thermostat", "th-1"),
        ("zoo", "cow_tracker", "cow-z"),
    ]
    newest = {r.device_id: r for r in stored}  # readings are oldest first
    for d in devices:
        assert d.last_seen_ns == newest[d.device_id].ts_ns
        assert d.last == newest[d.device_id].values
    farm = ask(settings, lambda c: list_devices(c, tenant="farm", now_ns=NOW_NS))
    assert [d.device_id for d in farm] == ["cow-a", "cow-b"]
    thermostats = ask(
        settings, lambda c: list_devices(c, tenant=None, device_type="thermostat", now_ns=NOW_NS)
    )
    assert [d.device_id for d in thermostats] == ["th-1"]
    # A device silent for longer than the window is not listed.
    later = NOW_NS + 31 * 86_400 * NS
    assert ask(settings, lambda c: list_devices(c, tenant=None, now_ns=later)) == []


def test_devices_silent_for_days_are_found_further_back(
    settings: Settings, stored: list[Stored], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last day is looked at first; the devices not found there are looked for up to 30
    days back, a few ids per query."""
    monkeypatch.setattr(fleet_module, "_IDS_PER_QUERY", 2)
    recent = ask(settings, lambda c: list_devices(c, tenant=None, now_ns=NOW_NS))
    days_later = NOW_NS + 5 * 86_400 * NS
    assert ask(settings, lambda c: list_devices(c, tenant=None, now_ns=days_later)) == recent
    assert len(recent) == 4
    assert ask(settings, lambda c: find_device(c, "th-1", tenant=None)) == DeviceRef(
        "home", "thermostat", "th-1"
    )


def test_an_unknown_device_is_named_with_the_tenants_searched(
    settings: Settings, stored: list[Stored]
) -> None:
    with pytest.raises(UnknownDevice, match=r"no device 'cow-q' .* \(searched farm, home, zoo\)"):
        series(settings, device_id="cow-q")
    with pytest.raises(UnknownDevice, match="no device 'cow-a' is stored in tenant 'zoo'"):
        series(settings, device_id="cow-a", tenant="zoo")
    with pytest.raises(UnknownDevice, match="'cow-a' is stored as cow_tracker, not thermostat"):
        series(settings, device_id="cow-a", device_type="thermostat")
    with pytest.raises(UnknownDevice, match="no car devices are stored in any tenant"):
        series(settings, device_type="car", every="5m")
    with pytest.raises(UnknownDevice, match="no cow_tracker devices are stored in tenant 'home'"):
        series(settings, device_type="cow_tracker", tenant="home", every="5m")


def test_a_device_id_in_two_tenants_needs_a_tenant(
    settings: Settings, stored: list[Stored], influx: Influx
) -> None:
    store(influx, [Stored("zoo", "cow_tracker", "cow-a", T0 * NS, stored[0].values)])
    with pytest.raises(AmbiguousDevice, match="'cow-a' is stored in tenants farm, zoo: name"):
        series(settings, device_id="cow-a")
    assert series(settings, device_id="cow-a", tenant="zoo", **window()).series[0].times_ns == ()


def test_an_unknown_field_lists_the_fields_of_the_type(
    settings: Settings, stored: list[Stored]
) -> None:
    with pytest.raises(QueryError, match="cow_tracker has no field 'temp_c'; its fields: body_"):
        series(settings, device_id="cow-a", fields=["temp_c"])
    with pytest.raises(QueryError, match="thermostat has no field 'activity'; its fields: temp_c"):
        series(settings, device_type="thermostat", fields=["activity"], every="1m")


def test_too_many_points_for_a_fleet_is_refused_before_asking(
    settings: Settings, stored: list[Stored], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(series_module, "MAX_POINTS", 50)
    with pytest.raises(QueryError, match="3 devices × 20 buckets is more than 50 points"):
        series(
            settings,
            device_type="cow_tracker",
            group_by="device_id",
            **window(every="5m"),
        )


# -- hostile names never reach InfluxQL -------------------------------------------------------

HOSTILE = [
    "x' OR 1=1",
    "x' OR '1'='1",
    'a"; DROP DATABASE x',
    "cow\\",
    "$x",
    "cow\na",
    "/.*/",
    "cow-a' OR device_id =~ /.*/ --",
    "Cow-A",
    "",
    "a" * 64,
]


@pytest.mark.parametrize("hostile", HOSTILE)
@pytest.mark.parametrize("param", ["device_id", "tenant", "device_type", "fields"])
def test_hostile_names_are_refused_and_the_data_stays(
    settings: Settings, stored: list[Stored], influx: Influx, hostile: str, param: str
) -> None:
    before = influx.count("cow_tracker", "seq")
    request: dict[str, Any] = {"device_id": "cow-a", **window(every="5m")}
    request[param] = [hostile] if param == "fields" else hostile
    if hostile == "":
        # An empty parameter means "not given" (`?tenant=` in a URL).
        if param == "device_id":
            request["device_type"] = "cow_tracker"
        series(settings, **request)
    else:
        with pytest.raises(QueryError) as refused:
            series(settings, **request)
        assert refused.value.param == param
        assert type(refused.value) is QueryError  # refused as a bad name, not looked up
    assert (
        influx.count("cow_tracker", "seq")
        == before
        == len([r for r in stored if r.device_type == "cow_tracker"])
    )


@pytest.mark.parametrize("hostile", HOSTILE)
def test_a_hand_made_query_or_lookup_with_a_hostile_name_is_refused(
    settings: Settings, stored: list[Stored], hostile: str
) -> None:
    span = {"start_ns": FROM_NS, "end_ns": TO_NS, "every_s": 300}
    for made in (
        lambda: SeriesQuery(device_id=hostile, **span),
        lambda: SeriesQuery(device_type="cow_tracker", tenant=hostile, **span),
        lambda: SeriesQuery(device_type=hostile, **span),
        lambda: SeriesQuery(device_type="cow_tracker", fields=(hostile,), **span),
    ):
        with pytest.raises(QueryError):
            made()
    for lookup in (
        lambda c: find_device(c, hostile, tenant=None),
        lambda c: find_device(c, "cow-a", tenant=hostile),
        lambda c: list_devices(c, tenant=hostile),
        lambda c: list_devices(c, tenant=None, device_type=hostile),
    ):
        with pytest.raises(QueryError):
            ask(settings, lookup)
