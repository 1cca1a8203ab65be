"""PostgreSQL operations on Trio without a thread per operation: libpq's non-blocking protocol
through psycopg's public ``psycopg.pq`` layer (``send_query``, ``flush``, ``consume_input``,
``is_busy``, ``get_result``), the task waiting on the connection's socket with
``trio.lowlevel.wait_readable``/``wait_writable``.

Why this path: every operation used to be a ``trio.to_thread.run_sync`` hop to a blocking psycopg
call — two GIL hand-overs and a thread wake-up per operation, ~250 µs of client CPU where pgbench
spends 15 µs (issue 23). psycopg's own async connection is bound to asyncio; its generator
protocol is private. The ``pq`` layer is public and is libpq itself: the same wire traffic as
pgbench's simple protocol (``-M simple``). psycopg stays for what it does well: the connection
string and the connect, adaptation (values are bound client-side by ``ClientCursor.mogrify``,
PgBouncer-safe, as before), errors (``error_from_result``: the same classes, so
``error_category`` is unchanged).

Connecting stays in a thread (once per session). A cancelled operation sends the server a cancel
request (in a thread: rare), then reads what the server answers within ``CANCEL_WAIT_S``; a
connection that cannot be brought back to idle is closed, and the next operation reconnects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
import trio
from psycopg import pq

from startline.backends.postgres.conn import CANCEL_WAIT_S, cancel_on_server, connect

IDLE = pq.TransactionStatus.IDLE
FATAL = pq.ExecStatus.FATAL_ERROR


class NativeConnection:
    """One connection (autocommit) whose queries run on the caller's Trio task."""

    def __init__(self, url: str, application_name: str) -> None:
        self.url = url
        self.application_name = application_name
        self._conn: psycopg.Connection[Any] | None = None
        self._cursor: psycopg.ClientCursor[Any] | None = None
        self._escaping: pq.Escaping | None = None
        self._busy = False  # one query at a time: a session is one connection's task (no lock
        # on the hot path: acquiring a Trio lock is a scheduling round per operation)

    async def _open(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            conn = await trio.to_thread.run_sync(connect, self.url, self.application_name)
            conn.pgconn.nonblocking = 1
            self._conn, self._cursor = conn, psycopg.ClientCursor(conn)
            self._escaping = pq.Escaping(conn.pgconn)
        return self._conn

    def bind(self, sql: str, values: Sequence[Any]) -> bytes:
        """``sql`` (``%s`` placeholders) with ``values`` bound client-side, encoded for the wire:
        integers and text the way psycopg's ``ClientCursor`` binds them, as libpq escapes them
        (a benchmark's parameters are nearly always these, and psycopg's general path costs
        several times more); any other type through ``ClientCursor.mogrify``."""
        assert self._conn is not None and self._cursor is not None and self._escaping is not None
        if not values:
            return sql.encode(self._conn.info.encoding)
        literals = []
        for v in values:
            t = type(v)
            if t is int:
                literals.append(str(v) if v >= 0 else f" {v}")  # " -1": never "--1" after a minus
            elif t is str:
                literals.append(self._escaping.escape_literal(v.encode(self._conn.info.encoding)).decode())
            else:
                return self._cursor.mogrify(sql, values).encode(self._conn.info.encoding)
        return (sql % tuple(literals)).encode(self._conn.info.encoding)

    async def query(self, sql: str, values: Sequence[Any] = ()) -> list[pq.abc.PGresult]:
        """Run ``sql`` (one or more statements, simple protocol) with ``values`` bound; every
        result, in order. A result that is an error raises psycopg's error for it (after the
        connection has read all the server sent, so it stays usable)."""
        if self._busy:
            raise RuntimeError("a query is already running on this connection")
        self._busy = True
        try:
            conn = self._conn if self._conn is not None and not self._conn.closed else await self._open()
            pg = conn.pgconn
            try:
                pg.send_query(self.bind(sql, values))
                results = await self._results(pg)
            except trio.Cancelled:
                await self._cancel(conn)
                raise
            except psycopg.OperationalError:  # (libpq's own failures too: a connection gone)
                self._drop()
                raise
        finally:
            self._busy = False
        for r in results:
            if r.status == FATAL:
                raise psycopg.errors.error_from_result(r, encoding=conn.info.encoding)
        return results

    async def _results(self, pg: pq.abc.PGconn) -> list[pq.abc.PGresult]:
        fd = pg.socket
        while pg.flush():  # 1: more to send, once the socket takes it
            await trio.lowlevel.wait_writable(fd)
        results = []
        while True:
            while pg.is_busy():
                await trio.lowlevel.wait_readable(fd)
                pg.consume_input()
            r = pg.get_result()
            if r is None:
                return results
            results.append(r)

    async def _cancel(self, conn: psycopg.Connection[Any]) -> None:
        """The operation was cancelled: ask the server to stop it, and read its answer so the
        connection is idle again; else close it (the next operation reconnects)."""
        with trio.move_on_after(CANCEL_WAIT_S) as scope:
            scope.shield = True
            try:
                await trio.to_thread.run_sync(cancel_on_server, conn, abandon_on_cancel=True)
                await self._results(conn.pgconn)
            except (psycopg.Error, OSError):
                pass
        if scope.cancelled_caught or conn.pgconn.transaction_status != IDLE:
            self._drop()

    def _drop(self) -> None:
        conn, self._conn, self._cursor, self._escaping = self._conn, None, None, None
        if conn is not None:
            conn.close()

    async def close(self) -> None:
        self._drop()


def text_value(result: pq.abc.PGresult, row: int = 0, column: int = 0) -> str | None:
    """One value of a result, as the server sent it (text format)."""
    value = result.get_value(row, column)
    return None if value is None else bytes(value).decode()
