"""`moclo tokens`: create, list and revoke the API tokens of the dashboard and the HTTP API
(see access/tokens.py). Argument parsing is in `moclo/tokens_args.py`.

`create` prints the token once: alone on stdout, so `TOKEN=$(moclo tokens create ...)` holds
just the token, and how to use it on stderr. Nothing here reads a secret.

Exit status: 0 done; 1 the registry cannot be used, or no such token to revoke; 2 a name,
tenant or role that cannot make a token.
"""

from __future__ import annotations

import json
import sys
from typing import cast

from access.tokens import Role, TokenError, TokenRecord, Tokens, TokenStoreError, UnknownToken
from core.settings import Settings

_COLUMNS = ("ID", "NAME", "ROLE", "TENANTS", "CREATED", "LAST USED")


def create(
    settings: Settings,
    name: str,
    *,
    tenants: list[str] | None,
    all_tenants: bool,
    role: str,
    as_json: bool = False,
) -> int:
    """`moclo tokens create`: makes the token and prints it, once."""
    if all_tenants and tenants:
        return _fail("give --tenant (one or more) or --all-tenants, not both", status=2)
    if all_tenants and role != "admin":
        return _fail("only an admin's token may be for every tenant: add --role admin", status=2)
    if not all_tenants and not tenants:
        return _fail(
            "name the tenants it may see with --tenant (repeat for several), or, for an "
            "admin, --all-tenants",
            status=2,
        )
    try:
        record, token = Tokens(settings.registry).create(
            name,
            None if all_tenants else tenants,
            cast(Role, role),  # argparse's choices are the roles; checked again anyway
        )
    except TokenError as exc:
        return _fail(str(exc), status=2)
    except TokenStoreError as exc:
        return _fail(str(exc))
    if as_json:
        print(json.dumps({**record.to_json(), "token": token}, indent=2))
        return 0
    print(token, flush=True)
    print(_how_to_use(settings, record), file=sys.stderr)
    return 0


def list_tokens(settings: Settings, *, include_revoked: bool = False, as_json: bool = False) -> int:
    """`moclo tokens list`: every active token (with `include_revoked`, all), never a secret."""
    try:
        records = Tokens(settings.registry).list(include_revoked=include_revoked)
    except TokenStoreError as exc:
        return _fail(str(exc))
    if as_json:
        print(json.dumps([r.to_json() for r in records], indent=2))
    elif records:
        print(table(records, include_revoked=include_revoked))
    else:
        print(
            f"no {'' if include_revoked else 'active '}tokens in {settings.registry}: "
            "`moclo tokens create NAME --tenant T` makes one"
        )
    return 0


def revoke(settings: Settings, id_or_name: str) -> int:
    """`moclo tokens revoke`: the token stops working within a second."""
    try:
        record = Tokens(settings.registry).revoke(id_or_name)
    except UnknownToken as exc:
        return _fail(str(exc))
    except TokenStoreError as exc:
        return _fail(str(exc))
    print(f"revoked {record.token_id} ({record.name}, {record.role} of {_tenants(record)})")
    return 0


def table(records: list[TokenRecord], *, include_revoked: bool = False) -> str:
    """The tokens as aligned columns under a header."""
    header = (*_COLUMNS, "REVOKED") if include_revoked else _COLUMNS
    rows = [header] + [
        (
            r.token_id,
            r.name,
            r.role,
            _tenants(r),
            r.created_at,
            r.last_used_at or "never",
            *((r.revoked_at or "-",) if include_revoked else ()),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _how_to_use(settings: Settings, record: TokenRecord) -> str:
    url = _dashboard_url(settings.serve_listen)
    return f"""
That is token {record.token_id}: {record.name}, {record.role} of {_tenants(record)}.
It is shown only this once (only a hash of it is kept): store it now, in a password manager
or your deployment's secrets.

  dashboard:  open {url} and paste it into the sign-in screen
  HTTP API:   read -rs MOCLO_TOKEN; export MOCLO_TOKEN    # paste it: not echoed, not in history
              curl -H @<(printf 'Authorization: Bearer %s' "$MOCLO_TOKEN") {url}api/tenants
              (printf is a shell builtin, so the token never shows in `ps`)
  revoke:     moclo tokens revoke {record.token_id}"""


def _tenants(record: TokenRecord) -> str:
    if record.tenants is None:
        return "every tenant"
    return ", ".join(sorted(record.tenants))


def _dashboard_url(listen: str) -> str:
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{port}/"


def _fail(message: str, *, status: int = 1) -> int:
    print(f"moclo: {message}", file=sys.stderr)
    return status
