"""Settings: environment, flags over environment, and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import ENVIRONMENT, Settings, SettingsError


def test_defaults_match_the_documented_ones() -> None:
    settings = Settings.load({})
    assert (
        settings.mqtt_url,
        settings.influx_url,
        settings.influx_db,
        settings.topic_prefix,
        settings.influx_token,
    ) == ("mqtt://127.0.0.1:1883", "http://127.0.0.1:8086", "moclo", "moclo", None)


def test_flags_override_the_environment() -> None:
    env = {"MOCLO_MQTT_URL": "mqtt://broker:1884", "MOCLO_INFLUX_DB": "farm"}
    settings = Settings.load(env, influx_db="clinic", mqtt_url=None)
    assert settings.mqtt_url == "mqtt://broker:1884"
    assert settings.influx_db == "clinic"


def test_credentials_come_from_the_url() -> None:
    endpoint = Settings.load({"MOCLO_MQTT_URL": "mqtt://ingest:s%40cret@broker"}).mqtt
    assert (endpoint.username, endpoint.password, endpoint.port) == ("ingest", "s@cret", 1883)
    assert "s@cret" not in endpoint.display()


@pytest.mark.parametrize(
    ("env", "flags", "named"),
    [
        ({"MOCLO_MQTT_URL": "http://broker"}, {}, "MOCLO_MQTT_URL"),
        ({"MOCLO_MQTT_URL": "mqtt://broker:99999"}, {}, "MOCLO_MQTT_URL"),
        ({"MOCLO_INFLUX_URL": "influx:8086"}, {}, "MOCLO_INFLUX_URL"),
        ({}, {"topic_prefix": "moclo/#"}, "--topic-prefix"),
    ],
    ids=["mqtt-scheme", "mqtt-port", "influx-scheme", "prefix-wildcard-flag"],
)
def test_a_bad_setting_is_named_with_what_is_allowed(
    env: dict[str, str], flags: dict[str, str], named: str
) -> None:
    with pytest.raises(SettingsError, match=named) as caught:
        Settings.load(env, **flags)
    assert "must" in str(caught.value)


def test_errors_and_reprs_never_show_secrets() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.load({"MOCLO_MQTT_URL": "http://user:hunter2@broker"})
    assert "hunter2" not in str(caught.value)
    settings = Settings.load({"MOCLO_INFLUX_TOKEN": "tok-123"})
    assert "tok-123" not in repr(settings)
    assert settings.influx_token_value == "tok-123"


def test_every_variable_is_documented_in_the_configuration_page(repo_root) -> None:  # type: ignore[no-untyped-def]
    readme = (repo_root / "docs" / "configuration.md").read_text()
    for variable in ENVIRONMENT.values():
        assert f"`{variable}`" in readme


def test_ingests_client_id_is_its_username_unless_set() -> None:
    """Moclo's brokers name a connection by its login, so by default ingest's client id (its
    session, its spool folder) is its username; MOCLO_INGEST_CLIENT_ID still wins."""
    assert Settings.load({"MOCLO_MQTT_USERNAME": "ingest-a"}).ingest_id == "ingest-a"
    assert Settings.load({"MOCLO_MQTT_URL": "mqtt://ingest-b:pw@host:1883"}).ingest_id == (
        "ingest-b"
    )
    both = {"MOCLO_MQTT_USERNAME": "ingest-a", "MOCLO_INGEST_CLIENT_ID": "mine"}
    assert Settings.load(both).ingest_id == "mine"
    # A username that cannot name a folder (or would be too long for an id) is not used.
    assert Settings.load({"MOCLO_MQTT_USERNAME": "me/../x"}).ingest_id == "moclo-ingest"


def test_the_documented_defaults() -> None:
    from ingest.decode import Limits
    from ingest.options import IngestOptions
    from moclo.cli import build_parser

    settings = Settings.load({})
    assert (settings.ingest_id, settings.spool_dir, settings.http_listen) == (
        "moclo-ingest",
        ".moclo/spool",
        "127.0.0.1:9108",
    )
    limits = Limits()
    assert (limits.max_payload_bytes, limits.max_future_s, limits.max_past_s) == (
        256 * 1024,
        600,
        90 * 86_400,
    )
    assert (limits.new_devices_burst, limits.new_devices_per_minute) == (10_000, 1_000)
    options = IngestOptions()
    assert (options.batch_messages, options.linger_s, options.window) == (2_000, 0.02, 10_000)
    assert (options.spool_max_bytes, options.stall_after_s) == (1024**3, 60)
    up = build_parser().parse_args(["up"])
    assert (up.incident_every, up.interval, up.devices) == (
        120,
        2,
        {"cow_tracker": 20, "thermostat": 5},
    )


def test_every_variable_is_in_the_commands_help() -> None:
    from moclo.services_args import EPILOG

    for variable in ENVIRONMENT.values():
        assert variable in EPILOG, variable


def test_broker_credentials_from_the_environment_override_the_url() -> None:
    settings = Settings.load(
        {
            "MOCLO_MQTT_URL": "mqtts://old:pw@broker:8883",
            "MOCLO_MQTT_USERNAME": "ingest",
            "MOCLO_MQTT_PASSWORD": "s3cret-pw",
            "MOCLO_MQTT_CA_FILE": "/etc/moclo/ca.crt",
        }
    )
    endpoint = settings.mqtt
    assert (endpoint.username, endpoint.password) == ("ingest", "s3cret-pw")
    assert endpoint.ca_file == "/etc/moclo/ca.crt"
    assert "s3cret-pw" not in repr(settings) and "s3cret-pw" not in endpoint.display()


def test_a_password_is_refused_on_the_command_line(repo_root) -> None:  # type: ignore[no-untyped-def]
    from tests.helpers import moclo

    result = moclo("alerts", "--mqtt-url", "mqtt://u:hunter2@127.0.0.1:1")
    assert result.returncode == 2
    assert "must not carry a password" in result.stderr and "MOCLO_MQTT_PASSWORD" in result.stderr
    assert "hunter2" not in result.stderr


def test_a_secret_can_come_from_a_file_named_by_its_FILE_variable(tmp_path: Path) -> None:
    password = tmp_path / "mqtt-password"
    password.write_text("pw-from-a-file\n")
    token = tmp_path / "influx-token"
    token.write_text("tok-from-a-file")
    settings = Settings.load(
        {"MOCLO_MQTT_PASSWORD_FILE": str(password), "MOCLO_INFLUX_TOKEN_FILE": str(token)}
    )
    assert settings.mqtt.password == "pw-from-a-file"  # the trailing newline is not part of it
    assert settings.influx_token_value == "tok-from-a-file"
    assert "pw-from-a-file" not in repr(settings)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        (
            {"MOCLO_MQTT_PASSWORD": "a", "MOCLO_MQTT_PASSWORD_FILE": "{dir}/pw"},
            "set MOCLO_MQTT_PASSWORD or MOCLO_MQTT_PASSWORD_FILE, not both",
        ),
        (
            {"MOCLO_MQTT_PASSWORD_FILE": "{dir}/missing"},
            "MOCLO_MQTT_PASSWORD_FILE: cannot read {dir}/missing: No such file or directory",
        ),
        ({"MOCLO_WEBHOOK_URL_FILE": "{dir}/empty"}, "MOCLO_WEBHOOK_URL_FILE: {dir}/empty is empty"),
    ],
    ids=["both", "missing", "empty"],
)
def test_a_secret_file_that_cannot_be_used_is_a_clear_error(
    tmp_path: Path, environ: dict[str, str], expected: str
) -> None:
    (tmp_path / "pw").write_text("secret-in-file\n")
    (tmp_path / "empty").write_text("\n")
    environ = {k: v.format(dir=tmp_path) for k, v in environ.items()}
    with pytest.raises(SettingsError) as caught:
        Settings.load(environ)
    assert str(caught.value) == expected.format(dir=tmp_path)
    assert "secret-in-file" not in str(caught.value)


def test_every_secret_file_variable_is_documented(repo_root: Path) -> None:
    from core.settings import SECRET_FILES
    from moclo.services_args import EPILOG

    readme = (repo_root / "docs" / "configuration.md").read_text()
    for variable in SECRET_FILES.values():
        assert variable in EPILOG, variable
        assert f"`{variable}`" in readme, variable


def test_the_configuration_page_holds_the_generated_settings_table(repo_root: Path) -> None:
    """The table is written once, in the Settings declarations; CI fails when the committed
    page differs from what `python -m moclo.settings_doc` renders from them."""
    from moclo.settings_doc import CONFIGURATION_PAGE, main, with_table

    assert repo_root / "docs" / "configuration.md" == CONFIGURATION_PAGE
    page = CONFIGURATION_PAGE.read_text()
    assert with_table(page) == page, "out of date: run python -m moclo.settings_doc"
    assert main(["--check"]) == 0


def test_every_setting_is_documented_where_it_is_declared() -> None:
    for name, field in Settings.model_fields.items():
        assert field.title and field.description, name
