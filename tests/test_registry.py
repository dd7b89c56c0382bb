"""The registry: the store, its password hashes (verified by a real Mosquitto), the files it
writes and their modes, the `moclo devices` / `moclo accounts` / `moclo broker-auth` commands,
and ingest rejecting (or flagging) readings of unregistered and revoked devices."""

from __future__ import annotations

import argparse
import json
import sqlite3
import stat
import subprocess
from contextlib import closing
from pathlib import Path

import pytest

from access.broker import BrokerAuthError, acl_text, write_broker_auth
from access.credentials import load_credentials
from access.issued import IssuedFileError, append_device_credentials
from access.known import RegisteredDevices
from access.passwords import hash_password, hash_password_sha512, new_secret, verify_password
from access.provision import AccountPlan, ensure_account
from access.registry import (
    DeviceSpec,
    MqttLogin,
    Registry,
    RegistryError,
)
from core.settings import Settings
from devices.topics import DeviceAddress
from ingest.decode import Decoded, Decoder, RejectReason
from ingest.options import IngestOptions
from moclo.stack import MosquittoServer, free_port
from simulators.scenario import load_scenario
from tests.conftest import RunningIngest
from tests.helpers import Influx, connack_code, cow_json, moclo, publish_all, wait_until


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- hashes --------------------------------------------------------------------------------


def test_hashes_match_mosquitto_passwd_both_ways(tmp_path: Path) -> None:
    passwords = tmp_path / "pw"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwords), "alice", "s3cret"],
        check=True,
        capture_output=True,
    )
    written = passwords.read_text().strip().split(":", 1)[1]
    assert written.startswith("$7$")
    assert verify_password("s3cret", written)
    assert not verify_password("s3cret!", written)
    # Ours, from the same salt, is byte for byte what mosquitto_passwd wrote.
    _, _, iterations, salt, _ = written.split("$")
    import base64

    ours = hash_password("s3cret", iterations=int(iterations), salt=base64.b64decode(salt))
    assert ours == written


@pytest.mark.parametrize(
    "encoded",
    ["", "$7$", "$7$x$AA==$AA==", "$7$0$AA==$AA==", "$6$!!$AA==", "$5$AA==$AA==", "plain"],
    ids=["empty", "short", "bad-iterations", "zero-iterations", "bad-base64", "sha256", "plain"],
)
def test_malformed_hashes_verify_nothing(encoded: str) -> None:
    assert verify_password("anything", encoded) is False


def test_a_real_mosquitto_accepts_our_hashes_in_both_formats(tmp_path: Path) -> None:
    secret7, secret6 = new_secret(), new_secret()
    passwords = tmp_path / "passwords"
    passwords.write_text(f"seven:{hash_password(secret7)}\nsix:{hash_password_sha512(secret6)}\n")
    broker = MosquittoServer(tmp_path / "mq", free_port(), password_file=passwords)
    broker.start()
    try:
        assert connack_code(broker.port, "seven", secret7) == 0
        assert connack_code(broker.port, "six", secret6) == 0
        # Mosquitto 2.0 answers a wrong password or an unknown user with 0x87, not authorised.
        assert connack_code(broker.port, "seven", secret6) == 135
        assert connack_code(broker.port, "nobody", secret7) == 135
    finally:
        broker.stop()


def test_secrets_are_random_url_safe_and_long() -> None:
    secrets = {new_secret() for _ in range(200)}
    assert len(secrets) == 200
    for secret in secrets:
        assert len(secret) == 32 and all(c.isalnum() or c in "-_" for c in secret)


# -- the store ------------------------------------------------------------------------------


def test_devices_are_added_listed_revoked_and_added_again(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r.sqlite")
    first = registry.add_device("farm", "cow_tracker", "cow-0001")
    assert first.username == "farm.cow-0001"
    assert "password=" in repr(first) and first.password not in repr(first)
    assert registry.is_registered("farm", "cow_tracker", "cow-0001")
    assert not registry.is_registered("farm", "thermostat", "cow-0001")
    with pytest.raises(RegistryError, match=r"already registered .*revoke farm cow-0001"):
        registry.add_device("farm", "cow_tracker", "cow-0001")
    registry.revoke_device("farm", "cow-0001")
    assert not registry.is_registered("farm", "cow_tracker", "cow-0001")
    with pytest.raises(RegistryError, match="no registered device farm/cow-0001"):
        registry.revoke_device("farm", "cow-0001")
    second = registry.add_device("farm", "cow_tracker", "cow-0001")
    assert second.password != first.password
    assert [d.active for d in registry.devices(include_revoked=True)] == [False, True]
    assert [d.username for d in registry.devices()] == ["farm.cow-0001"]
    assert registry.devices(tenant="other") == []
    # Only the hash is stored, and it verifies the issued password, not the revoked one.
    [current] = [x for x in registry.mqtt_logins() if x.role == "device"]
    assert verify_password(second.password, current.password_hash)
    assert not verify_password(first.password, current.password_hash)
    raw = (tmp_path / "r.sqlite").read_bytes()
    assert second.password.encode() not in raw and first.password.encode() not in raw


def test_accounts_have_roles_and_tenants(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r.sqlite")
    registry.add_account("ingest", "ingest")
    registry.add_account("app", "farm-app", tenant="farm")
    with pytest.raises(RegistryError, match="already exists"):
        registry.add_account("serve", "ingest")
    with pytest.raises(RegistryError, match="give --tenant"):
        registry.add_account("operator", "vet")
    with pytest.raises(RegistryError, match=r"^a clinician account belongs to one tenant"):
        registry.add_account("clinician", "dr-lee")
    registry.add_account("clinician", "dr-lee", tenant="hospital")
    with pytest.raises(RegistryError, match="leave out --tenant"):
        registry.add_account("serve", "dash", tenant="farm")
    with pytest.raises(RegistryError, match="role 'root'"):
        registry.add_account("root", "admin")  # type: ignore[arg-type]
    assert [(a.name, a.role, a.tenant) for a in registry.accounts()] == [
        ("dr-lee", "clinician", "hospital"),
        ("farm-app", "app", "farm"),
        ("ingest", "ingest", None),
    ]
    registry.revoke_account("farm-app")
    assert [a.name for a in registry.accounts()] == ["dr-lee", "ingest"]
    assert len(registry.accounts(include_revoked=True)) == 3
    with pytest.raises(RegistryError, match="no account 'farm-app'"):
        registry.revoke_account("farm-app")


@pytest.mark.parametrize(
    ("first", "then", "allowed"),
    [
        (("app", "farm"), ("operator", "farm"), True),  # a tenant's roles read the same
        (("clinician", "farm"), ("app", "farm"), True),
        (("serve", None), ("serve", None), True),
        (("app", "farm"), ("app", "ward"), False),  # another tenant
        (("app", "farm"), ("serve", None), False),
        (("serve", None), ("app", "farm"), False),  # fewer reads than the sessions it held
        (("ingest", None), ("serve", None), False),
    ],
    ids=lambda v: str(v),
)
def test_a_revoked_account_name_comes_back_only_with_the_same_reads(
    tmp_path: Path, first: tuple[str, str | None], then: tuple[str, str | None], allowed: bool
) -> None:
    """The engine's persistent sessions keep a name's subscriptions past its revocation
    (tests/test_engine_attacks.py shows the leak this stops)."""
    registry = Registry(tmp_path / "registry.sqlite")
    registry.add_account(first[0], "vet", tenant=first[1])  # type: ignore[arg-type]
    registry.revoke_account("vet")
    if allowed:
        registry.add_account(then[0], "vet", tenant=then[1])  # type: ignore[arg-type]
        assert [(a.role, a.tenant) for a in registry.accounts()] == [then]
        return
    with pytest.raises(RegistryError, match="until revoked; it is issued again only"):
        registry.add_account(then[0], "vet", tenant=then[1])  # type: ignore[arg-type]


BAD_DEVICES = [
    ("#", "cow-1", "tenant '#'"),
    ("+", "cow-1", "tenant '\\+'"),
    ("farm", "#", "device id '#'"),
    ("farm", "+", "device id '\\+'"),
    ("farm/x", "cow-1", "tenant"),
    ("farm", "cow/1", "device id"),
    ("farm", "cow.1", "device id"),
    ("farm", "cow 1", "device id"),
    ("Farm", "cow-1", "tenant"),
    ("farm", "", "device id"),
    ("farm", "c" * 64, "device id"),
]


@pytest.mark.parametrize(
    ("tenant", "device_id", "problem"),
    BAD_DEVICES,
    ids=[
        "tenant-hash",
        "tenant-plus",
        "id-hash",
        "id-plus",
        "tenant-slash",
        "id-slash",
        "id-dot",
        "id-space",
        "upper",
        "empty",
        "too-long",
    ],
)
def test_device_names_that_could_confuse_the_broker_are_refused(
    tmp_path: Path, tenant: str, device_id: str, problem: str
) -> None:
    registry = Registry(tmp_path / "r.sqlite")
    with pytest.raises(RegistryError, match=problem):
        registry.add_device(tenant, "cow_tracker", device_id)
    assert registry.devices(include_revoked=True) == []


@pytest.mark.parametrize(
    "name",
    ["#", "+", "a/b", "a.b", "ingest ", "Ingest", "1st", "", "a" * 65, "a:b", "a\nb"],
    ids=["hash", "plus", "slash", "dot", "space", "upper", "digit", "empty", "long", "colon", "nl"],
)
def test_account_names_that_could_confuse_the_broker_are_refused(tmp_path: Path, name: str) -> None:
    registry = Registry(tmp_path / "r.sqlite")
    with pytest.raises(RegistryError, match="account name"):
        registry.add_account("ingest", name)


def test_an_unknown_device_type_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="unknown device type 'toaster'; known: cow_tracker"):
        Registry(tmp_path / "r.sqlite").add_device("farm", "toaster", "t-1")


def test_bulk_adds_are_all_or_nothing(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r.sqlite")
    registry.add_device("farm", "cow_tracker", "cow-0002")
    specs = [DeviceSpec("farm", "cow_tracker", f"cow-{n:04d}") for n in (1, 2, 3)]
    with pytest.raises(RegistryError, match="farm/cow-0002 is already registered"):
        registry.add_devices(specs)
    assert len(registry.devices()) == 1
    with pytest.raises(RegistryError, match="appears twice"):
        registry.add_devices([specs[0], specs[0]])

    def refuse(issued: object) -> None:
        raise IssuedFileError("disk full")

    with pytest.raises(IssuedFileError):
        registry.add_devices([specs[0]], before_commit=refuse)
    assert len(registry.devices()) == 1
    issued = registry.add_devices(specs, skip_registered=True)
    assert [record.device_id for record, _ in issued] == ["cow-0001", "cow-0003"]
    assert len(registry.devices()) == 3


def test_the_registry_file_and_its_journal_are_private_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "state" / "r.sqlite"
    registry = Registry(path)
    registry.add_device("farm", "cow_tracker", "cow-0001")
    assert mode(path) == 0o600
    with sqlite3.connect(path) as db:  # an open connection keeps the WAL files
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        db.execute("UPDATE devices SET created_at = created_at")
        for suffix in ("-wal", "-shm"):
            assert mode(path.with_name(path.name + suffix)) == 0o600
        db.execute("UPDATE schema_versions SET version = 99 WHERE component = 'registry'")
    with pytest.raises(RegistryError, match=r"newer moclo .*schema 99"):
        Registry(path).devices()


def test_an_unusable_registry_path_is_explained(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RegistryError, match=r"cannot open the registry .*MOCLO_REGISTRY"):
        Registry(blocker / "r.sqlite").devices()


# -- the broker's files ------------------------------------------------------------------


def test_broker_files_are_private_complete_and_rewritten_from_scratch(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r.sqlite")
    registry.add_device("farm", "cow_tracker", "cow-0001")
    registry.add_device("farm", "cow_tracker", "cow-0002")
    registry.add_account("ingest", "ingest")
    registry.add_account("serve", "dash")
    registry.add_account("app", "farm-app", tenant="farm")
    registry.add_account("operator", "vet", tenant="farm")
    registry.add_account("clinician", "dr-lee", tenant="hospital")
    registry.add_device("hospital", "pacemaker", "pm-1")
    auth = write_broker_auth(registry, tmp_path / "broker", prefix="p/x")
    assert mode(auth.password_file) == mode(auth.acl_file) == 0o600
    users = [line.split(":")[0] for line in auth.password_file.read_text().splitlines()]
    # An account that needs a second connection has a second login with the same hash.
    assert users == [
        *("dash", "dash~acks", "dash~commands", "dr-lee", "dr-lee~acks", "dr-lee~commands"),
        *("farm-app", "ingest", "ingest~alerts", "ingest~commands", "vet", "vet~acks"),
        *("vet~commands", "farm.cow-0001", "farm.cow-0002", "hospital.pm-1"),
    ]
    hashes = dict(line.split(":", 1) for line in auth.password_file.read_text().splitlines())
    assert hashes["ingest~alerts"] == hashes["ingest~commands"] == hashes["ingest"]
    assert hashes["vet~acks"] == hashes["vet~commands"] == hashes["vet"]
    blocks = {
        block.splitlines()[0]: block.splitlines()[1:]
        for block in auth.acl_file.read_text().split("\n\n")
        if block.startswith("user ")
    }
    cow = "p/x/farm/cow_tracker/cow-0001"
    pacemaker = "p/x/hospital/pacemaker/pm-1"
    uplink = ("telemetry", "commands/get", "command-results", "desired/get", "reported")
    assert blocks == {
        # A device writes only its own topics and reads only its own commands and desired
        # state; ingest alone writes those.
        "user farm.cow-0001": [
            *(f"topic write {cow}/{level}" for level in uplink),
            f"topic read {cow}/commands",
            f"topic read {cow}/desired",
        ],
        "user farm.cow-0002": [
            *(f"topic write p/x/farm/cow_tracker/cow-0002/{level}" for level in uplink),
            "topic read p/x/farm/cow_tracker/cow-0002/commands",
            "topic read p/x/farm/cow_tracker/cow-0002/desired",
        ],
        "user hospital.pm-1": [
            *(f"topic write {pacemaker}/{level}" for level in uplink),
            f"topic read {pacemaker}/commands",
            f"topic read {pacemaker}/desired",
        ],
        "user ingest": [
            "topic read p/x/+/+/+/telemetry",
            "topic read p/x/+/acks/#",
            *(f"topic read p/x/+/+/+/{level}" for level in uplink[1:]),
            "topic read p/x/+/command-requests/#",
            "topic read p/x/+/desired-requests/#",
        ],
        "user ingest~alerts": ["topic write p/x/+/alerts/+", "topic write p/x/+/alert-state/+/+"],
        "user ingest~commands": [
            "topic write p/x/+/+/+/commands",
            "topic write p/x/+/+/+/desired",
            "topic write p/x/+/command-status/+",
            "topic write p/x/+/notices/+",
        ],
        "user dash": [
            "topic read p/x/+/+/+/telemetry",
            "topic read p/x/+/alerts/+",
            "topic read p/x/+/alert-state/#",
            "topic read p/x/+/command-status/+",
            "topic read p/x/+/notices/+",
        ],
        "user dash~acks": [
            "topic read p/x/+/alerts/+",
            "topic write p/x/+/acks/dash/on-behalf",
        ],
        "user dash~commands": [
            "topic read p/x/+/command-status/+",
            "topic write p/x/+/command-requests/dash/on-behalf",
            "topic write p/x/+/desired-requests/dash/on-behalf",
        ],
        "user farm-app": [
            "topic read p/x/farm/alerts/+",
            "topic read p/x/farm/alert-state/#",
            "topic read p/x/farm/command-status/+",
            "topic read p/x/farm/notices/+",
        ],
        "user vet": [
            "topic read p/x/farm/alerts/+",
            "topic read p/x/farm/alert-state/#",
            "topic read p/x/farm/command-status/+",
            "topic read p/x/farm/notices/+",
            "topic write p/x/farm/acks/vet",
            "topic write p/x/farm/command-requests/vet",
            "topic write p/x/farm/desired-requests/vet",
        ],
        # The account's name in the topic, whichever of its logins writes it.
        "user vet~acks": ["topic read p/x/farm/alerts/+", "topic write p/x/farm/acks/vet"],
        "user vet~commands": [
            "topic read p/x/farm/command-status/+",
            "topic write p/x/farm/command-requests/vet",
            "topic write p/x/farm/desired-requests/vet",
        ],
        # A clinician's rights on the broker are an operator's: which commands it may ask
        # for is ingest's check (devices/commands.py `admits`).
        "user dr-lee": [
            "topic read p/x/hospital/alerts/+",
            "topic read p/x/hospital/alert-state/#",
            "topic read p/x/hospital/command-status/+",
            "topic read p/x/hospital/notices/+",
            "topic write p/x/hospital/acks/dr-lee",
            "topic write p/x/hospital/command-requests/dr-lee",
            "topic write p/x/hospital/desired-requests/dr-lee",
        ],
        "user dr-lee~acks": [
            "topic read p/x/hospital/alerts/+",
            "topic write p/x/hospital/acks/dr-lee",
        ],
        "user dr-lee~commands": [
            "topic read p/x/hospital/command-status/+",
            "topic write p/x/hospital/command-requests/dr-lee",
            "topic write p/x/hospital/desired-requests/dr-lee",
        ],
    }
    # No line before the first user block grants anything to anyone.
    head = auth.acl_file.read_text().split("\nuser ")[0]
    assert all(line.startswith("#") or not line for line in head.splitlines())
    registry.revoke_device("farm", "cow-0002")
    registry.revoke_account("vet")
    registry.revoke_account("dr-lee")
    write_broker_auth(registry, tmp_path / "broker", prefix="p/x")
    text = auth.password_file.read_text() + auth.acl_file.read_text()
    assert "cow-0002" not in text and "vet" not in text and "dr-lee" not in text
    assert [p.name for p in (tmp_path / "broker").iterdir()] in (
        ["passwords", "acl"],
        ["acl", "passwords"],
    )


def test_broker_files_shared_with_a_group_stay_shared_when_rewritten(tmp_path: Path) -> None:
    # Made once for a broker that runs as another user (docker-compose, Debian's service), the
    # files keep their group when a later `moclo devices add` rewrites them without --group.
    import grp

    gid = grp.getgrnam("mosquitto").gr_gid  # Debian's mosquitto package makes the group
    registry = Registry(tmp_path / "r.sqlite")
    auth = write_broker_auth(registry, tmp_path / "broker", prefix="p", group="mosquitto")
    registry.add_device("farm", "cow_tracker", "cow-0001")
    write_broker_auth(registry, tmp_path / "broker", prefix="p")
    for path in (auth.password_file, auth.acl_file):
        assert (mode(path), path.stat().st_gid) == (0o640, gid)
    assert "farm.cow-0001" in auth.password_file.read_text()
    fresh = write_broker_auth(registry, tmp_path / "other", prefix="p")
    assert mode(fresh.password_file) == 0o600


def test_a_prefix_with_spaces_cannot_go_into_an_acl_file() -> None:
    with pytest.raises(BrokerAuthError, match="MOCLO_TOPIC_PREFIX"):
        acl_text([MqttLogin("ingest", "$7$", "ingest", None)], "my prefix")


# -- issued credentials ---------------------------------------------------------------------


def test_credentials_files_are_created_private_and_refused_when_not(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r.sqlite")
    path = tmp_path / "devices.csv"
    issued = registry.add_devices([DeviceSpec("farm", "cow_tracker", "cow-0001")])
    append_device_credentials(path, issued)
    append_device_credentials(path, registry.add_devices([DeviceSpec("farm", "fridge", "f-1")]))
    assert mode(path) == 0o600
    loaded = load_credentials(path)  # the simulator reads what we wrote
    assert loaded["farm.cow-0001"] == ("farm.cow-0001", issued[0][1].password)
    assert set(loaded) == {"farm.cow-0001", "farm.f-1"}
    path.chmod(0o644)
    with pytest.raises(IssuedFileError, match=r"may be read by others .*chmod 600"):
        append_device_credentials(path, issued)
    other = tmp_path / "other.csv"
    other.write_text("name,secret\n")
    other.chmod(0o600)
    with pytest.raises(IssuedFileError, match="not a credentials file"):
        append_device_credentials(other, issued)


# -- RegisteredDevices: what ingest looks up ------------------------------------------------


def test_registered_devices_follow_the_file(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    now = [0.0]
    known = RegisteredDevices(path, check_every_s=2.0, clock=lambda: now[0])
    cow = DeviceAddress("farm", "cow_tracker", "cow-0001")
    assert known.due() and known.refresh() and len(known) == 0  # no file yet: nobody
    registry = Registry(path)
    registry.add_device("farm", "cow_tracker", "cow-0001")
    assert not known.due()
    now[0] = 2.0
    assert known.due() and known.refresh()
    assert cow in known
    assert DeviceAddress("farm", "thermostat", "cow-0001") not in known
    assert not known.refresh()  # nothing changed: no reload
    registry.revoke_device("farm", "cow-0001")
    assert known.refresh() and cow not in known
    # A backup (`sqlite3 FILE ".backup COPY"`), restored into the live file (`".restore COPY"`,
    # safe while ingest has it open) is read again.
    registry.add_device("farm", "cow_tracker", "cow-0001")
    assert known.refresh() and cow in known
    backup = tmp_path / "backup.sqlite"
    with closing(sqlite3.connect(path)) as source, closing(sqlite3.connect(backup)) as copy:
        source.backup(copy)
    registry.revoke_device("farm", "cow-0001")
    assert known.refresh() and cow not in known
    with closing(sqlite3.connect(backup)) as copy, closing(sqlite3.connect(path)) as live:
        copy.backup(live)
    assert known.refresh() and cow in known
    known.close()


# -- the decoder ----------------------------------------------------------------------------


def test_decoder_rejects_or_flags_unregistered_devices() -> None:
    cow = DeviceAddress("farm", "cow_tracker", "cow-0001")
    stranger = "p/farm/cow_tracker/cow-0666/telemetry"
    registered = {cow}
    at = 1795327200 * 10**9  # arrival, in ns: the readings' own time
    decoder = Decoder("p", registered=registered)
    out = Decoded()
    decoder.decode("p/farm/cow_tracker/cow-0001/telemetry", cow_json(1795327200, 1), at + 1, out)
    decoder.decode(stranger, cow_json(1795327200, 1), at + 2, out)
    assert [r.address for r in out.readings] == [cow]
    [rejection] = out.rejections
    assert rejection.reason is RejectReason.UNREGISTERED_DEVICE
    assert "farm/cow_tracker/cow-0666 is not registered" in rejection.error

    flagging = Decoder("p", registered=registered, unregistered="flag")
    out = Decoded()
    for n in range(3):
        flagging.decode(stranger, cow_json(1795327200 + n, n), at + 10 + n, out)
    assert len(out.readings) == 3 and not out.rejections
    assert flagging.unregistered_messages == 3
    assert [(a.device_id, t) for a, _, t in flagging.take_flagged()] == [("cow-0666", at + 10)]
    assert flagging.take_flagged() == []
    flagging.forget_flagged()
    flagging.decode(stranger, cow_json(1795327300, 9), at + 20, out)
    assert len(flagging.take_flagged()) == 1


# -- the commands ---------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A registry of the test's own, and its broker files beside it."""
    monkeypatch.setenv("MOCLO_REGISTRY", str(tmp_path / "reg" / "registry.sqlite"))
    monkeypatch.delenv("MOCLO_BROKER_AUTH_DIR", raising=False)
    monkeypatch.setenv("MOCLO_TOPIC_PREFIX", "demo")
    return tmp_path / "reg"


def test_devices_add_list_revoke_round_trip(cli_env: Path, tmp_path: Path) -> None:
    added = moclo("devices", "add", "farm", "cow_tracker", "cow-0001", "--json")
    assert added.returncode == 0, added.stderr
    shown = json.loads(added.stdout)
    assert shown["username"] == "farm.cow-0001"
    assert shown["topic"] == "demo/farm/cow_tracker/cow-0001/telemetry"
    password = shown["password"]
    assert password not in added.stderr
    assert f"rewritten in {cli_env / 'broker'}" in added.stderr
    passwords = (cli_env / "broker" / "passwords").read_text()
    assert verify_password(password, passwords.split(":", 1)[1].strip())
    assert (
        "topic write demo/farm/cow_tracker/cow-0001/telemetry"
        in (cli_env / "broker" / "acl").read_text()
    )

    text = moclo("devices", "add", "farm", "fridge", "fridge-1")
    assert text.returncode == 0, text.stderr
    assert "username  farm.fridge-1" in text.stdout and "shown this once" in text.stdout

    again = moclo("devices", "add", "farm", "cow_tracker", "cow-0001")
    assert again.returncode == 2 and "already registered" in again.stderr
    assert "Traceback" not in again.stderr

    out = tmp_path / "creds.csv"
    quiet = moclo(
        "devices", "add", "farm", "cow_tracker", "cow-0002", "--credentials-out", str(out)
    )
    assert quiet.returncode == 0, quiet.stderr
    [(_, secret)] = [v for k, v in load_credentials(out).items() if k == "farm.cow-0002"]
    assert secret not in quiet.stdout + quiet.stderr
    assert mode(out) == 0o600

    listed = moclo("devices", "list", "--json")
    assert [d["device_id"] for d in json.loads(listed.stdout)] == [
        "cow-0001",
        "cow-0002",
        "fridge-1",
    ]
    revoked = moclo("devices", "revoke", "farm", "cow-0001")
    assert revoked.returncode == 0, revoked.stderr
    assert "farm.cow-0001" not in (cli_env / "broker" / "passwords").read_text()
    table = moclo("devices", "list", "--all", "--tenant", "farm")
    assert table.stdout.splitlines()[0].split() == [
        "TENANT", "TYPE", "DEVICE_ID", "USERNAME", "ADDED", "REVOKED"
    ]  # fmt: skip
    assert len(table.stdout.splitlines()) == 4
    missing = moclo("devices", "revoke", "farm", "cow-0001")
    assert missing.returncode == 2 and "already revoked" in missing.stderr


def test_devices_import_from_csv_and_from_a_scenario(cli_env: Path, tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.csv"
    fleet.write_text(
        "tenant,device_type,device_id\nfarm,cow_tracker,cow-0001\nfarm,thermostat,t-1\n"
    )
    out = tmp_path / "creds.csv"
    result = moclo("devices", "import", str(fleet), "--credentials-out", str(out))
    assert result.returncode == 0, result.stderr
    assert "registered 2 devices" in result.stdout
    assert set(load_credentials(out)) == {"farm.cow-0001", "farm.t-1"}

    bad = tmp_path / "bad.csv"
    bad.write_text("tenant,device_type,device_id\nfarm,cow_tracker,cow-0009\nfarm,toaster,x\n")
    refused = moclo("devices", "import", str(bad), "--credentials-out", str(out))
    assert refused.returncode == 2 and "unknown device type 'toaster'" in refused.stderr
    assert "farm.cow-0009" not in out.read_text()  # nothing registered, nothing written
    headless = tmp_path / "headless.csv"
    headless.write_text("farm,cow_tracker,cow-0009\n")
    result = moclo("devices", "import", str(headless), "--credentials-out", str(out))
    assert result.returncode == 2 and "first line must be tenant,device_type,device_id" in (
        result.stderr
    )

    scenario = moclo(
        "devices", "import", "--scenario", "dairy_farm", "--credentials-out", str(out), "--json"
    )
    assert scenario.returncode == 0, scenario.stderr
    _, options = load_scenario("dairy_farm")
    expected = sum(spec.count for spec in options.fleets)
    assert json.loads(scenario.stdout) == {
        "registered": expected,
        "skipped": 0,
        "credentials_file": str(out),
    }
    twice = moclo("devices", "import", "--scenario", "dairy_farm", "--credentials-out", str(out))
    assert twice.returncode == 2 and "already registered" in twice.stderr
    skip = moclo(
        "devices",
        "import",
        "--scenario",
        "dairy_farm",
        "--credentials-out",
        str(out),
        "--skip-registered",
    )
    assert skip.returncode == 0 and f"({expected} already registered" in skip.stdout
    assert len(load_credentials(out)) == 2 + expected


def test_accounts_and_broker_auth_commands(cli_env: Path, tmp_path: Path) -> None:
    env_file = tmp_path / "ingest.env"
    added = moclo("accounts", "add", "ingest", "ingest", "--env-out", str(env_file))
    assert added.returncode == 0, added.stderr
    lines = env_file.read_text().splitlines()
    assert lines[0] == "MOCLO_MQTT_USERNAME=ingest"
    secret = lines[1].removeprefix("MOCLO_MQTT_PASSWORD=")
    assert secret not in added.stdout + added.stderr
    assert mode(env_file) == 0o600
    app = moclo("accounts", "add", "app", "farm-app", "--tenant", "farm", "--json")
    assert app.returncode == 0, app.stderr
    assert json.loads(app.stdout)["tenant"] == "farm"
    no_tenant = moclo("accounts", "add", "operator", "vet")
    assert no_tenant.returncode == 2 and "give --tenant" in no_tenant.stderr
    no_tenant = moclo("accounts", "add", "clinician", "dr-lee")
    assert no_tenant.returncode == 2 and "a clinician account belongs" in no_tenant.stderr
    clinician = moclo("accounts", "add", "clinician", "dr-lee", "--tenant", "hospital", "--json")
    assert clinician.returncode == 0, clinician.stderr
    assert json.loads(clinician.stdout)["role"] == "clinician"
    hashed = moclo("accounts", "add", "app", "#", "--tenant", "farm")
    assert hashed.returncode == 2 and "account name '#'" in hashed.stderr
    listed = json.loads(moclo("accounts", "list", "--json").stdout)
    assert [(a["name"], a["role"]) for a in listed] == [
        ("dr-lee", "clinician"),
        ("farm-app", "app"),
        ("ingest", "ingest"),
    ]
    assert moclo("accounts", "revoke", "farm-app").returncode == 0

    target = tmp_path / "elsewhere"
    written = moclo("broker-auth", "write", str(target))
    assert written.returncode == 0, written.stderr
    printed = written.stdout.splitlines()[1:]
    assert printed[:3] == [
        "allow_anonymous false",
        f"password_file {target / 'passwords'}",
        f"acl_file {target / 'acl'}",
    ]
    assert "use_username_as_clientid true" in printed  # tests/test_client_id_takeover.py
    assert "\ningest:$7$101$" in (target / "passwords").read_text()
    assert "farm-app" not in (target / "acl").read_text()


def test_registry_changes_reload_the_local_broker(cli_env: Path, tmp_path: Path) -> None:
    # The local broker reads the files in the broker folder and keeps its pid there.
    auth = write_broker_auth(
        Registry(cli_env / "registry.sqlite"), cli_env / "broker", prefix="demo"
    )
    broker = MosquittoServer(
        tmp_path / "mq", free_port(), password_file=auth.password_file, acl_file=auth.acl_file
    )
    broker.start()
    try:
        assert broker.pid is not None
        (cli_env / "broker" / "mosquitto.pid").write_text(f"{broker.pid}\n")
        added = moclo("devices", "add", "farm", "cow_tracker", "cow-0001", "--json")
        assert f"broker (pid {broker.pid}) reloaded" in added.stderr
        password = json.loads(added.stdout)["password"]
        wait_until(
            lambda: connack_code(broker.port, "farm.cow-0001", password) == 0,
            what="the new device's login to be accepted",
        )
        moclo("devices", "revoke", "farm", "cow-0001")
        wait_until(
            lambda: connack_code(broker.port, "farm.cow-0001", password) == 135,
            what="the revoked device's login to be refused",
        )
    finally:
        broker.stop()
    # A stale pid file (the broker is gone) is not signalled.
    stale = moclo("devices", "add", "farm", "cow_tracker", "cow-0002")
    assert stale.returncode == 0 and "no local broker to reload" in stale.stderr


def test_no_command_takes_a_secret_as_an_argument() -> None:
    from moclo.cli import build_parser

    def walk(parser: argparse.ArgumentParser, path: str) -> list[str]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found += walk(sub, f"{path} {name}")
                continue
            # A flag named for a secret, or a positional argument that is one (`tokens revoke
            # TOKEN` takes a token's id or name, which is not).
            flags = " ".join(action.option_strings).lower()
            if any(w in flags for w in ("password", "secret", "token")) or any(
                w in action.dest.lower() for w in ("password", "secret")
            ):
                found.append(f"{path}: {flags or action.dest}")
        return found

    assert walk(build_parser(), "moclo") == []


def test_devices_types_and_schema_need_no_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOCLO_INFLUX_URL", "not a url")
    assert moclo("devices", "types").returncode == 0
    assert moclo("devices", "schema", "fridge").returncode == 0
    assert moclo("devices", "list").returncode == 2  # the registry commands do


# -- ingest with a registry -----------------------------------------------------------------


def metric(ingest: RunningIngest, name: str) -> float:
    import httpx

    assert ingest.ingest is not None and ingest.ingest.http_port
    text = httpx.get(f"http://127.0.0.1:{ingest.ingest.http_port}/metrics").text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_ingest_rejects_unregistered_and_revoked_devices_without_a_restart(
    settings: Settings, influx: Influx, tmp_path: Path
) -> None:
    registry = Registry(settings.registry)
    registry.add_device("farm", "cow_tracker", "cow-0001")
    checked = settings.model_copy(update={"unregistered": "reject"})
    p = settings.topic_prefix
    own = f"{p}/farm/cow_tracker/cow-0001/telemetry"
    stranger = f"{p}/farm/cow_tracker/cow-0666/telemetry"
    with RunningIngest(checked, IngestOptions(linger_s=0.05)) as running:
        publish_all(
            settings.mqtt_url, [(own, cow_json(1795327200, 1)), (stranger, cow_json(1795327200, 1))]
        )
        wait_until(
            lambda: (
                influx.count("moclo_rejected", "error") == 1
                and influx.count("cow_tracker", "seq") == 1
            ),
            what="one reading stored and one rejected",
        )
        [row] = influx.query('SELECT * FROM "moclo_rejected"')
        assert row["reason"] == "unregistered_device" and "cow-0666" in row["error"]
        # /metrics counts a batch once its write is answered, a moment after the rows are
        # readable: wait until both messages are handled, then the counters are final.
        wait_until(lambda: running.stats.messages == 2, what="both messages handled")
        assert metric(running, 'moclo_rejected_total{reason="unregistered_device"}') == 1
        assert metric(running, "moclo_registered_devices") == 1

        registry.revoke_device("farm", "cow-0001")
        wait_until(lambda: metric(running, "moclo_registered_devices") == 0, timeout_s=10,
                   what="ingest to see the revocation")  # fmt: skip
        publish_all(settings.mqtt_url, [(own, cow_json(1795327260, 2))])
        wait_until(
            lambda: influx.count("moclo_rejected", "error") == 2,
            what="the revoked device's reading rejected",
        )
        assert influx.count("cow_tracker", "seq") == 1
        registry.add_device("farm", "cow_tracker", "cow-0666")
        wait_until(lambda: metric(running, "moclo_registered_devices") == 1, timeout_s=10,
                   what="ingest to see the new device")  # fmt: skip
        publish_all(settings.mqtt_url, [(stranger, cow_json(1795327320, 3))])
        wait_until(lambda: influx.count("cow_tracker", "seq") == 2, what="the new device stored")


def test_ingest_in_flag_mode_stores_and_notes_unregistered_devices(
    settings: Settings, influx: Influx
) -> None:
    Registry(settings.registry).add_device("farm", "cow_tracker", "cow-0001")
    flagging = settings.model_copy(update={"unregistered": "flag"})
    p = settings.topic_prefix
    messages = [
        (f"{p}/farm/cow_tracker/cow-0001/telemetry", cow_json(1795327200, 1)),
        *(
            (f"{p}/farm/cow_tracker/cow-0666/telemetry", cow_json(1795327200 + n, n))
            for n in range(3)
        ),
        (f"{p}/farm/cow_tracker/cow-0777/telemetry", cow_json(1795327200, 1)),
    ]
    with RunningIngest(flagging, IngestOptions(linger_s=0.05)) as running:
        publish_all(settings.mqtt_url, messages)
        wait_until(lambda: influx.count("cow_tracker", "seq") == 5, what="all five stored")
        wait_until(lambda: metric(running, "moclo_unregistered_messages_total") == 4,
                   what="four flagged messages counted")  # fmt: skip
        noted = influx.query('SELECT * FROM "moclo_unregistered"')
        assert sorted(row["device_id"] for row in noted) == ["cow-0666", "cow-0777"]
        assert {row["tenant"] for row in noted} == {"farm"}
        assert influx.count("moclo_rejected", "error") == 0


def test_provision_refuses_to_turn_an_account_into_another_service_and_keeps_it(
    tmp_path: Path,
) -> None:
    """Before a revoked name could come back only with the same reads, provision revoked the
    account and issued it again in its new role; now that would revoke it and then fail."""
    registry = Registry(tmp_path / "registry.sqlite")
    assert ensure_account(registry, AccountPlan("ingest", "svc", tmp_path / "svc.pw")) == "issued"
    with pytest.raises(RegistryError, match="is the ingest account; a name keeps its role"):
        ensure_account(registry, AccountPlan("serve", "svc", tmp_path / "svc.pw"))
    assert [(a.name, a.role) for a in registry.accounts()] == [("svc", "ingest")]
    assert ensure_account(registry, AccountPlan("ingest", "svc", tmp_path / "svc.pw")) == "kept"
