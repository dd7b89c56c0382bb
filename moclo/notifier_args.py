"""`moclo notify run` and `moclo notify test PERSON`: the notifier and a channel check."""

from __future__ import annotations

import argparse
import asyncio
import sys

from core.settings import Settings
from moclo import notify_args
from moclo.args import Commands, connection_flags

NOTIFY_EPILOG = """\
examples:
  moclo notify check notify.toml
  MOCLO_NOTIFY_FILE=notify.toml moclo notify run
  moclo notify test dr-jansen --file notify.toml
  moclo notify test farmer --json

`run` follows every alert change and automation notice (QoS 1, a persistent session), tells
the people the notify file routes them to, escalates what nobody acknowledges, and serves
/healthz and /metrics on MOCLO_NOTIFY_LISTEN. Channel URLs hold secrets: they are read from the
file (url, url_file, url_env) and never printed; only each channel's label is.
"""


def add_parser(commands: Commands) -> None:
    notify = commands.add_parser(
        "notify",
        help="the notifier: tell people about alerts (run), try a person's channels (test), "
        "check a notify file (check)",
        description="The notifier: who is told what is in the notify file (MOCLO_NOTIFY_FILE; "
        "see docs/notifications.md).",
        epilog=NOTIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = notify.add_subparsers(dest="notify_command", required=True, metavar="SUBCOMMAND")
    notify_args.add_check(sub)  # `moclo notify check`: the notify file alone, no settings
    run = sub.add_parser(
        "run",
        help="follow alert changes and notices and notify people until stopped",
        description="Follows alert changes and notices, keeps what it owes in an outbox "
        "(MOCLO_NOTIFY_OUTBOX), and sends through each person's channels; reads the notify "
        "file again when it changes. SIGTERM/Ctrl-C stops it; what is owed is sent after the "
        "next start.",
        epilog=NOTIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _file_flag(run)
    run.add_argument(
        "--listen",
        dest="notify_listen",
        metavar="HOST:PORT",
        help="where to serve /healthz and /metrics, or off (MOCLO_NOTIFY_LISTEN)",
    )
    connection_flags(run)
    test = sub.add_parser(
        "test",
        help="send a test message through each of a person's channels; say which worked",
        description="Sends one test message through each channel of PERSON (a name in the "
        "notify file) and says which worked. Exit code 0 if every channel took it, 1 if any "
        "failed, 2 if the file or the name is wrong.",
        epilog=NOTIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    test.add_argument("person", metavar="PERSON", help="a person's name in the notify file")
    _file_flag(test)
    test.add_argument(
        "--timeout", type=float, default=15.0, help="seconds per channel (default 15)"
    )
    test.add_argument("--json", action="store_true", help="one JSON object, for programs")


def _file_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--file",
        dest="notify_file",
        metavar="FILE",
        help="the notify file (MOCLO_NOTIFY_FILE)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from notify.file import NotifyFileError
    from notify.outbox import OutboxError

    try:
        if args.notify_command == "test":
            from moclo.notifier_cli import test_person

            return test_person(settings, args.person, timeout_s=args.timeout, as_json=args.json)
        return asyncio.run(_run(settings))
    except NotifyFileError as exc:
        print(f"moclo: the notify file has problems:\n{exc}", file=sys.stderr)
        print("moclo: the notify file is set by --file or MOCLO_NOTIFY_FILE", file=sys.stderr)
        return 2
    except OutboxError as exc:
        print(f"moclo: {exc}", file=sys.stderr)
        return 1


async def _run(settings: Settings) -> int:
    from moclo.signals import install_stop_handlers
    from notify.service import run_notifier

    stop = asyncio.Event()
    install_stop_handlers(stop)
    await run_notifier(settings, stop)
    return 0
