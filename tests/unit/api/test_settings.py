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
    assert [c.name for c in settings.pool()] == ["sim-1"]
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


def test_settings_when_toml_lists_connections_then_the_pool_has_each(tmp_path: Path) -> None:
    path = toml(
        tmp_path,
        """
[[connections]]
platform = "embedded"
name = "sim-a"
shards = 2

[[connections]]
platform = "matchtrader"
name = "mtr-1"
pushed = true
push_secret = "a-test-secret-of-enough-length"

[connections.matchtrader]
server = "mtr"
base_url = "https://broker.example"
api_key = "k"
system_uuid = "s"
payment_gateway_uuid = "g"
""",
    )

    pool = load_settings(path).pool()

    assert [(c.name, type(c).__name__) for c in pool] == [
        ("sim-a", "EmbeddedConnection"),
        ("mtr-1", "MatchTraderConnection"),
    ]
    assert pool[0].shards == 2
    assert pool[1].pushed
    # Match-Trader publishes 500 requests/min: the worker's default limit
    assert pool[1].worker().requests_per_second == pytest.approx(500 / 60)
    assert pool[1].worker().connection == "mtr-1"


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ('platform = "fix"\nname = "x"', "platform"),
        ('platform = "mt5"\nname = "m"', "mt5"),
        ('platform = "embedded"\nname = "a/b"', "name"),
        ('platform = "embedded"\nname = "x"\nshard = 2', "shard"),
    ],
)
def test_settings_when_a_connection_is_wrong_then_the_error_names_the_field(
    tmp_path: Path, table: str, named: str
) -> None:
    path = toml(tmp_path, f"[[connections]]\n{table}\n")

    with pytest.raises(pydantic.ValidationError, match=named):
        load_settings(path)


def test_settings_when_two_connections_share_a_name_then_refused(tmp_path: Path) -> None:
    table = '[[connections]]\nplatform = "embedded"\nname = "same"\n'
    path = toml(tmp_path, table * 2)

    with pytest.raises(pydantic.ValidationError, match="repeated: \\['same'\\]"):
        load_settings(path)


def test_settings_when_example_file_loaded_then_it_is_valid() -> None:
    example = Path(__file__).resolve().parents[3] / "deploy" / "propvisor.example.toml"

    settings = load_settings(example)

    assert [c.name for c in settings.pool()] == ["sim-a", "sim-b"]
