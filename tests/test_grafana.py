"""The Grafana dashboards, checked without Grafana and without Docker.

Every panel and variable uses a provisioned data source; every InfluxQL query names only what
ingest stores and draws the default rules' thresholds; and every query is run for real: InfluxQL
(with Grafana's macros and variables put in as Grafana does) against the session's InfluxDB,
filled with a simulated day of a farm, a clinic and households that went through a real ingest,
and PromQL's metrics and labels against what that ingest served at /metrics. How compose wires
Grafana and Prometheus is checked in tests/test_compose.py.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from core.settings import Settings
from devices.catalogue import DEVICE_TYPES
from devices.rules import ThresholdRule
from devices.topics import DeviceAddress, telemetry_topic
from devices.types import DeviceType
from ingest.decode import ValidReading
from ingest.options import IngestOptions
from moclo.stack import InfluxServer, MosquittoServer
from simulators.fleet import FleetSpec
from simulators.run import ScriptedEvent, SimulationOptions, run_simulation
from storage.alert_record import Alert
from storage.influx import InfluxClient, Series
from storage.lineprotocol import reading_line
from storage.schema import ALERTS
from tests.conftest import RunningIngest
from tests.helpers import publish_all, wait_until

Json = dict[str, Any]
INFLUX_DASHBOARDS = ("farm", "cardiology", "home-energy")
ALL_DASHBOARDS = (*INFLUX_DASHBOARDS, "ingest-health")


# --- The files ----------------------------------------------------------------------------


def _yaml(path: Path) -> Json:
    document: Json = yaml.safe_load(path.read_text())
    return document


@pytest.fixture(scope="module")
def root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def datasources(root: Path) -> dict[str, Json]:
    folder = root / "deploy/grafana/provisioning/datasources"
    found = [ds for path in sorted(folder.glob("*.yaml")) for ds in _yaml(path)["datasources"]]
    by_uid = {ds["uid"]: ds for ds in found}
    assert len(by_uid) == len(found), "two provisioned data sources share a uid"
    return by_uid


@pytest.fixture(scope="module")
def dashboards(root: Path) -> dict[str, Json]:
    folder = root / "deploy/grafana/dashboards"
    boards = {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}
    assert set(boards) == set(ALL_DASHBOARDS)
    return boards


def panels_of(board: Json) -> list[Json]:
    """Every panel, including those inside collapsed rows."""
    out = []
    for panel in board["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def targets_of(board: Json, ds_type: str) -> list[tuple[Json, Json]]:
    return [
        (panel, target)
        for panel in panels_of(board)
        for target in panel.get("targets", [])
        if target["datasource"]["type"] == ds_type
    ]


def test_every_panel_and_variable_uses_a_provisioned_data_source(
    dashboards: dict[str, Json], datasources: dict[str, Json]
) -> None:
    uids = {board["uid"] for board in dashboards.values()}
    assert len(uids) == len(dashboards)
    for name, board in dashboards.items():
        refs = [v["datasource"] for v in board["templating"]["list"]]
        for panel in panels_of(board):
            if panel["type"] == "row":
                continue
            refs.append(panel["datasource"])
            assert panel["targets"], f"{name}: panel {panel['title']!r} has no query"
            refs += [target["datasource"] for target in panel["targets"]]
        for ref in refs:
            assert ref["uid"] in datasources, f"{name}: unknown data source {ref}"
            assert ref["type"] == datasources[ref["uid"]]["type"]


# --- InfluxQL: what a query names ----------------------------------------------------------


@dataclass(frozen=True)
class Schema:
    tags: frozenset[str]
    fields: frozenset[str]


def _point_schema(line: str) -> tuple[str, Schema]:
    head, fields, _ = line.split(" ")
    measurement, *tags = head.split(",")
    return measurement, Schema(
        frozenset(t.split("=")[0] for t in tags),
        frozenset(f.split("=")[0] for f in fields.split(",")),
    )


def _reading_schema(device: DeviceType) -> tuple[str, Schema]:
    reading = device.reading.model_validate(device.example)
    return _point_schema(reading_line(ValidReading(DeviceAddress("t", device.name, "d"), reading)))


def _alert_schema() -> tuple[str, Schema]:
    alert = Alert(
        alert_id="a", state="acknowledged", rule="r", kind="threshold", severity="info",
        tenant="t", device_type="d", device_id="i", value=1.0, message="m", ts_ns=1,
        first_seen_ns=1, last_seen_ns=1, acknowledged_by="b", note="n",
    )  # fmt: skip
    return _point_schema(alert.to_line())


# What ingest stores: one measurement per device type in the catalogue, and moclo_alerts.
SCHEMA = dict([*(_reading_schema(d) for d in DEVICE_TYPES.values()), _alert_schema()])
assert ALERTS.name in SCHEMA

_STRING = re.compile(r"'(?:[^'\\]|\\.)*'")
_REGEX = re.compile(r"(=~|!~)\s*/(?:[^/\\]|\\.)*/")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_KEYWORDS = {
    "select", "from", "where", "and", "or", "as", "group", "by", "time", "fill", "null", "none",
    "order", "desc", "asc", "limit", "show", "tag", "values", "with", "key", "true", "false",
    "mean", "min", "max", "last", "first", "count", "sum", "spread", "non_negative_difference",
}  # fmt: skip


@dataclass(frozen=True)
class Names:
    measurements: set[str]
    aliases: set[str]
    tags_grouped: set[str]  # GROUP BY and WITH KEY: must be tags
    referenced: set[str]  # every other quoted identifier


def influxql_names(query: str) -> Names:
    """The identifiers an InfluxQL query names, by role; unquoted identifiers are refused, so
    that nothing escapes the check."""
    text = _REGEX.sub(r"\1 /re/", _STRING.sub("'s'", query))
    text = re.sub(r"\$\{\w+(:\w+)?\}|\$\w+", " true ", text)  # $timeFilter, $__interval
    bare = _QUOTED.sub(" ", re.sub(r"\b\d+(\.\d+)?[a-z]*\b", " ", text))
    unknown = {w for w in re.findall(r"[A-Za-z_]\w*", bare) if w.lower() not in _KEYWORDS}
    assert not unknown - {"re", "s"}, f"quote these identifiers: {unknown} in {query}"
    measurements = {
        m
        for group in re.findall(r'FROM\s+((?:"[^"]+"\s*,?\s*)+)', text)
        for m in _QUOTED.findall(group)
    }
    aliases = set(re.findall(r'AS\s+"([^"]+)"', text))
    grouped = set(re.findall(r'KEY\s*=\s*"([^"]+)"', text))
    for clause in re.findall(
        r"GROUP BY(.*?)(?=\s+fill\(|\s+ORDER|\s+LIMIT|\)|$)", re.sub(r"time\([^)]*\)", "", text)
    ):
        grouped |= set(_QUOTED.findall(clause))
    referenced = set(_QUOTED.findall(text)) - measurements - aliases - grouped
    return Names(measurements, aliases, grouped, referenced)


def check_names(query: str) -> None:
    names = influxql_names(query)
    assert names.measurements, f"no measurement in {query}"
    unknown = names.measurements - set(SCHEMA)
    assert not unknown, f"measurements {unknown} are neither a device type nor {ALERTS.name}"
    tags = set().union(*(SCHEMA[m].tags for m in names.measurements))
    fields = set().union(*(SCHEMA[m].fields for m in names.measurements))
    assert names.tags_grouped <= tags, (
        f"not tags of {names.measurements}: {names.tags_grouped - tags}"
    )
    stray = names.referenced - tags - fields - names.aliases
    assert not stray, f"{names.measurements} have no field or tag {stray}: {query}"


def test_every_influxql_query_names_only_what_ingest_stores(dashboards: dict[str, Json]) -> None:
    for name in INFLUX_DASHBOARDS:
        board = dashboards[name]
        for panel, target in targets_of(board, "influxdb"):
            # Builder-mode queries would be rendered by Grafana; raw ones are what runs.
            assert target["rawQuery"] is True, f"{name}: {panel['title']!r} is not raw InfluxQL"
            check_names(target["query"])
            for tag in re.findall(r"\$tag_(\w+)", target.get("alias", "")):
                assert tag in influxql_names(target["query"]).tags_grouped, (
                    f"{name}: {panel['title']!r} names $tag_{tag} in its legend but does not "
                    "GROUP BY it"
                )
        for variable in board["templating"]["list"]:
            check_names(variable["query"])


def test_each_timeseries_draws_the_default_thresholds_of_the_fields_it_plots(
    dashboards: dict[str, Json],
) -> None:
    for name in INFLUX_DASHBOARDS:
        for panel in panels_of(dashboards[name]):
            if panel["type"] != "timeseries":
                continue
            drawn = {s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]}
            style = panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"]
            for target in panel["targets"]:
                names = influxql_names(target["query"])
                for measurement in names.measurements & set(DEVICE_TYPES):
                    for rule in DEVICE_TYPES[measurement].rules:
                        if isinstance(rule, ThresholdRule) and rule.field in names.referenced:
                            assert rule.raise_at in drawn and style != "off", (
                                f"{name}: {panel['title']!r} plots {measurement}.{rule.field} "
                                f"without the {rule.name} threshold {rule.raise_at}"
                            )


# --- InfluxQL as Grafana sends it ------------------------------------------------------------

# Grafana's `regex` variable format: each value regex-escaped, several as (a|b).
_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}/]")


def regex_format(values: list[str]) -> str:
    escaped = [_REGEX_SPECIAL.sub(r"\\\g<0>", v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


@dataclass(frozen=True)
class TimeRange:
    from_ms: int
    to_ms: int

    @classmethod
    def of(cls, board: Json, now_ms: int) -> TimeRange:
        match = re.fullmatch(r"now-(\d+)([mhd])", board["time"]["from"])
        assert match and board["time"]["to"] == "now", board["time"]
        span = int(match.group(1)) * {"m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return cls(now_ms - span * 1000, now_ms)


def render(
    query: str, variables: dict[str, Json], chosen: dict[str, list[str]], span: TimeRange
) -> str:
    """The query as Grafana sends it: $timeFilter as its backend writes it, $__interval as it
    picks for a day on a typical screen, and variables in the format the query asks for."""
    query = query.replace("$timeFilter", f"time >= {span.from_ms}ms and time <= {span.to_ms}ms")
    query = query.replace("$__interval", "1m")

    def value(match: re.Match[str]) -> str:
        name, form = match.group(1) or match.group(3), match.group(2)
        assert name in variables, f"no variable {name!r} for {query}"
        if form == "regex":
            return regex_format(chosen[name])
        # Grafana's default for a multi-value InfluxQL variable changed between versions.
        assert form is None and not variables[name]["multi"], f"write ${{{name}:regex}}"
        return chosen[name][0]

    rendered = re.sub(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)", value, query)
    assert "[[" not in rendered
    return rendered


def run(url: str, database: str, query: str) -> list[Series]:
    async def go() -> list[Series]:
        client = InfluxClient(url, database)
        try:
            return await client.query(query)
        finally:
            await client.close()

    return asyncio.run(go())


def has_data(series: list[Series]) -> bool:
    return any(v is not None for s in series for row in s.values for v in row[1:])


# --- A day of a farm, a clinic and households, through a real ingest --------------------------

TENANTS = {"farm": "de-wei-farm", "cardiology": "heart-clinic", "home-energy": "households"}
DAY = SimulationOptions(
    fleets=(
        FleetSpec("de-wei-farm", "cow_tracker", 4, 300.0),
        FleetSpec("heart-clinic", "pacemaker", 3, 300.0),
        FleetSpec("heart-clinic", "blood_pressure", 3),  # measured mornings and evenings
        FleetSpec("households", "smart_meter", 3, 300.0),
        FleetSpec("households", "thermostat", 3, 300.0),
        FleetSpec("households", "fridge", 3, 300.0),
    ),
    events=(
        ScriptedEvent("de-wei-farm", "cow-0001", "fever", "+20h", 8 * 3600),  # open at the end
        ScriptedEvent("de-wei-farm", "cow-0002", "fever", "+2h", 4 * 3600),  # over by then
        ScriptedEvent("de-wei-farm", "cow-0003", "fever", "+21h", 8 * 3600),
        ScriptedEvent("heart-clinic", "pacemaker-0001", "battery_depletion", "+14h", 86400),
        ScriptedEvent("heart-clinic", "pacemaker-0001", "lead_problem", "+18h", 86400),
        ScriptedEvent("heart-clinic", "pacemaker-0002", "tachycardia", "+8h", 3600),
        ScriptedEvent("heart-clinic", "bp-0001", "hypertensive_crisis", "+1h", 2 * 86400),
        ScriptedEvent("households", "meter-0001", "voltage_sag", "+22h", 6 * 3600),
        ScriptedEvent("households", "fridge-0001", "door_left_open", "+12h", 2 * 3600),
    ),
    duration_s=86400,
    seed=5,
    burst=True,
)


@dataclass(frozen=True)
class FleetDay:
    url: str
    database: str
    metrics: str  # what ingest served at /metrics afterwards
    now_ms: int


class _Webhook:
    """A real endpoint taking alert changes, so that ingest serves its webhook metrics."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def fleet_day(
    mosquitto: MosquittoServer, influxdb: InfluxServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FleetDay]:
    unique = uuid.uuid4().hex[:10]
    webhook = _Webhook()
    settings = Settings(
        mqtt_url=mosquitto.url,
        influx_url=influxdb.url,
        influx_db=f"test_{unique}",
        topic_prefix=f"t{unique}",
        ingest_client_id=f"ingest-{unique}",
        spool_dir=str(tmp_path_factory.mktemp("spool")),
        http_listen="127.0.0.1:0",
        webhook_url=SecretStr(webhook.url),
        unregistered="off",  # simulated devices, none registered
    )
    try:
        with RunningIngest(settings, IngestOptions(linger_s=0.05)) as running:
            result = run_simulation(settings.mqtt, settings.topic_prefix, DAY)
            assert result.acknowledged
            # Two bad messages, so that rejections by reason are served too.
            bad = telemetry_topic(settings.topic_prefix, "households", "fridge", "fridge-0001")
            publish_all(settings.mqtt_url, [(bad, b"{not json"), (bad, b'{"ts": 1}')])

            # Handled means stored and acknowledged, alert changes included.
            wait_until(
                lambda: running.stats.messages == result.messages + 2,
                timeout_s=60,
                what="every message handled",
            )
            stored = run(influxdb.url, settings.influx_db, 'SELECT count("seq") FROM /.*/')
            assert sum(s.values[0][1] for s in stored) == result.readings
            changes = run(influxdb.url, settings.influx_db, 'SELECT "state" FROM "moclo_alerts"')
            assert len(changes[0].values) == len(running.alerts) >= 10
            assert running.ingest is not None and running.ingest.http_port
            port = running.ingest.http_port
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        yield FleetDay(influxdb.url, settings.influx_db, metrics, int(time.time() * 1000))
    finally:
        webhook.close()


@dataclass(frozen=True)
class LiveBoard:
    """A dashboard opened on the filled database: its variables resolved as Grafana does, the
    tenant picked and every device variable at its default, "All"."""

    board: Json
    day: FleetDay
    chosen: dict[str, list[str]]

    @classmethod
    def open(cls, board: Json, day: FleetDay, tenant: str) -> LiveBoard:
        live = cls(board, day, {})
        for name, variable in live.variables.items():
            series = live.run(variable["query"])
            values = sorted({row[1] for s in series for row in s.values})
            assert values, f"{board['uid']}: variable {name} has no values"
            if name == "tenant":
                assert tenant in values
                values = [tenant]
            live.chosen[name] = values
        return live

    @property
    def variables(self) -> dict[str, Json]:
        return {v["name"]: v for v in self.board["templating"]["list"]}

    def run(self, query: str, **choose: list[str]) -> list[Series]:
        span = TimeRange.of(self.board, self.day.now_ms)
        rendered = render(query, self.variables, {**self.chosen, **choose}, span)
        return run(self.day.url, self.day.database, rendered)  # raises if InfluxDB refuses it

    def panel(self, kind: str, title: str) -> Json:
        (found,) = [p for p in panels_of(self.board) if (p["type"], p["title"]) == (kind, title)]
        return found


@pytest.mark.parametrize("name", INFLUX_DASHBOARDS)
def test_every_panel_query_runs_and_finds_data(
    name: str, dashboards: dict[str, Json], fleet_day: FleetDay
) -> None:
    live = LiveBoard.open(dashboards[name], fleet_day, TENANTS[name])
    targets = targets_of(live.board, "influxdb")
    assert len(targets) >= 10
    for panel, target in targets:
        series = live.run(target["query"])
        assert has_data(series), f"{name}: {panel['title']!r} finds nothing: {target['query']}"


@pytest.mark.parametrize("name", INFLUX_DASHBOARDS)
def test_choosing_one_device_shows_only_that_device(
    name: str, dashboards: dict[str, Json], fleet_day: FleetDay
) -> None:
    live = LiveBoard.open(dashboards[name], fleet_day, TENANTS[name])
    for variable in (v for v in live.variables if v != "tenant"):
        one = live.chosen[variable][:1]
        filtered = 0
        for panel, target in targets_of(live.board, "influxdb"):
            if f"${{{variable}:regex}}" not in target["query"]:
                continue
            filtered += 1
            shown = set()
            for s in live.run(target["query"], **{variable: one}):
                shown |= {s.tags["device_id"]} if "device_id" in s.tags else set()
                if "device_id" in s.columns:
                    shown |= {row[s.columns.index("device_id")] for row in s.values}
            assert shown <= set(one), f"{name}: {panel['title']!r} shows {shown} for {one}"
        assert filtered, f"{name}: no panel is filtered by ${variable}"


@pytest.mark.parametrize("name", INFLUX_DASHBOARDS)
def test_open_alerts_are_the_episodes_not_yet_resolved(
    name: str, dashboards: dict[str, Json], fleet_day: FleetDay
) -> None:
    live = LiveBoard.open(dashboards[name], fleet_day, TENANTS[name])
    table = live.panel("table", "Open alerts")["targets"][0]["query"]
    shown = sorted(
        (row[s.columns.index("device_id")], row[s.columns.index("rule")])
        for s in live.run(table)
        for row in s.values
    )
    # The truth, from every stored change of the tenant (whose devices are all of this
    # dashboard's types): the newest change per device and rule, unless it is resolved.
    changes = (
        'SELECT "state", "device_id", "rule" FROM "moclo_alerts" '
        f"WHERE \"tenant\" = '{TENANTS[name]}'"
    )
    newest: dict[tuple[str, str], tuple[int, str]] = {}
    for s in run(fleet_day.url, fleet_day.database, changes):
        for ts, state, device, rule in s.values:
            if newest.get((device, rule), (0, ""))[0] < ts:
                newest[(device, rule)] = (ts, state)
    expected = sorted(key for key, (_, state) in newest.items() if state != "resolved")
    assert shown == expected and len(newest) > len(expected) > 0
    (count,) = live.run(live.panel("stat", "Open alerts")["targets"][0]["query"])
    assert count.values[0][1] == len(shown)
    if name == "farm":  # cow-0002's fever is over; cow-0001's and cow-0003's are on
        assert shown == [("cow-0001", "fever"), ("cow-0003", "fever")]
        assert ("cow-0002", "fever") in newest


# --- PromQL against what ingest serves -----------------------------------------------------

_PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                    "and", "or", "unless", "offset"}  # fmt: skip
_PROMQL_FUNCTIONS = {"rate", "increase", "irate", "sum", "avg", "min", "max", "count",
                     "histogram_quantile"}  # fmt: skip
# Added by Prometheus to every series it scrapes; `up` is its own per-target metric.
_TARGET_LABELS = {"job", "instance"}


@dataclass(frozen=True)
class PromNames:
    metrics: set[str]
    labels: set[str]  # in selectors and by/without
    grouped_by: set[str] | None  # the labels left after aggregation; None: no aggregation


def promql_names(expr: str) -> PromNames:
    # Grafana's own variable query, label_values(metric, label), is not PromQL.
    if variable := re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", expr):
        return PromNames({variable.group(1)}, {variable.group(2)}, None)
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    labels = {
        label
        for inside in re.findall(r"\{([^}]*)\}", text)
        for label in re.findall(r"(\w+)\s*[=!]", inside)
    }
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    grouped: set[str] | None = None
    for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", text):
        grouped = (grouped or set()) | set(re.findall(r"\w+", clause))
    labels |= grouped or set()
    text = re.sub(r"\b(?:by|without)\s*\([^)]*\)", " ", text)
    if grouped is None and re.search(r"\b(sum|avg|min|max|count)\s*\(", text):
        grouped = set()
    metrics = set()
    for word in re.finditer(r"\b[a-zA-Z_:][\w:]*\b(\s*\()?", text):
        name, call = word.group(0).rstrip(" ("), word.group(1)
        if call:
            assert name in _PROMQL_FUNCTIONS, f"unknown function {name} in {expr}"
        elif name not in _PROMQL_KEYWORDS:
            metrics.add(name)
    return PromNames(metrics, labels, grouped)


def served(metrics_text: str) -> dict[str, set[str]]:
    """Sample name → label names, as Prometheus would store what ingest served."""
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics_text):
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
        for suffix in suffixes.get(family.type, ("",)):
            names.setdefault(family.name + suffix, set(_TARGET_LABELS))
        for sample in family.samples:
            names.setdefault(sample.name, set(_TARGET_LABELS)).update(sample.labels)
    return names


def test_every_metric_a_panel_plots_is_served_by_ingest(
    dashboards: dict[str, Json], fleet_day: FleetDay, root: Path
) -> None:
    available = served(fleet_day.metrics)
    job = _yaml(root / "deploy/prometheus/prometheus.yml")["scrape_configs"][0]["job_name"]
    board = dashboards["ingest-health"]
    expressions = [
        (p["title"], t["expr"], t["legendFormat"]) for p, t in targets_of(board, "prometheus")
    ]
    expressions += [(v["name"], v["query"]["query"], "") for v in board["templating"]["list"]]
    plotted = set()
    for title, expr, legend in expressions:
        names = promql_names(expr)
        assert names.metrics, f"{title}: no metric in {expr}"
        labels = set(_TARGET_LABELS)
        for metric in names.metrics:
            if metric == "up":  # Prometheus' own: is the scrape job the one in prometheus.yml?
                assert f'job="{job}"' in expr, f"{title}: up of another job: {expr}"
                continue
            assert metric in available, f"{title}: ingest serves no {metric} ({expr})"
            labels |= available[metric]
            plotted.add(metric)
        assert names.labels <= labels, (
            f"{title}: no labels {names.labels - labels} on {names.metrics}"
        )
        shown = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
        assert shown <= (labels if names.grouped_by is None else names.grouped_by), (
            f"{title}: the legend shows {shown}, which {expr} does not keep"
        )
    # Every metric ingest serves has a panel (counters and histograms by any of their series).
    families = {re.sub(r"_(total|bucket|count|sum)$", "", m) for m in plotted}
    missing = {f.name for f in text_string_to_metric_families(fleet_day.metrics)} - families
    assert not missing, f"ingest serves {missing}, which no panel shows"
