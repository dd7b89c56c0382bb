"""The webhook's signature: how a receiver knows a POST came from us and is fresh.

Each POST carries `X-Moclo-Timestamp: UNIX_SECONDS` and `X-Moclo-Signature: sha256=HEX`, the
HMAC-SHA256 under the shared secret (MOCLO_WEBHOOK_SECRET) of `f"{timestamp}.{body}"`. The
timestamp is inside the HMAC, so a receiver that refuses old timestamps refuses replays; the
body is signed byte for byte, so a receiver must verify the raw body before parsing it.
docs/notifications.md, "Signed webhooks", shows a receiver's side in a few lines.
"""

from __future__ import annotations

import hashlib
import hmac

TIMESTAMP_HEADER = "X-Moclo-Timestamp"
SIGNATURE_HEADER = "X-Moclo-Signature"
_SCHEME = "sha256="


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The X-Moclo-Signature value for `body` sent at `timestamp` (unix seconds)."""
    if not secret:
        raise ValueError("the webhook secret is empty: set MOCLO_WEBHOOK_SECRET(_FILE)")
    mac = hmac.new(secret, str(int(timestamp)).encode() + b"." + body, hashlib.sha256)
    return _SCHEME + mac.hexdigest()


def signature_headers(secret: bytes, timestamp: int, body: bytes) -> dict[str, str]:
    return {TIMESTAMP_HEADER: str(int(timestamp)), SIGNATURE_HEADER: sign(secret, timestamp, body)}


def verify(
    secret: bytes,
    *,
    timestamp: str,
    signature: str,
    body: bytes,
    now: float,
    tolerance_s: float = 300.0,
) -> bool:
    """True if `signature` is ours for `body` at `timestamp`, and `timestamp` is within
    `tolerance_s` of `now` (older: a replay, or a clock far off)."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature)
