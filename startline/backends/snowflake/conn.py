"""Connections, identifiers and error categories for the Snowflake backend."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio

from startline.engine.scenario import ConfigError
from startline.engine.secrets import is_secret_name, mask

T = TypeVar("T")
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,254}$")


def identifier(name: str, field: str) -> str:
    """A validated, double-quoted identifier; anything else (quotes, dots, spaces) is refused."""
    if not isinstance(name, str) or not IDENTIFIER.match(name):
        raise ConfigError(field, f"{name!r} is not a valid identifier (letters, digits, _ and $; starts with a letter)")
    return f'"{name}"'


@attrs.frozen
class SnowflakeSettings:
    """Where to connect: a ``connections.toml`` entry, and the database and schema to use."""

    connection_name: str
    database: str = "STARTLINE"
    schema: str = "CONTROL"
    hybrid: bool = True
    context: Mapping[str, str] = attrs.field(factory=dict, converter=dict)
    """What every session of this connection works in: ``database``, ``schema``, ``warehouse``,
    ``role`` (those the URL gives), passed to the connector at connect — over what
    ``connections.toml`` says."""

    def __attrs_post_init__(self) -> None:
        identifier(self.database, "database")
        identifier(self.schema, "schema")
        for key, value in self.context.items():
            identifier(value, key)

    @classmethod
    def from_url(cls, url: Any, default_schema: str = "CONTROL", in_context: bool = False) -> SnowflakeSettings:
        """``in_context`` (a target): sessions work in the URL's database and schema, so that
        unqualified names (setup's ``DROP TABLE``, the workload) land there, not in the
        connection's default database. The control plane names its tables in full and takes
        only the URL's warehouse and role."""
        opts = url.options
        keys = ("database", "schema", "warehouse", "role") if in_context else ("warehouse", "role")
        return cls(
            url.connection,
            opts.get("database", "STARTLINE"),
            opts.get("schema", default_schema),
            opts.get("hybrid", "true").lower() != "false",
            {k: opts[k] for k in keys if k in opts},
        )

    def qualified(self, table: str) -> str:
        return (
            f"{identifier(self.database, 'database')}.{identifier(self.schema, 'schema')}.{identifier(table, 'table')}"
        )

    def connect(self, session_parameters: Mapping[str, Any] | None = None) -> Any:
        import snowflake.connector

        params = {"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False, **(session_parameters or {})}
        kwargs = connection_kwargs(self.connection_name) | dict(self.context)
        try:
            return snowflake.connector.connect(
                **kwargs,
                paramstyle="qmark",
                session_parameters=params,
                login_timeout=10,
                network_timeout=60,
            )
        except snowflake.connector.errors.Error as exc:
            raise ConnectionFailed(
                f"cannot connect with connection {self.connection_name!r}: {safe_message(exc, secrets_of(kwargs))}"
            ) from None


ENV_PARAMETERS = (
    "account",
    "user",
    "password",
    "host",
    "port",
    "protocol",
    "role",
    "warehouse",
    "authenticator",
    "private_key_file",
    "token",
)


def connection_kwargs(name: str) -> dict[str, Any]:
    """``env``: the ``SNOWFLAKE_*`` environment variables (SNOWFLAKE_ACCOUNT, SNOWFLAKE_USER, …).
    Any other name: the ``[name]`` entry of ``$SNOWFLAKE_HOME/connections.toml`` (default
    ``~/.snowflake``), read now rather than when the connector was imported; else the
    connector's own lookup by name."""
    if name == "env":
        found = {
            k: os.environ[f"SNOWFLAKE_{k.upper()}"] for k in ENV_PARAMETERS if f"SNOWFLAKE_{k.upper()}" in os.environ
        }
        if "account" not in found:
            raise ConfigError("control", "snowflake://env needs SNOWFLAKE_ACCOUNT (and SNOWFLAKE_USER, …) set")
        return found
    home = Path(os.environ.get("SNOWFLAKE_HOME") or Path.home() / ".snowflake")
    path = home / "connections.toml"
    if path.is_file():
        try:
            entries = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError("control", f"cannot read {path}: {exc}") from None
        if isinstance(entries.get(name), dict):
            return dict(entries[name])
    return {"connection_name": name}


class ConnectionFailed(Exception):
    """Could not open a Snowflake connection (message free of credentials)."""


def secrets_of(kwargs: Mapping[str, Any]) -> tuple[str, ...]:
    """The secret values among connection parameters."""
    return tuple(str(v) for k, v in kwargs.items() if v not in (None, "") and is_secret_name(k))


def safe_message(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """An error's first line with the connection's secrets masked (``mask``)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return mask(text, secrets)


def error_category(exc: BaseException) -> str:
    """Connector errors by what a benchmark reader cares about."""
    import snowflake.connector.errors as e

    if isinstance(exc, e.ProgrammingError):
        return "sql"
    if isinstance(exc, e.OperationalError | e.InterfaceError | ConnectionFailed):
        return "connection"
    if isinstance(exc, e.DatabaseError):
        return "database"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return type(exc).__name__


@attrs.define(eq=False)
class SnowflakeExecutor:
    """One connection, opened on first use, used by one thread at a time."""

    settings: SnowflakeSettings
    session_parameters: dict[str, Any] = attrs.Factory(dict)
    limiter: trio.CapacityLimiter = attrs.Factory(lambda: trio.CapacityLimiter(1))
    _conn: Any = None

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self.settings.connect(self.session_parameters)
        return self._conn

    async def run(self, fn: Callable[[Any], T]) -> T:
        return await trio.to_thread.run_sync(
            lambda: fn(self._connection()), limiter=self.limiter, abandon_on_cancel=True
        )

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await trio.to_thread.run_sync(conn.close, limiter=self.limiter)
