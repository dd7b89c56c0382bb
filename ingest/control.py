"""The control queue's work on the distributed engine: the command gateway, the automations and
people's acknowledgements, for the whole partition set, by one worker at a time (docs/scale.md,
"The control queue").

Every worker consumes the control queue after its partitions; RabbitMQ gives it to one of
them (single active consumer) and hands it, unacknowledged deliveries first, to another when
that worker's connection dies. Whoever receives a control delivery owns it for as long as that
connection lasts:

- on its first control delivery on a connection it takes over: a fresh gateway restored from
  `moclo_commands` (another worker may have changed it since this one last held it), the
  open `desired_not_applied` episodes from `moclo_alerts`, then the pending commands sent
  again (a device executes an id once). Only then is anything handled, and only the owner's
  gateway ticks (expiry, follow-ups): the others' are inert;
- the downlink (requests, devices' answers) goes through the gateway as on Mosquitto;
- the alert changes the partitions' workers publish come back here: they feed the index of
  alert ids and the automations (an action's id derives from the alert change, so a change
  delivered twice acts once). Partition workers run no automations;
- a person's acknowledgement names only the alert id: it is sent on, over AMQP with publisher
  confirms, to the partition of the alert's device (by the device's telemetry routing key),
  behind that device's readings, with its MQTT topic in a header; the partition's worker
  takes it as ingest on Mosquitto takes that topic. An id found neither in the index nor in
  `moclo_alerts`, or an episode of the gateway's own (`desired_not_applied`), is handled here,
  where an unknown one is refused with its reason as today.

A control delivery is acknowledged only after what it caused is stored, sent on and published
(the consumer's `_control`).
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field

import orjson

from devices.topics import parse_acknowledgement_topic, telemetry_topic
from ingest.automations.runner import Automations
from ingest.downlink.outcome import Outcome
from ingest.downlink.unapplied import RULE as UNAPPLIED_RULE
from ingest.downlink.wiring import Downlink
from ingest.engine_forward import ForwardFailed
from ingest.engine_source import CONTROL, EngineSource
from ingest.partition_plan import PROBE_TOPIC, amqp_topic
from ingest.pipeline import Pipeline, PreparedBatch
from ingest.source import Message
from storage.alert_history import find_alert, latest_changes
from storage.alert_record import Alert, StoredChange, parse_alert
from storage.influx import InfluxClient, InfluxError

log = logging.getLogger("moclo.ingest.control")

INDEX_SIZE = 200_000  # alert ids remembered; older ones are looked up in moclo_alerts


@dataclass(frozen=True, slots=True)
class Place:
    """Where an alert lives: its device (whose partition judges it) and its rule."""

    tenant: str
    device_type: str
    device_id: str
    rule: str


@dataclass(slots=True)
class ControlBatch:
    """What a batch of control deliveries led to, in the order it must happen: store
    `prepared.lines` (announcing `prepared.alerts`), send `forwards` on, publish
    `prepared.publications`, then acknowledge `messages`."""

    messages: list[Message] = field(default_factory=list)
    prepared: PreparedBatch = field(default_factory=PreparedBatch)
    forwards: list[tuple[str, str, bytes]] = field(default_factory=list)  # key, topic, body


class Control:
    def __init__(
        self,
        *,
        downlink: Downlink | None,
        pipeline: Pipeline,
        automations: Automations | None,
        source: EngineSource,
        client: InfluxClient,
        tenants: tuple[str, ...] | None,
    ) -> None:
        self.downlink = downlink  # None: its publisher could not connect (commands are off)
        self.pipeline = pipeline
        self.automations = automations
        self.source = source
        self.client = client
        self.tenants = tenants
        self.prefix = pipeline.decoder.prefix
        self.index: collections.OrderedDict[str, Place] = collections.OrderedDict()
        self._owned_on: int | None = None  # the connection this worker took the queue on

    @property
    def owner(self) -> bool:
        """Whether this worker holds the control queue (on its current connection)."""
        return self._owned_on == self.source.generation

    @staticmethod
    def split(messages: list[Message]) -> tuple[list[Message], list[Message]]:
        """(the partitions' messages, the control queue's), each in arrival order."""
        if not any(m.partition == CONTROL for m in messages):
            return messages, []
        return [m for m in messages if m.partition != CONTROL], [
            m for m in messages if m.partition == CONTROL
        ]

    def settle_probes(self, orders: list[Message]) -> list[Message]:
        """Acknowledges the probes among the control deliveries `orders` at once if this
        worker holds the queue already (a probe only says who holds it), and returns the
        rest; else returns them all (the first makes this worker take over)."""
        if not self.owner or not any(m.topic == PROBE_TOPIC for m in orders):
            return orders
        self.source.ack([m for m in orders if m.topic == PROBE_TOPIC])
        return [m for m in orders if m.topic != PROBE_TOPIC]

    async def forward(self, forwards: list[tuple[str, str, bytes]]) -> bool:
        """Sends acknowledgements on to their partitions; False if the engine did not confirm
        (the source connects again, and what it had not acknowledged comes again)."""
        try:
            await self.source.forward(forwards)
        except ForwardFailed as exc:
            log.warning("acknowledgements not sent on to their partitions (%s); they come "
                        "again once connected", exc)  # fmt: skip
            return False
        log.info("%d acknowledgements sent on to their devices' partitions", len(forwards))
        return True

    async def prepare(self, messages: list[Message]) -> ControlBatch:
        """Takes over if these are the first control deliveries on this connection; then says
        what they lead to. Deliveries of a connection that is gone are left out: they come
        again, to whoever holds the queue now."""
        generation = self.source.generation
        batch = ControlBatch([m for m in messages if m.connection == generation])
        if not batch.messages:
            return batch
        if self._owned_on != generation:
            await self._take_over(generation)
        local: list[Message] = []
        changes: list[Alert] = []
        refusals: list[tuple[str, Message, str]] = []
        for message in batch.messages:
            if message.topic == PROBE_TOPIC:
                continue  # it made this worker take over, if it had not: nothing more
            tenant = parse_acknowledgement_topic(self.prefix, message.topic)
            if tenant is not None:
                route = await self._route(tenant, message)
                if isinstance(route, tuple):
                    batch.forwards.append(route)
                elif isinstance(route, str):
                    refusals.append((tenant, message, route))
                else:
                    local.append(message)
            elif self._is_alert_change(message.topic):
                if (alert := parse_alert(message.payload)) is not None:
                    self._remember(alert.alert_id, _place(alert))
                    changes.append(alert)
                else:  # only ingest's logins may publish there: a bug, said
                    log.warning("an unreadable alert change on %s was ignored", message.topic)
            else:
                local.append(message)  # the downlink: the gateway's
        batch.prepared = self.pipeline.prepare(local) if local else PreparedBatch()
        for tenant, message, error in refusals:
            self.pipeline.refuse_acknowledgement(tenant, message, error, batch.prepared)
        if self.automations is not None and self.downlink is not None and changes:
            outcome = Outcome()
            self.automations.react(changes, self.downlink.gateway, outcome)
            self.pipeline.add_downlink(batch.prepared, outcome)
        return batch

    def _is_alert_change(self, topic: str) -> bool:
        """`{prefix}/{tenant}/alerts/{device}`."""
        parts = topic[len(self.prefix) + 1 :].split("/")
        return topic.startswith(self.prefix + "/") and len(parts) == 3 and parts[1] == "alerts"

    async def _route(self, tenant: str, message: Message) -> tuple[str, str, bytes] | str | None:
        """Where an acknowledgement goes: (routing key, topic, payload) for its alert's
        partition; None to handle it here (unreadable, unknown, another tenant's, or the
        gateway's own episode); or why it is refused, if InfluxDB cannot say where."""
        try:
            body = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            return None  # the pipeline says why, as on Mosquitto
        alert_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(alert_id, str):
            return None
        place = self.index.get(alert_id)
        if place is None:
            try:
                stored = await find_alert(self.client, alert_id)
            except InfluxError as exc:
                return f"alert {alert_id!r} could not be looked up ({exc}); send it again"
            if stored is None:
                return None  # refused here: "no open alert …", as today
            place = _place(stored)
            self._remember(alert_id, place)
        if place.tenant != tenant or place.rule == UNAPPLIED_RULE:
            return None
        topic = telemetry_topic(self.prefix, place.tenant, place.device_type, place.device_id)
        return amqp_topic(topic), message.topic, message.payload

    def _remember(self, alert_id: str, place: Place) -> None:
        self.index[alert_id] = place
        self.index.move_to_end(alert_id)
        while len(self.index) > INDEX_SIZE:
            self.index.popitem(last=False)

    async def _take_over(self, generation: int) -> None:
        """A fresh gateway from `moclo_commands` and the open `desired_not_applied` episodes,
        the index from the stored open alerts, then the pending commands sent again."""
        self._owned_on = generation
        downlink = self.downlink
        if downlink is None:
            return
        downlink.gateway = self.pipeline.gateway = downlink.fresh_gateway()
        await downlink.restore(self.client)
        stored: list[StoredChange] = []
        try:
            for tenant in self.tenants or (None,):
                stored += await latest_changes(self.client, tenant=tenant)
        except InfluxError as exc:
            log.warning("could not read stored alerts (%s): acknowledgements of alerts this "
                        "worker has not seen are looked up one by one", exc)  # fmt: skip
        downlink.gateway.unapplied.restore(stored)
        for change in stored:
            if change.state != "resolved":
                self._remember(change.alert_id, _place(change))
        # (Not "taken over": that and "partition N" are what the partitions' log lines say.)
        log.info(
            "holding the control queue of %s: commands, desired state, automations and "
            "acknowledgements run on this worker (%d open alerts known)",
            self.source.plan.control_queue,
            len(self.index),
        )
        await downlink.send_pending()


def _place(alert: Alert | StoredChange) -> Place:
    return Place(alert.tenant, alert.device_type, alert.device_id, alert.rule)
