"""The registry gate: which devices' readings ingest accepts (MOCLO_UNREGISTERED).

With a registry (`reject` or `flag`), the decoder checks each message's device against the
registry's active devices, a set in memory that the consumer re-reads between batches when the
registry file has changed (checked every 2 s), so a revocation takes effect without a restart.
In `flag` mode each unregistered device let through is noted once in `moclo_unregistered`.
"""

from __future__ import annotations

import asyncio
import logging

from access.known import RegisteredDevices
from core.settings import Settings
from ingest.decode import Decoder
from storage.lineprotocol import unregistered_line
from storage.schema import UNREGISTERED

log = logging.getLogger("moclo.ingest")

_LOGGED_UNREGISTERED = 10  # unregistered devices named in the log per run; the rest counted


class RegistryGate:
    """Keeps the decoder's view of the registry current and notes the devices it flags."""

    def __init__(self, settings: Settings) -> None:
        self.mode = settings.unregistered
        # Unregistered devices' readings are stored and noted, not rejected (read per batch).
        self.flags = self.mode == "flag"
        self.registered: RegisteredDevices | None = None
        if self.mode != "off":
            self.registered = RegisteredDevices(settings.registry)
        self._logged = 0
        self._last_ns = 0

    async def load(self) -> None:
        """Reads the registry once, at start, and says what will happen to whose readings."""
        registered = self.registered
        if registered is None:
            log.info("no registry check: readings of any device are accepted "
                     "(MOCLO_UNREGISTERED=off)")  # fmt: skip
            return
        await asyncio.to_thread(registered.refresh)
        mode = self.mode
        log.info(
            "registry %s: %d devices registered; readings of others are %s (MOCLO_UNREGISTERED=%s)",
            registered.path,
            len(registered),
            "rejected" if mode == "reject" else f"stored and noted in {UNREGISTERED.name}",
            mode,
        )
        if not len(registered) and mode == "reject":
            log.warning(
                "no device is registered, so every reading will be rejected as "
                "unregistered_device: register devices with `moclo devices add` or "
                "`moclo devices import`, or set MOCLO_UNREGISTERED=flag (or off)"
            )

    async def refresh(self, decoder: Decoder) -> None:
        """Reads the registry again if its file changed (checked at most every 2 s)."""
        registered = self.registered
        if registered is None or not registered.due():
            return
        if await asyncio.to_thread(registered.refresh):
            decoder.forget_flagged()
            log.info("registry changed: %d devices registered", len(registered))

    def unregistered_lines(self, decoder: Decoder) -> list[str]:
        """A `moclo_unregistered` point for each unregistered device let through (flag mode)
        and not seen before. device_id is a field, not a tag, so invented ids add no series."""
        lines = []
        for address, topic, received_ns in decoder.take_flagged():
            if self._logged < _LOGGED_UNREGISTERED:
                self._logged += 1
                log.warning(
                    "readings of unregistered device %s/%s/%s are stored (MOCLO_UNREGISTERED="
                    "flag) and noted in %s%s",
                    address.tenant,
                    address.device_type,
                    address.device_id,
                    UNREGISTERED.name,
                    "; further ones are counted in /metrics, not logged"
                    if self._logged == _LOGGED_UNREGISTERED
                    else "",
                )
            # Strictly increasing stamps: two devices of a tenant and type must not share one.
            ts_ns = max(received_ns, self._last_ns + 1)
            self._last_ns = ts_ns
            lines.append(unregistered_line(address, topic, ts_ns))
        return lines

    def close(self) -> None:
        if self.registered is not None:
            self.registered.close()
