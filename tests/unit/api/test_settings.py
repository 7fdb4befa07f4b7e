"""Settings: PROPVISOR_* environment over the TOML file over embedded defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pydantic
import pytest

from api.settings import CONFIG_ENV, Settings, load_settings


@pytest.fixture(autouse=True)
def no_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No PROPVISOR_* variables and an empty working directory, whatever the host has."""
    for name in list(os.environ):
        if name.upper().startswith("PROPVISOR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "propvisor.toml"
    path.write_text(text)
    return path


def test_settings_when_nothing_configured_then_embedded_defaults() -> None:
    settings = load_settings()

    assert settings.database_url == "sqlite+aiosqlite:///var/propvisor.db"
    assert settings.platform == "simulator"
    assert settings.shards == 0
    assert settings.ray_address is None
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8080)


def test_settings_when_toml_file_given_then_its_values_replace_defaults(tmp_path: Path) -> None:
    path = toml(tmp_path, 'shards = 3\nsimulator_seed = 7\ndatabase_url = "postgresql://db/p"\n')

    settings = load_settings(path)

    assert (settings.shards, settings.simulator_seed) == (3, 7)
    assert settings.database_url == "postgresql://db/p"
    assert settings.http_port == 8080


def test_settings_when_env_and_toml_both_set_then_env_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = toml(tmp_path, "shards = 3\nsimulator_seed = 7\n")
    monkeypatch.setenv("PROPVISOR_SHARDS", "5")

    settings = load_settings(path)

    assert settings.shards == 5
    assert settings.simulator_seed == 7


def test_settings_when_explicit_override_then_it_beats_env_and_none_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = toml(tmp_path, "shards = 3\nhttp_port = 9000\n")
    monkeypatch.setenv("PROPVISOR_SHARDS", "5")

    settings = load_settings(path, shards=9, http_port=None)

    assert (settings.shards, settings.http_port) == (9, 9000)


def test_settings_when_config_path_comes_from_env_then_that_file_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(toml(tmp_path, "dashboard_port = 9999\n")))

    assert load_settings().dashboard_port == 9999


def test_settings_when_toml_has_an_unknown_key_then_rejected_naming_it(tmp_path: Path) -> None:
    path = toml(tmp_path, "shards = 2\nshard_count = 4\n")

    with pytest.raises(pydantic.ValidationError, match="shard_count"):
        load_settings(path)


def test_settings_when_toml_value_out_of_range_then_rejected_naming_it(tmp_path: Path) -> None:
    path = toml(tmp_path, "http_port = 70000\n")

    with pytest.raises(pydantic.ValidationError, match="http_port"):
        load_settings(path)


def test_settings_when_env_value_invalid_then_rejected_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROPVISOR_SHARDS", "-1")

    with pytest.raises(pydantic.ValidationError, match="shards"):
        load_settings()


def test_settings_when_config_file_missing_then_error_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "propvisor.toml"

    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_settings(missing)


def test_settings_when_config_env_points_nowhere_then_error_names_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "gone.toml"
    monkeypatch.setenv(CONFIG_ENV, str(missing))

    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_settings()


def test_settings_when_built_directly_then_unknown_arguments_are_rejected() -> None:
    with pytest.raises(pydantic.ValidationError, match="colour"):
        Settings(colour="red")  # type: ignore[call-arg]
