"""psycopg 3 connections used from Trio: blocking calls in worker threads, one at a time per
connection (psycopg's async API runs on asyncio only, so under Trio its sync API in threads is
the way, as for SQLite and Snowflake).

Connections use client-side binding (``ClientCursor``) and never prepare statements on the
server, so they work through PgBouncer in transaction pooling. A URL is libpq's own
(``postgresql://user@host:port/db?options``): what it leaves out comes from libpq's usual sources
(PG* environment variables, ``~/.pgpass``, service files). A password never appears in a message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
import trio

from startline.engine.secrets import mask

T = TypeVar("T")

CONNECT_TIMEOUT_S = 10
CANCEL_WAIT_S = 2.0
"""How long a cancelled operation waits for the server to take its cancel request."""


LOOPBACK = ("127.0.0.1", "localhost", "::1")

HELPERS = ("control", "listen", "setup", "sample", "statements", "check", "observer")
"""The jobs of startline's own sessions, not the run's (the run's are ``startline WORKER …``)."""


def helper_name(job: str) -> str:
    """The ``application_name`` of one of startline's own sessions: ``startline JOB``."""
    assert job in HELPERS, job
    return f"startline {job}"


def run_sessions(column: str = "application_name") -> str:
    """SQL: ``column`` (``pg_stat_activity.application_name``) names one of the run's sessions —
    startline's, not one of its helpers'."""
    helpers = ", ".join(f"'{helper_name(j)}'" for j in HELPERS)
    return f"{column} LIKE 'startline %' AND {column} NOT IN ({helpers})"


def clock_key(url: str) -> str:
    """Which clock a server's ``clock_timestamp()`` reads: this host's (a server on loopback or a
    local socket), else ``postgresql://HOST:PORT`` — one key per server."""
    from urllib.parse import urlsplit

    from startline.engine.ports import HOST_CLOCK

    parts = urlsplit(url)
    if parts.hostname is None or parts.hostname in LOOPBACK:
        return HOST_CLOCK
    return f"postgresql://{parts.hostname}:{parts.port or 5432}"


def safe(text: str) -> str:
    """``text`` with any password in a URL or conninfo masked."""
    return mask(text, ())


class QmarkCursor:
    """A psycopg client-side cursor that takes the control plane's qmark (``?``) parameters."""

    def __init__(self, cur: psycopg.ClientCursor[Any]) -> None:
        self._cur = cur

    def execute(self, sql: str, params: Any = ()) -> None:
        self._cur.execute(sql.replace("?", "%s") if params else sql, params or None)

    @property
    def description(self) -> Any:
        return self._cur.description

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall()

    def close(self) -> None:
        self._cur.close()


class QmarkConnection:
    """What ``sqlcontrol`` needs of a DB-API connection, over a psycopg one."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    def cursor(self) -> QmarkCursor:
        return QmarkCursor(psycopg.ClientCursor(self.raw))


def connect(url: str, application_name: str) -> psycopg.Connection[Any]:
    """An autocommit connection (transactions are explicit), never preparing on the server."""
    conn = psycopg.connect(
        url,
        autocommit=True,
        prepare_threshold=None,
        cursor_factory=psycopg.ClientCursor,
        application_name=application_name[:63],
        connect_timeout=CONNECT_TIMEOUT_S,
    )
    return conn


class PgExecutor:
    """One connection and the limiter that serialises its use across Trio tasks."""

    def __init__(self, url: str, application_name: str) -> None:
        self.url = url
        self.application_name = application_name
        self.conn: psycopg.Connection[Any] | None = None
        self._lock = trio.CapacityLimiter(1)

    def _open(self) -> psycopg.Connection[Any]:
        if self.conn is None or self.conn.closed:
            self.conn = connect(self.url, self.application_name)
        return self.conn

    async def run(self, fn: Callable[[Any], T]) -> T:
        """``fn(connection)`` in a thread (a qmark-taking wrapper: the control plane's SQL)."""
        return await self.run_raw(lambda c: fn(QmarkConnection(c)))

    async def run_raw(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        started = False

        def call() -> T:
            nonlocal started
            started = True
            conn = self._open()
            try:
                return fn(conn)
            except psycopg.OperationalError:
                if conn.closed or conn.broken:
                    self.conn = None  # reconnect on the next call
                raise

        async with self._lock:
            try:
                return await trio.to_thread.run_sync(call, abandon_on_cancel=True)
            except trio.Cancelled:
                if not started:
                    raise
                # the thread is abandoned, not the statement: ask the server to stop it now (a
                # hung query outlived the run by minutes otherwise), within a bounded wait
                with trio.move_on_after(CANCEL_WAIT_S) as scope:
                    scope.shield = True
                    await trio.to_thread.run_sync(self.cancel, abandon_on_cancel=True)
                raise

    def cancel(self) -> None:
        """Cancel the statement running on this connection (from any thread)."""
        if self.conn is not None:
            cancel_on_server(self.conn)

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            await trio.to_thread.run_sync(conn.close)


def cancel_on_server(conn: psycopg.Connection[Any]) -> None:
    """Ask the server to stop the statement running on ``conn`` (blocking, from any thread; within
    ``CANCEL_WAIT_S``); a connection already closed, or a request that fails, is left as it is."""
    if not conn.closed:
        try:
            conn.cancel_safe(timeout=CANCEL_WAIT_S)
        except psycopg.Error:
            pass


def error_category(exc: BaseException) -> str:
    """psycopg errors by what a benchmark reader cares about (SQLSTATE classes)."""
    from psycopg import errors

    if isinstance(exc, errors.QueryCanceled):
        return "timeout"
    if isinstance(exc, errors.SerializationFailure | errors.DeadlockDetected | errors.LockNotAvailable):
        return "conflict"
    if isinstance(exc, errors.IntegrityError):
        return "constraint"
    if isinstance(exc, psycopg.OperationalError):
        return "connection"
    if isinstance(exc, psycopg.ProgrammingError):
        return "sql"
    if isinstance(exc, psycopg.Error):
        return "database"
    return type(exc).__name__
