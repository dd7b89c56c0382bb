"""What `moclo broker-auth write` prints for a mosquitto.conf."""

from __future__ import annotations

from pathlib import Path

from access.broker import LISTENER_SETTINGS, BrokerAuth


def test_the_printed_lines_warn_what_they_do_before_the_first_listener(tmp_path: Path) -> None:
    """The block is easy to paste at the top of a mosquitto.conf, above its `listener` lines.
    There Mosquitto 2.0.11 does not ignore `use_username_as_clientid`: it configures its default
    listener and opens it on port 1883 on every interface, IPv4 and IPv6, beside the configured
    ones (or fails to start if 1883 is taken). Checked by hand, not here: a test must not open
    a port on every interface. The printed advice must say so, not only where the line
    belongs."""
    printed = "\n".join(BrokerAuth(tmp_path / "passwords", tmp_path / "acl").config_lines())
    assert LISTENER_SETTINGS[0] in printed
    assert "before the first `listener` line" in printed
    assert "port 1883 on every interface" in printed
