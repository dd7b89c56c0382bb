"""A local certificate authority for the local stack's TLS listener, made with `openssl`.

`moclo up` makes one in `{data dir}/tls/` the first time (kept for later runs, so clients that
trust `ca.crt` keep trusting it): a CA, a server certificate for localhost and 127.0.0.1 signed
by it, and on request client certificates whose common name is an account's username (for
Mosquitto's `use_identity_as_username`). Keys are written 0600. In production, use certificates
from your own CA or a public one instead (see docs/security.md).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CA_DAYS = 3650
LEAF_DAYS = 825  # what browsers and most TLS stacks still accept for a leaf certificate
_CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


class TlsError(RuntimeError):
    """openssl is missing or refused; the message says what to do."""


@dataclass(frozen=True, slots=True)
class LocalTls:
    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def ensure_local_tls(
    directory: Path, *, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")
) -> LocalTls:
    """The CA and server certificate in `directory`, made if missing."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    tls = LocalTls(
        directory=directory,
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
    )
    if not (tls.ca_cert.exists() and tls.ca_key.exists()):
        _openssl(
            "req", "-x509", *_CURVE,
            "-keyout", str(tls.ca_key), "-out", str(tls.ca_cert), "-days", str(CA_DAYS),
            "-subj", "/CN=moclo local CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
    if not (tls.server_cert.exists() and tls.server_key.exists()):
        names = ",".join(f"IP:{h}" if h[0].isdigit() or ":" in h else f"DNS:{h}" for h in hosts)
        _issue(tls, "localhost", tls.server_cert, tls.server_key, f"subjectAltName={names}\n"
               "extendedKeyUsage=serverAuth\n")  # fmt: skip
    for key in (tls.ca_key, tls.server_key):
        key.chmod(0o600)
    return tls


def issue_client_certificate(tls: LocalTls, username: str) -> tuple[Path, Path]:
    """A client certificate (and key) whose common name is `username`, signed by the CA."""
    cert = tls.directory / f"client-{username}.crt"
    key = tls.directory / f"client-{username}.key"
    _issue(tls, username, cert, key, "extendedKeyUsage=clientAuth\n")
    key.chmod(0o600)
    return cert, key


def _issue(tls: LocalTls, common_name: str, cert: Path, key: Path, extensions: str) -> None:
    request = cert.with_suffix(".csr")
    ext = cert.with_suffix(".ext")
    ext.write_text(extensions)
    try:
        _openssl(
            "req", *_CURVE, "-keyout", str(key), "-out", str(request), "-subj", f"/CN={common_name}"
        )
        _openssl(
            "x509", "-req", "-in", str(request), "-CA", str(tls.ca_cert), "-CAkey", str(tls.ca_key),
            "-CAcreateserial", "-out", str(cert), "-days", str(LEAF_DAYS), "-sha256",
            "-extfile", str(ext),
        )  # fmt: skip
    finally:
        request.unlink(missing_ok=True)
        ext.unlink(missing_ok=True)


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise TlsError("openssl is not installed: install it (Debian: apt install openssl)")
    done = subprocess.run([openssl, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise TlsError(f"openssl {args[0]} failed: {done.stderr.strip()[-300:]}")
