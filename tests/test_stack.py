"""Local servers: errors that say what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from moclo.stack import MosquittoServer, ServerError, find_executable


def test_a_missing_server_names_the_package_to_install() -> None:
    with pytest.raises(ServerError, match="apt-get install no-such-package"):
        find_executable("no-such-server-binary", package="no-such-package")


def test_a_server_that_cannot_start_shows_its_log(
    tmp_path: Path, mosquitto: MosquittoServer
) -> None:
    clash = MosquittoServer(tmp_path / "clash", mosquitto.port)  # the port is taken
    with pytest.raises(ServerError) as caught:
        clash.start(timeout_s=10)
    message = str(caught.value)
    assert "mosquitto" in message and str(clash.log_path) in message
    assert not clash.running()
