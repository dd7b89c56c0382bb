"""The command gateway: every request to act on a device, and every answer from one, goes here.

`Gateway.handle` takes one message of the downlink (a person's request, or a device's answer,
`commands/get`, `desired/get` or `reported`) and says what follows from it, without I/O: the
`moclo_commands` lines to store, the messages to publish (to the device, and on
`command-status` for the people watching) and the rejections. The consumer stores the lines
first, then publishes, then acknowledges the message, so a command reaches a device only once
it is recorded, and a crash in between means the request is delivered again: the same id is the
same command, so it is announced and sent again, never executed twice by a device that obeys
the contract (devices/commands.py).

Nothing a person, a device or a broker sends can stop ingest: what cannot be read is a
rejection with a reason (`moclo_rejected`), and a request that can be read but is not allowed
is a `refused` step in `moclo_commands`, announced with its reason.
"""

from __future__ import annotations

import logging

from devices.topics import COMMAND_REQUESTS, DESIRED_REQUESTS
from ingest.downlink import desired, devices, requests
from ingest.downlink.base import GatewayBase
from ingest.downlink.outcome import MAX_PAYLOAD_BYTES, Incoming, Outcome

log = logging.getLogger("moclo.ingest.downlink")


class Gateway(GatewayBase):
    def handle(self, message: Incoming, out: Outcome) -> None:
        """Adds to `out` what `message` leads to. Never raises: a message that trips a bug
        here is logged and recorded as rejected, and ingest goes on."""
        mine = Outcome()
        try:
            self._handle(message, mine)
        except Exception as exc:  # a bug must cost this message, never the readings
            log.exception("the command gateway failed on a message on %s", message.topic)
            self.reject_unread(
                message, out, f"moclo could not handle this message ({exc!r}); please report it"
            )
            return
        out.lines += mine.lines
        out.publications += mine.publications
        out.rejections += mine.rejections
        out.alerts += mine.alerts

    def _handle(self, message: Incoming, out: Outcome) -> None:
        if len(message.payload) > MAX_PAYLOAD_BYTES:
            self.reject_unread(message, out, f"payload of {len(message.payload)} bytes; "
                               f"the limit is {MAX_PAYLOAD_BYTES}")  # fmt: skip
            return
        parts = message.topic[len(self.prefix) + 1 :].split("/")
        if len(parts) >= 2 and parts[1] == COMMAND_REQUESTS:
            requests.command_request(self, parts[0], message, out)
        elif len(parts) >= 2 and parts[1] == DESIRED_REQUESTS:
            desired.desired_request(self, parts[0], message, out)
        else:
            devices.device_message(self, message, out)
