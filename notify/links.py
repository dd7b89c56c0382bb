"""The one-tap acknowledgement link a notification carries: `{public_url}/ack/{token}`.

The token binds an alert id and a person (the name in the notify file) to an expiry, signed
with HMAC-SHA256 under a secret the notifier and serve share (`MOCLO_NOTIFY_LINK_SECRET`,
or `_FILE`). It is not a login: it lets its holder acknowledge that one alert as that person,
and nothing else, until it expires. Serve shows a confirm page on GET and acknowledges only on
POST, because mail scanners fetch links. The token is URL-safe base64 of
`alert_id|person|expires` plus the signature; it carries no secret, only names.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass

_SEP = "|"
_SIG_BYTES = 32


class AckLinkInvalid(ValueError):
    """The token was not made with our secret, was altered, or has expired."""


@dataclass(frozen=True, slots=True)
class AckLink:
    alert_id: str
    person: str
    expires: int  # unix seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_ack_token(secret: bytes, alert_id: str, person: str, *, expires: int) -> str:
    """A token for `person` to acknowledge `alert_id` until `expires` (unix seconds)."""
    if not secret:
        raise ValueError("the link secret is empty: set MOCLO_NOTIFY_LINK_SECRET(_FILE)")
    if _SEP in alert_id or _SEP in person:
        raise ValueError(f"an alert id or person name cannot contain {_SEP!r}")
    payload = f"{alert_id}{_SEP}{person}{_SEP}{int(expires)}".encode()
    signature = hmac.new(secret, payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(signature)}"


def verify_ack_token(secret: bytes, token: str, *, now: float | None = None) -> AckLink:
    """The link a token stands for; AckLinkInvalid if forged, altered, malformed or expired."""
    if not secret:
        raise AckLinkInvalid("acknowledgement links are off: no link secret is set")
    try:
        payload_text, signature_text = token.split(".")
        payload, signature = _unb64(payload_text), _unb64(signature_text)
    except ValueError:
        raise AckLinkInvalid("this is not an acknowledgement link moclo made") from None
    expected = hmac.new(secret, payload, hashlib.sha256).digest()
    if len(signature) != _SIG_BYTES or not hmac.compare_digest(signature, expected):
        raise AckLinkInvalid("this is not an acknowledgement link moclo made")
    alert_id, person, expires_text = payload.decode().split(_SEP)
    expires = int(expires_text)
    if (time.time() if now is None else now) >= expires:
        raise AckLinkInvalid("this acknowledgement link has expired: open the dashboard instead")
    return AckLink(alert_id=alert_id, person=person, expires=expires)
