"""What the routes share, kept on `app.state` by serve/api.py's `create_app`: the database
client and the live hub, each read through a FastAPI dependency, so that a route names what it
needs in its signature rather than closing over `create_app`'s arguments; the token registry
and the sessions, which serve/auth.py reads. (The acknowledger is kept by
serve/routes/acknowledgements.py.)

The dependencies are `async` so that FastAPI calls them on the event loop, not its thread pool:
they only read an attribute.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Request

from access.sessions import Sessions
from access.tokens import Tokens
from serve.live import LiveHub
from storage.influx import InfluxClient


def keep(
    app: FastAPI, *, client: InfluxClient, hub: LiveHub, tokens: Tokens, sessions: Sessions
) -> None:
    """Keeps what the routes share; each lives as long as the process (see serve/server.py)."""
    app.state.influx = client
    app.state.hub = hub
    app.state.tokens = tokens
    app.state.sessions = sessions


async def _influx(request: Request) -> InfluxClient:
    client: InfluxClient = request.app.state.influx
    return client


async def _hub(request: Request) -> LiveHub:
    hub: LiveHub = request.app.state.hub
    return hub


Influx = Annotated[InfluxClient, Depends(_influx)]
Hub = Annotated[LiveHub, Depends(_hub)]
