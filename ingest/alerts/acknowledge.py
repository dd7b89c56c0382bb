"""Acknowledging an alert through ingest, which owns alert state: what `moclo alerts ack` and the
HTTP API's `POST /api/alerts/{id}/ack` both do.

`acknowledge` publishes `{"id", "note"}` on `{prefix}/{tenant}/acks/{account}`, the account
being the MQTT login (the broker lets each account write only its own name, and ingest takes
the acknowledger from the topic), or, for serve acknowledging for a person who signed in with
an API token, `{"id", "by", "note"}` on `{prefix}/{tenant}/acks/{account}/on-behalf`. It
returns only once ingest has taken it and published the `acknowledged` change. Ingest
publishes a change just before it stores it, so a list read at that instant may still show the
alert as raised. Finding the alert (and deciding whether the asker may see it) is the caller's
part.

    AcknowledgementFailed (Exception)   the acknowledgement did not happen; the message says why
     ├── AlertClosed                    resolved, or acknowledged already (by anyone): nothing to do
     ├── AcknowledgementRefused         ingest took it and refused it (`bad_ack` in moclo_rejected;
     │                                  inside ingest that is `engine.AcknowledgementInvalid`)
     └── AcknowledgementTimeout         ingest did not confirm in time: is it running?

"Ack" alone means MQTT's PUBACK in this code base; the `acks` in topics, in the `~acks` login,
in `bad_ack` and in `moclo alerts ack` are kept because they are the external contract.

A broker that cannot be reached is `core.mqtt.MqttUnreachable`, as everywhere else.

It lives in ingest, beside the other end of its protocol (`pipeline.py` takes the
acknowledgement), so that the CLI and serve, above it, share one client.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator

import aiomqtt
import orjson

from core.mqtt import CONNECTION_SEPARATOR, MqttEndpoint, MqttUnreachable
from core.settings import Settings
from devices.rfc3339 import format_seconds_spaced
from devices.rule_base import format_seconds
from devices.topics import (
    ACCOUNT_NAME,
    ACCOUNT_NAME_RULE,
    acknowledgement_topic,
    alert_topic,
    on_behalf_acknowledgement_topic,
)
from storage.alert_record import Alert, StoredChange, parse_alert
from storage.database import open_influx
from storage.influx import InfluxError, influxql_literal
from storage.schema import ERROR, PAYLOAD, REASON, REJECTED, TENANT

CONNECT_TIMEOUT_S = 5.0
_NS = 1_000_000_000
_ALERT_ID = re.compile(r"[0-9a-f]{12}")


class AcknowledgementFailed(Exception):
    """The acknowledgement did not happen; the message says why and what to do."""


class AlertClosed(AcknowledgementFailed):
    """Resolved, or acknowledged already: there is nothing to acknowledge."""


class AcknowledgementRefused(AcknowledgementFailed):
    """Ingest received the acknowledgement and refused it."""


class AcknowledgementTimeout(AcknowledgementFailed):
    """Sent, but ingest did not confirm in time."""


async def acknowledge(
    settings: Settings,
    stored: StoredChange,
    *,
    account: str,
    person: str | None = None,
    note: str = "",
    timeout_s: float = 10.0,
) -> Alert:
    """Acknowledges the episode whose newest stored change is `stored`, as the account
    `account` (the MQTT login; see `account_of`), or, with `person`, as serve's account
    acknowledging for that person; returns the `acknowledged` change as ingest published it.
    Raises an AcknowledgementFailed, or MqttUnreachable."""
    by = person or account
    alert_id = stored.alert_id
    what = describe(stored)
    _refuse_closed(stored, what)
    prefix = settings.topic_prefix
    topic, payload = _request(prefix, stored, account=account, person=person, note=note)
    # As `LOGIN~acks` (a broker login: the contract keeps "acks"), which may write the
    # account's topic too: the login's own connection may be in use (serve's live stream, a
    # `moclo alerts --follow`), and the broker allows one connection per login.
    async with broker(settings.mqtt.for_connection("acks")) as mqtt:
        # Subscribed first, so ingest's answer cannot be published before we listen.
        await mqtt.subscribe(alert_topic(prefix, stored.tenant, stored.device_id), qos=1)
        sent_ns = time.time_ns()
        await mqtt.publish(topic, payload, qos=1)
        try:
            async with asyncio.timeout(timeout_s):
                async for message in mqtt.messages:
                    alert = parse_alert(message.payload)
                    if alert is None or alert.alert_id != alert_id:
                        continue
                    if alert.state == "resolved":
                        raise AlertClosed(f"alert {what} was resolved before ingest took the ack")
                    if alert.state == "acknowledged" and alert.acknowledged_by != by:
                        raise AlertClosed(
                            f"alert {what} was acknowledged by {alert.acknowledged_by} first"
                        )
                    if alert.state == "acknowledged":
                        return alert
        except TimeoutError:
            pass
    refusal = await _refusal(settings, stored.tenant, payload, sent_ns)
    if refusal:
        raise AcknowledgementRefused(f"ingest refused the acknowledgement of {alert_id}: {refusal}")
    raise AcknowledgementTimeout(
        f"sent, but ingest did not confirm within {format_seconds(timeout_s)}: "
        "is `moclo ingest` running? (A broker that checks logins also drops, unanswered over "
        f"MQTT 3.1.1, what the login may not write: may {account!r} write {topic}?)"
    )


def _refuse_closed(stored: StoredChange, what: str) -> None:
    """AlertClosed for an episode that is resolved or acknowledged already, as stored."""
    if stored.state == "resolved":
        raise AlertClosed(
            f"alert {what} is already resolved ({format_seconds_spaced(stored.ts_ns)}): "
            "nothing to ack"
        )
    if stored.state == "acknowledged":
        raise AlertClosed(
            f"alert {what} was already acknowledged by {stored.acknowledged_by} "
            f"({format_seconds_spaced(stored.ts_ns)})"
        )


def _request(
    prefix: str, stored: StoredChange, *, account: str, person: str | None, note: str
) -> tuple[str, bytes]:
    """The topic and payload of the acknowledgement: the account's own topic, or, for a person
    that serve acknowledges for, the on-behalf topic with `by`."""
    body: dict[str, str] = {"id": stored.alert_id}
    if person is not None:
        body["by"] = person
    if note:
        body["note"] = note
    topic = (
        acknowledgement_topic(prefix, stored.tenant, account)
        if person is None
        else on_behalf_acknowledgement_topic(prefix, stored.tenant, account)
    )
    return topic, orjson.dumps(body)


def account_of(settings: Settings, by: str | None) -> str:
    """The account that acknowledges over `settings`' broker: its MQTT login. Only without a
    login (a development broker open to anonymous clients, which checks nobody) is it `by`,
    which must then be a name an account could have. ValueError says what to change."""
    login = settings.mqtt.username
    if login is not None:
        if by is not None and by != login:
            raise ValueError(
                f"--by {by!r} is not your MQTT login {login!r}: you acknowledge as the login "
                "(the broker checks it), so leave --by out, and name others in --note"
            )
        return login
    if by is None or ACCOUNT_NAME.fullmatch(by) is None:
        raise ValueError(
            f"without an MQTT login, --by names who acknowledges (default $USER), and it must "
            f"match {ACCOUNT_NAME_RULE}; got {by!r}"
        )
    return by


async def _refusal(settings: Settings, tenant: str, payload: bytes, sent_ns: int) -> str | None:
    """Why ingest rejected this acknowledgement (`bad_ack` in moclo_rejected), if it did."""
    query = (
        f'SELECT "{ERROR}", "{PAYLOAD}" FROM "{REJECTED.name}" '
        f"WHERE \"{REASON}\" = 'bad_ack' "
        f'AND "{TENANT}" = {influxql_literal(tenant)} '
        f"AND time >= {sent_ns - 60 * _NS}"  # ingest stamps arrival by its own clock
    )
    try:
        async with open_influx(settings) as client:
            series = await client.query(query)
    except InfluxError:
        return None  # the timeout message is still true
    text = payload.decode()
    errors = [str(row[ERROR]) for s in series for row in s.rows() if row[PAYLOAD] == text]
    return errors[-1] if errors else None


def describe(stored: StoredChange) -> str:
    """`3f2a9c0d1e4b (fever on farm/cow-9)`: an alert as messages name it."""
    return f"{stored.alert_id} ({stored.rule} on {stored.tenant}/{stored.device_id})"


def check_alert_id(text: str) -> str:
    """`text` if it has the shape of an alert id (12 lowercase hex digits), else ValueError."""
    if _ALERT_ID.fullmatch(text) is None:
        raise ValueError(f"{text!r} is not an alert id: 12 hex digits (0-9, a-f), as listed")
    return text


def check_acknowledgement_text(kind: str, text: str) -> str:
    """An acknowledgement's `by` (1..64 characters, none a control character) or `note` (up to
    500 characters), checked as ingest will check them, so a bad one fails here and now."""
    if kind == "by" and not 1 <= len(text) <= 64:
        raise ValueError("a name is 1 to 64 characters")
    if kind == "by" and any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError("a name cannot hold control characters such as a line break")
    if kind == "note" and len(text) > 500:
        raise ValueError(f"a note is at most 500 characters; this one has {len(text)}")
    return text


@contextlib.asynccontextmanager
async def broker(endpoint: MqttEndpoint) -> AsyncIterator[aiomqtt.Client]:
    """A connected aiomqtt client; its errors become MqttUnreachable saying what to check."""
    client = aiomqtt.Client(
        endpoint.host,
        endpoint.port,
        username=endpoint.username,
        password=endpoint.password,
        tls_context=endpoint.ssl_context(),
        identifier=endpoint.client_id(f"moclo-ack-{uuid.uuid4().hex[:8]}"),
        timeout=CONNECT_TIMEOUT_S,
    )
    try:
        await client.__aenter__()
    except aiomqtt.MqttError as exc:
        refused = isinstance(exc, aiomqtt.MqttCodeError) and getattr(exc.rc, "value", exc.rc) == 135
        username = endpoint.username or ""
        if refused and CONNECTION_SEPARATOR in username:
            # Not a broker that is down: the second login of an account that has none (an
            # app, ingest) or that the broker's files predate.
            account = username.split(CONNECTION_SEPARATOR)[0]
            raise MqttUnreachable(
                f"the broker at {endpoint.display()} refused the login {username!r}, which "
                f"acknowledgements and requests use for the account {account!r} (same "
                "password): only "
                f"operator, clinician and serve accounts have it. If {account!r} is one, its "
                "password is wrong (MOCLO_MQTT_PASSWORD), or the broker's files predate that "
                "login: regenerate them (`moclo broker-auth write`) and reload the broker"
            ) from None
        raise endpoint.unreachable(CONNECT_TIMEOUT_S, str(exc)) from None
    try:
        yield client
    except aiomqtt.MqttError as exc:
        # moclo's brokers allow one connection per login: a second client logging in with the
        # same one (another `moclo alerts --follow`) takes this connection's place, and over
        # MQTT 3.1.1 the broker just closes it, so say both causes.
        taken = (
            f", or another client logged in as {endpoint.username!r} and took this "
            "connection's place (the broker allows one connection per login)"
            if endpoint.username
            else ""
        )
        raise MqttUnreachable(
            f"lost the MQTT broker at {endpoint.display()} ({exc}): it went away{taken}; "
            "run the command again"
        ) from None
    finally:
        with contextlib.suppress(aiomqtt.MqttError):  # the connection may be gone already
            await client.__aexit__(None, None, None)
