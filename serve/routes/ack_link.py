"""`/ack/{token}`: the one-tap acknowledgement link a notification carries (notify/links.py).

GET shows a small page naming the alert, its device and the person the link speaks for, with
one button; it never acts, because mail scanners and link previews fetch links. POST (that
button) acknowledges the alert as that person, through the same on-behalf acknowledgement as
the dashboard's (ingest/alerts/acknowledge.py), so the change comes back through ingest and
stops the escalation.

The token is checked with `notify.links.verify_ack_token` under MOCLO_NOTIFY_LINK_SECRET: signed,
expiring, bound to one alert and one person. It is not a login: it opens nothing else. With a
notify file (MOCLO_NOTIFY_FILE) the person must still be in it and serve the alert's tenant,
and acknowledges as their `account` (else their name); without one, as the name in the link.
No cookie is involved: the token in the URL is the whole authority, so there is nothing for
another site's page to borrow, and no check of the request's origin (the confirm page's own
form is sent with `Origin: null` under our `Referrer-Policy: no-referrer`). The pages are never
stored by a cache. Every refusal is logged with its reason, never with the token.

| answer | when |
|---|---|
| 200 | GET: the confirm page (or what became of the alert); POST: acknowledged |
| 403 | forged, altered or expired; the person left the notify file or no longer serves the |
|     | alert's tenant |
| 404 | links are off (no link secret), or the alert is unknown |
| 409 | POST: resolved, or acknowledged already |
| 502, 503, 504 | ingest refused it; the broker or database is unreachable; no confirmation |
"""

from __future__ import annotations

import asyncio
import logging
from html import escape

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse

from core.mqtt import MqttUnreachable
from core.settings import Settings
from ingest.alerts import acknowledge as acknowledging
from notify.links import AckLinkInvalid, verify_ack_token
from serve.notify_file import NotifyFileReader, NotifyFileUnusable
from serve.routes.acknowledgements import Acknowledger
from storage.alert_history import find_alert
from storage.alert_record import StoredChange
from storage.influx import InfluxClient, InfluxError

log = logging.getLogger("moclo.serve")
router = APIRouter()
NOTE = "acknowledged with the link in a message"
_FAILED_STATUS = {
    acknowledging.AlertClosed: 409,
    acknowledging.AcknowledgementRefused: 502,
    acknowledging.AcknowledgementTimeout: 504,
}


class LinkRefused(Exception):
    """The link cannot be used; `status` and a message for the person holding it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def keep(app: FastAPI, settings: Settings) -> None:
    app.state.ack_link_secret = settings.notify_link_secret_value


@router.get("/ack/{token}", include_in_schema=False)
async def confirm(request: Request, token: str) -> HTMLResponse:
    try:
        stored, person, account = await _checked(request, token)
    except LinkRefused as refused:
        return _refusal(refused)
    if stored.state != "raised":
        by = f" by {stored.acknowledged_by}" if stored.acknowledged_by else ""
        return _page(f"Already {stored.state}{by}", _facts(stored), _dashboard(stored))
    question = (
        f"<p>Acknowledge it as <b>{escape(person)}</b>{_recorded(person, account)}? Everyone "
        "told about it will see that you are on it, and nobody further will be paged.</p>"
    )
    button = (
        f'<form method="post"><button type="submit" class="ack-confirm">Acknowledge as '
        f"{escape(person)}</button></form>"
    )
    return _page("Acknowledge this alert?", _facts(stored), question, button, _dashboard(stored))


@router.post("/ack/{token}", include_in_schema=False)
async def acknowledge(request: Request, token: str) -> HTMLResponse:
    try:
        stored, person, account = await _checked(request, token)
        acknowledger: Acknowledger = request.app.state.acknowledger
        try:
            await acknowledger.acknowledge(stored, person=account, note=NOTE)
        except acknowledging.AcknowledgementFailed as exc:
            raise LinkRefused(_FAILED_STATUS.get(type(exc), 502), str(exc)) from None
        except MqttUnreachable:
            raise LinkRefused(503, "the broker cannot be reached: try again shortly") from None
    except LinkRefused as refused:
        return _refusal(refused)
    log.info("alert %s acknowledged by %s with a link", stored.alert_id, account)
    done = (
        f"<p>Acknowledged as <b>{escape(person)}</b>{_recorded(person, account)}. Nobody "
        "further will be paged.</p>"
    )
    return _page("Acknowledged", _facts(stored), done, _dashboard(stored))


async def _checked(request: Request, token: str) -> tuple[StoredChange, str, str]:
    """The link's alert, its person and the account acknowledging for them; LinkRefused
    says why not."""
    secret: bytes | None = request.app.state.ack_link_secret
    if secret is None:
        raise LinkRefused(404, "acknowledgement links are off on this server")
    try:
        link = verify_ack_token(secret, token)
    except AckLinkInvalid as exc:
        raise LinkRefused(403, str(exc)) from None
    client: InfluxClient = request.app.state.influx
    try:
        stored = await find_alert(client, link.alert_id)
    except InfluxError:
        raise LinkRefused(503, "the database cannot be reached: try again shortly") from None
    if stored is None:
        raise LinkRefused(404, f"there is no alert {link.alert_id}")
    reader: NotifyFileReader = request.app.state.notify_file
    try:
        config = await asyncio.to_thread(reader.config)
    except NotifyFileUnusable:
        raise LinkRefused(503, "the notify file cannot be read: open the dashboard") from None
    if config is None:
        return stored, link.person, link.person
    person = config.people.get(link.person)
    if person is None:
        raise LinkRefused(403, f"{link.person} is no longer in the notify file")
    if stored.tenant not in person.tenants:
        raise LinkRefused(403, f"{link.person} does not serve {stored.tenant} any more")
    return stored, person.name, person.account or person.name


def _refusal(refused: LinkRefused) -> HTMLResponse:
    log.warning("an acknowledgement link was refused (%d): %s", refused.status, refused)
    advice = "<p>Open the dashboard to see the alert and acknowledge it there.</p>"
    body = f"<p>{escape(str(refused))}.</p>"
    return _page("This link cannot be used", body, advice, status=refused.status)


def _recorded(person: str, account: str) -> str:
    return "" if person == account else f" (recorded as {escape(account)})"


def _facts(stored: StoredChange) -> str:
    return (
        f'<p class="ack-alert"><b>{escape(stored.rule)}</b> ({escape(stored.severity)}) on '
        f"<b>{escape(stored.tenant)}/{escape(stored.device_id)}</b>: "
        f"{escape(stored.message)}</p>"
    )


def _dashboard(stored: StoredChange) -> str:
    return f'<p><a href="/#/alert/{escape(stored.alert_id)}">Open it in the dashboard</a></p>'


def _page(title: str, *parts: str, status: int = 200) -> HTMLResponse:
    """A page of its own: the dashboard's style sheet, no script (nothing to run before the
    person presses the button)."""
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · moclo</title>"
        '<link rel="stylesheet" href="/static/style.css"></head><body>'
        '<header><a class="brand" href="/">moclo</a></header>'
        f'<main class="ack-link"><section><h2>{escape(title)}</h2>{"".join(parts)}</section>'
        "</main></body></html>"
    )
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
