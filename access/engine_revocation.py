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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from access.engine_auth import EngineAuth, EngineLogin

log = logging.getLogger(__name__)

# Closes every connection of these logins on every node of the engine, saying why; raises if
# it could not (they are then tried again).
CloseConnections = Callable[[Sequence[str], str], object]
REASON = "login revoked in moclo's registry"


class RevokedLogins:
    """One `check()` closes the connections of the logins revoked since the last one."""

    def __init__(self, auth: EngineAuth, close: CloseConnections) -> None:
        self.auth = auth
        self.close = close
        self.closed: list[str] = []  # usernames whose connections were closed, in order
        self._known: dict[str, EngineLogin] = auth.logins_read() or {}
        self._to_close: set[str] = set()
        self._failed: set[str] = set()  # logged once until it succeeds

    def check(self) -> list[str]:
        """Closes what was revoked since the last check (and what failed then); returns the
        usernames closed now."""
        current = self.auth.logins_read()
        # A registry missing for a moment (moved, being restored) revokes nobody: compared
        # with it, every login would look gone and every connection would be closed.
        if current is not None and current is not self._known:  # swapped whole on a change
            self._to_close |= {
                username
                for username, login in self._known.items()
                if (now := current.get(username)) is None
                or now.password_hash != login.password_hash
            }
            self._known = current
        closed = sorted(self._to_close)
        if not closed:
            return []
        try:
            # All of a round at once: each call costs the CLI's start (about 0.4 s), so one per
            # login would take minutes for a farm revoked whole.
            count = self.close(closed, REASON)
        except Exception as exc:  # a failed close must not stop ingest's neighbours: retried
            if self._failed != self._to_close:
                log.warning(
                    "could not close the engine connections of revoked logins %s (%s); "
                    "trying again; check that every engine node runs",
                    ", ".join(map(repr, closed)),
                    exc,
                )
                self._failed = set(self._to_close)
            return []
        self._to_close.clear()
        self._failed.clear()
        log.info(
            "closed the engine connections of %s (%s): %s",
            ", ".join(map(repr, closed)),
            count,
            REASON,
        )
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
