"""Secrets and their hashes, in Mosquitto's own password-file format so the broker verifies them.

Mosquitto 2.0 reads two formats (`mosquitto_passwd` writes the first):

- `$7$<iterations>$<salt, base64>$<hash, base64>`: PBKDF2-HMAC-SHA512 of the password, 64 bytes;
- `$6$<salt, base64>$<hash, base64>`: SHA-512 of the password followed by the salt.

Secrets are `secrets.token_urlsafe(24)`: 192 random bits, letters, digits, `-` and `_` only, so
they go into an `mqtt://user:secret@host` URL unquoted. Against a secret that random, PBKDF2's
iterations add nothing an attacker would notice, while the broker pays them at every connect; so
the iteration count is Mosquitto's own default (101), not a password-hashing recommendation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets

ITERATIONS = 101  # mosquitto_passwd's default; see the module docstring for why so few
SALT_BYTES = 12  # as mosquitto_passwd


def new_secret() -> str:
    """A fresh password: 192 random bits, URL-safe."""
    return secrets.token_urlsafe(24)


def hash_password(password: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """`$7$...`: what Mosquitto's password_file holds after the username and colon."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${_b64(salt)}${_b64(digest)}"


def hash_password_sha512(password: str, *, salt: bytes | None = None) -> str:
    """`$6$...`: Mosquitto's older salted SHA-512 format (read for compatibility, not written)."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.sha512(password.encode() + salt).digest()
    return f"$6${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether `password` matches a `$7$` or `$6$` hash; False for anything malformed."""
    parts = encoded.split("$")
    try:
        if len(parts) == 5 and parts[:2] == ["", "7"]:
            iterations = int(parts[2])
            if not 1 <= iterations <= 10_000_000:
                return False
            salt, expected = base64.b64decode(parts[3]), base64.b64decode(parts[4])
            actual = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
        elif len(parts) == 4 and parts[:2] == ["", "6"]:
            salt, expected = base64.b64decode(parts[2]), base64.b64decode(parts[3])
            actual = hashlib.sha512(password.encode() + salt).digest()
        else:
            return False
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(actual, expected)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
