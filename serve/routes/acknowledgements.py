"""`POST /api/alerts/{id}/ack`: an operator (or an admin) acknowledges an open alert of one of
their tenants, as `moclo alerts ack` does (ingest/alerts/acknowledge.py): published to ingest, which
owns alert state, and answered once ingest has published the `acknowledged` change.

The acknowledger is the token's name, whatever the body says (it has only a `note`): serve
publishes on its own account's `{prefix}/{tenant}/acks/{account}/on-behalf` with the name in
`by`, a topic that the broker lets only serve accounts write, so ingest believes that `by`
there and nowhere else.

| answer | when |
|---|---|
| 200 | acknowledged: the change as ingest published it (`acknowledged_by` is the token's name) |
| 400 | not an alert id, or a note over 500 characters |
| 403 | a viewer's token |
| 404 | no such alert in the token's tenants (another tenant's alert is not told apart) |
| 409 | resolved, or acknowledged already |
| 502 | ingest refused it (the message says why) |
| 503 | the broker or the database cannot be reached |
| 504 | ingest did not confirm in time: is it running? |
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Request
from pydantic import BaseModel, Field

from core.settings import Settings
from ingest.alerts import acknowledge as acknowledging
from query.alerts import alert_json
from serve.auth import Caller
from serve.errors import BadParameter, ErrorBody, Forbidden, UnknownAlert
from serve.state import Influx
from storage.alert_history import find_alert
from storage.alert_record import Alert, StoredChange


# These two keep "Ack" in their names because /openapi.json publishes them as schema names,
# which generated clients use: HTTP contract, like the path.
class AckRequest(BaseModel):
    note: str = Field(default="", max_length=500, description="what is being done")


class AckedAlert(BaseModel):
    """The `acknowledged` change, with the keys of `/api/alerts` objects and the note."""

    model_config = {"extra": "allow"}


class Acknowledger:
    """Acknowledges alerts through the broker of `settings`, as its login (`serve` on a broker
    without logins, which checks nobody anyway), waiting up to `timeout_s` for ingest."""

    def __init__(self, settings: Settings, *, timeout_s: float) -> None:
        self._settings = settings
        self._account = settings.mqtt.username or "serve"
        self._timeout_s = timeout_s
        # One at a time: each logs in as serve's `LOGIN~acks`, and the broker allows one
        # connection per login, so two at once would cut each other off. It is a person's click.
        self._one_at_a_time = asyncio.Lock()

    def keep(self, app: FastAPI) -> None:
        """Serves the acknowledgements of `app`'s endpoint."""
        app.state.acknowledger = self

    async def acknowledge(self, stored: StoredChange, *, person: str, note: str) -> Alert:
        async with self._one_at_a_time:
            return await acknowledging.acknowledge(
                self._settings,
                stored,
                account=self._account,
                person=person,
                note=note,
                timeout_s=self._timeout_s,
            )


async def _acknowledger(request: Request) -> Acknowledger:
    acknowledger: Acknowledger = request.app.state.acknowledger
    return acknowledger


router = APIRouter()


@router.post(
    "/api/alerts/{alert_id}/ack",
    response_model=AckedAlert,
    responses={status: {"model": ErrorBody} for status in (401, 403, 404, 409, 502, 503, 504)},
    tags=["alerts"],
)
async def acknowledge(
    who: Caller,
    client: Influx,
    acknowledger: Annotated[Acknowledger, Depends(_acknowledger)],
    alert_id: str,
    body: Annotated[AckRequest | None, Body()] = None,
) -> dict[str, Any]:
    """Acknowledges an open alert as the token's name: someone is on it. Needs an
    operator's or an admin's token; answers once ingest has taken it (or 504)."""
    if not who.may_acknowledge:
        raise Forbidden(
            "a viewer's token cannot acknowledge alerts: an operator's or an admin's can"
        )
    try:
        acknowledging.check_alert_id(alert_id)
    except ValueError as exc:
        raise BadParameter(str(exc)) from None
    stored = await find_alert(client, alert_id)
    if stored is None or not who.sees(stored.tenant):
        raise UnknownAlert(f"no alert {alert_id} in {who.scope_words()}")
    note = body.note if body is not None else ""
    alert = await acknowledger.acknowledge(stored, person=who.name, note=note)
    return {**alert_json(alert), "note": alert.note or None}
