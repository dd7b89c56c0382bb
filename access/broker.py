"""Mosquitto's `password_file` and `acl_file`, generated from the registry.

Both files are written from scratch each time (to a temporary file, then renamed over the old
one, so the broker never reads half a file), mode 0600, or 0640 with a `group` for a broker
that runs as another user (Debian's service runs as `mosquitto`). SIGHUP makes Mosquitto 2 read
them again; it then disconnects clients whose login is gone, so a revocation takes effect at
once, not at the device's next connect.

What each login may do, `{p}` being the topic prefix (an ACL grants, everything else is
refused; Mosquitto 2.0 grants every SUBSCRIBE and filters at delivery, and drops a PUBLISH
the ACL does not allow):

- a device `{t}.{id}`, its own topics `{p}/{t}/{type}/{id}/...` only: write `telemetry`,
  `command-results`, `commands/get`, `desired/get` and `reported`; read `commands` and
  `desired` (which only ingest writes: not even the device itself may);
- ingest: read `{p}/+/+/+/telemetry`, `{p}/+/acks/#`, every device's `command-results`,
  `commands/get`, `desired/get` and `reported` (`{p}/+/+/+/LEVEL`), `{p}/+/command-requests/#`
  and `{p}/+/desired-requests/#`; as `ingest~alerts`, its announcer, write `{p}/+/alerts/+`
  and `{p}/+/alert-state/+/+`; as `ingest~commands`, the gateway's sender, write
  `{p}/+/+/+/commands`, `{p}/+/+/+/desired`, `{p}/+/command-status/+` and `{p}/+/notices/+`;
- serve account `s`: read `{p}/+/+/+/telemetry`, `{p}/+/alerts/+`, `{p}/+/alert-state/#`,
  `{p}/+/command-status/+` and `{p}/+/notices/+`; as `s~acks`, read `{p}/+/alerts/+` and write
  `{p}/+/acks/s/on-behalf` (the dashboard acknowledges for the token's holder); as
  `s~commands`, read `{p}/+/command-status/+` and write `{p}/+/command-requests/s/on-behalf`
  and `{p}/+/desired-requests/s/on-behalf` (it asks for the token's holder);
- notifier account `n` (`moclo notify run`, every tenant): read `{p}/+/alerts/+` and
  `{p}/+/notices/+`, nothing else: no telemetry, and it writes nothing;
- app of tenant `t`: read `{p}/t/alerts/+`, `{p}/t/alert-state/#`, `{p}/t/command-status/+`
  and `{p}/t/notices/+`; write nothing;
- operator or clinician `o` of tenant `t`: as the app, and write `{p}/t/acks/o`,
  `{p}/t/command-requests/o` and `{p}/t/desired-requests/o`; as `o~acks` (`moclo alerts
  ack`), read `{p}/t/alerts/+` and write `{p}/t/acks/o`; as `o~commands` (`moclo command`,
  `moclo desired`), read `{p}/t/command-status/+` and write its two request topics. Whether
  the request is allowed (a clinician's pacemaker) is ingest's question, not the broker's.

An acknowledgement's or a request's topic names the account that sent it and each account may
write only its own, so ingest takes the acknowledger or asker from the topic; only on a serve
account's `on-behalf` topic does it believe the payload's `by` and `role` (the person serve
authenticated). An account's `~acks` and `~commands` logins write under the account's name,
not their own: they are the same account. No person's login writes to a device.

The broker names every connection by its login (`use_username_as_clientid`, see
`LISTENER_SETTINGS`), so no login can take another's client id and with it a session and what
is queued for it. A login then holds one connection at a time: a second one with the same
login takes the first one's place. The `~` logins (core/mqtt.py `connection_login`) give
ingest, serve, operators and clinicians, which need more than one connection, others with the
same secret and only the rights that connection uses.
"""

from __future__ import annotations

import functools
import grp
import os
import re
import signal
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from access.registry import ACTING_ROLES, MqttLogin, Registry
from core.mqtt import connection_login
from devices.rfc3339 import now_seconds
from devices.topics import (
    COMMAND_REQUESTS,
    COMMANDS,
    DESIRED,
    DESIRED_REQUESTS,
    DEVICE_UPLINK_LEVELS,
    acknowledgement_subscription,
    acknowledgement_topic,
    alert_subscription,
    command_status_subscription,
    device_subscription,
    device_topic,
    notice_subscription,
    on_behalf_acknowledgement_topic,
    on_behalf_request_topic,
    request_subscription,
    request_topic,
    telemetry_subscription,
    telemetry_topic,
)

PASSWORD_FILE = "passwords"
ACL_FILE = "acl"
PID_FILE = "mosquitto.pid"  # where the local broker's pid is kept, if one is known
_REQUESTS = (COMMAND_REQUESTS, DESIRED_REQUESTS)  # where people ask moclo to act
# Topic levels in an ACL line run to the end of the line; keep them to printable, space-free
# text so the file means exactly what was generated.
_SAFE_PREFIX = re.compile(r"[!-~]+")


# In each listener's section of every configuration moclo ships or generates (moclo/stack.py,
# deploy/mosquitto/mosquitto.conf, `config_lines`): Mosquitto 2.0 applies it to the listener
# it follows only. Before the first `listener` line it is not ignored: it sets up Mosquitto's
# default listener, which 2.0.11 then opens on port 1883 on every interface (IPv4 and IPv6),
# beside the configured ones.
# It replaces the client id a client sends with its username, so a valid login cannot take
# another login's id (wiping or taking over ingest's session and what is queued for it), and
# refuses clients without a username.
LISTENER_SETTINGS = ("use_username_as_clientid true",)

# Sizes, consistent with ingest's own limit (ingest/decode.py DEFAULT_MAX_PAYLOAD_BYTES; a test
# holds them equal). Without them a device may publish 268 MB and the broker queues up to a
# million of those for ingest, which reads each whole.
MAX_PAYLOAD_BYTES = 256 * 1024  # larger: ingest rejects it, recorded as payload_too_large
MAX_PACKET_BYTES = MAX_PAYLOAD_BYTES + 8 * 1024  # larger: the client is disconnected unread
# What the broker keeps for a persistent session (ingest's) while it is away: about 16 minutes
# of outage at 1,000 readings/s. The bytes bound is the count's at 512 bytes a message (a
# reading is 150-250 bytes; arrays are larger), so single readings meet the count first and
# large messages cannot make the broker hold 1,000,000 × 256 KiB. Beyond either, messages are
# dropped and counted in $SYS/broker/publish/messages/dropped.
MAX_QUEUED_MESSAGES = 1_000_000
MAX_QUEUED_BYTES = MAX_QUEUED_MESSAGES * 512

# With `persistence true`, Mosquitto writes its state (sessions, everything queued for them)
# every interval, so a kill -9 of the broker, or the machine failing, loses what it took and
# acknowledged since the last save: Mosquitto 2.0.11 saves once more than the interval has
# passed, checked each second, so every 6 s here (60 before: up to a minute). Each save writes
# every queued message (fsynced) on the broker's only thread: measured at 10,000 and 100,000
# queued in benchmarks/results/broker.md. By time, not by changes: `autosave_on_changes` would
# save more often the faster messages come, each save costing more as the queue grows.
AUTOSAVE_INTERVAL_S = 5

# Global settings of every configuration moclo ships or generates (moclo/stack.py,
# deploy/mosquitto/mosquitto.conf, `config_lines`; tests/test_broker_limits.py holds them equal).
#
# The size bound is `max_packet_size` alone: a packet over it closes the publisher's
# connection unread, which every client notices. `message_size_limit` would instead drop a
# payload over 256 KiB behind a plain PUBACK for MQTT 3.1.1 devices (a silent loss the device
# cannot see; Mosquitto itself recommends max_packet_size). A payload between 256 KiB and the
# packet bound reaches ingest, which rejects it as `payload_too_large`, recorded with its reason.
BROKER_SETTINGS = (
    f"max_packet_size {MAX_PACKET_BYTES}",
    f"max_queued_messages {MAX_QUEUED_MESSAGES}",
    f"max_queued_bytes {MAX_QUEUED_BYTES}",
    f"autosave_interval {AUTOSAVE_INTERVAL_S}",
    "autosave_on_changes false",
)


class BrokerAuthError(ValueError):
    """The broker's files cannot be written or the broker reloaded; the message says why."""


@dataclass(frozen=True)
class BrokerAuth:
    password_file: Path
    acl_file: Path

    def config_lines(self) -> list[str]:
        """What a mosquitto.conf needs to use these files safely."""
        return [
            "allow_anonymous false",
            f"password_file {self.password_file}",
            f"acl_file {self.acl_file}",
            "# Sizes consistent with ingest's own limits (256 KiB payload), and with",
            "# `persistence true`, how much a broker crash can lose (about 6 s):",
            *BROKER_SETTINGS,
            "# In the section of EVERY listener (after its `listener` line; Mosquitto applies",
            "# it to that listener only): a client's id is its login, so no login can take",
            "# another's session. Each login then holds one connection at a time.",
            "# Never before the first `listener` line: there Mosquitto 2.0 opens a listener of",
            "# its own on port 1883 on every interface.",
            *LISTENER_SETTINGS,
        ]


Entry = tuple[str, str]  # (access, topic): access is `read` or `write`


def broker_logins(login: MqttLogin, prefix: str) -> list[tuple[str, list[Entry]]]:
    """The broker logins of one registry login, each with its (access, topic) pairs: the login
    itself, and for ingest, serve, operators and clinicians the second connections' (see the
    module's docstring), which share the password."""
    role, tenant, name = login.role, login.tenant, login.username
    own = (name, acl_entries(login, prefix))
    if role == "ingest":
        announcer = [
            ("write", alert_subscription(prefix)),
            ("write", f"{prefix}/+/alert-state/+/+"),
        ]
        # The gateway's publisher: what it checked and recorded goes to the devices, and what
        # became of it to the people watching.
        sender = [
            ("write", device_subscription(prefix, COMMANDS)),
            ("write", device_subscription(prefix, DESIRED)),
            ("write", command_status_subscription(prefix)),
            ("write", notice_subscription(prefix)),  # what automations tell people
        ]
        return [
            own,
            (connection_login(name, "alerts"), announcer),
            (connection_login(name, "commands"), sender),
        ]
    if role not in ("serve", *ACTING_ROLES):
        return [own]
    # An acknowledgement or a request listens for ingest's answer, then publishes under the
    # account's own name (the topic names the account, whichever of its logins sent it),
    # exactly where the account itself may: serve only for the people it signed in.
    if role == "serve":
        watched = "+"
        acknowledged = on_behalf_acknowledgement_topic(prefix, "+", name)
        asked = [on_behalf_request_topic(prefix, "+", level, name) for level in _REQUESTS]
    else:
        assert tenant is not None, f"{role} account {name} has no tenant"
        watched, acknowledged = tenant, acknowledgement_topic(prefix, tenant, name)
        asked = [request_topic(prefix, tenant, level, name) for level in _REQUESTS]
    acknowledging = [("read", alert_subscription(prefix, watched)), ("write", acknowledged)]
    requesting = [
        ("read", command_status_subscription(prefix, watched)),
        *(("write", topic) for topic in asked),
    ]
    # `~acks`: the login's name is the broker's contract, kept.
    return [
        own,
        (connection_login(name, "acks"), acknowledging),
        (connection_login(name, "commands"), requesting),
    ]


def acl_entries(login: MqttLogin, prefix: str) -> list[Entry]:
    """(access, topic) pairs for one login's own connection."""
    role, tenant = login.role, login.tenant
    if role == "device":
        assert tenant and login.device_type and login.device_id
        own = functools.partial(device_topic, prefix, tenant, login.device_type, login.device_id)
        # Its own topics only; its commands and desired state come from ingest alone, which
        # checked who asked: not even the device may write them.
        return [
            ("write", telemetry_topic(prefix, tenant, login.device_type, login.device_id)),
            *(("write", own(level)) for level in DEVICE_UPLINK_LEVELS),
            ("read", own(COMMANDS)),
            ("read", own(DESIRED)),
        ]
    if role == "ingest":
        # Consuming only: it publishes as `USER~alerts` and `USER~commands` (broker_logins).
        return [
            ("read", telemetry_subscription(prefix)),
            ("read", acknowledgement_subscription(prefix)),
            *(("read", device_subscription(prefix, level)) for level in DEVICE_UPLINK_LEVELS),
            *(("read", request_subscription(prefix, level)) for level in _REQUESTS),
        ]
    if role == "serve":
        # The live stream; the dashboard's acknowledgements and requests go as `USER~acks`
        # and `USER~commands`.
        return [
            ("read", telemetry_subscription(prefix)),
            ("read", alert_subscription(prefix)),
            ("read", f"{prefix}/+/alert-state/#"),
            ("read", command_status_subscription(prefix)),
            ("read", notice_subscription(prefix)),
        ]
    if role == "notify":
        # What people are told about, of every tenant; no readings, and no writing at all.
        return [("read", alert_subscription(prefix)), ("read", notice_subscription(prefix))]
    assert tenant is not None, f"{role} account {login.username} has no tenant"
    reads = [
        ("read", alert_subscription(prefix, tenant)),
        ("read", f"{prefix}/{tenant}/alert-state/#"),
        ("read", command_status_subscription(prefix, tenant)),
        ("read", notice_subscription(prefix, tenant)),
    ]
    if role == "app":
        return reads
    if role in ACTING_ROLES:
        return [
            *reads,
            ("write", acknowledgement_topic(prefix, tenant, login.username)),
            *(
                ("write", request_topic(prefix, tenant, level, login.username))
                for level in _REQUESTS
            ),
        ]
    raise AssertionError(role)


def password_text(logins: Iterable[MqttLogin], prefix: str) -> str:
    return "".join(
        f"{username}:{login.password_hash}\n"
        for login in logins
        for username, _ in broker_logins(login, prefix)
    )


def acl_text(logins: Iterable[MqttLogin], prefix: str, *, source: str = "the registry") -> str:
    if _SAFE_PREFIX.fullmatch(prefix) is None:
        raise BrokerAuthError(
            f"topic prefix {prefix!r} cannot go into an ACL file: use printable characters "
            "without spaces (MOCLO_TOPIC_PREFIX)"
        )
    stamp = now_seconds(zulu=False)
    source = " ".join(source.split())  # a comment is one line, whatever the path holds
    blocks = [
        f"# Generated by moclo from {source} at {stamp}. Do not edit: it is rewritten\n"
        "# whenever a device or account is added or revoked (`moclo broker-auth write`).\n"
        "# No lines before the first `user`: a client gets only what its own block grants.\n"
    ]
    for login in logins:
        for username, entries in broker_logins(login, prefix):
            lines = [f"user {username}"]
            lines += [f"topic {access} {topic}" for access, topic in entries]
            blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def write_broker_auth(
    registry: Registry, directory: Path, *, prefix: str, group: str | None = None
) -> BrokerAuth:
    """Writes `directory/passwords` and `directory/acl` from the registry's active logins.

    With `group`, the files are 0640 and owned by that group (for a broker running as
    another user). Without it, files that were made so keep their group (a later `moclo
    devices add` must not lock the broker out of them); new files are 0600.
    """
    logins = registry.mqtt_logins()
    acl = acl_text(logins, prefix, source=str(registry.path))
    try:
        directory.mkdir(parents=True, exist_ok=True)
        auth = BrokerAuth(directory / PASSWORD_FILE, directory / ACL_FILE)
        gid = grp.getgrnam(group).gr_gid if group else _shared_group(auth.password_file)
        _write_atomically(auth.password_file, password_text(logins, prefix), gid)
        _write_atomically(auth.acl_file, acl, gid)
    except KeyError:
        raise BrokerAuthError(f"there is no group {group!r} on this machine") from None
    except OSError as exc:
        raise BrokerAuthError(
            f"cannot write the broker's password and ACL files in {directory}: {exc.strerror}"
        ) from None
    return auth


def reload_broker(pid: int) -> None:
    """SIGHUP: Mosquitto 2 reads its password and ACL files again."""
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise BrokerAuthError(f"no process {pid} to reload: is the broker running?") from None
    except PermissionError:
        raise BrokerAuthError(
            f"not allowed to signal process {pid}; reload the broker as its owner "
            "(kill -HUP PID, or systemctl reload mosquitto)"
        ) from None


def local_broker_pid(directory: Path) -> int | None:
    """The pid in `directory/mosquitto.pid` if that process is alive and is a mosquitto, else
    None. Checking the name keeps a stale file from making us signal a recycled pid."""
    try:
        pid = int((directory / PID_FILE).read_text().strip())
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    return pid if name == "mosquitto" else None


def _shared_group(path: Path) -> int | None:
    """The group an existing file is shared with (mode 0640), if it is."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return status.st_gid if status.st_mode & 0o040 else None


def _write_atomically(path: Path, text: str, gid: int | None) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as file:
            if gid is not None:
                os.fchown(file.fileno(), -1, gid)
            os.fchmod(file.fileno(), 0o640 if gid is not None else 0o600)
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Synced:
    auth: BrokerAuth
    reloaded_pid: int | None  # the local broker that was sent SIGHUP, if one was found


def sync_broker_auth(
    registry: Registry, directory: Path, *, prefix: str, group: str | None = None
) -> Synced:
    """Rewrites the broker's files after a registry change and reloads the local broker whose
    pid is in `directory/mosquitto.pid`, if it is running. A broker elsewhere that reads the
    files needs its own reload (`kill -HUP`, `systemctl reload mosquitto`)."""
    auth = write_broker_auth(registry, directory, prefix=prefix, group=group)
    pid = local_broker_pid(directory)
    if pid is not None:
        reload_broker(pid)
    return Synced(auth, pid)
