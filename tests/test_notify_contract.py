"""The pieces of the notification contract that others build on: the signed acknowledgement
link (tried from the attacker's side) and the timeline's storage, against the real InfluxDB."""

from __future__ import annotations

import asyncio

import pytest

from notify.links import AckLinkInvalid, make_ack_token, verify_ack_token
from notify.model import Channel
from storage.influx import InfluxClient
from storage.notifications import NotificationEvent, timeline
from tests.helpers import Influx

SECRET = b"s3cret-shared-by-notify-and-serve"
NOW = 1_800_000_000


def test_a_link_made_with_the_secret_names_its_alert_and_person() -> None:
    token = make_ack_token(SECRET, "a1b2c3", "dr-jansen", expires=NOW + 60)
    link = verify_ack_token(SECRET, token, now=NOW)
    assert (link.alert_id, link.person, link.expires) == ("a1b2c3", "dr-jansen", NOW + 60)


def test_a_link_signed_with_another_secret_is_refused() -> None:
    token = make_ack_token(b"someone-elses-secret", "a1b2c3", "dr-jansen", expires=NOW + 60)
    with pytest.raises(AckLinkInvalid, match="not an acknowledgement link"):
        verify_ack_token(SECRET, token, now=NOW)


def test_a_link_altered_to_name_another_alert_or_person_is_refused() -> None:
    good = make_ack_token(SECRET, "a1b2c3", "nurse", expires=NOW + 60)
    other = make_ack_token(SECRET, "ffffff", "dr-jansen", expires=NOW + 60)
    # The payload of one link with the signature of another: each half is genuine.
    spliced = other.split(".")[0] + "." + good.split(".")[1]
    with pytest.raises(AckLinkInvalid):
        verify_ack_token(SECRET, spliced, now=NOW)
    assert verify_ack_token(SECRET, good, now=NOW).person == "nurse"  # positive control


@pytest.mark.parametrize("token", ["", "x", "a.b.c", "!!!.???", "abc.def"])
def test_garbage_is_refused_with_a_clear_error(token: str) -> None:
    with pytest.raises(AckLinkInvalid, match="not an acknowledgement link"):
        verify_ack_token(SECRET, token, now=NOW)


def test_an_expired_link_is_refused_and_says_what_to_do() -> None:
    token = make_ack_token(SECRET, "a1b2c3", "dr-jansen", expires=NOW)
    assert verify_ack_token(SECRET, token, now=NOW - 1).alert_id == "a1b2c3"
    with pytest.raises(AckLinkInvalid, match="expired: open the dashboard"):
        verify_ack_token(SECRET, token, now=NOW)


def test_no_secret_means_no_links() -> None:
    with pytest.raises(ValueError, match="MOCLO_NOTIFY_LINK_SECRET"):
        make_ack_token(b"", "a", "b", expires=NOW)
    with pytest.raises(AckLinkInvalid, match="off"):
        verify_ack_token(b"", "a.b", now=NOW)


def test_a_channel_shows_its_scheme_and_host_never_its_token() -> None:
    # Pushover's and ntfy's URLs hold the token or topic where a host would be.
    assert Channel("pover://user_key@app_token_secret").shown == "pover://…"
    assert Channel("ntfy://secret-topic").shown == "ntfy://…"
    mail = Channel("mailtos://jansen:hunter2@smtp.example.org?to=a@b.nl")
    assert mail.shown == "mailtos://smtp.example.org"
    assert "hunter2" not in repr(mail) and "hunter2" not in mail.shown
    assert Channel("json://x", label="ward pager").shown == "ward pager"


def test_the_timeline_reads_back_what_was_stored_in_order(influx: Influx) -> None:
    events = [
        NotificationEvent("cardio", "queued", "a1", 1_000, "pm-7", "battery", "dr-jansen",
                          "mailto://smtp", 1, "m1"),
        NotificationEvent("cardio", "held", "a1", 2_000, "pm-7", "battery", "dr-bakker",
                          "ntfys://ntfy.sh", 1, "m1", 'quiet hours until 07:00, "night"'),
        NotificationEvent("cardio", "escalated", "a1", 3_000, "pm-7", "battery", level=2),
        NotificationEvent("other", "sent", "a1", 4_000, person="intruder"),
        NotificationEvent("cardio", "sent", "a2", 5_000, person="someone"),
    ]  # fmt: skip
    influx.write(e.to_line() for e in events)

    async def read() -> list[NotificationEvent]:
        client = InfluxClient(influx.url, influx.database)
        try:
            return await timeline(client, tenant="cardio", alert_id="a1")
        finally:
            await client.close()

    # Another tenant's event and another alert's stay out; the rest come back whole.
    assert asyncio.run(read()) == events[:3]
