"""`moclo accounts`, `moclo broker-auth write` and `moclo provision`. Argument parsing is in
`moclo/accounts_args.py`; like `moclo devices`, a password is shown once or written to a 0600
file, and every change rewrites the broker's files (`devices_cli.after_change`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from access.broker import BrokerAuthError, local_broker_pid, reload_broker, write_broker_auth
from access.issued import IssuedFileError, check_env_file, write_account_env
from access.registry import Registry, RegistryError, Role
from core.settings import Settings
from moclo.devices_cli import after_change, print_table

_USE: dict[Role, str] = {
    "ingest": "set MOCLO_MQTT_USERNAME and MOCLO_MQTT_PASSWORD in `moclo ingest`'s environment",
    "serve": "set MOCLO_MQTT_USERNAME and MOCLO_MQTT_PASSWORD in `moclo serve`'s environment",
    "notify": "set MOCLO_MQTT_USERNAME and MOCLO_MQTT_PASSWORD in `moclo notify run`'s environment",
    "app": "the app may receive {tenant}'s alerts ({prefix}/{tenant}/alerts/+), alert "
    "state ({prefix}/{tenant}/alert-state/#) and command status "
    "({prefix}/{tenant}/command-status/+), and publish nothing",
    "operator": "for `moclo alerts`, `moclo alerts ack`, `moclo command` and `moclo desired` "
    "of {tenant}: set MOCLO_MQTT_USERNAME and MOCLO_MQTT_PASSWORD in the environment",
    "clinician": "for `moclo alerts`, `moclo alerts ack`, `moclo command` and `moclo desired` "
    "of {tenant}, medical devices included: set MOCLO_MQTT_USERNAME and MOCLO_MQTT_PASSWORD "
    "in the environment",
}


def add(
    settings: Settings,
    role: Role,
    name: str,
    *,
    tenant: str | None,
    env_out: Path | None,
    as_json: bool,
) -> int:
    registry = Registry(settings.registry)
    try:
        if env_out is not None:
            # Checked before the account exists, so a refusal leaves nothing half done.
            check_env_file(env_out)
        credentials = registry.add_account(role, name, tenant=tenant)
        if env_out is not None:
            write_account_env(env_out, credentials)
    except (RegistryError, IssuedFileError) as exc:
        print(f"moclo: {exc}", file=sys.stderr)
        return 2
    use = _USE[role].format(tenant=tenant, prefix=settings.topic_prefix)
    if as_json:
        shown = {"role": role, "name": name, "tenant": tenant, "username": credentials.username}
        if env_out is None:
            shown["password"] = credentials.password
        else:
            shown["env_file"] = str(env_out)
        print(json.dumps(shown, indent=2))
    else:
        print(f"added {role} account {name}" + (f" of tenant {tenant}" if tenant else ""))
        print(f"  username  {credentials.username}")
        if env_out is None:
            print(f"  password  {credentials.password}")
            print("The password is shown this once and kept only as a hash.")
        else:
            print(f"  password  written to {env_out} (mode 0600)")
        print(f"To use it: {use}.")
    return after_change(settings, registry)


def revoke(settings: Settings, name: str) -> int:
    registry = Registry(settings.registry)
    try:
        registry.revoke_account(name)
    except RegistryError as exc:
        print(f"moclo: {exc}", file=sys.stderr)
        return 2
    print(f"revoked account {name}: its login is refused")
    return after_change(settings, registry)


def list_accounts(settings: Settings, *, include_revoked: bool, as_json: bool) -> int:
    try:
        records = Registry(settings.registry).accounts(include_revoked=include_revoked)
    except RegistryError as exc:
        print(f"moclo: {exc}", file=sys.stderr)
        return 2
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "name": r.name,
                        "role": r.role,
                        "tenant": r.tenant,
                        "created_at": r.created_at,
                        "revoked_at": r.revoked_at,
                    }
                    for r in records
                ],
                indent=2,
            )
        )
        return 0
    if not records:
        print("no accounts", file=sys.stderr)
        return 0
    columns = ["NAME", "ROLE", "TENANT", "ADDED"]
    rows = [[r.name, r.role, r.tenant or "-", r.created_at] for r in records]
    if include_revoked:
        columns.append("REVOKED")
        for row, record in zip(rows, records, strict=True):
            row.append(record.revoked_at or "-")
    print_table(columns, rows)
    return 0


def write_files(
    settings: Settings, directory: Path | None, *, reload_pid: int | None, group: str | None
) -> int:
    directory = directory or settings.broker_auth_path
    if directory is None:
        print(
            "moclo: MOCLO_BROKER_AUTH_DIR is off: name the folder, `moclo broker-auth write DIR`",
            file=sys.stderr,
        )
        return 2
    registry = Registry(settings.registry)
    try:
        auth = write_broker_auth(registry, directory, prefix=settings.topic_prefix, group=group)
        pid = reload_pid if reload_pid is not None else local_broker_pid(directory)
        if pid is not None:
            reload_broker(pid)
    except (RegistryError, BrokerAuthError) as exc:
        print(f"moclo: {exc}", file=sys.stderr)
        return 1
    logins = registry.mqtt_logins()
    devices = sum(1 for login in logins if login.role == "device")
    print(
        f"wrote {auth.password_file} and {auth.acl_file}: {devices} devices, "
        f"{len(logins) - devices} accounts"
        + (f"; broker (pid {pid}) reloaded" if pid is not None else ""),
        file=sys.stderr,
    )
    print("# mosquitto.conf (Mosquitto 2 reads both files again on SIGHUP):")
    print("\n".join(auth.config_lines()))
    return 0


def provision(
    settings: Settings,
    *,
    accounts: list[list[str]],
    devices: list[str] | None,
    group: str | None,
) -> int:
    from access.provision import AccountPlan, ensure_account, ensure_devices
    from moclo.devices_cli import scenario_devices

    directory = settings.broker_auth_path
    if directory is None:
        print(
            "moclo: MOCLO_BROKER_AUTH_DIR is off: provision writes the broker's files, "
            "so set it to the folder the broker reads",
            file=sys.stderr,
        )
        return 2
    plans = []
    for role, name, file in accounts:
        if role not in ("ingest", "serve", "notify"):
            print(
                f"moclo: --account {role} {name}: ROLE must be ingest, serve or notify (apps and "
                "operators belong to people: `moclo accounts add`)",
                file=sys.stderr,
            )
            return 2
        plans.append(AccountPlan(role, name, Path(file)))  # type: ignore[arg-type]
    registry = Registry(settings.registry)
    try:
        for plan in plans:
            outcome = ensure_account(registry, plan)
            where = "" if outcome == "kept" else f", password written to {plan.password_file}"
            print(f"account {plan.name} ({plan.role}): {outcome}{where}")
        if devices is not None:
            scenario, csv_file = devices
            specs = scenario_devices(scenario)
            done = ensure_devices(registry, specs, Path(csv_file))
            print(
                f"devices of {scenario}: {done.kept} kept, {done.issued} issued, "
                f"{done.reissued} issued again (their old logins revoked); logins in {csv_file} "
                "(mode 0600)"
            )
        auth = write_broker_auth(registry, directory, prefix=settings.topic_prefix, group=group)
    except (RegistryError, IssuedFileError, BrokerAuthError, ValueError) as exc:
        print(f"moclo: {exc}", file=sys.stderr)
        return 1
    logins = registry.mqtt_logins()
    print(f"broker files: {auth.password_file} and {auth.acl_file} ({len(logins)} logins)")
    return 0
