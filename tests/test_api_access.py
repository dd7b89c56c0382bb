"""Who sees what through the HTTP API: identities × endpoints against a real Mosquitto, InfluxDB,
ingest and `moclo serve`, with data in three tenants (orchard, harbor, quarry).

Identities: no token, a malformed token, a revoked token, a viewer and an operator of orchard,
a viewer of harbor, an operator of orchard and harbor, and an admin of every tenant. Endpoints:
tenants, devices, a device, series by device (with and without a tenant), fleet series by type
(aggregated, per device, one tenant), alerts (all, one tenant, one device), episodes, the live
stream, acknowledging an alert, the session, and the public files (openapi, healthz, the page).
Most cells are asked about each of the three tenants.

Every cell checks its status, and every answer, allowed or not, is searched for the names of
the tenants the identity may not see and their devices' ids (each tenant's devices share a
prefix): none may appear, unless the request itself named it. An allowed cell also checks that
it answered the data of every permitted tenant (fleet counts are compared with the readings
published). The live stream is checked by what each identity's stream receives: a marker
published in each tenant after everything else proves that another tenant's events, published
earlier, would have arrived by then.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from core.settings import Settings
from devices.topics import telemetry_topic
from ingest.options import IngestOptions
from moclo.stack import InfluxServer, MosquittoServer
from tests.conftest import RunningIngest, RunningServe
from tests.helpers import COW, publish_all, wait_until
from tests.test_serve import NOW, StreamReader, cow_history

TENANTS = ("orchard", "harbor", "quarry")
# Every device id's prefix, which no public file may contain (not "apple": the page links an
# apple-touch-icon).
PREFIX = {"orchard": "plum", "harbor": "boat", "quarry": "stone"}
HEALTHY_READINGS = {"orchard": 6, "harbor": 9, "quarry": 13}  # tell the tenants' counts apart
FEVER = [38.6] * 3 + [40.1] * 3  # raises `fever` on the sixth reading
ACKERS = ("t1-operator", "t12-operator", "admin")
FLEET_WINDOW = {"from": str(NOW - 3 * 3600), "to": str(NOW - 300)}  # not the stream test's


@dataclass(frozen=True)
class Identity:
    name: str
    tenants: tuple[str, ...] | None = ()  # () for the unauthenticated; None: every tenant
    role: str = "viewer"
    kind: str = "token"  # token, none, malformed, revoked

    @property
    def sees(self) -> frozenset[str]:
        if self.kind != "token":
            return frozenset()
        return frozenset(TENANTS if self.tenants is None else self.tenants)

    @property
    def may_ack(self) -> bool:
        return self.kind == "token" and self.role in ("operator", "admin")


IDENTITIES = [
    Identity("no-token", kind="none"),
    Identity("malformed", kind="malformed"),
    Identity("revoked", ("orchard",), kind="revoked"),
    Identity("t1-viewer", ("orchard",)),
    Identity("t1-operator", ("orchard",), "operator"),
    Identity("t2-viewer", ("harbor",)),
    Identity("t12-operator", ("orchard", "harbor"), "operator"),
    Identity("admin", None, "admin"),
]


def healthy(tenant: str) -> str:
    return f"{PREFIX[tenant]}-1"


def feverish(tenant: str, acker: str) -> str:
    return f"{PREFIX[tenant]}-fever-{acker}"


@dataclass
class Stack:
    settings: Settings
    serve: RunningServe
    ingest: RunningIngest
    tokens: dict[str, str | None] = field(default_factory=dict)  # identity → what it sends
    alert_ids: dict[str, str] = field(default_factory=dict)  # device id → its fever's id

    def headers(self, who: Identity) -> dict[str, str]:
        token = self.tokens[who.name]
        return {} if token is None else {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def stack(
    mosquitto: MosquittoServer, influxdb: InfluxServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """Three tenants' cows through a real ingest, and `moclo serve` with a token per identity."""
    unique = uuid.uuid4().hex[:10]
    folder = tmp_path_factory.mktemp("api-access")
    settings = Settings(
        mqtt_url=mosquitto.url,
        influx_url=influxdb.url,
        influx_db=f"test_{unique}",
        topic_prefix=f"t{unique}",
        ingest_client_id=f"ingest-{unique}",
        spool_dir=str(folder / "spool"),
        http_listen="127.0.0.1:0",
        serve_listen="127.0.0.1:0",
        registry=str(Path(folder) / "registry.sqlite"),
        unregistered="off",
    )
    with (
        RunningIngest(settings, IngestOptions(linger_s=0.05)) as ingest,
        RunningServe(settings) as serve,
    ):
        for tenant in TENANTS:
            temps = [38.5] * HEALTHY_READINGS[tenant]
            cow_history(settings, tenant, healthy(tenant), temps, end=NOW - 600)
            for acker in ACKERS:
                cow_history(settings, tenant, feverish(tenant, acker), FEVER, end=NOW - 600)
        fevers = len(TENANTS) * len(ACKERS)
        total = sum(HEALTHY_READINGS.values()) + fevers * len(FEVER)
        wait_until(
            lambda: ingest.stats.readings_stored >= total and len(ingest.alerts) >= fevers,
            what="every reading stored and every fever raised",
        )
        stack = Stack(settings, serve, ingest)
        for who in IDENTITIES:
            if who.kind == "token":
                role = "admin" if who.role == "admin" else who.role
                stack.tokens[who.name] = serve.token(who.tenants, role=role, name=who.name)
        stack.tokens["no-token"] = None
        stack.tokens["malformed"] = "moclo_" + "z" * 40
        stack.tokens["revoked"] = serve.token(["orchard"], role="viewer", name="gone")
        serve.tokens.revoke("gone")
        with serve.client(serve.admin_token) as admin:

            def stored_fevers() -> list[dict[str, Any]]:
                alerts: list[dict[str, Any]] = admin.get("/api/alerts").json()["alerts"]
                return alerts if len(alerts) == fevers else []

            alerts = wait_until(stored_fevers, what="every fever stored")
        stack.alert_ids = {a["device_id"]: a["id"] for a in alerts}
        yield stack


# -- the cells ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One request for one tenant (or none) and what an identity may get from it."""

    name: str
    request: Callable[[Stack, Identity, str], tuple[str, str, dict[str, Any]]]
    allowed: Callable[[Identity, str], bool]
    denied_status: Callable[[Identity, str], int]  # when signed in but not allowed
    check: Callable[[Stack, Identity, str, Any], None]  # the body of an allowed answer
    per_tenant: bool = True


def _tenants_of(items: list[dict[str, Any]]) -> set[str]:
    return {item["tenant"] for item in items}


def check_tenants(stack: Stack, who: Identity, tenant: str, body: Any) -> None:
    assert body == {"tenants": sorted(who.sees)}


def _ours(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Leaves out the devices the stream test adds, whenever it runs."""
    return [i for i in items if "-live" not in i["device_id"] and "-hot-" not in i["device_id"]]


def check_devices(stack: Stack, who: Identity, tenant: str, body: Any) -> None:
    want = {tenant} if tenant else who.sees
    assert _tenants_of(body["devices"]) == want
    devices = _ours(body["devices"])
    assert len(devices) == len(want) * (1 + len(ACKERS))
    assert sum(d["open_alerts"] for d in devices) == len(want) * len(ACKERS)


def check_device(stack: Stack, who: Identity, tenant: str, body: Any) -> None:
    assert (body["tenant"], body["device_id"], body["open_alerts"]) == (tenant, healthy(tenant), 0)


def check_device_series(stack: Stack, who: Identity, tenant: str, body: Any) -> None:
    (series,) = body["series"]
    assert (series["tenant"], series["device_id"]) == (tenant, healthy(tenant))
    assert len(series["points"]) == HEALTHY_READINGS[tenant]


def fleet_count(body: Any) -> int:
    return sum(point[1] for series in body["series"] for point in series["points"])


def readings_of(tenant: str) -> int:
    return HEALTHY_READINGS[tenant] + len(ACKERS) * len(FEVER)


def check_fleet(stack: Stack, who: Identity, tenant: str, body: Any) -> None:
    want = {tenant} if tenant else who.sees
    assert fleet_count(body) == sum(readings_of(t) for t in want)


def check_fleet_by_device(stack: Stack, who: Identity, tenant: str, body: Any) -> None:
    assert _tenants_of(body["series"]) == who.sees
    assert len(body["series"]) == len(who.sees) * (1 + len(ACKERS))


def check_alerts(stack: Stack, who: Identity, tenant: str, body: Any) -> None:
    want = {tenant} if tenant else who.sees
    assert _tenants_of(body["alerts"]) == want
    assert len(_ours(body["alerts"])) == len(want) * len(ACKERS)


def check_device_alerts(stack: Stack, who: Identity, tenant: str, body: Any) -> None:
    # A device filter outside the token's tenants finds nothing, as for an unknown device.
    expected = [feverish(tenant, "admin")] if tenant in who.sees else []
    assert [a["device_id"] for a in body["alerts"]] == expected


def check_episodes(stack: Stack, who: Identity, tenant: str, body: Any) -> None:
    (episode,) = body["episodes"]
    assert (episode["rule"], episode["end"]) == ("fever", None)


def check_stream(stack: Stack, who: Identity, tenant: str, body: Any) -> None:
    assert body.startswith("retry: 2000\nevent: hello\n")


def check_ack(stack: Stack, who: Identity, tenant: str, body: Any) -> None:
    assert (body["state"], body["acknowledged_by"], body["tenant"]) == (
        "acknowledged",
        who.name,
        tenant,
    )


def check_session(stack: Stack, who: Identity, tenant: str, body: Any) -> None:
    assert (body["name"], body["role"]) == (who.name, who.role)
    assert body["tenants"] == (None if who.tenants is None else sorted(who.tenants))


def check_nothing(stack: Stack, who: Identity, tenant: str, body: Any) -> None:
    pass


def _get(path: str, **params: Any) -> Callable[[Stack, Identity, str], tuple[str, str, dict]]:
    def request(stack: Stack, who: Identity, tenant: str) -> tuple[str, str, dict[str, Any]]:
        return (
            "GET",
            path.format(tenant=tenant, healthy=healthy(tenant) if tenant else ""),
            {
                k: v.format(tenant=tenant, healthy=healthy(tenant) if tenant else "")
                if isinstance(v, str)
                else v
                for k, v in params.items()
            },
        )

    return request


def _ack(stack: Stack, who: Identity, tenant: str) -> tuple[str, str, dict[str, Any]]:
    device = feverish(tenant, who.name if who.name in ACKERS else "admin")
    return "POST", f"/api/alerts/{stack.alert_ids[device]}/ack", {}


def _device_alerts(stack: Stack, who: Identity, tenant: str) -> tuple[str, str, dict[str, Any]]:
    return "GET", "/api/alerts", {"device": feverish(tenant, "admin")}


def _timeline(stack: Stack, who: Identity, tenant: str) -> tuple[str, str, dict[str, Any]]:
    return "GET", f"/api/alerts/{stack.alert_ids[feverish(tenant, 'admin')]}/timeline", {}


def check_timeline(stack: Stack, who: Identity, tenant: str, body: Any) -> None:
    assert (body["alert"]["tenant"], body["alert"]["rule"]) == (tenant, "fever")
    assert body["events"] == []  # no notifier runs here


def check_oncall(stack: Stack, who: Identity, tenant: str, body: Any) -> None:
    assert body["rotations"] == []  # no notify file here: the scoping is what is tried


def _episodes(stack: Stack, who: Identity, tenant: str) -> tuple[str, str, dict[str, Any]]:
    params = {"tenant": tenant, "device": feverish(tenant, "admin"), "since": "3h"}
    return "GET", "/api/episodes", params


def sees(who: Identity, tenant: str) -> bool:
    return tenant in who.sees


def signed_in(who: Identity, tenant: str) -> bool:
    return who.kind == "token"


def forbidden(who: Identity, tenant: str) -> int:
    return 403


def not_found(who: Identity, tenant: str) -> int:
    return 404


FLEET = {"type": "cow_tracker", "field": "body_temp_c", "every": "1h", **FLEET_WINDOW}

CELLS = [
    Cell("tenants", _get("/api/tenants"), signed_in, forbidden, check_tenants, per_tenant=False),
    Cell("session", _get("/api/session"), signed_in, forbidden, check_session, per_tenant=False),
    Cell("devices", _get("/api/devices"), signed_in, forbidden, check_devices, per_tenant=False),
    Cell("devices-of", _get("/api/devices", tenant="{tenant}"), sees, forbidden, check_devices),
    Cell("device", _get("/api/devices/{tenant}/{healthy}"), sees, forbidden, check_device),
    Cell(
        "series-by-device",
        _get("/api/series", device="{healthy}", since="3h"),
        sees,
        not_found,  # looked for in the token's tenants only: as if unknown
        check_device_series,
    ),
    Cell(
        "series-by-device-and-tenant",
        _get("/api/series", device="{healthy}", tenant="{tenant}", since="3h"),
        sees,
        forbidden,
        check_device_series,
    ),
    Cell(
        "fleet",
        _get("/api/series", agg="count", **FLEET),
        signed_in,
        forbidden,
        check_fleet,
        per_tenant=False,
    ),
    Cell(
        "fleet-by-device",
        _get("/api/series", agg="count", group_by="device_id", **FLEET),
        signed_in,
        forbidden,
        check_fleet_by_device,
        per_tenant=False,
    ),
    Cell(
        "fleet-of",
        _get("/api/series", agg="count", tenant="{tenant}", **FLEET),
        sees,
        forbidden,
        check_fleet,
    ),
    Cell("alerts", _get("/api/alerts"), signed_in, forbidden, check_alerts, per_tenant=False),
    Cell("alerts-of", _get("/api/alerts", tenant="{tenant}"), sees, forbidden, check_alerts),
    Cell("alerts-of-device", _device_alerts, signed_in, forbidden, check_device_alerts),
    Cell("episodes", _episodes, sees, forbidden, check_episodes),
    Cell("timeline", _timeline, sees, not_found, check_timeline),
    Cell("oncall", _get("/api/oncall"), signed_in, forbidden, check_oncall, per_tenant=False),
    Cell("oncall-of", _get("/api/oncall", tenant="{tenant}"), sees, forbidden, check_oncall),
    Cell("stream", _get("/api/stream"), signed_in, forbidden, check_stream, per_tenant=False),
    Cell("stream-of", _get("/api/stream", tenant="{tenant}"), sees, forbidden, check_stream),
    Cell(
        "acknowledge",
        _ack,
        lambda who, tenant: who.may_ack and tenant in who.sees,
        lambda who, tenant: 403 if not who.may_ack else 404,
        check_ack,
    ),
]
PUBLIC = [
    "/healthz", "/api/openapi.json", "/", "/static/app.js", "/static/style.css",
    "/manifest.webmanifest", "/sw.js", "/static/offline.js", "/static/notifications.js",
    "/static/alerts.js", "/static/device.js",
]  # fmt: skip


def _cases() -> Iterator[Any]:
    for who in IDENTITIES:
        for cell in CELLS:
            for tenant in TENANTS if cell.per_tenant else ("",):
                name = f"{who.name}-{cell.name}" + (f"-{tenant}" if tenant else "")
                yield pytest.param(who, cell, tenant, id=name)


def _send(
    stack: Stack, who: Identity, method: str, path: str, params: dict[str, Any]
) -> tuple[int, str, str]:
    """Status, body and the URL asked; a stream is read up to its first event only."""
    url = httpx.URL(stack.serve.url + path, params=params)
    with httpx.Client(timeout=httpx.Timeout(30, read=30)) as client:
        if path == "/api/stream":
            with client.stream(method, url, headers=stack.headers(who)) as answer:
                body = ""
                if answer.status_code == 200:
                    for chunk in answer.iter_text():
                        body += chunk
                        if "\n\n" in body:
                            break
                else:
                    body = answer.read().decode()
                return answer.status_code, body, str(url)
        answer = client.request(
            method, url, headers=stack.headers(who), json=None if method == "GET" else {}
        )
        return answer.status_code, answer.text, str(url)


def assert_nothing_foreign(who: Identity, body: str, url: str) -> None:
    """No name of a tenant `who` may not see, nor of its devices, unless the request named it."""
    for tenant in set(TENANTS) - who.sees:
        for name in (tenant, PREFIX[tenant] + "-"):
            if name not in url:
                assert name not in body, f"{name!r} of another tenant in: {body[:500]}"


@pytest.mark.parametrize(("who", "cell", "tenant"), list(_cases()))
def test_matrix(stack: Stack, who: Identity, cell: Cell, tenant: str) -> None:
    method, path, params = cell.request(stack, who, tenant)
    status, body, url = _send(stack, who, method, path, params)
    assert_nothing_foreign(who, body, url)
    if who.kind != "token":
        assert status == 401, body
        return
    if not cell.allowed(who, tenant):
        assert status == cell.denied_status(who, tenant), body
        assert "error" in orjson.loads(body)
        return
    assert status == 200, body
    cell.check(stack, who, tenant, body if path == "/api/stream" else orjson.loads(body))


@pytest.mark.parametrize("who", IDENTITIES, ids=[who.name for who in IDENTITIES])
@pytest.mark.parametrize("path", PUBLIC)
def test_public_files_hold_no_data(stack: Stack, who: Identity, path: str) -> None:
    status, body, _ = _send(stack, who, "GET", path, {})
    assert status == 200, body
    for tenant in TENANTS:
        assert tenant not in body and PREFIX[tenant] + "-" not in body


@pytest.mark.parametrize("who", IDENTITIES, ids=[who.name for who in IDENTITIES])
def test_signing_in(stack: Stack, who: Identity) -> None:
    token = stack.tokens[who.name]
    with httpx.Client(base_url=stack.serve.url, timeout=10) as browser:
        answer = browser.post("/api/session", json={"token": token or ""})
        if who.kind != "token":
            assert answer.status_code == 401 and "set-cookie" not in answer.headers
            return
        assert answer.status_code == 200
        # Signed in by the cookie alone, the identity sees exactly what its token sees.
        assert browser.get("/api/tenants").json() == {"tenants": sorted(who.sees)}
        devices = browser.get("/api/devices").json()["devices"]
        assert _tenants_of(devices) == who.sees


# -- the live stream ---------------------------------------------------------------------------


def test_each_stream_carries_its_tenants_alone(stack: Stack) -> None:
    readers = {
        who.name: StreamReader(f"{stack.serve.url}/api/stream", stack.tokens[who.name] or "")
        for who in IDENTITIES
        if who.kind == "token"
    }
    try:
        wait_until(lambda: all(r.named("hello") for r in readers.values()), what="streams open")
        sees = {who.name: who.sees for who in IDENTITIES if who.kind == "token"}
        settings = stack.settings

        def publish(round_: int) -> None:
            now = int(time.time())
            messages = []
            for tenant in TENANTS:
                live = telemetry_topic(
                    settings.topic_prefix, tenant, "cow_tracker", f"{PREFIX[tenant]}-live"
                )
                messages.append((live, orjson.dumps({**COW, "ts": now, "seq": round_})))
                hot = telemetry_topic(
                    settings.topic_prefix, tenant, "cow_tracker", f"{PREFIX[tenant]}-hot-{round_}"
                )
                messages += [
                    (hot, orjson.dumps({**COW, "ts": now - 3 + i, "seq": i, "body_temp_c": 40.5}))
                    for i in range(3)
                ]
            publish_all(settings.mqtt_url, messages)

        def received(reader: StreamReader, tenant: str, round_: int) -> bool:
            alert = any(
                a["device_id"] == f"{PREFIX[tenant]}-hot-{round_}" for a in reader.named("alert")
            )
            reading = any(
                r["device_id"] == f"{PREFIX[tenant]}-live" and r["seq"] == round_
                for batch in reader.named("readings")
                for r in batch
            )
            return alert and reading

        # Round 1 in every tenant; the admin's stream shows when all of it has gone out.
        publish(1)
        wait_until(
            lambda: all(received(readers["admin"], t, 1) for t in TENANTS),
            what="round 1 on the admin's stream",
        )
        # Round 2, the markers: once a stream has its tenants' markers, it would have had
        # round 1 of any tenant it was sent.
        publish(2)
        for name, reader in readers.items():
            wait_until(
                lambda reader=reader, name=name: all(received(reader, t, 2) for t in sees[name]),
                what=f"round 2 on {name}'s stream",
            )
        for name, reader in readers.items():
            tenants_seen = {a["tenant"] for a in reader.named("alert")} | {
                r["tenant"] for batch in reader.named("readings") for r in batch
            }
            assert tenants_seen == sees[name], name
            raw = orjson.dumps(reader.events).decode()
            for tenant in set(TENANTS) - sees[name]:
                assert tenant not in raw and PREFIX[tenant] + "-" not in raw, name
    finally:
        for reader in readers.values():
            reader.close()
