"""One settings model: `PROPVISOR_*` environment variables over an optional TOML file over defaults.

With no configuration at all the supervisor runs on embedded defaults: a local Ray, a SQLite file
database under `var/`, and the platform simulator.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bridge.connections import DEFAULT_CONNECTIONS, Connection, parse_connections

CONFIG_ENV = "PROPVISOR_CONFIG"


class Settings(BaseSettings):
    """Every setting of a propvisor process."""

    model_config = SettingsConfigDict(
        env_prefix="PROPVISOR_", env_nested_delimiter="__", extra="forbid"
    )

    database_url: str = Field(
        default="sqlite+aiosqlite:///var/propvisor.db",
        description="SQLAlchemy URL; postgresql://… uses asyncpg, a SQLite path uses aiosqlite.",
    )
    ray_address: str | None = Field(
        default=None, description="Address of an existing Ray cluster; none starts a local Ray."
    )
    shards: int = Field(default=0, ge=0, description="AccountShard actors; 0 = one per CPU.")
    connections: list[dict[str, Any]] = Field(
        default_factory=list,
        description=(
            "The bridge pool: one table per platform connection (`bridge/connections.py`); "
            "none: one embedded simulator."
        ),
    )
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    dashboard_port: int = Field(default=8265, ge=0, le=65535)
    simulator_seed: int = 1
    ticks_per_second: float = Field(default=10.0, gt=0, description="Per symbol.")
    reckless_fraction: float = Field(default=0.05, ge=0, le=1)

    @field_validator("connections")
    @classmethod
    def _connections(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if value:
            parse_connections(value)  # a ValueError names the connection and field
        return value

    def pool(self) -> tuple[Connection, ...]:
        """The configured connections, or the default: one embedded simulator."""
        return parse_connections(self.connections) if self.connections else DEFAULT_CONNECTIONS

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit arguments, then the environment, then the TOML file.
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Settings from the environment and the TOML file (`config`, else `$PROPVISOR_CONFIG`)."""
    path = config or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    given = {k: v for k, v in overrides.items() if v is not None}
    if path is None:
        return Settings(**given)
    if not path.is_file():
        raise FileNotFoundError(f"configuration file {path} does not exist")
    with_file = type(
        "Settings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": path}}
    )
    return cast(Settings, with_file(**given))
