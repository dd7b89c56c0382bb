"""`moclo --version` prints the installed package's version and exits 0, as every CLI does."""

from __future__ import annotations

from importlib.metadata import version

from tests.helpers import moclo


def test_version_prints_the_package_version_and_exits_0() -> None:
    result = moclo("--version", timeout_s=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"moclo {version('moclo')}\n"
    assert version("moclo") == "0.1.0"


def test_control_no_command_is_still_an_error() -> None:
    result = moclo(timeout_s=60)
    assert result.returncode == 2
    assert "required: COMMAND" in result.stderr
