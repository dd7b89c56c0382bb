"""Runs the API and the live stream on the caller's event loop until `stop` is set.

`moclo serve` runs this on its own; `moclo up` runs it beside ingest on the same loop. It is a
process of its own rather than part of ingest so that a busy dashboard (or a slow browser on a
phone) can never take time from the consumer, and so that it can be placed, scaled and
secured apart from the one process that writes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

import uvicorn
from starlette.types import ASGIApp

from access.sessions import Sessions
from access.tokens import Tokens
from core.settings import Settings, map_tile_source
from ingest.rules_in_force import load_rulebook
from serve.api import create_app
from serve.headers import SecurityHeaders
from serve.live import LiveHub
from storage.influx import InfluxClient

log = logging.getLogger("moclo.serve")


def bind(listen: str) -> socket.socket:
    """A listening socket for `host:port` (port 0: a free one); OSError says what is wrong."""
    host, _, port = listen.rpartition(":")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]") or "0.0.0.0", int(port)))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.setblocking(False)
    return sock


def address(sock: socket.socket) -> str:
    """`http://host:port/` of a bound socket, with a wildcard host shown as 127.0.0.1."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


async def run_serve(
    settings: Settings,
    stop: asyncio.Event,
    *,
    sock: socket.socket | None = None,
    on_ready: Callable[[str], None] | None = None,
    acknowledgement_timeout_s: float = 10.0,
    clock: Callable[[], float] = time.time,
) -> None:
    """Serves until `stop`; `on_ready` gets the dashboard's address once it answers. `clock`
    (epoch seconds) times the dashboard's sessions; tests move it.

    Reads the rules in force (the rules file as ingest reads it, for the maps' places) and the
    API tokens from the registry (`settings.registry`); before anything is served,
    RulesFileError if the rules file is not one ingest would take, TokenStoreError if the
    registry cannot be opened.
    """
    rulebook = load_rulebook(settings)
    tokens = Tokens(settings.registry)
    await _tell_tokens(settings, tokens)
    sock = sock or bind(settings.serve_listen)
    client = InfluxClient(
        settings.influx_url, settings.influx_db, token=settings.influx_token_value
    )
    hub = LiveHub(settings)
    server = _uvicorn(
        create_app(
            settings,
            client,
            hub,
            tokens,
            Sessions(settings.registry, clock=clock),
            rulebook,
            acknowledgement_timeout_s=acknowledgement_timeout_s,
        ),
        images_from=map_tile_source(settings.map_tiles),
    )
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(hub.run(stop), name="serve-live")
            serving = tasks.create_task(server.serve(sockets=[sock]), name="serve-http")
            while not server.started and not serving.done():
                await asyncio.sleep(0.01)  # uvicorn has no started event; bounded by its startup
            if server.started:
                url = address(sock)
                log.info("dashboard and API at %s", url)
                if on_ready is not None:
                    on_ready(url)
            await stop.wait()
            server.should_exit = True
    finally:
        await client.close()
        sock.close()


def _uvicorn(app: ASGIApp, *, images_from: str | None) -> uvicorn.Server:
    """uvicorn's own server, as its documentation runs it inside an async program: while it
    serves, it takes Ctrl-C and SIGTERM itself, closes, and raises them again for the caller's
    handlers (moclo/signals.py); `stop` closes it through `should_exit`."""
    return uvicorn.Server(
        uvicorn.Config(
            # Around the whole application, so that even an answer Starlette makes itself (a
            # 404, a 500 from its outermost error handler) carries the security headers.
            SecurityHeaders(app, images_from=images_from),
            log_config=None,  # our logging, as configured by the CLI
            access_log=False,
            lifespan="off",
            # Event streams stay open; on stop they are closed at once rather than awaited.
            timeout_graceful_shutdown=1,
        )
    )


async def _tell_tokens(settings: Settings, tokens: Tokens) -> None:
    """Logs how many API tokens are active, and how to make one when there is none."""
    active = await asyncio.to_thread(tokens.count_active)
    if active == 0:
        log.warning(
            "no API token in %s yet, so nobody can sign in to the dashboard or use the API: "
            "create one with `moclo tokens create NAME --role admin --all-tenants` (or "
            "`--tenant T --role viewer`)",
            settings.registry,
        )
    else:
        log.info("%d active API token(s) in %s", active, settings.registry)
