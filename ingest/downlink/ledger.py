"""What the gateway remembers between messages: every recent command by its id, the pending ones
by device and by expiry, and each device's desired document. Restored from `moclo_commands`
when ingest starts, so a restart forgets no pending command, no id and no desired state, and
no desired version: a device's reports count as well as the documents, so versions never repeat
even when the documents' records were lost (retention, a new database).

Command ids are remembered per tenant for a week (the longest expiry) and at most
`MAX_REMEMBERED` of them: the same id asked for again within that time is the same command.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from devices.commands import FINAL_STATUSES, MAX_EXPIRY_S
from storage.commands import CommandState, DesiredState

MAX_REMEMBERED = 200_000
# The versions moclo gives stay at or below this: exact integers in JavaScript (the dashboard,
# a device's firmware) and within InfluxDB's 64-bit integers, whatever a device says
# (ReportedDocument allows up to 2**63 - 1).
MAX_VERSION = 2**53 - 1
# A reported version above this is recorded but not followed, here and when read back at a
# restart. It leaves 2**52 versions below MAX_VERSION for moclo's own changes, which never run
# out: a device reporting the largest version followed cannot push the next ones past it.
FOLLOWED_UP_TO = 2**52
REMEMBER_NS = int(MAX_EXPIRY_S * 1e9)


@dataclass(slots=True)
class Entry:
    """One command as it stands."""

    tenant: str
    device_type: str
    device_id: str
    id: str
    name: str
    args: dict[str, Any]
    issuer: str
    account: str
    created_ns: int
    expires_ns: int
    status: str = "sent"
    reason: str = ""
    output: dict[str, Any] | None = None
    cause: Cause | None = None  # an automation's: the alert change it acted on

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass(frozen=True, slots=True)
class Cause:
    """Why an automation acted: the alert's id, and its change ("near_home raised on car-1")."""

    alert: str
    trigger: str


@dataclass(slots=True)
class Desired:
    """A device's desired document, and the newest version it confirmed applying."""

    device_type: str
    version: int
    state: dict[str, Any]
    ts_ns: int
    issuer: str = ""
    confirmed: int = 0
    cause: Cause | None = None  # set by an automation: the alert change it acted on
    request_id: str = ""  # the asker's id of the request that made this version


@dataclass(slots=True)
class Ledger:
    commands: OrderedDict[tuple[str, str], Entry] = field(default_factory=OrderedDict)
    pending: dict[tuple[str, str], dict[str, Entry]] = field(default_factory=dict)
    expiries: list[tuple[int, str, str]] = field(default_factory=list)  # (ns, tenant, id)
    desired: dict[tuple[str, str], Desired] = field(default_factory=dict)  # (tenant, device)
    # The highest desired version known of each device from any source (a document, a report):
    # the next version goes above it, so a device never gets a number it applied before.
    versions: dict[tuple[str, str], int] = field(default_factory=dict)  # (tenant, device)

    def know_version(self, tenant: str, device_id: str, version: int) -> None:
        if version > self.versions.get((tenant, device_id), 0):
            self.versions[(tenant, device_id)] = version

    def know_reported(self, tenant: str, device_id: str, version: int) -> bool:
        """Notes the version a device says it applied; False (not followed) beyond
        FOLLOWED_UP_TO."""
        if version > FOLLOWED_UP_TO:
            return False
        self.know_version(tenant, device_id, version)
        return True

    def next_version(self, tenant: str, device_id: str) -> int:
        return self.versions.get((tenant, device_id), 0) + 1

    def add(self, entry: Entry) -> None:
        self.commands[(entry.tenant, entry.id)] = entry
        if not entry.final:
            self.pending.setdefault((entry.tenant, entry.device_id), {})[entry.id] = entry
            heapq.heappush(self.expiries, (entry.expires_ns, entry.tenant, entry.id))

    def get(self, tenant: str, command_id: str) -> Entry | None:
        return self.commands.get((tenant, command_id))

    def settle(self, entry: Entry, status: str, reason: str = "") -> None:
        """Moves `entry` to `status`; a final one leaves the pending ones."""
        entry.status, entry.reason = status, reason
        if entry.final:
            waiting = self.pending.get((entry.tenant, entry.device_id))
            if waiting is not None:
                waiting.pop(entry.id, None)
                if not waiting:
                    del self.pending[(entry.tenant, entry.device_id)]

    def pending_of(self, tenant: str, device_id: str) -> list[Entry]:
        return list(self.pending.get((tenant, device_id), {}).values())

    def due(self, now_ns: int) -> list[Entry]:
        """The pending commands whose expiry is at or before `now_ns`, oldest first."""
        due = []
        while self.expiries and self.expiries[0][0] <= now_ns:
            _, tenant, command_id = heapq.heappop(self.expiries)
            entry = self.commands.get((tenant, command_id))
            if entry is not None and not entry.final:
                due.append(entry)
        return due

    def next_expiry_ns(self) -> int | None:
        return self.expiries[0][0] if self.expiries else None

    def forget_old(self, now_ns: int) -> None:
        """Forgets settled commands older than a week, and the oldest beyond MAX_REMEMBERED.
        A pending command is kept, moved behind the others, so it holds back nothing."""
        for _ in range(len(self.commands)):
            key, entry = next(iter(self.commands.items()))
            over = len(self.commands) > MAX_REMEMBERED
            if not (over or entry.created_ns < now_ns - REMEMBER_NS):
                return
            if entry.final:
                del self.commands[key]
            elif over:
                self.commands.move_to_end(key)
            else:
                return

    def restore(
        self,
        commands: list[CommandState],
        desired: list[DesiredState],
        reported: dict[tuple[str, str], int] | None = None,
    ) -> None:
        """Takes what `storage/commands.py` read back (commands oldest first; `reported`: the
        highest version each device reported, by (tenant, device id))."""
        for (tenant, device_id), version in (reported or {}).items():
            self.know_reported(tenant, device_id, version)
        for state in sorted(commands, key=lambda s: s.sent.created_ns or s.sent.ts_ns):
            sent, last = state.sent, state.last
            self.add(
                Entry(
                    sent.tenant,
                    sent.device_type,
                    sent.device_id,
                    sent.id,
                    sent.name,
                    sent.args or {},
                    sent.issuer,
                    sent.account,
                    sent.created_ns or sent.ts_ns,
                    sent.expires_ns or sent.ts_ns,
                )
            )
            entry = self.commands[(sent.tenant, sent.id)]
            entry.output = last.output
            entry.cause = Cause(sent.alert, sent.trigger) if sent.alert else None
            self.settle(entry, last.status, last.reason)
        for d in desired:
            self.know_version(d.tenant, d.device_id, d.version)
            known = self.desired.get((d.tenant, d.device_id))
            if known is not None and known.ts_ns > d.ts_ns:
                continue  # an id re-registered as another type: the newest device's
            cause = Cause(d.alert, d.trigger) if d.alert else None
            self.desired[(d.tenant, d.device_id)] = Desired(
                d.device_type, d.version, d.state, d.ts_ns, d.issuer, d.confirmed_version, cause,
                d.request_id,
            )  # fmt: skip
