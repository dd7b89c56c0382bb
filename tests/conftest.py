"""Real servers for the suite: one Mosquitto and one InfluxDB per session (under pytest-xdist,
as `./dev test` runs it, per worker), started by the same supervisor code as `moclo up`, on free
loopback ports. Each test gets its own database, topic prefix and MQTT client id, so tests never
see each other's data."""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from access.engine_auth import EngineAuth, serve_engine_auth
from access.engine_revocation import RevokedLogins, closing_revoked_logins
from access.registry import Registry
from access.tokens import Role, Tokens
from core.settings import Settings
from ingest.options import IngestOptions
from ingest.service import Ingest
from ingest.stats import IngestStats
from moclo.cluster import RabbitCluster
from moclo.stack import InfluxServer, MosquittoServer, free_port
from tests.helpers import Influx, wait_until
from tests.receivers import HttpReceiver, SmtpReceiver
from tests.threaded import ThreadedService

# The suite runs on two workers of a two-core machine that other work shares: Hypothesis must
# not fail a property because an example, or generating the first ones, took long. Each
# test's own @settings still choose the number of examples.
hypothesis_settings.register_profile(
    "loaded-machine", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
hypothesis_settings.load_profile("loaded-machine")


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoServer]:
    server = MosquittoServer(tmp_path_factory.mktemp("mosquitto"), free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    server = InfluxServer(tmp_path_factory.mktemp("influxdb"), free_port())
    server.start()
    yield server
    server.stop()


@dataclass(frozen=True)
class Engine:
    """The distributed engine's 3-node cluster, its logins from `registry` (topic prefix
    `prefix`) answered by `auth`."""

    registry: Registry
    auth: EngineAuth
    cluster: RabbitCluster
    prefix: str
    revoked: RevokedLogins  # closes revoked logins' connections, as `moclo up --engine` does


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """One cluster for the whole session: its boot takes about 20 s. Tests keep apart by
    registering their own tenant."""
    directory = tmp_path_factory.mktemp("engine")
    registry = Registry(directory / "registry.sqlite")
    # Every question re-checks the registry, so a device added by a test logs in at once.
    auth = EngineAuth(registry.path, prefix="moclo", check_every_s=0.0)
    with serve_engine_auth(auth) as auth_url:
        cluster = RabbitCluster(directory / "cluster", auth_url=auth_url)
        try:
            cluster.start()
            close = cluster.close_user_connections
            with closing_revoked_logins(auth, close, every_s=0.2) as revoked:
                yield Engine(registry, auth, cluster, auth.prefix, revoked)
        finally:
            cluster.stop()


@pytest.fixture
def settings(mosquitto: MosquittoServer, influxdb: InfluxServer, tmp_path: Path) -> Settings:
    unique = uuid.uuid4().hex[:10]
    return Settings(
        mqtt_url=mosquitto.url,
        influx_url=influxdb.url,
        influx_db=f"test_{unique}",
        topic_prefix=f"t{unique}",
        ingest_client_id=f"ingest-{unique}",
        spool_dir=str(tmp_path / "spool"),
        http_listen="127.0.0.1:0",
        registry=str(tmp_path / "registry.sqlite"),
        # Most tests publish as devices nobody registered: no registry check unless a test
        # opts in (settings.model_copy(update={"unregistered": "reject"})).
        unregistered="off",
    )


@pytest.fixture
def influx(settings: Settings) -> Influx:
    return Influx(settings.influx_url, settings.influx_db)


class RunningIngest(ThreadedService):
    """`Ingest` on its own thread and event loop, so tests stay plain synchronous code."""

    name = "ingest"

    def __init__(self, settings: Settings, options: IngestOptions) -> None:
        self.settings = settings
        self.options = options
        self.stats = IngestStats()
        self.ingest: Ingest | None = None
        self.alerts: list[object] = []
        super().__init__()

    async def serve(self, stop: asyncio.Event) -> None:
        ready, waiter = self.ready_event()
        self.ingest = Ingest(
            self.settings, stop, options=self.options, stats=self.stats, on_alert=self.alerts.append
        )
        try:
            await self.ingest.run(ready)
        finally:
            waiter.cancel()


class RunningServe(ThreadedService):
    """`moclo serve` (API, live stream, dashboard) on its own thread and event loop, with its
    API tokens in `settings.registry`; `token()` makes one."""

    name = "serve"

    def __init__(
        self,
        settings: Settings,
        *,
        acknowledgement_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.acknowledgement_timeout_s = acknowledgement_timeout_s
        self.clock = clock  # the sessions' wall clock
        self.url = ""
        super().__init__()

    async def serve(self, stop: asyncio.Event) -> None:
        from serve.server import run_serve

        def ready(url: str) -> None:
            self.url = url.rstrip("/")
            self.ready()

        await run_serve(
            self.settings,
            stop,
            on_ready=ready,
            acknowledgement_timeout_s=self.acknowledgement_timeout_s,
            clock=self.clock,
        )

    @property
    def tokens(self) -> Tokens:
        return Tokens(self.settings.registry)

    @functools.cached_property
    def admin_token(self) -> str:
        """One admin's token of every tenant, made on first use."""
        return self.token(name="test-admin")

    def token(
        self, tenants: Iterable[str] | None = None, *, role: Role = "admin", name: str = ""
    ) -> str:
        """A new API token: by default an admin's of every tenant (`tenants` None)."""
        name = name or f"{role}-{uuid.uuid4().hex[:6]}"
        return self.tokens.create(name, tenants, role)[1]

    def live(self) -> bool:
        """Whether serve's live stream is subscribed at the broker (its /healthz says so)."""
        return bool(httpx.get(f"{self.url}/healthz", timeout=10).json()["live_stream"])

    def client(self, token: str | None = None) -> httpx.Client:
        """An HTTP client for this server, sending `token` (default: an admin's) as Bearer."""
        token = token or self.token()
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=15
        )


@pytest.fixture
def serve(settings: Settings, tmp_path: Path) -> Iterator[RunningServe]:
    """`moclo serve` with a fresh registry (no token yet) in the test's folder, once its live
    stream is subscribed: serve is ready when it answers HTTP, and subscribes a moment later,
    so an alert change or command status published in between would reach no stream."""
    update = {"serve_listen": "127.0.0.1:0", "registry": str(tmp_path / "registry.sqlite")}
    with RunningServe(settings.model_copy(update=update)) as running:
        wait_until(running.live, what="serve's live stream subscribed")
        yield running


@pytest.fixture
def ingest(settings: Settings) -> Iterator[RunningIngest]:
    with RunningIngest(settings, IngestOptions(linger_s=0.05)) as running:
        yield running


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_state_in_the_work_tree(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Any `moclo` a test starts keeps its spool and registry in a temporary folder and serves
    /healthz and the dashboard on free ports, never in the repository or on the default ports.
    Its ingest checks no registry (MOCLO_UNREGISTERED=off) unless the test sets it."""
    monkeypatch.setenv("MOCLO_SPOOL_DIR", str(tmp_path_factory.mktemp("spool")))
    monkeypatch.setenv("MOCLO_REGISTRY", str(tmp_path_factory.mktemp("registry") / "r.sqlite"))
    monkeypatch.setenv("MOCLO_UNREGISTERED", "off")
    monkeypatch.setenv("MOCLO_HTTP_LISTEN", "127.0.0.1:0")
    monkeypatch.setenv("MOCLO_SERVE_LISTEN", "127.0.0.1:0")


@pytest.fixture
def smtp_receiver() -> Iterator[SmtpReceiver]:
    """A real SMTP server (aiosmtpd) on a free loopback port, recording every mail."""
    receiver = SmtpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    """A real HTTP server on a free loopback port, recording every request it answered."""
    receiver = HttpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With `--dist loadfile` (as `./dev test` runs it), every `test_engine_*.py` file goes to
    the same worker: they share one session fixture that boots a RabbitMQ cluster, and two
    of those booting at once would take both cores for half a minute. Other files: one each."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class EngineFilesTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope: str = super()._split_scope(nodeid)
            return "test_engine_*" if Path(scope).name.startswith("test_engine_") else scope

    return EngineFilesTogether(config, log)
