"""The API's errors and how each is answered: always JSON `{"error": "..."}`, a message that
says what was wrong and what to do, and never a token, even one that was sent.

    BadParameter (ValueError)        400  a parameter breaks a rule (says which, what is allowed)
    RequestValidationError           400  FastAPI's checks (answered without the input)
    query.errors.QueryError          400  (UnknownDevice: 404)
    Unauthorized                     401  no valid token (with `WWW-Authenticate: Bearer`)
    Forbidden                        403  the token may not do this
    UnknownAlert (LookupError)       404  no such alert within the token's tenants
    UnknownCommand (LookupError)     404  no such command of that device
    Unprocessable (ValueError)       422  a command or desired state the device type does not
                                          take (lists what it takes, with the bounds)
    ingest.alerts.acknowledge.AcknowledgementFailed
      AlertClosed                    409  closed already
      AcknowledgementRefused         502  ingest refused it
      AcknowledgementTimeout         504  ingest did not confirm in time
    TooManyStreams                   429  the token holds as many live streams as it may
    InfluxError, MqttUnreachable,    503  the database, the broker or the token registry cannot
    TokenStoreError                       be reached: try again shortly
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from access.tokens import TokenStoreError
from core.mqtt import MqttUnreachable
from ingest.alerts import acknowledge as acknowledging
from query.errors import QueryError, UnknownDevice
from storage.influx import InfluxError


class ErrorBody(BaseModel):
    error: str = Field(description="what was wrong and what to do")


class BadParameter(ValueError):
    """A parameter that breaks a rule; the message says which and what is allowed."""


class Unauthorized(Exception):
    """No valid token: sign in (HTTP 401)."""


class Forbidden(Exception):
    """A valid token that may not do this (HTTP 403)."""


class UnknownCommand(LookupError):
    """No command with that id of that device (HTTP 404)."""


class Unprocessable(ValueError):
    """A command or desired state the device type does not take; the message lists what it
    takes, with the bounds (HTTP 422)."""


class TooManyStreams(Exception):
    """The token holds as many live streams as one token may (HTTP 429)."""


class UnknownAlert(LookupError):
    """No such alert that this token may see (HTTP 404)."""


_ACKNOWLEDGEMENT_STATUS = {
    acknowledging.AlertClosed: 409,
    acknowledging.AcknowledgementRefused: 502,
    acknowledging.AcknowledgementTimeout: 504,
}


def install(app: FastAPI) -> None:
    """Answers each of the errors above as the table says."""

    def answer(status: int, message: str, **headers: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers or None)

    @app.exception_handler(BadParameter)
    async def _bad_parameter(_: Request, exc: BadParameter) -> JSONResponse:
        return answer(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer repeats the input, which for POST /api/session is a token.
        problems = "; ".join(_problem(error) for error in exc.errors())
        return answer(400, problems or "the request is not valid")

    @app.exception_handler(QueryError)
    async def _bad_query(_: Request, exc: QueryError) -> JSONResponse:
        return answer(404 if isinstance(exc, UnknownDevice) else 400, str(exc))

    @app.exception_handler(Unauthorized)
    async def _unauthorized(_: Request, exc: Unauthorized) -> JSONResponse:
        return answer(401, str(exc), **{"WWW-Authenticate": "Bearer"})

    @app.exception_handler(Forbidden)
    async def _forbidden(_: Request, exc: Forbidden) -> JSONResponse:
        return answer(403, str(exc))

    @app.exception_handler(UnknownCommand)
    async def _unknown_command(_: Request, exc: UnknownCommand) -> JSONResponse:
        return answer(404, str(exc))

    @app.exception_handler(Unprocessable)
    async def _unprocessable(_: Request, exc: Unprocessable) -> JSONResponse:
        return answer(422, str(exc))

    @app.exception_handler(TooManyStreams)
    async def _too_many_streams(_: Request, exc: TooManyStreams) -> JSONResponse:
        return answer(429, str(exc), **{"Retry-After": "5"})

    @app.exception_handler(UnknownAlert)
    async def _unknown_alert(_: Request, exc: UnknownAlert) -> JSONResponse:
        return answer(404, str(exc))

    @app.exception_handler(acknowledging.AcknowledgementFailed)
    async def _not_acknowledged(
        _: Request, exc: acknowledging.AcknowledgementFailed
    ) -> JSONResponse:
        return answer(_ACKNOWLEDGEMENT_STATUS.get(type(exc), 409), str(exc))

    @app.exception_handler(InfluxError)
    async def _no_database(_: Request, exc: InfluxError) -> JSONResponse:
        return answer(503, f"the database is not answering ({exc}); try again shortly")

    @app.exception_handler(MqttUnreachable)
    async def _no_broker(_: Request, exc: MqttUnreachable) -> JSONResponse:
        return answer(503, str(exc))

    @app.exception_handler(TokenStoreError)
    async def _no_registry(_: Request, exc: TokenStoreError) -> JSONResponse:
        return answer(503, str(exc))


def _problem(error: Any) -> str:
    where = [str(part) for part in error.get("loc", ()) if part not in ("query", "body", "path")]
    return f"{'.'.join(where) or 'request'}: {error.get('msg', 'not valid')}"
