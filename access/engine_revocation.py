"""Closing a revoked login's open connections on the engine (RabbitMQ), not only refusing its
next login.

RabbitMQ asks the auth service (access/engine_auth.py) when a client logs in and when it
publishes, but checks a subscription once, when its queue is bound, and never looks at a login
again while it stays connected: an app revoked while connected went on receiving its tenant's
alerts (tried on 3.10.8), a device its commands, and both kept their connections.
So a watcher compares the registry's logins every `every_s` with those it saw last, and for
every login gone (revoked, removed) or whose password changed, asks the engine to close all
of that login's connections on every node (`close`, e.g. `RabbitCluster.close_user_connections`:
`rabbitmqctl close_all_user_connections`, which RabbitMQ 3.10 has, no management plugin needed).

A close that fails (a node down, the CLI timed out) is logged and tried again each round until
it succeeds: the revocation stands either way (the next login is refused), only the open
connection lingers meanwhile.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from access.engine_auth import EngineAuth, EngineLogin

log = logging.getLogger(__name__)

# Closes every connection of a login on every node of the engine, saying why; raises if it
# could not (it is then tried again).
CloseConnections = Callable[[str, str], object]
REASON = "login revoked in moclo's registry"


class RevokedLogins:
    """One `check()` closes the connections of the logins revoked since the last one."""

    def __init__(self, auth: EngineAuth, close: CloseConnections) -> None:
        self.auth = auth
        self.close = close
        self.closed: list[str] = []  # usernames whose connections were closed, in order
        self._known: dict[str, EngineLogin] = auth.logins()
        self._to_close: set[str] = set()
        self._failed: set[str] = set()  # logged once until it succeeds

    def check(self) -> list[str]:
        """Closes what was revoked since the last check (and what failed then); returns the
        usernames closed now."""
        current = self.auth.logins()
        if current is not self._known:  # RegistryWatch swaps the whole mapping on a change
            self._to_close |= {
                username
                for username, login in self._known.items()
                if (now := current.get(username)) is None
                or now.password_hash != login.password_hash
            }
            self._known = current
        closed = []
        for username in sorted(self._to_close):
            try:
                count = self.close(username, REASON)
            except Exception as exc:  # a failed close must not stop the next ones: retried
                if username not in self._failed:
                    log.warning(
                        "could not close the engine connections of revoked login %r (%s); "
                        "trying again; check that every engine node runs",
                        username,
                        exc,
                    )
                    self._failed.add(username)
                continue
            self._to_close.discard(username)
            self._failed.discard(username)
            closed.append(username)
            log.info("closed the engine connections of %r (%s): %s", username, count, REASON)
        self.closed += closed
        return closed


@contextmanager
def closing_revoked_logins(
    auth: EngineAuth, close: CloseConnections, *, every_s: float = 1.0
) -> Iterator[RevokedLogins]:
    """Checks for revoked logins on a thread every `every_s` until the block ends."""
    revoked = RevokedLogins(auth, close)
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(every_s):
            revoked.check()

    thread = threading.Thread(target=run, name="engine-revocation", daemon=True)
    thread.start()
    try:
        yield revoked
    finally:
        stop.set()
        thread.join(60)  # a close in progress may take the CLI's time
