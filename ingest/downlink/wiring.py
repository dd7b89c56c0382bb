"""The gateway's place in ingest: its registry view, its restore at start, and its own MQTT
connection (`USER~commands`) for what it sends to devices and announces on command-status.

Why a connection of its own: the consuming connection may be parked behind a backlog (see
`ingest/source.py`) and the alert connection carries alerts; commands must leave at once, and
the broker's ACL gives this login, and no other of ingest's, the right to write to devices.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from core.mqtt import connection_login
from core.settings import Settings
from devices.commands import MAX_EXPIRY_S
from ingest.announce import Publication, Publisher
from ingest.downlink.directory import Directory
from ingest.downlink.gateway import Gateway
from ingest.downlink.ledger import FOLLOWED_UP_TO
from ingest.downlink.outcome import Outcome
from storage.commands import command_states, desired_states, reported_versions
from storage.influx import InfluxClient, InfluxError

log = logging.getLogger("moclo.ingest.downlink")

CONFIRM_TIMEOUT_S = 10.0


class Downlink:
    def __init__(self, settings: Settings, *, clock: Callable[[], int] = time.time_ns) -> None:
        self.settings = settings
        self.directory = Directory(settings.registry)
        self._clock = clock
        self.gateway = self.fresh_gateway()
        self.publisher = Publisher(
            settings.mqtt.for_connection("commands"),
            client_id=connection_login(settings.ingest_id, "commands"),
            prefix=settings.topic_prefix,
            mqtt311=settings.engine_url is not None,  # RabbitMQ 3.10 drops MQTT 5 clients
        )
        self._next_look_ns = 0

    def fresh_gateway(self) -> Gateway:
        """A gateway that remembers nothing yet (`restore` fills it)."""
        return Gateway(
            self.settings.topic_prefix,
            self.directory,
            clock=self._clock,
            desired_grace_s=self.settings.desired_grace,
        )

    async def restore(self, client: InfluxClient) -> None:
        """Reads the registry, and the commands of the last week, every desired document and
        the highest version each device reported back from `moclo_commands`, before the first
        request is taken."""
        await asyncio.to_thread(self.directory.refresh)
        since = self.gateway.clock() - int(MAX_EXPIRY_S * 1e9)
        tenants = self.settings.tenants or (None,)
        commands, desired = [], []
        reported: dict[tuple[str, str], int] = {}
        try:
            for tenant in tenants:
                commands += await command_states(client, since_ns=since, tenant=tenant)
                desired += await desired_states(client, tenant=tenant)
                reported |= await reported_versions(client, tenant=tenant, at_most=FOLLOWED_UP_TO)
        except InfluxError as exc:
            # As the alert state does: start rather than stop the readings for it.
            log.warning(
                "could not read moclo_commands back (%s): commands pending and desired states "
                "from before this start are not known to this ingest; ask for them again",
                exc,
            )
            return
        self.gateway.restore(commands, desired, reported)
        pending = sum(len(p) for p in self.gateway.ledger.pending.values())
        if commands or desired or reported:
            log.info(
                "commands: %d pending of %d from the last week, %d desired states and %d "
                "devices' reported versions restored",
                pending,
                len(commands),
                len(desired),
                len(reported),
            )

    async def start(self, *, send_pending: bool = True) -> None:
        """Connects the publisher; sends the pending commands again unless told not to (on
        the engine, the control queue's owner does that when it takes over)."""
        await self.publisher.start()
        if send_pending:
            await self.send_pending()

    async def send_pending(self) -> None:
        """Sends again, once connected, every pending command its device has not answered:
        one recorded just before a stop may never have left, and a connected device asks only
        when it connects (an automation's command is asked for by nobody again). A device
        executes an id once, so a copy it already had changes nothing."""
        out = Outcome()
        now = self.gateway.clock()
        for waiting in self.gateway.ledger.pending.values():
            for entry in waiting.values():
                if entry.status == "sent" and entry.expires_ns > now:
                    self.gateway.send_command(entry, out)
        if out.publications:
            log.info("sending %d unanswered commands again", len(out.publications))
            await self.publish(out.publications)

    async def close(self) -> None:
        await self.publisher.close()
        self.directory.close()

    async def refresh(self) -> None:
        """Reads the registry again if it changed (checked at most every 2 s)."""
        if self.directory.due():
            await asyncio.to_thread(self.directory.refresh)

    def expiry_due(self) -> bool:
        """A command's expiry passed, or it is time to look for unapplied desired states
        (at most once a second)."""
        now = self.gateway.clock()
        due = self.gateway.next_expiry_ns()
        if due is not None and due <= now:
            return True
        if now >= self._next_look_ns:
            self._next_look_ns = now + 1_000_000_000
            return True
        return False

    def expire(self) -> Outcome:
        out = Outcome()
        self.gateway.expire(out)
        return out

    async def publish(self, publications: Sequence[Publication]) -> None:
        """Sends to devices and announces; waits for the broker, at most 10 s."""
        if not await self.publisher.publish_all(publications, timeout_s=CONFIRM_TIMEOUT_S):
            # Recorded either way: a device gets its pending commands when it asks
            # (commands/get, on connect), and a client can read the status back.
            log.warning(
                "the broker did not confirm %d downlink messages within %.0f s",
                len(publications),
                CONFIRM_TIMEOUT_S,
            )
