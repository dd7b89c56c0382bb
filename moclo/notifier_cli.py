"""`moclo notify test PERSON`: one test message through each of a person's channels."""

from __future__ import annotations

import sys
import uuid

import orjson

from core.settings import Settings
from notify.file import NotifyFileError
from notify.senders import AppriseSender, SendResult
from notify.service import load_config


def test_person(settings: Settings, name: str, *, timeout_s: float, as_json: bool) -> int:
    """Sends the test message; prints each channel's outcome (its label, never its URL);
    0 if every channel took it, 1 if any failed."""
    config = load_config(settings)
    person = config.people.get(name)
    if person is None:
        known = ", ".join(sorted(config.people)) or "nobody"
        raise NotifyFileError([f"{config.source}: no person {name!r} in it; it has {known}"])
    sender = AppriseSender(timeout_s=timeout_s)
    run_id = uuid.uuid4().hex[:8]
    outcomes: list[tuple[str, SendResult]] = []
    for index, channel in enumerate(person.channels):
        result = sender.send(
            channel,
            "moclo: test message",
            f"A test from moclo to {person.name} through {channel.shown}. If you read this, "
            "this channel works: alerts routed to you will arrive here.",
            delivery_id=f"test-{run_id}/{index}",
        )
        outcomes.append((channel.shown, result))
    failed = sum(1 for _, result in outcomes if not result.ok)
    if as_json:
        document = {
            "person": person.name,
            "channels": [
                {"channel": shown, "ok": r.ok, "permanent": r.permanent, "detail": r.detail}
                for shown, r in outcomes
            ],
            "failed": failed,
        }
        print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
    else:
        for shown, result in outcomes:
            print(f"{'ok    ' if result.ok else 'FAILED'}  {shown}" +
                  ("" if result.ok else f": {result.detail}"))  # fmt: skip
        print(
            f"{len(outcomes) - failed} of {len(outcomes)} channel(s) of {person.name} took the "
            "test message",
            file=sys.stderr,
        )
    return 1 if failed else 0
