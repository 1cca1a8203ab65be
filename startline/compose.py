"""The composition root's one job: turn URLs into the backends the engine's ports need."""

from __future__ import annotations

from typing import Any

from startline.engine.ports import ControlPlane, Target
from startline.engine.scenario import ConfigError, Scenario
from startline.urls import Url

SNOWFLAKE_EXTRA = "snowflake:// needs the Snowflake connector: pip install 'startline[snowflake]'"


def _snowflake(field: str) -> Any:
    """The Snowflake backend module, or a ConfigError naming the extra that provides it."""
    try:
        import startline.backends.snowflake as snowflake
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] == "snowflake":
            raise ConfigError(field, SNOWFLAKE_EXTRA) from None
        raise
    return snowflake


POSTGRES_EXTRA = "postgresql:// needs psycopg: pip install 'startline[postgres]'"


def _postgres(field: str) -> Any:
    """The PostgreSQL backend module, or a ConfigError naming the extra that provides it."""
    try:
        import startline.backends.postgres as postgres
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] == "psycopg":
            raise ConfigError(field, POSTGRES_EXTRA) from None
        raise
    return postgres


def open_control(url: Url) -> ControlPlane:
    if url.scheme == "sqlite":
        from startline.backends.sqlite import SqliteControlPlane

        assert url.path is not None
        return SqliteControlPlane(url.path)
    if url.scheme == "snowflake":
        return _snowflake("control").SnowflakeControlPlane.from_url(url)
    if url.scheme == "postgresql":
        return _postgres("control").PostgresControlPlane.from_url(url)
    raise ConfigError("control", f"{url.scheme}:// is in-process only; use it without worker processes")


def open_target(url: Url, scenario: Scenario) -> Any:
    """A ``Target`` (with ``setup`` where it runs SQL) for ``url``; checks the mix and the
    scenario's ``setup`` fit it."""
    target = _target(url, scenario)
    if scenario.setup and not hasattr(target, "setup"):
        raise ConfigError("setup", f"the {url.scheme} target runs no setup statements")
    return target


def _target(url: Url, scenario: Scenario) -> Any:
    target: Target
    if url.scheme == "memory":
        from startline.backends.memory import CallableTarget

        return CallableTarget.for_scenario(scenario)
    for i, op in enumerate(scenario.operations):
        if op.sql is None:
            raise ConfigError(f"operations[{i}].call", f"a {url.scheme} target runs SQL; give sql, not call")
    if url.scheme == "sqlite":
        from startline.backends.sqlite import SqliteTarget

        assert url.path is not None
        target = SqliteTarget(url.path)
        return target
    if url.scheme == "snowflake":
        return _snowflake("target").SnowflakeTarget.from_url(url)
    if url.scheme == "postgresql":
        return _postgres("target").PostgresTarget.from_url(url)
    raise ConfigError("target", f"unknown target {url.scheme}")
