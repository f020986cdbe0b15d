"""The SQL engines under the metadata store, and the factory that picks one from the config."""

from __future__ import annotations

from s3orchestrator.config import ConfigError, MetadataConfig
from s3orchestrator.metadata.engines.base import BaseEngine
from s3orchestrator.metadata.engines.postgres import PostgresEngine, psycopg_available
from s3orchestrator.metadata.engines.sqlite import SqliteEngine


class EngineUnavailable(ConfigError):
    """The configured engine's driver is not installed."""


def create_engine(metadata_config: MetadataConfig) -> BaseEngine:
    """The engine ``[metadata]`` names: ``url`` (PostgreSQL) or ``sqlite`` (a file path)."""
    if metadata_config.url is not None:
        if not psycopg_available():
            raise EngineUnavailable(
                "metadata.url: a PostgreSQL database needs psycopg 3"
                " (Debian: apt install python3-psycopg; pip: pip install 's3orchestrator[postgres]')"
            )
        return PostgresEngine(
            metadata_config.url, busy_timeout=metadata_config.busy_timeout, pool_size=metadata_config.pool_size
        )
    assert metadata_config.sqlite is not None  # the config has exactly one of the two
    return SqliteEngine(metadata_config.sqlite, busy_timeout=metadata_config.busy_timeout)


__all__ = ["BaseEngine", "EngineUnavailable", "PostgresEngine", "SqliteEngine", "create_engine"]
