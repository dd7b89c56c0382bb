"""API tokens (access/tokens.py) and `moclo tokens`: what is stored (a digest, never the
secret), which presented strings are refused, that a revocation counts within the refresh
interval of a running server's snapshot, and the CLI's output and errors."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import stat
from pathlib import Path

import pytest

from access.tokens import Principal, TokenError, Tokens, UnknownToken
from tests.helpers import moclo


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    return tmp_path / "state" / "registry.sqlite"


def test_a_token_is_stored_as_its_id_and_a_digest_of_its_secret(registry: Path) -> None:
    tokens = Tokens(registry)
    record, token = tokens.create("ana", ["farm"], "operator")
    prefix, token_id, secret = token[:6], token[6:18], token[19:]
    assert (prefix, token[18], token_id) == ("moclo_", "_", record.token_id)
    assert len(secret) == 43  # secrets.token_urlsafe(32): 256 bits

    with sqlite3.connect(registry) as db:
        (stored_id, digest, tenants) = db.execute(
            "SELECT id, secret_sha256, tenants FROM api_tokens"
        ).fetchone()
    assert stored_id == token_id
    assert digest == hashlib.sha256(secret.encode()).hexdigest()
    assert json.loads(tenants) == ["farm"]
    # Neither the token nor its secret is anywhere in the file (or its WAL).
    for path in registry.parent.iterdir():
        assert secret.encode() not in path.read_bytes(), path
    # The file is the owner's alone, like the device registry that shares it.
    assert stat.S_IMODE(os.stat(registry).st_mode) == 0o600

    assert tokens.authenticate(token) == Principal(token_id, "ana", "operator", frozenset({"farm"}))


def test_tokens_share_the_registry_file_with_other_tables(registry: Path) -> None:
    registry.parent.mkdir(parents=True)
    with sqlite3.connect(registry) as db:
        db.execute("CREATE TABLE devices (id INTEGER PRIMARY KEY, tenant TEXT)")
        db.execute("INSERT INTO devices (tenant) VALUES ('farm')")
    _, token = Tokens(registry).create("ana", ["farm"], "viewer")
    assert Tokens(registry).authenticate(token) is not None  # a second opener, as serve is
    with sqlite3.connect(registry) as db:
        assert db.execute("SELECT tenant FROM devices").fetchall() == [("farm",)]
        versions = dict(db.execute("SELECT component, version FROM schema_versions"))
        assert versions["api_tokens"] == 2
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def _variants(token: str) -> list[tuple[str, str]]:
    secret = token[19:]
    other = "A" if secret[0] != "A" else "B"
    return [
        ("empty", ""),
        ("secret only", secret),
        ("one character changed", token[:19] + other + secret[1:]),
        ("one character short", token[:-1]),
        ("one character more", token + "x"),
        ("unknown id", "moclo_000000000000_" + secret),
        ("other prefix", "mocla" + token[5:]),
        ("upper case id", token[:6] + token[6:18].upper() + token[18:]),
        ("with spaces", f" {token} "),
        ("bearer prefix", "Bearer " + token),
        ("very long", token * 1000),
        ("line break", token[:20] + "\n" + token[20:]),
    ]


def test_anything_but_the_exact_token_is_refused(registry: Path) -> None:
    tokens = Tokens(registry)
    _, token = tokens.create("ana", ["farm"], "viewer")
    for what, presented in _variants(token):
        assert tokens.authenticate(presented) is None, what
    assert tokens.authenticate(token) is not None


def test_a_revoked_token_is_refused_within_the_refresh_interval(registry: Path) -> None:
    clock = FakeClock()
    server = Tokens(registry, refresh_s=1.0, clock=clock)  # what `moclo serve` holds
    _, token = Tokens(registry).create("ana", ["farm"], "viewer")
    clock.now += 1.0
    who = server.authenticate(token)
    assert who is not None and server.is_active(who.token_id)

    Tokens(registry).revoke("ana")  # another process: `moclo tokens revoke`
    clock.now += 0.5
    assert server.authenticate(token) is not None  # the snapshot is at most 1 s old
    clock.now += 0.5
    assert server.authenticate(token) is None
    assert not server.is_active(who.token_id)
    assert server.count_active() == 0


def test_revoke_by_id_or_name_and_the_name_is_free_again(registry: Path) -> None:
    tokens = Tokens(registry)
    first, token = tokens.create("ana", ["farm"], "viewer")
    with pytest.raises(TokenError, match=f"named 'ana' already \\(id {first.token_id}\\)"):
        tokens.create("ana", ["farm"], "viewer")
    revoked = tokens.revoke(first.token_id)
    assert revoked.revoked_at is not None and not revoked.active
    assert tokens.authenticate(token) is None

    second, token2 = tokens.create("ana", ["farm", "clinic"], "operator")
    assert tokens.revoke("ana").token_id == second.token_id
    with pytest.raises(UnknownToken, match="moclo tokens list"):
        tokens.revoke("ana")
    with pytest.raises(UnknownToken):
        tokens.revoke(first.token_id)  # already revoked
    assert [t.token_id for t in tokens.list()] == []
    everything = tokens.list(include_revoked=True)
    assert [(t.token_id, t.active) for t in everything] == [
        (first.token_id, False),
        (second.token_id, False),
    ]
    assert tokens.authenticate(token2) is None


def test_last_use_is_recorded(registry: Path) -> None:
    tokens = Tokens(registry)
    _, token = tokens.create("ana", ["farm"], "viewer")
    assert tokens.list()[0].last_used_at is None
    assert tokens.authenticate(token) is not None
    assert tokens.list()[0].last_used_at is not None


@pytest.mark.parametrize(
    ("name", "tenants", "role", "words"),
    [
        ("", ["farm"], "viewer", "a token's name is"),
        ("two words", ["farm"], "viewer", "a token's name is"),
        ("line\nbreak", ["farm"], "viewer", "a token's name is"),
        ("x" * 65, ["farm"], "viewer", "a token's name is"),
        ("0123456789ab", ["farm"], "viewer", "cannot look like a token id"),
        ("ana", ["farm"], "root", "a role is one of viewer, operator, clinician, admin"),
        ("ana", [], "viewer", "at least one tenant"),
        ("ana", ["Farm"], "viewer", "tenant 'Farm' is not valid"),
        ("ana", ["farm/+"], "viewer", "tenant 'farm/+' is not valid"),
        ("ana", None, "operator", "only an admin's token may be for every tenant"),
    ],
    ids=[
        "empty-name",
        "space",
        "line-break",
        "too-long",
        "looks-like-an-id",
        "unknown-role",
        "no-tenant",
        "upper-case-tenant",
        "wildcard-tenant",
        "all-tenants-not-admin",
    ],
)
def test_what_cannot_make_a_token(
    registry: Path, name: str, tenants: list[str] | None, role: str, words: str
) -> None:
    with pytest.raises(TokenError, match=re.escape(words)):
        Tokens(registry).create(name, tenants, role)  # type: ignore[arg-type]
    assert Tokens(registry).list(include_revoked=True) == []


def test_an_admin_of_every_tenant(registry: Path) -> None:
    tokens = Tokens(registry)
    record, token = tokens.create("root", None, "admin")
    who = tokens.authenticate(token)
    assert who is not None and who.tenants is None and record.tenants is None
    assert who.sees("any-tenant-at-all") and who.may_acknowledge
    assert who.scope_words() == "every tenant"


# -- the command ----------------------------------------------------------------------------


def tokens_cli(registry: Path, *args: str) -> tuple[int, str, str]:
    result = moclo("tokens", *args, "--registry", str(registry), timeout_s=60)
    return result.returncode, result.stdout, result.stderr


def test_create_prints_the_token_alone_on_stdout_and_how_to_use_it_on_stderr(
    registry: Path,
) -> None:
    status, out, err = tokens_cli(
        registry, "create", "ana", "--tenant", "farm", "--role", "operator"
    )
    assert status == 0, err
    token = out.strip()
    assert out == token + "\n" and token.startswith("moclo_")
    who = Tokens(registry).authenticate(token)
    assert who is not None and (who.name, who.role, who.tenants) == (
        "ana",
        "operator",
        frozenset({"farm"}),
    )
    assert "shown only this once" in err and "sign-in screen" in err
    assert "Authorization: Bearer" in err and f"moclo tokens revoke {who.token_id}" in err
    assert token not in err  # the hint never repeats it

    status, out, err = tokens_cli(
        registry, "create", "wall", "--tenant", "farm", "--tenant", "clinic", "--json"
    )
    assert status == 0, err
    made = json.loads(out)
    assert (made["role"], made["tenants"]) == ("viewer", ["clinic", "farm"])
    assert Tokens(registry).authenticate(made["token"]) is not None


def test_list_never_shows_a_secret_and_revoke_takes_an_id_or_a_name(registry: Path) -> None:
    tokens = Tokens(registry)
    ana, ana_token = tokens.create("ana", ["farm"], "operator")
    root, root_token = tokens.create("root", None, "admin")
    tokens.authenticate(ana_token)

    status, out, _ = tokens_cli(registry, "list")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "ROLE", "TENANTS", "CREATED", "LAST", "USED"]
    assert lines[1].split()[:4] == [ana.token_id, "ana", "operator", "farm"]
    assert "every tenant" in lines[2] and "never" in lines[2]
    status, listed, _ = tokens_cli(registry, "list", "--json")
    for text in (out, listed):
        assert ana_token[19:] not in text and root_token[19:] not in text
        assert "sha256" not in text
    assert {t["id"] for t in json.loads(listed)} == {ana.token_id, root.token_id}

    assert tokens_cli(registry, "revoke", "ana")[:2] == (
        0,
        f"revoked {ana.token_id} (ana, operator of farm)\n",
    )
    assert tokens_cli(registry, "revoke", root.token_id)[0] == 0
    status, _, err = tokens_cli(registry, "revoke", "ana")
    assert status == 1 and "no active token has the id or name 'ana'" in err
    assert tokens_cli(registry, "list")[1].startswith("no active tokens in ")
    status, out, _ = tokens_cli(registry, "list", "--all")
    assert "REVOKED" in out.splitlines()[0] and len(out.splitlines()) == 3


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["create", "ana"], "name the tenants it may see with --tenant"),
        (["create", "ana", "--all-tenants"], "add --role admin"),
        (["create", "ana", "--all-tenants", "--role", "admin", "--tenant", "x"], "not both"),
        (["create", "ana", "--tenant", "Farm!"], "tenant 'Farm!' is not valid"),
        (["create", "a b", "--tenant", "farm"], "a token's name is"),
    ],
    ids=["no-tenant", "all-tenants-viewer", "both", "bad-tenant", "bad-name"],
)
def test_create_refuses_what_cannot_be_a_token(registry: Path, args: list[str], words: str) -> None:
    status, out, err = tokens_cli(registry, *args)
    assert (status, out) == (2, "")
    assert words in err and "Traceback" not in err


def test_a_registry_that_cannot_be_opened_is_said_so(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    status, _, err = tokens_cli(blocker / "registry.sqlite", "list")
    assert status == 1 and "MOCLO_REGISTRY" in err and "Traceback" not in err


# -- the clinician role and the schema it needed ----------------------------------------------

V1_DUMP = Path(__file__).parent / "data" / "registry-v1.sql"


def _v1_registry(path: Path) -> tuple[str, str]:
    """The registry file moclo made before the clinician role (api_tokens schema 1), and the
    tokens of its `ana` (operator of farm) and `root` (admin of every tenant)."""
    text = V1_DUMP.read_text()
    ana, root = re.findall(r"moclo_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", text.splitlines()[2])
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.executescript(text)
    return ana, root


def test_a_schema_1_file_is_migrated_keeping_every_token_and_then_takes_clinicians(
    registry: Path,
) -> None:
    ana, root = _v1_registry(registry)
    with sqlite3.connect(registry) as db, pytest.raises(sqlite3.IntegrityError):
        # The control: schema 1 itself refuses the new role.
        db.execute(
            "INSERT INTO api_tokens (id, name, secret_sha256, role, tenants, created_at) "
            "VALUES ('0123456789ab', 'x', 'x', 'clinician', '[\"h\"]', 'now')"
        )
    with sqlite3.connect(registry) as db:
        rows_before = db.execute("SELECT * FROM api_tokens ORDER BY id").fetchall()

    tokens = Tokens(registry)
    listed = tokens.list(include_revoked=True)
    assert [(t.name, t.role, t.active) for t in listed] == [
        ("ana", "operator", True),
        ("wall", "viewer", True),
        ("root", "admin", True),
        ("old", "viewer", False),
    ]
    with sqlite3.connect(registry) as db:
        assert db.execute("SELECT * FROM api_tokens ORDER BY id").fetchall() == rows_before
        versions = dict(db.execute("SELECT component, version FROM schema_versions"))
        assert versions == {"api_tokens": 2, "registry": 1}  # the registry's own is untouched
        assert db.execute("SELECT name FROM accounts").fetchall() == [("vet",)]
        # The index that keeps active names unique came through the copy.
        index = db.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'api_tokens_active_name'"
        ).fetchone()
        assert index is not None and "revoked_at IS NULL" in index[0]
    # The old tokens still sign in, as what they were.
    who = tokens.authenticate(ana)
    assert who is not None and (who.name, who.role, who.tenants) == (
        "ana",
        "operator",
        frozenset({"farm"}),
    )
    admin = tokens.authenticate(root)
    assert admin is not None and admin.tenants is None
    with pytest.raises(TokenError, match="an active token is named 'ana' already"):
        tokens.create("ana", ["farm"], "viewer")

    # And the new role is taken, by this opener and the next.
    record, token = tokens.create("dr-lee", ["hospital"], "clinician")
    clinician = Tokens(registry).authenticate(token)
    assert clinician is not None and clinician.role == "clinician" and clinician.may_acknowledge
    assert record.role == "clinician"


def test_a_file_of_a_newer_schema_is_refused_saying_to_upgrade(registry: Path) -> None:
    Tokens(registry).list()
    with sqlite3.connect(registry) as db:
        db.execute("UPDATE schema_versions SET version = 3 WHERE component = 'api_tokens'")
    with pytest.raises(OSError, match=r"written by a newer moclo .*upgrade moclo"):
        Tokens(registry).list()


@pytest.mark.parametrize(
    ("role", "acknowledges"),
    [("viewer", False), ("operator", True), ("clinician", True), ("admin", True)],
)
def test_who_may_acknowledge(registry: Path, role: str, acknowledges: bool) -> None:
    tenants = None if role == "admin" else ["hospital"]
    _, token = Tokens(registry).create(f"t-{role}", tenants, role)  # type: ignore[arg-type]
    who = Tokens(registry).authenticate(token)
    assert who is not None and who.may_acknowledge is acknowledges


def test_tokens_create_takes_the_clinician_role(registry: Path) -> None:
    status, out, err = tokens_cli(
        registry, "create", "dr-lee", "--tenant", "hospital", "--role", "clinician", "--json"
    )
    assert status == 0, err
    assert json.loads(out)["role"] == "clinician"
    status, out, _ = tokens_cli(registry, "create", "--help")
    assert status == 0 and "clinician" in out and "medical devices" in out
