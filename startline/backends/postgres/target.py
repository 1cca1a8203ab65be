"""A SQL target on PostgreSQL: one connection per session, ``application_name`` carrying worker
and phase (changed at the phase boundary: the counterpart of Snowflake's QUERY_TAG, visible in
``pg_stat_activity``), parameters bound client-side (``:name`` → ``%s``, never inside literals)."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

import attrs
import psycopg
import trio

from startline.backends.postgres.conn import PgExecutor, clock_key, error_category, helper_name
from startline.backends.postgres.native import NativeConnection, text_value
from startline.backends.postgres.sampler import PostgresServerSampler
from startline.backends.sqlparams import positional
from startline.backends.sqlsession import SqlTargetSession
from startline.engine.metrics import MESSAGE_CHARS, error_message
from startline.engine.ports import Target, TargetTraits
from startline.engine.scenario import OperationSpec
from startline.engine.workload import sample_values

STATEMENTS_SQL = "SELECT queryid, query, calls, total_exec_time, rows FROM pg_stat_statements WHERE queryid IS NOT NULL"
STATEMENTS_KEPT = 50
"""Statements per phase in pg_stat_statements.json (those with the most execution time)."""


def statement_deltas(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """What ran between two pg_stat_statements readings: per statement, calls, rows and execution
    time added (a statement evicted meanwhile counts from zero), most time first."""
    out = []
    for qid, a in after.items():
        b = before.get(qid, {"calls": 0, "total_ms": 0.0, "rows": 0})
        calls = a["calls"] - b["calls"]
        if calls <= 0:
            continue
        total = a["total_ms"] - b["total_ms"]
        out.append(
            {
                "queryid": qid,
                "query": a["query"],
                "calls": calls,
                "rows": a["rows"] - b["rows"],
                "total_ms": round(total, 3),
                "mean_ms": round(total / calls, 4),
            }
        )
    out.sort(key=lambda d: (-d["total_ms"], d["queryid"]))
    return out[:STATEMENTS_KEPT]


def application_name(tag: Mapping[str, str]) -> str:
    """``startline WORKER PHASE`` (PostgreSQL keeps 63 characters of it)."""
    return f"startline {tag.get('worker_id', '')} {tag.get('phase', '')}".strip()[:63]


LITERALS = re.compile(r"'(?:[^']|'')*'|\"-?\d[\d.e+-]*\"|(?<![\w.$\"])-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![\w$])")
"""Values in a message: quoted strings, quoted numbers, bare numbers (not digits inside a name)."""
TYPED_VALUE = re.compile(r'(for type [\w ]+: )"(?:[^"]|"")*"')
"""A value the server could not read as a type: ``invalid input syntax for type integer: "x"``."""

STAMP = "; SELECT EXTRACT(EPOCH FROM statement_timestamp())::float8"
"""Sent with a session's first operation, in the same message: ``statement_timestamp()`` is when
the server received that message, on the server's clock — the start's target witness. (So a
session's first operation is sent as a simple query even with ``prepare``: it is prepared from
its second.)"""


@functools.lru_cache(maxsize=1024)
def bound(sql: str, prepare: bool = False) -> tuple[str, tuple[str, ...]]:
    """An operation's SQL with ``:name`` as ``%s`` (bound client-side) or, to be prepared, as
    ``$1``…; and the names in order (each SQL text once)."""
    return positional(sql, "$n" if prepare else "%s")


@attrs.define(eq=False)
class PostgresSession(SqlTargetSession):
    """One target connection whose operations run on the connection's own Trio task, no thread
    between (``native.NativeConnection``)."""

    connection: NativeConnection
    application_name: str = ""
    first_stamp: float | None = None
    """The server's clock when it received this session's first operation (it succeeded)."""
    _stamped: bool = False

    def execute(self, op: OperationSpec, params: Mapping[str, Any]) -> Awaitable[Any]:  # type: ignore[override]
        """(Not ``async``: past the first operation it hands back the connection's coroutine —
        one frame fewer that every suspension of every operation passes through.)"""
        if op.sql is None:
            return self.code(op, params)
        if not self._stamped:
            return self._first(op, params)
        sql, names = bound(op.sql, op.prepare)
        values = tuple([params[n] for n in names])
        return self.connection.query_prepared(sql, values) if op.prepare else self.connection.query(sql, values)

    async def query(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """One statement (or several: the last one's rows) with ``:name`` parameters bound."""
        text, names = bound(sql)
        results = await self.connection.query(text, tuple([params[n] for n in names]))
        return self.connection.rows(results[-1]) if results else []

    async def statement(self, sql: str, params: Mapping[str, Any]) -> None:
        """One statement for its effect: no rows loaded into Python values."""
        text, names = bound(sql)
        await self.connection.query(text, tuple([params[n] for n in names]))

    async def _first(self, op: OperationSpec, params: Mapping[str, Any]) -> None:
        """The session's first operation: bound client-side (prepared or not), the stamp in the
        same message (a prepared statement's execution is a message of its own)."""
        self._stamped = True
        sql, names = bound(op.sql or "")
        results = await self.connection.query(sql + STAMP, tuple([params[n] for n in names]))
        stamp = text_value(results[-1]) if results else None  # the operation's results, the stamp last
        self.first_stamp = float(stamp) if stamp is not None else math.nan

    async def set_phase(self, tag: Mapping[str, str]) -> None:
        self.application_name = self.connection.application_name = application_name(tag)  # (a reconnect too)
        await self.connection.query("SELECT set_config('application_name', %s, false)", (self.application_name,))

    async def close(self) -> None:
        await self.connection.close()


@attrs.define(eq=False)
class PostgresTarget(Target):
    url: str
    traits: TargetTraits = attrs.field(init=False)  # type: ignore[misc]

    def __attrs_post_init__(self) -> None:
        self.traits = TargetTraits(
            clock_key=clock_key(self.url),
            setup=True,
            sampling=True,
            statement_stats=True,
            checks_statements=True,
            prepares=True,
            server_sampling=True,
        )

    @classmethod
    def from_url(cls, url: Any) -> PostgresTarget:
        return cls(url.connection)

    def error_message(self, exc: BaseException) -> str:
        """psycopg's error as failures.csv groups it: the server's primary message (not the
        DETAIL and LINE context it adds, which hold the values the operation bound — and the stamp
        we add to a session's first query), its literal values as ``?``."""
        if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
            text = f"{type(exc).__name__}: {' '.join(exc.diag.message_primary.split())}"
        else:
            text = error_message(exc).replace(STAMP, "")
        return LITERALS.sub("?", TYPED_VALUE.sub(r"\1?", text))[:MESSAGE_CHARS]

    async def setup(self, statements: Sequence[str]) -> None:
        """The scenario's ``setup`` statements, each as written (several per string allowed)."""
        ex = PgExecutor(self.url, helper_name("setup"))
        try:
            for sql in statements:
                await ex.run_raw(lambda c, sql=sql: c.execute(sql))  # type: ignore[misc]
        finally:  # (a cancelled statement was cancelled on the server by run_raw)
            with trio.move_on_after(5.0, shield=True):
                await ex.close()

    async def sample(self, sql: str, size: int) -> list[Any]:
        """A ``sample`` parameter's pool: the first ``size`` distinct values of ``sql``'s first column."""
        ex = PgExecutor(self.url, helper_name("sample"))

        def draw(c: psycopg.Connection[Any]) -> list[Any]:
            with c.cursor() as cur:
                cur.execute(sql)
                return sample_values(cur, size)

        try:
            return await ex.run_raw(draw)
        finally:
            await ex.close()

    async def statement_stats(self) -> dict[str, dict[str, Any]] | None:
        """pg_stat_statements now, by query id (None: the extension is not installed here)."""
        ex = PgExecutor(self.url, helper_name("statements"))

        def read(c: psycopg.Connection[Any]) -> dict[str, dict[str, Any]] | None:
            try:
                rows = c.execute(STATEMENTS_SQL).fetchall()
            except (psycopg.errors.UndefinedTable, psycopg.errors.ObjectNotInPrerequisiteState):
                return None
            return {
                str(r[0]): {"query": r[1], "calls": int(r[2]), "total_ms": float(r[3]), "rows": int(r[4])} for r in rows
            }

        try:
            return await ex.run_raw(read)
        finally:
            await ex.close()

    async def open_server_sampler(self) -> PostgresServerSampler:
        """``pg_stat_database`` and the run's sessions' waits, read on a connection of its own."""
        return PostgresServerSampler(self.url)

    async def open_session(self, worker_id: str, slot: int) -> PostgresSession:
        name = application_name({"worker_id": f"{worker_id}/{slot}"})
        connection = NativeConnection(self.url, name)
        await connection.query("SELECT 1")  # connect now, before the barrier
        return PostgresSession(connection, name)

    async def check_statements(
        self, setup: Sequence[str], statements: Sequence[tuple[str, str, Mapping[str, Any]]]
    ) -> list[tuple[str, str]]:
        """``startline check --connect``: in one transaction that is rolled back (PostgreSQL's DDL
        is transactional: nothing is left behind), run the setup, then EXPLAIN each (where, sql,
        sample parameters). Returns (where, what PostgreSQL said) for each statement it refused."""

        def check(c: psycopg.Connection[Any]) -> list[tuple[str, str]]:
            refused: list[tuple[str, str]] = []
            c.execute("BEGIN")
            try:
                for sql in setup:
                    try:
                        c.execute(sql)
                    except psycopg.Error as exc:
                        return [("setup", f"{type(exc).__name__}: {exc}".strip())]
                for where, sql, params in statements:
                    text, names = positional(sql, "%s")
                    c.execute("SAVEPOINT statement")
                    try:
                        c.execute(f"EXPLAIN {text}", tuple(params.get(n) for n in names) or None)
                    except psycopg.Error as exc:
                        refused.append((where, f"{type(exc).__name__}: {exc}".strip()))
                        c.execute("ROLLBACK TO SAVEPOINT statement")
                return refused
            finally:
                c.execute("ROLLBACK")

        ex = PgExecutor(self.url, helper_name("check"))
        try:
            return await ex.run_raw(check)
        finally:
            await ex.close()

    def error_category(self, exc: BaseException) -> str:
        return error_category(exc)
