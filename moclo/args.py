"""Argument types and flag groups that more than one command's parser uses."""

from __future__ import annotations

import argparse
from typing import Any, Protocol

from core.durations import parse_duration


class Commands(Protocol):
    """A group of subcommands, as `ArgumentParser.add_subparsers()` returns it: the type that a
    command's `add_parser` takes, named by what it does instead of by argparse's private class."""

    def add_parser(self, name: str, /, *args: Any, **kwargs: Any) -> argparse.ArgumentParser: ...


def duration(text: str) -> float:
    """An argparse type: "90s", "15m", "2h", "1d" or a number of seconds."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def connection_flags(parser: argparse.ArgumentParser, *, influx: bool = True) -> None:
    """The flags that override the connection settings of the environment."""
    group = parser.add_argument_group("connections (override the environment)")
    group.add_argument("--mqtt-url", help="MQTT broker (MOCLO_MQTT_URL)")
    group.add_argument(
        "--mqtt-protocol",
        choices=("5", "3.1.1"),
        help="MQTT version: 5 (default), or 3.1.1 for the distributed engine (MOCLO_MQTT_PROTOCOL)",
    )
    if influx:
        group.add_argument("--influx-url", help="InfluxDB (MOCLO_INFLUX_URL)")
        group.add_argument("--influx-db", help="database or bucket (MOCLO_INFLUX_DB)")
    group.add_argument("--topic-prefix", help="topic prefix (MOCLO_TOPIC_PREFIX)")
