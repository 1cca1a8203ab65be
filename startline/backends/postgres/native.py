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

import random
from collections.abc import Awaitable, Sequence
from typing import Any

import psycopg
import trio
from psycopg import pq
from psycopg.adapt import PyFormat, Transformer

from startline.backends.postgres.conn import CANCEL_WAIT_S, cancel_on_server, connect

IDLE = pq.TransactionStatus.IDLE
FATAL = pq.ExecStatus.FATAL_ERROR
INT8 = 20  # pg_type's oid of bigint
RECONNECT_BASE_S, RECONNECT_CAP_S = 0.01, 1.0
wait_readable, wait_writable = trio.lowlevel.wait_readable, trio.lowlevel.wait_writable


class NativeConnection:
    """One connection (autocommit) whose queries run on the caller's Trio task."""

    def __init__(self, url: str, application_name: str) -> None:
        self.url = url
        self.application_name = application_name
        self._conn: psycopg.Connection[Any] | None = None
        self._pg: pq.abc.PGconn | None = None  # (bound once: the hot path reads it every query)
        self._fd = -1
        self._encoding = "utf-8"
        self._cursor: psycopg.ClientCursor[Any] | None = None
        self._escaping: pq.Escaping | None = None
        self._dumper: Transformer | None = None
        self._loader: Transformer | None = None
        self._prepared: dict[str, bytes] = {}
        """Statements prepared on this connection (SQL → name); a new connection starts empty."""
        self._failed_connects = 0
        self._busy = False  # one query at a time: a session is one connection's task (no lock
        # on the hot path: acquiring a Trio lock is a scheduling round per operation)

    async def _open(self) -> pq.abc.PGconn:
        """Connect (in a thread: once per connection). A connect that fails waits before it
        raises — ``RECONNECT_BASE_S`` doubling to ``RECONNECT_CAP_S``, with jitter — so a server
        that is down costs each session a few failed operations a second, not a thread and an
        error per loop turn."""
        try:
            conn = await trio.to_thread.run_sync(connect, self.url, self.application_name)
        except psycopg.OperationalError:
            self._failed_connects += 1
            backoff = min(RECONNECT_CAP_S, RECONNECT_BASE_S * 2 ** (self._failed_connects - 1))
            await trio.sleep(backoff * random.uniform(0.5, 1.0))
            raise
        self._failed_connects = 0
        pg = conn.pgconn
        pg.nonblocking = 1
        self._conn, self._pg, self._fd, self._encoding = conn, pg, pg.socket, conn.info.encoding
        self._cursor, self._escaping = psycopg.ClientCursor(conn), pq.Escaping(pg)
        self._dumper = self._loader = None
        self._prepared = {}
        return pg

    def bind(self, sql: str, values: Sequence[Any]) -> bytes:
        """``sql`` (``%s`` placeholders) with ``values`` bound client-side, encoded for the wire:
        integers and text the way psycopg's ``ClientCursor`` binds them, as libpq escapes them
        (a benchmark's parameters are nearly always these, and psycopg's general path costs
        several times more); any other type through ``ClientCursor.mogrify``."""
        assert self._cursor is not None and self._escaping is not None
        encoding = self._encoding
        if not values:
            return sql.encode(encoding)
        literals = []
        for v in values:
            t = type(v)
            if t is int:
                literals.append(str(v) if v >= 0 else f" {v}")  # " -1": never "--1" after a minus
            elif t is str:
                literals.append(self._escaping.escape_literal(v.encode(encoding)).decode())
            else:
                return self._cursor.mogrify(sql, values).encode(encoding)
        return (sql % tuple(literals)).encode(encoding)

    def parameters(self, values: Sequence[Any]) -> list[bytes | None]:
        """``values`` as a prepared statement's parameters, in text: integers and text directly,
        anything else as psycopg dumps it."""
        encoding = self._encoding
        out: list[bytes | None] = []
        for v in values:
            t = type(v)
            if t is int:
                out.append(str(v).encode())
            elif t is str:
                out.append(v.encode(encoding))
            elif v is None:
                out.append(None)
            else:
                dumped = self._dumper_of(v).dump(v)
                out.append(None if dumped is None else bytes(dumped))
        return out

    def parameter_types(self, values: Sequence[Any]) -> list[int]:
        """The types a statement is prepared with, from its first values: an integer as
        ``bigint`` (so ``generate_series($1, $2)`` has one meaning, and ``int = bigint`` still
        uses an index), text and NULL as ``unknown`` (the server reads them as what they are
        compared with or stored in: a date, a uuid), anything else as psycopg types it."""
        return [
            INT8 if type(v) is int else 0 if v is None or type(v) is str else self._dumper_of(v).oid for v in values
        ]

    def rows(self, result: pq.abc.PGresult) -> list[tuple[Any, ...]]:
        """A result's rows as Python values, loaded as psycopg loads them."""
        if not result.ntuples:
            return []
        if self._loader is None:
            self._loader = Transformer(self._conn)
        self._loader.set_pgresult(result)
        return self._loader.load_rows(0, result.ntuples, tuple)

    def _dumper_of(self, value: Any) -> Any:
        if self._dumper is None:
            self._dumper = Transformer(self._conn)
        return self._dumper.get_dumper(value, PyFormat.TEXT)

    def query(self, sql: str, values: Sequence[Any] = ()) -> Awaitable[list[pq.abc.PGresult]]:
        """Run ``sql`` (``%s`` placeholders; one or more statements, simple protocol) with
        ``values`` bound client-side; every result, in order. A result that is an error raises
        psycopg's error for it (after the connection has read all the server sent, so it stays
        usable). (Not ``async``: it hands back ``_exchange``'s coroutine — one frame fewer that
        every suspension of every operation passes through.)"""
        return self._exchange(sql, values, False)

    def query_prepared(self, sql: str, values: Sequence[Any] = ()) -> Awaitable[list[pq.abc.PGresult]]:
        """Run ``sql`` (one statement, ``$1``… placeholders) as a prepared statement: prepared on
        this connection the first time (pgbench's ``-M prepared``: parse and plan once, then only
        Bind/Execute), its parameters sent apart from the text (extended protocol)."""
        return self._exchange(sql, values, True)

    async def _exchange(self, sql: str, values: Sequence[Any], prepare: bool) -> list[pq.abc.PGresult]:
        """Send one query, read every result; a cancelled wait sends the server a cancel request."""
        if self._busy:
            raise RuntimeError("a query is already running on this connection")
        self._busy = True
        try:
            pg = self._pg if self._pg is not None else await self._open()
            try:
                if not prepare:
                    pg.send_query(self.bind(sql, values))
                else:
                    name = self._prepared.get(sql)
                    if name is None:
                        name = await self._prepare(pg, sql, values)
                    pg.send_query_prepared(name, self.parameters(values))
                fd = self._fd  # _results' loop, inlined: the hot path
                while pg.flush():  # 1: more to send, once the socket takes it
                    await wait_writable(fd)
                results = []
                while True:
                    while pg.is_busy():
                        await wait_readable(fd)
                        pg.consume_input()
                    r = pg.get_result()
                    if r is None:
                        break
                    results.append(r)
            except trio.Cancelled:
                await self._cancel(pg)
                raise
            except psycopg.OperationalError:  # (libpq's own failures too: a connection gone)
                self._drop()
                raise
        finally:
            self._busy = False
        return self._checked(results)

    async def _prepare(self, pg: pq.abc.PGconn, sql: str, values: Sequence[Any]) -> bytes:
        name = b"startline_%d" % len(self._prepared)
        pg.send_prepare(name, sql.encode(self._encoding), self.parameter_types(values))
        self._checked(await self._results(pg))
        self._prepared[sql] = name
        return name

    def _checked(self, results: list[pq.abc.PGresult]) -> list[pq.abc.PGresult]:
        """``results``, or psycopg's error for the first of them that is one."""
        for r in results:
            if r.status == FATAL:
                raise psycopg.errors.error_from_result(r, encoding=self._encoding)
        return results

    async def _results(self, pg: pq.abc.PGconn) -> list[pq.abc.PGresult]:
        fd = self._fd
        while pg.flush():  # 1: more to send, once the socket takes it
            await wait_writable(fd)
        results = []
        while True:
            while pg.is_busy():
                await wait_readable(fd)
                pg.consume_input()
            r = pg.get_result()
            if r is None:
                return results
            results.append(r)

    async def _cancel(self, pg: pq.abc.PGconn) -> None:
        """The operation was cancelled: ask the server to stop it, and read its answer so the
        connection is idle again; else close it (the next operation reconnects)."""
        conn = self._conn
        with trio.move_on_after(CANCEL_WAIT_S) as scope:
            scope.shield = True
            try:
                await trio.to_thread.run_sync(cancel_on_server, conn, abandon_on_cancel=True)
                await self._results(pg)
            except (psycopg.Error, OSError):
                pass
        if scope.cancelled_caught or pg.transaction_status != IDLE:
            self._drop()

    def _drop(self) -> None:
        conn = self._conn
        self._conn, self._pg, self._cursor, self._escaping = None, None, None, None
        self._dumper = self._loader = None
        if conn is not None:
            conn.close()

    async def close(self) -> None:
        self._drop()


def text_value(result: pq.abc.PGresult, row: int = 0, column: int = 0) -> str | None:
    """One value of a result, as the server sent it (text format)."""
    value = result.get_value(row, column)
    return None if value is None else bytes(value).decode()
