"""`moclo up`: the whole pipeline on one machine with one command.

Uses the broker and database at the configured URLs when they answer; otherwise starts local
`mosquitto` and `influxd` child processes (loopback only, config and data under `--data-dir`)
on the configured ports, or on free ports when those are taken. Then runs ingest and a
simulated fleet, prints where everything is and what happens, and on Ctrl-C stops the
simulator, lets ingest store and acknowledge what it holds, and stops the servers last.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from core.settings import Settings, url_has_password
from ingest.options import IngestOptions
from ingest.service import Ingest
from ingest.stats import IngestStats
from moclo.local_access import LocalAccess
from moclo.signals import install_stop_handlers
from moclo.up_servers import link_secret, say, start_local_servers
from notify.service import Notifier, load_config
from serve.server import bind, run_serve
from simulators.run import SimulationOptions, run_simulation
from storage.alert_record import Alert


@dataclass(frozen=True, slots=True)
class UpOptions:
    data_dir: Path
    simulation: SimulationOptions | None  # None: no simulator, ingest only
    duration_s: float | None = None  # stop by itself after this long (demos, tests)
    status_every_s: float = 5.0


def run_up(settings: Settings, options: UpOptions) -> int:
    if settings.notify_file:
        load_config(settings)  # a notify file with mistakes stops here, before any server
    with ExitStack() as servers:
        say("moclo up: starting…")
        settings, notes, access = start_local_servers(
            settings, options.data_dir, servers, options.simulation
        )
        return asyncio.run(run_stack(settings, options, notes, access))


@dataclass(frozen=True)
class EngineParts:
    """What `moclo up --engine` runs instead of one ingest at one broker (moclo/up_engine.py):
    a worker's settings each (its own login, node and share of the partitions), serve's, and
    the cluster's MQTT listeners for the simulated devices."""

    workers: list[Settings]
    serve: Settings
    nodes: tuple[tuple[str, int], ...]


async def run_stack(
    settings: Settings,
    options: UpOptions,
    notes: list[str],
    access: LocalAccess | None,
    engine: EngineParts | None = None,
) -> int:
    stop = asyncio.Event()
    install_stop_handlers(stop)
    sim_stop = threading.Event()
    prefix = settings.topic_prefix
    workers = engine.workers if engine else [access.for_ingest(settings) if access else settings]
    stats = [IngestStats() for _ in workers]

    async with asyncio.TaskGroup() as tasks:
        try:
            services = []
            for index, (own, counts) in enumerate(zip(workers, stats, strict=True)):
                ready = asyncio.Event()
                service = Ingest(
                    own,
                    stop,
                    # Alert changes are printed by _print_alert, so the log need not repeat them.
                    options=IngestOptions(log_alerts=False),
                    stats=counts,
                    on_alert=_print_alert,
                )
                name = f"ingest-{index}" if engine else "ingest"
                await _first(ready, tasks.create_task(service.run(ready), name=name))
                services.append(service)
            if settings.notify_file and settings.notify_link_secret is None:
                # The one-tap acknowledgement links: serve checks what the notifier signs.
                secret = link_secret(options.data_dir)
                settings = settings.model_copy(update={"notify_link_secret": secret})
            dashboard: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            serving = tasks.create_task(
                run_serve(
                    engine.serve if engine else access.for_serve(settings) if access else settings,
                    stop,
                    sock=bind(settings.serve_listen),
                    on_ready=dashboard.set_result,
                ),
                name="serve",
            )
            await _first(dashboard, serving)
            _say_where(settings, notes, access, dashboard.result(), services[0].http_port)
            if settings.notify_file:
                await _start_notifier(settings, access, dashboard.result(), stop, tasks)
            sim = access.simulation if access else options.simulation
            if sim is not None and engine is not None:
                sim = replace(sim, nodes=engine.nodes)  # the devices spread over the nodes
            if sim is not None:
                fleet = ", ".join(f"{n} {t}" for t, n in sim.devices.items())
                say(
                    f"  Simulator    {fleet} for tenant {sim.tenant}, one reading every "
                    f"{sim.interval_s:g}s each (seed {sim.seed})"
                )
                tasks.create_task(
                    asyncio.to_thread(run_simulation, settings.mqtt, prefix, sim, stop=sim_stop),
                    name="simulator",
                )
            _say_how_to_look(settings, access, dashboard.result())
            tasks.create_task(_report(stats, stop, options), name="status")
            await stop.wait()
        finally:
            # Whatever ended the wait (Ctrl-C, --duration, a failing task), the simulator's
            # thread cannot be cancelled: tell it to stop, or the group waits for it forever.
            sim_stop.set()
            stop.set()
    total = _total(stats)
    say(
        f"moclo up: stopped cleanly after storing {total.readings_stored} readings "
        f"({total.rejected} rejected, {total.alerts_raised} alerts raised)"
    )
    return 0


async def _start_notifier(
    settings: Settings,
    access: LocalAccess | None,
    dashboard: str,
    stop: asyncio.Event,
    tasks: asyncio.TaskGroup,
) -> None:
    """The notifier (MOCLO_NOTIFY_FILE set), as its own account, its links to this dashboard
    unless MOCLO_PUBLIC_URL says where people reach it."""
    public_url = settings.public_url or dashboard.rstrip("/")
    own = access.for_notify(settings) if access else settings
    own = own.model_copy(update={"public_url": public_url})
    notifier = Notifier(own, load_config(own), stop)
    ready = asyncio.Event()
    await _first(ready, tasks.create_task(notifier.run(ready), name="notify"))
    health = (
        f"; health http://{own.notify_listen.rpartition(':')[0]}:{notifier.http_port}/healthz"
        if notifier.http_port
        else ""
    )
    say(f"  Notifier     people in {own.notify_file}, links to {public_url}{health}")


def _print_alert(alert: Alert) -> None:
    mark = {"raised": "ALERT", "acknowledged": "ACK  ", "resolved": "CLEAR"}[alert.state]
    say(
        f"{mark} {alert.severity:<8} {alert.rule:<14} {alert.tenant}/{alert.device_id}: "
        f"{alert.message}  (id {alert.alert_id})"
    )


def _say_where(
    settings: Settings,
    notes: list[str],
    access: LocalAccess | None,
    dashboard: str,
    health_port: int | None,
) -> None:
    """Where everything is: the dashboard, the servers, ingest and its health check."""
    prefix = settings.topic_prefix
    say(f"moclo is up. Dashboard: {dashboard}")
    if access is not None:
        say(f"  Sign in      with the token in {access.token_file} (an admin token)")
    for line in notes:
        say(line)
    say(f"  Ingest       {prefix}/+/+/+/telemetry → {settings.influx_db}")
    if settings.http_listen != "off":
        host = settings.http_listen.rpartition(":")[0]
        say(f"  Health       http://{host}:{health_port}/healthz  (and /metrics)")


def _say_how_to_look(settings: Settings, access: LocalAccess | None, dashboard: str) -> None:
    """The commands that watch and query what runs, the API's description, how to stop."""
    login = (
        " (as an account of yours: moclo accounts add operator NAME --tenant T, then "
        "MOCLO_MQTT_USERNAME/MOCLO_MQTT_PASSWORD)"
        if access
        else ""
    )
    say(
        f"  Watch alerts moclo alerts --follow --mqtt-url {settings.mqtt.display()} "
        f"{_influx_flags(settings)}{login}"
    )
    say(f"  Query        moclo query cow-0001 --since 1h --every 5m {_influx_flags(settings)}")
    say(f"  HTTP API     {dashboard}api/openapi.json")
    say(f"Ctrl-C stops everything. Open {dashboard} to watch.")


async def _first(ready: asyncio.Event | asyncio.Future[str], task: asyncio.Task[Any]) -> None:
    """Waits for `task` to be ready; if it fails first, its exception surfaces here."""
    waiter = asyncio.ensure_future(ready.wait()) if isinstance(ready, asyncio.Event) else ready
    await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    if not waiter.done():
        waiter.cancel()
    if task.done() and not waiter.done():
        task.result()
        raise RuntimeError(f"{task.get_name()} stopped before it was ready")


@dataclass(frozen=True, slots=True)
class _Totals:
    readings_stored: int
    rejected: int
    alerts_raised: int
    alerts_resolved: int
    open_alerts: int


def _total(stats: list[IngestStats]) -> _Totals:
    """The workers' counts added up (one worker: its own)."""
    return _Totals(*(sum(getattr(s, name) for s in stats) for name in _Totals.__slots__))


async def _report(stats_of: list[IngestStats], stop: asyncio.Event, options: UpOptions) -> None:
    began = time.monotonic()
    last = 0
    while not stop.is_set():
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), options.status_every_s)
        stats = _total(stats_of)
        stored = stats.readings_stored
        rate = (stored - last) / options.status_every_s
        last = stored
        say(
            f"[{time.strftime('%H:%M:%S')}] readings stored {stored} ({rate:.0f}/s)  "
            f"rejected {stats.rejected}  alerts raised {stats.alerts_raised} "
            f"resolved {stats.alerts_resolved}  open {stats.open_alerts}"
        )
        if options.duration_s is not None and time.monotonic() - began >= options.duration_s:
            print("moclo up: --duration reached, stopping", file=sys.stderr, flush=True)
            stop.set()


def _influx_flags(settings: Settings) -> str:
    """The InfluxDB flags of a suggested command; a URL with a password is not one of them (a
    flag shows in `ps`, and `--influx-url` refuses it): the command reads MOCLO_INFLUX_URL."""
    if url_has_password(settings.influx_url):
        return f"--influx-db {settings.influx_db} (and MOCLO_INFLUX_URL as here: it has a password)"
    return f"--influx-url {settings.influx_url} --influx-db {settings.influx_db}"
