"""A device's side of the downlink (devices/commands.py), written so a device author can copy it.

What a device does, and why:
- it connects with a persistent session (MQTT 3.1.1 `clean_session=False`, a stable client id)
  and subscribes to its own `commands` and `desired` at QoS 1, so the broker keeps what is sent
  while it is away;
- once subscribed it publishes `commands/get` and `desired/get`, so it gets its unexpired
  commands and its desired state even from a broker (or a cluster node) that kept no session
  and no retained message;
- it executes a command id at most once: a command delivered twice (the broker's redelivery,
  then moclo's answer to `commands/get`) gets the first answer again, unchanged;
- it never executes a command past its `expires` (by its own clock): it answers `expired`;
- it applies a desired document only if its version is newer than the last it applied (an old
  retained copy arriving after a new one changes nothing), and reports what it applied on
  `reported` with that version; given an older version than it applied, it reports again what
  it applied, so a moclo that lost its records continues above it.

`DeviceDownlink` is that logic with no MQTT in it: it takes what arrived and the time, and
returns what to publish. simulators/connections.py (one connection per device) and
simulators/publisher.py (devices sharing connections) wire it to paho.
"""

from __future__ import annotations

import random
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, fields
from typing import Any

import orjson
from pydantic import ValidationError

from devices.catalogue import DEVICE_TYPES
from devices.commands import (
    COMMAND_ID,
    Command,
    CommandResult,
    DesiredDocument,
    ReportedDocument,
)
from devices.topics import (
    COMMAND_RESULTS,
    COMMANDS,
    COMMANDS_GET,
    DESIRED,
    DESIRED_GET,
    REPORTED,
    device_topic,
)
from simulators.behaviour import Obeys, Outcome

Outgoing = tuple[str, bytes]  # (topic, payload): published at QoS 1, not retained
REMEMBER_S = 3600.0  # how long past its expiry a command's answer is kept for a repeat
MAX_REMEMBERED = 1000  # commands remembered per device (a device's memory is small)
MAX_INBOX = 1000  # messages held for a device that is offline behind a shared connection
GET = b"{}"  # the payload of `commands/get` and `desired/get`: the topic says it all


@dataclass(frozen=True, slots=True)
class CommandFaults:
    """Devices that misbehave on commands, each rate a probability per command: `reject`
    answers `rejected`; `ignore` answers nothing, so moclo marks the command `expired`."""

    reject: float = 0.0
    ignore: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            if not 0.0 <= getattr(self, f.name) <= 1.0:
                raise ValueError(f"command fault rate {f.name} must be between 0 and 1")
        if self.reject + self.ignore > 1.0:
            raise ValueError("command fault rates reject + ignore must be at most 1")

    def any(self) -> bool:
        return bool(self.reject or self.ignore)

    @classmethod
    def parse(cls, text: str) -> CommandFaults:
        """`reject=0.1,ignore=0.1` → CommandFaults."""
        names = {f.name for f in fields(cls)}
        values: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, rate = part.partition("=")
            if name not in names:
                raise ValueError(
                    f"unknown command fault {name!r}; known: {', '.join(sorted(names))}"
                )
            try:
                values[name] = float(rate)
            except ValueError:
                raise ValueError(f"{part!r}: write FAULT=RATE, e.g. reject=0.1") from None
        return cls(**values)


class DeviceDownlink:
    """One device's commands and desired state. Thread-safe: its own state is guarded, and
    the behaviour is touched only while holding `lock`, which the fleet also holds while it
    makes a reading (readings and the downlink run on different threads)."""

    def __init__(
        self,
        prefix: str,
        tenant: str,
        device_type: str,
        device_id: str,
        behaviour: Obeys,
        *,
        lock: threading.Lock | None = None,
        faults: CommandFaults | None = None,
        rng: random.Random | None = None,
        counts: Counter[str] | None = None,
    ) -> None:
        self.device_type = DEVICE_TYPES[device_type]
        self.behaviour = behaviour
        self.lock = lock or threading.Lock()
        self.faults = faults if faults is not None and faults.any() else None
        self._rng = rng or random.Random(f"downlink:{tenant}:{device_id}")
        self.counts: Counter[str] = counts if counts is not None else Counter()
        self._topic = {
            level: device_topic(prefix, tenant, device_type, device_id, level)
            for level in (COMMANDS, COMMANDS_GET, COMMAND_RESULTS, DESIRED, DESIRED_GET, REPORTED)
        }
        # id → (forget after, the answer sent, or None if the device ignored it on purpose)
        self._answers: OrderedDict[str, tuple[float, bytes | None]] = OrderedDict()
        self.desired_version = -1  # nothing applied yet
        self._reported: bytes | None = None
        self.offline = False
        self._inbox: list[tuple[str, bytes]] = []
        self._guard = threading.RLock()  # come_back handles the inbox through on_message

    def subscriptions(self) -> list[str]:
        """The device's own `commands` and `desired` topics, to subscribe at QoS 1."""
        return [self._topic[COMMANDS], self._topic[DESIRED]]

    def on_subscribed(self) -> list[Outgoing]:
        """What to publish once subscribed (on every connect): ask for what was missed."""
        return [(self._topic[COMMANDS_GET], GET), (self._topic[DESIRED_GET], GET)]

    def on_message(self, topic: str, payload: bytes, t: float) -> list[Outgoing]:
        """What to publish in answer to a message on one of `subscriptions()` at time `t`.
        Never raises: a message it cannot use is counted and answered where it can be."""
        with self._guard:
            return self._on_message(topic, payload, t)

    def _on_message(self, topic: str, payload: bytes, t: float) -> list[Outgoing]:
        if self.offline:  # a device behind a shared connection, scripted offline
            if len(self._inbox) < MAX_INBOX:
                self._inbox.append((topic, payload))
            else:
                self.counts["inbox_full"] += 1
            return []
        if topic == self._topic[COMMANDS]:
            return self._on_command(payload, t)
        if topic == self._topic[DESIRED]:
            return self._on_desired(payload, t)
        self.counts["not_mine"] += 1
        return []

    def go_offline(self) -> None:
        with self._guard:
            self.offline = True

    def come_back(self, t: float) -> list[Outgoing]:
        """Back from `offline` at `t`: what arrived meanwhile (expired by now, or executed
        now), then ask for what was missed, as on a connect."""
        with self._guard:
            self.offline = False
            held, self._inbox = self._inbox, []
            answers = [out for topic, body in held for out in self._on_message(topic, body, t)]
        return answers + self.on_subscribed()

    # -- commands --------------------------------------------------------------------------

    def _on_command(self, payload: bytes, t: float) -> list[Outgoing]:
        try:
            command = Command.model_validate_json(payload)
        except ValidationError as exc:
            return self._unreadable_command(payload, exc, t)
        self._forget_old(t)
        if command.id in self._answers:
            self.counts["repeated"] += 1
            answer = self._answers[command.id][1]
            return [] if answer is None else [(self._topic[COMMAND_RESULTS], answer)]
        answer = self._execute(command, t)
        self._answers[command.id] = (max(t, command.expires / 1e9) + REMEMBER_S, answer)
        while len(self._answers) > MAX_REMEMBERED:
            self._answers.popitem(last=False)
        return [] if answer is None else [(self._topic[COMMAND_RESULTS], answer)]

    def _execute(self, command: Command, t: float) -> bytes | None:
        """The answer to a command seen for the first time (None: none, a fault)."""
        if t * 1e9 > command.expires:
            self.counts["expired"] += 1
            return self._result(command.id, "expired", t)
        if self.faults is not None:
            draw = self._rng.random()
            if draw < self.faults.ignore:
                self.counts["ignored"] += 1
                return None
            if draw < self.faults.ignore + self.faults.reject:
                self.counts["fault_rejected"] += 1
                reason = "the device refused (a simulated fault: --command-faults reject)"
                return self._result(command.id, "rejected", t, reason)
        outcome = self._run(command, t)
        return self._result(command.id, outcome.status, t, outcome.reason, outcome.output)

    def _run(self, command: Command, t: float) -> Outcome:
        try:
            spec = self.device_type.command(command.name)
        except KeyError as exc:
            return Outcome("rejected", str(exc.args[0]))
        try:
            args = spec.arguments.model_validate(command.args)
        except ValidationError as exc:
            return Outcome("rejected", f"invalid arguments for {command.name}: {_problems(exc)}")
        try:
            with self.lock:
                outcome = self.behaviour.command(command.name, args.model_dump(), t)
            if outcome.status == "succeeded" and spec.output is not None:
                spec.output.model_validate(outcome.output)  # what a read-out promises
        except (ValidationError, ValueError, KeyError, TypeError) as exc:
            self.counts["failed"] += 1
            return Outcome("failed", f"the device failed to {command.name}: {exc}"[:500])
        self.counts["executed"] += 1
        return outcome

    def _result(
        self,
        id_: str,
        status: str,
        t: float,
        reason: str | None = None,
        output: dict[str, Any] | None = None,
    ) -> bytes:
        answer: dict[str, Any] = {"id": id_, "status": status, "ts": round(t, 3)}
        if reason:
            answer["reason"] = reason[:500]
        if output is not None:
            answer["output"] = output
        CommandResult.model_validate(answer)  # the device keeps the contract it expects
        return orjson.dumps(answer)

    def _unreadable_command(self, payload: bytes, exc: ValidationError, t: float) -> list[Outgoing]:
        """A command the device cannot read: rejected if it has an id to answer to."""
        self.counts["unreadable"] += 1
        try:
            raw = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return []  # no id to answer to: counted, nothing else to do
        id_ = raw.get("id") if isinstance(raw, dict) else None
        if not isinstance(id_, str) or COMMAND_ID.fullmatch(id_) is None or id_ in self._answers:
            return []
        reason = f"not a command this device can read: {_problems(exc)}"
        answer = self._result(id_, "rejected", t, reason)
        return [(self._topic[COMMAND_RESULTS], answer)]

    def _forget_old(self, t: float) -> None:
        """Forgets answers past their time, oldest first (one kept longer holds back those
        behind it; MAX_REMEMBERED bounds them all)."""
        while self._answers:
            id_, (forget_at, _) = next(iter(self._answers.items()))
            if forget_at > t:
                return
            del self._answers[id_]

    # -- desired state ---------------------------------------------------------------------

    def _on_desired(self, payload: bytes, t: float) -> list[Outgoing]:
        if not payload:  # a retained desired state emptied: nothing to apply
            return []
        try:
            document = DesiredDocument.model_validate_json(payload)
        except ValidationError:
            self.counts["unreadable_desired"] += 1
            return []
        if document.version < self.desired_version:
            # An old copy (a retained one, late), or a moclo that lost its records and counts
            # from less than this: the device says what it applied, so moclo goes above it.
            self.counts["stale_desired"] += 1
            return [] if self._reported is None else [(self._topic[REPORTED], self._reported)]
        if document.version == self.desired_version and self._reported is not None:
            return [(self._topic[REPORTED], self._reported)]  # asked again: the same report
        spec = self.device_type.desired
        try:
            if spec is None:
                raise ValueError(f"{self.device_type.name} has no desired state")
            state = spec.state.model_validate(document.state).model_dump(exclude_none=True)
            with self.lock:
                reported = self.behaviour.apply_desired(state, t)
        except (ValidationError, ValueError, KeyError, TypeError):
            self.counts["bad_desired"] += 1  # the last applied version stays reported
            return []
        self.counts["desired_applied"] += 1
        self.desired_version = document.version
        report = {"version": document.version, "state": reported, "ts": round(t, 3)}
        ReportedDocument.model_validate(report)
        self._reported = orjson.dumps(report)
        return [(self._topic[REPORTED], self._reported)]


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}" for e in exc.errors()
    )[:400]
