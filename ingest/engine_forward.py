"""Forwarding people's acknowledgements from the control queue to the partition of their
alert's device (ingest/control.py), over the engine source's own connection: a part of
`EngineSource` (ingest/engine_source.py) kept apart, since it is the one thing the source
publishes.

Each acknowledgement goes to the partition exchange with the device's telemetry routing key,
its MQTT topic in the header `moclo-topic` (partition_plan.py says when that is believed), on a
channel in confirm mode; `forward` returns once RabbitMQ confirmed them all.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
from collections.abc import Sequence

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from ingest.partition_plan import FORWARDED_TOPIC, PartitionPlan

FORWARD_TIMEOUT_S = 10.0  # without a single confirm: the connection is taken for dead
# Forwarded acknowledgements published per turn of pika's loop. Each waits for its confirm (a
# quorum write, 2-9 ms): between chunks deliveries and heartbeats are handled, and progress
# is reported, so that a batch of thousands is not taken for a dead connection.
_FORWARD_CHUNK = 50


class ForwardFailed(ConnectionError):
    """RabbitMQ did not confirm a forwarded acknowledgement; connecting again, so it comes
    again."""


class Forwarding:
    """`forward`, for `EngineSource`, which sets these attributes (its connection's)."""

    plan: PartitionPlan
    generation: int  # which connection is current
    _connection: BlockingConnection | None
    _forwarding: BlockingChannel | None  # confirm mode; pika's thread alone uses it
    _reconnect_on: int  # the connection that must be dropped (its deliveries come again)

    async def forward(self, messages: Sequence[tuple[str, str, bytes]]) -> None:
        """Publishes (routing key, MQTT topic, payload) to the partition exchange with publisher
        confirms, the topic in the `moclo-topic` header; returns once RabbitMQ confirmed all.
        Raises ForwardFailed if no confirm came for FORWARD_TIMEOUT_S, and then connects
        again: what this connection delivered and did not acknowledge comes again (to this
        worker or the next)."""
        connection, generation = self._connection, self.generation
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        progress = [0]  # messages confirmed so far, counted by pika's thread
        if connection is None:
            raise ForwardFailed("not connected to the engine")
        try:
            connection.add_callback_threadsafe(
                functools.partial(self._forward, list(messages), generation, done, progress)
            )
            confirmed = asyncio.wrap_future(done)
            seen = -1
            while seen < progress[0]:  # a deadline per stretch without progress, not per batch
                seen = progress[0]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(confirmed), FORWARD_TIMEOUT_S)
                    return
            confirmed.cancel()
            raise TimeoutError(f"{seen} of {len(messages)} confirmed")
        except (TimeoutError, pika.exceptions.ConnectionWrongStateError) as exc:
            self._reconnect_on = generation
            raise ForwardFailed(f"the engine did not confirm in time ({exc!r})") from None

    # -- pika's thread ---------------------------------------------------------------------

    def _forward(
        self,
        messages: list[tuple[str, str, bytes]],
        generation: int,
        done: concurrent.futures.Future[None],
        progress: list[int],
    ) -> None:
        """Publishes a chunk of `messages` (each confirmed), then the rest on a later turn."""
        channel = self._forwarding
        if done.done():
            return  # given up on (timed out)
        try:
            if generation != self.generation or channel is None or not channel.is_open:
                raise ForwardFailed("the engine connection was lost")
            for routing_key, topic, body in messages[:_FORWARD_CHUNK]:
                properties = pika.BasicProperties(headers={FORWARDED_TOPIC: topic}, delivery_mode=2)
                # mandatory: a message no partition takes is refused, not confirmed.
                channel.basic_publish(self.plan.exchange, routing_key, body, properties, True)
                progress[0] += 1
        except (pika.exceptions.AMQPError, ForwardFailed) as exc:
            self._reconnect_on = generation
            failure = exc if isinstance(exc, ForwardFailed) else ForwardFailed(repr(exc))
            with contextlib.suppress(concurrent.futures.InvalidStateError):  # given up on
                done.set_exception(failure)
            return
        if rest := messages[_FORWARD_CHUNK:]:
            channel.connection.call_later(
                0, functools.partial(self._forward, rest, generation, done, progress)
            )
        else:
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                done.set_result(None)
