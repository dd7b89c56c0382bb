"""`moclo alerts` as a person runs it, against a real broker, a real InfluxDB and a real ingest:
the list and its filters, `--follow`, `ack`, and acknowledgements that ingest refuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import IO

import orjson
import pytest

from core.settings import Settings
from devices.topics import acknowledgement_topic, alert_subscription, telemetry_topic
from ingest.options import IngestOptions
from moclo.stack import InfluxServer, MosquittoServer, free_port
from storage.alert_record import Alert
from storage.influx import InfluxRefused
from tests.conftest import RunningIngest
from tests.helpers import Influx, Subscriber, cow_json, moclo, publish_all, wait_until

NOW = int(time.time()) // 60 * 60
FEVER = [38.6, 39.6, 40.1, 40.3]  # raised on the fourth reading, first seen on the second
RECOVERY = [39.0, 38.8, 38.6]  # resolved on the third
JSON_KEYS = {
    "id",
    "state",
    "rule",
    "kind",
    "severity",
    "tenant",
    "device_type",
    "device_id",
    "value",
    "message",
    "ts",
    "first_seen",
    "last_seen",
    "acknowledged_by",
}


def connection(settings: Settings) -> list[str]:
    return [
        "--mqtt-url",
        settings.mqtt_url,
        "--influx-url",
        settings.influx_url,
        "--influx-db",
        settings.influx_db,
        "--topic-prefix",
        settings.topic_prefix,
    ]


def alerts(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """`moclo alerts ARGS` against the test's servers (flags after ARGS, as a person types)."""
    return moclo("alerts", *args, *connection(settings))


def cows(
    settings: Settings, device: str, temps: list[float], *, start: int, tenant: str = "farm"
) -> list[tuple[str, bytes]]:
    """One reading a minute from `start` (epoch seconds), with these body temperatures."""
    topic = telemetry_topic(settings.topic_prefix, tenant, "cow_tracker", device)
    return [
        (topic, cow_json(start + 60 * i, start // 60 + i, body_temp_c=t))
        for i, t in enumerate(temps)
    ]


def thermostat(
    settings: Settings, device: str, temps: list[float], *, start: int, tenant: str = "home"
) -> list[tuple[str, bytes]]:
    topic = telemetry_topic(settings.topic_prefix, tenant, "thermostat", device)
    return [
        (
            topic,
            orjson.dumps(
                {
                    "ts": start + 60 * i,
                    "seq": i,
                    "temp_c": t,
                    "setpoint_c": 20.0,
                    "humidity_pct": 50.0,
                    "heating": False,
                }
            ),
        )
        for i, t in enumerate(temps)
    ]


def stored(influx: Influx, where: str = "") -> list[dict[str, object]]:
    clause = f" WHERE {where}" if where else ""
    try:
        return influx.query(f'SELECT * FROM "moclo_alerts"{clause}')
    except InfluxRefused as exc:  # a database not created yet holds no alerts
        if "database not found" in str(exc):
            return []
        raise


def raise_fever(settings: Settings, influx: Influx, device: str, *, start: int) -> str:
    """Publishes a fever for `device` of tenant farm and returns its alert id once stored."""
    publish_all(settings.mqtt_url, cows(settings, device, FEVER, start=start))
    rows = wait_until(
        lambda: stored(influx, f"\"device_id\" = '{device}' AND \"state\" = 'raised'"),
        what=f"the fever of {device} stored",
    )
    return str(rows[-1]["alert_id"])


class Process:
    """A `moclo` child process whose stdout and stderr lines are collected as they come."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moclo.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        self.out: list[str] = []
        self.err: list[str] = []
        assert self.process.stdout is not None and self.process.stderr is not None
        self._threads = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, self.err), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _read(stream: IO[str], lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def wait(self, timeout_s: float = 30) -> int:
        code = self.process.wait(timeout_s)
        for thread in self._threads:
            thread.join(10)
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.wait()
        for stream in (self.process.stdout, self.process.stderr):
            assert stream is not None
            stream.close()


# -- the list and its filters, on one fleet ---------------------------------------------------


@pytest.fixture(scope="module")
def fleet(
    mosquitto: MosquittoServer, influxdb: InfluxServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, dict[str, str]]]:
    """Four devices, one reading a minute from 50 to 5 minutes ago; their alert ids by device.

    cow-1: a fever from the start (raised 48 min ago), still open; cow-2: a fever raised 10 min
    ago, open; cow-3: a fever raised 43 min ago and resolved; th-1 (tenant home): frost risk,
    critical, raised 9 min ago, open. Every device reports to the end, so none goes silent.
    """
    unique = uuid.uuid4().hex[:10]
    settings = Settings(
        mqtt_url=mosquitto.url,
        influx_url=influxdb.url,
        influx_db=f"test_{unique}",
        topic_prefix=f"t{unique}",
        ingest_client_id=f"ingest-{unique}",
        spool_dir=str(tmp_path_factory.mktemp("spool")),
        http_listen="127.0.0.1:0",
        unregistered="off",  # simulated devices, none registered
    )
    influx = Influx(settings.influx_url, settings.influx_db)
    start = NOW - 50 * 60
    minutes = range(46)
    with RunningIngest(settings, IngestOptions(linger_s=0.05)) as running:
        publish_all(
            settings.mqtt_url,
            cows(settings, "cow-1", [40.0 for _ in minutes], start=start)
            + cows(settings, "cow-2", [38.6 if i < 38 else 40.0 for i in minutes], start=start)
            + cows(settings, "cow-3", [40.0 if 5 <= i < 10 else 38.6 for i in minutes], start=start)
            + thermostat(settings, "th-1", [20.0 if i < 40 else 4.0 for i in minutes], start=start),
        )
        wait_until(lambda: len(stored(influx)) == 5, what="four alerts, one resolved")
        running.stop()
    ids = {str(r["device_id"]): str(r["alert_id"]) for r in stored(influx)}
    yield settings, ids


CASES = [
    pytest.param([], ["th-1", "cow-2", "cow-1"], id="open-critical-first-then-newest"),
    pytest.param(["--all"], ["th-1", "cow-2", "cow-3", "cow-1"], id="all-with-resolved"),
    pytest.param(["--tenant", "farm"], ["cow-2", "cow-1"], id="tenant"),
    pytest.param(["--tenant", "home"], ["th-1"], id="other-tenant"),
    pytest.param(["--device", "cow-1"], ["cow-1"], id="device"),
    pytest.param(["--device", "cow-3"], [], id="device-resolved-hidden"),
    pytest.param(["--device", "cow-3", "--all"], ["cow-3"], id="device-resolved-with-all"),
    pytest.param(["--severity", "critical"], ["th-1"], id="critical"),
    pytest.param(["--severity", "warning"], ["th-1", "cow-2", "cow-1"], id="warning-or-worse"),
    pytest.param(["--since", "30m"], ["th-1", "cow-2"], id="raised-within"),
    pytest.param(["--since", "30m", "--all"], ["th-1", "cow-2"], id="since-is-when-raised"),
    pytest.param(["--since", "1h"], ["th-1", "cow-2", "cow-1"], id="since-wide"),
    pytest.param(["--tenant", "farm", "--severity", "critical"], [], id="nothing-matches"),
]


@pytest.mark.parametrize(("flags", "devices"), CASES)
def test_filters_choose_and_order_the_alerts(
    fleet: tuple[Settings, dict[str, str]], flags: list[str], devices: list[str]
) -> None:
    settings, ids = fleet
    result = alerts(settings, *flags, "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert [a["device_id"] for a in listed] == devices
    assert [a["id"] for a in listed] == [ids[d] for d in devices]


def test_the_json_list_has_stable_documented_keys(fleet: tuple[Settings, dict[str, str]]) -> None:
    settings, ids = fleet
    result = alerts(settings, "--all", "--json")
    assert result.returncode == 0, result.stderr
    listed = {a["device_id"]: a for a in json.loads(result.stdout)}
    assert all(set(a) == JSON_KEYS for a in listed.values())
    start = NOW - 50 * 60
    assert listed["cow-2"] == {
        "id": ids["cow-2"],
        "state": "raised",
        "rule": "fever",
        "kind": "threshold",
        "severity": "warning",
        "tenant": "farm",
        "device_type": "cow_tracker",
        "device_id": "cow-2",
        "value": 40.0,
        "message": "fever: body temperature 40.0 °C",
        "ts": _rfc3339(start + 40 * 60),
        "first_seen": _rfc3339(start + 38 * 60),
        "last_seen": _rfc3339(start + 40 * 60),
        "acknowledged_by": None,
    }
    assert listed["cow-3"]["state"] == "resolved"
    assert listed["cow-3"]["ts"] == _rfc3339(start + 12 * 60)
    assert (listed["th-1"]["severity"], listed["th-1"]["rule"]) == ("critical", "frost_risk")


def test_the_table_shows_each_open_alert_on_a_line(fleet: tuple[Settings, dict[str, str]]) -> None:
    settings, ids = fleet
    result = alerts(settings)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == [
        "ID",
        "SEVERITY",
        "STATE",
        "TENANT/DEVICE",
        "RULE",
        "VALUE",
        "FIRST",
        "SEEN",
        "LAST",
        "CHANGE",
        "MESSAGE",
    ]
    assert [row.split()[:6] for row in rows] == [
        [ids["th-1"], "critical", "raised", "home/th-1", "frost_risk", "4"],
        [ids["cow-2"], "warning", "raised", "farm/cow-2", "fever", "40"],
        [ids["cow-1"], "warning", "raised", "farm/cow-1", "fever", "40"],
    ]
    start = NOW - 50 * 60
    first_seen = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(start + 38 * 60))
    raised = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(start + 40 * 60))
    assert f"{first_seen}  {raised}  fever: body temperature 40.0 °C" in rows[1]


def test_an_empty_list_says_so_and_exits_0(fleet: tuple[Settings, dict[str, str]]) -> None:
    settings, _ = fleet
    result = alerts(settings, "--tenant", "dairy")
    assert (result.returncode, result.stdout) == (0, "no open alerts (for tenant dairy)\n")
    result = alerts(settings, "--tenant", "dairy", "--json")
    assert (result.returncode, json.loads(result.stdout)) == (0, [])


def _rfc3339(epoch_s: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


# -- errors that say what to do --------------------------------------------------------------


def test_an_unreachable_database_is_named_with_the_setting_to_change(settings: Settings) -> None:
    port = free_port()
    result = moclo("alerts", "--influx-url", f"http://127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"cannot reach InfluxDB at http://127.0.0.1:{port}" in result.stderr
    assert "MOCLO_INFLUX_URL" in result.stderr and "Traceback" not in result.stderr


def test_a_database_that_does_not_exist_is_named(settings: Settings) -> None:
    result = alerts(settings)
    assert result.returncode == 1
    assert f"has no database {settings.influx_db!r}" in result.stderr
    assert "MOCLO_INFLUX_DB" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["ack", "XYZ"], "'XYZ' is not an alert id"),
        (["ack", "ABCDEF012345"], "is not an alert id"),
        (["ack", "0123456789ab", "--by", ""], "a name is 1 to 64 characters"),
        (["ack", "0123456789ab", "--note", "x" * 501], "at most 500 characters"),
        (["--tenant", "Farm 1"], "a tenant id must match"),
        (["--count", "2"], "--count needs --follow"),
    ],
    ids=["not-hex", "upper-case", "empty-name", "long-note", "bad-tenant", "count-alone"],
)
def test_bad_arguments_fail_before_any_io(args: list[str], error: str) -> None:
    # Servers that do not exist: any I/O would fail differently.
    port = free_port()
    result = moclo(
        "alerts",
        *args,
        "--influx-url",
        f"http://127.0.0.1:{port}",
        "--mqtt-url",
        f"mqtt://127.0.0.1:{port}",
    )
    assert result.returncode == 2
    assert error in result.stderr


# -- following --------------------------------------------------------------------------------


def test_follow_prints_the_open_alert_then_its_resolution_live(
    settings: Settings, influx: Influx, ingest: RunningIngest
) -> None:
    start = NOW - 3600
    alert_id = raise_fever(settings, influx, "cow-9", start=start)
    follower = Process(
        "alerts", "--follow", "--json", "--device", "cow-9", "--count", "1", *connection(settings)
    )
    try:
        wait_until(lambda: any("watching" in line for line in follower.err), what="subscribed")
        later = start + 60 * len(FEVER)
        # Another cow's fever comes first on the same topic filter; --device leaves it out.
        publish_all(
            settings.mqtt_url,
            cows(settings, "cow-8", FEVER, start=start)
            + cows(settings, "cow-9", RECOVERY, start=later),
        )
        assert follower.wait() == 0, follower.err
    finally:
        follower.close()
    changes = [json.loads(line) for line in follower.out]
    assert [(c["id"], c["device_id"], c["state"]) for c in changes] == [
        (alert_id, "cow-9", "raised"),  # the list
        (alert_id, "cow-9", "resolved"),  # live
    ]
    assert all(set(c) == JSON_KEYS for c in changes)


def test_alerts_watch_still_works_as_a_deprecated_follow(
    settings: Settings, ingest: RunningIngest
) -> None:
    # Scripts ran `alerts watch` with the broker alone: the list is skipped with a warning.
    watcher = Process(
        "alerts",
        "watch",
        "--count",
        "2",
        "--mqtt-url",
        settings.mqtt_url,
        "--topic-prefix",
        settings.topic_prefix,
        "--influx-url",
        f"http://127.0.0.1:{free_port()}",
    )
    try:
        wait_until(lambda: any("watching" in line for line in watcher.err), what="subscribed")
        start = NOW - 3600
        publish_all(
            settings.mqtt_url,
            cows(settings, "cow-3", FEVER + RECOVERY, start=start),
        )
        assert watcher.wait() == 0, watcher.err
    finally:
        watcher.close()
    assert any("deprecated: use `moclo alerts --follow`" in line for line in watcher.err)
    assert any("cannot list the open alerts" in line for line in watcher.err)
    assert len(watcher.out) == 2, watcher.out
    assert "ALERT warning  fever" in watcher.out[0] and "farm/cow-3" in watcher.out[0]
    assert "CLEAR warning  fever" in watcher.out[1] and "resolved: fever" in watcher.out[1]


# -- acknowledging ----------------------------------------------------------------------------


class AckSpy:
    """Every message on the test's topics, to prove what was (not) published on `acks`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.subscriber = Subscriber(settings.mqtt_url, f"{settings.topic_prefix}/#")

    def acks(self) -> list[tuple[str, bytes]]:
        """The acknowledgements published so far, up to a marker published now.

        The broker forwards in the order it received; whatever a finished command published
        came before the marker.
        """
        marker = f"{self.settings.topic_prefix}/marker/{uuid.uuid4().hex}"
        publish_all(self.settings.mqtt_url, [(marker, b"")])
        wait_until(lambda: any(m.topic == marker for m in self.subscriber.messages), what="marker")
        return [(m.topic, bytes(m.payload)) for m in self.subscriber.messages if "/acks" in m.topic]

    def close(self) -> None:
        self.subscriber.close()


def test_ack_acknowledges_through_ingest_and_a_second_ack_is_refused(
    settings: Settings, influx: Influx, ingest: RunningIngest
) -> None:
    spy = AckSpy(settings)
    watcher = Subscriber(settings.mqtt_url, alert_subscription(settings.topic_prefix))
    try:
        alert_id = raise_fever(settings, influx, "cow-9", start=NOW - 3600)
        result = alerts(settings, "ack", alert_id, "--by", "alice", "--note", "vet called")
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"acknowledged {alert_id} (fever on farm/cow-9) by alice\n"
        acknowledged = wait_until(
            lambda: [
                change
                for change in (json.loads(m.payload) for m in watcher.messages)
                if change["state"] == "acknowledged"
            ],
            what="the acknowledged change on MQTT",
        )
        assert [(a["id"], a["acknowledged_by"], a["note"]) for a in acknowledged] == [
            (alert_id, "alice", "vet called")
        ]
        # Ingest publishes a change, then stores it.
        [row] = wait_until(
            lambda: stored(influx, "\"state\" = 'acknowledged'"), what="the ack stored"
        )
        assert (row["alert_id"], row["acknowledged_by"]) == (alert_id, "alice")

        listed = json.loads(alerts(settings, "--json").stdout)
        assert [(a["id"], a["state"], a["acknowledged_by"]) for a in listed] == [
            (alert_id, "acknowledged", "alice")
        ]
        assert "(acknowledged by alice)" in alerts(settings).stdout

        again = alerts(settings, "ack", alert_id, "--by", "bob")
        assert again.returncode == 1
        assert f"alert {alert_id} (fever on farm/cow-9) was already acknowledged by alice" in (
            again.stderr
        )
        # Without a login (this broker checks none), --by is the account the topic names.
        sent = {"id": alert_id, "note": "vet called"}
        assert [(t, json.loads(a)) for t, a in spy.acks()] == [
            (acknowledgement_topic(settings.topic_prefix, "farm", "alice"), sent)
        ]
    finally:
        watcher.close()
        spy.close()


def test_ack_refuses_a_resolved_or_unknown_alert_without_publishing(
    settings: Settings, influx: Influx, ingest: RunningIngest
) -> None:
    spy = AckSpy(settings)
    try:
        start = NOW - 3600
        alert_id = raise_fever(settings, influx, "cow-9", start=start)
        publish_all(
            settings.mqtt_url,
            cows(settings, "cow-9", RECOVERY, start=start + 60 * len(FEVER)),
        )
        wait_until(lambda: stored(influx, "\"state\" = 'resolved'"), what="the fever resolved")
        resolved = alerts(settings, "ack", alert_id)
        assert resolved.returncode == 1
        assert f"alert {alert_id} (fever on farm/cow-9) is already resolved" in resolved.stderr
        # Connection flags before the subcommand reach it too.
        unknown = moclo("alerts", *connection(settings), "ack", "0123456789ab")
        assert unknown.returncode == 1
        assert "no alert 0123456789ab in database" in unknown.stderr
        assert "moclo alerts --all" in unknown.stderr
        assert spy.acks() == []
    finally:
        spy.close()


def test_ack_without_ingest_times_out_and_says_what_to_check(
    settings: Settings, influx: Influx
) -> None:
    alert = _open_alert()
    influx.write([alert.to_line()])
    result = alerts(settings, "ack", alert.alert_id, "--timeout", "1s")
    assert result.returncode == 1
    assert "sent, but ingest did not confirm within 1s: is `moclo ingest` running?" in result.stderr


def test_ack_reports_why_ingest_refused_it(
    settings: Settings, influx: Influx, ingest: RunningIngest
) -> None:
    # Stored after ingest started, so ingest's engine has no such open alert.
    alert = _open_alert()
    influx.write([alert.to_line()])
    result = alerts(settings, "ack", alert.alert_id, "--by", "carol", "--timeout", "2s")
    assert result.returncode == 1
    assert (
        f"ingest refused the acknowledgement of {alert.alert_id}: no open alert "
        f"'{alert.alert_id}' for tenant 'farm'"
    ) in result.stderr


def _open_alert() -> Alert:
    ts = (NOW - 600) * 10**9
    return Alert(
        alert_id="00c0ffee00aa",
        state="raised",
        rule="fever",
        kind="threshold",
        severity="warning",
        tenant="farm",
        device_type="cow_tracker",
        device_id="cow-5",
        value=40.2,
        message="fever: body temperature 40.2 °C",
        ts_ns=ts,
        first_seen_ns=ts - 120 * 10**9,
        last_seen_ns=ts,
    )


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"{not json", "an acknowledgement is"),
        # Ingest's message names no field today (see the report of this change).
        (b'{"id": "zz", "by": "alice"}', "an acknowledgement is"),
        (b'{"id": "0123456789ab", "by": ""}', "an acknowledgement is"),
        (b'{"id": "0123456789ab", "extra": 1}', "an acknowledgement is"),
        (b'{"id": "0123456789ab"}', "no open alert '0123456789ab'"),
    ],
    ids=["not-json", "bad-id", "empty-by", "extra-field", "no-such-alert"],
)
def test_a_malformed_ack_published_by_hand_is_a_bad_ack_rejection(
    settings: Settings, influx: Influx, ingest: RunningIngest, payload: bytes, error: str
) -> None:
    publish_all(
        settings.mqtt_url,
        [(acknowledgement_topic(settings.topic_prefix, "farm", "alice"), payload)],
    )
    wait_until(lambda: influx.count("moclo_rejected", "error") == 1, what="the rejection stored")
    [row] = influx.query('SELECT * FROM "moclo_rejected"')
    assert (row["reason"], row["tenant"]) == ("bad_ack", "farm")
    assert error in str(row["error"])
    assert row["payload"] == payload.decode()
    assert stored(influx) == []


def test_an_ack_on_the_topic_without_an_account_is_refused_saying_which_to_use(
    settings: Settings, influx: Influx, ingest: RunningIngest
) -> None:
    """What a client older than the acknowledger-in-the-topic rule sends, on a broker whose
    ACL lets it through (ours does not): a bad_ack rejection that names the topic to use."""
    alert_id = raise_fever(settings, influx, "cow-9", start=NOW - 3600)
    older = f"{settings.topic_prefix}/farm/acks"
    publish_all(settings.mqtt_url, [(older, orjson.dumps({"id": alert_id, "by": "alice"}))])
    wait_until(lambda: influx.count("moclo_rejected", "error") == 1, what="the rejection stored")
    [row] = influx.query('SELECT * FROM "moclo_rejected"')
    assert (row["reason"], row["tenant"]) == ("bad_ack", "farm")
    assert f"must name who acknowledges: {older}/{{account}}" in str(row["error"])
    assert stored(influx, "\"state\" = 'acknowledged'") == []
