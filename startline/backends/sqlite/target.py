"""A SQL target on a SQLite file: one connection per session, parameters always bound."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs
import trio

from startline.backends.sqlite.db import Db
from startline.backends.sqlite.loop import LoopConnection
from startline.backends.sqlsession import Dialect, SqlTargetSession
from startline.engine.ports import Target, TargetTraits
from startline.engine.scenario import OperationSpec
from startline.engine.workload import sample_values


@attrs.define(eq=False)
class SqliteSession(SqlTargetSession):
    """One connection whose statements run on the connection's own Trio task (``LoopConnection``:
    a statement past a couple of milliseconds moves to a thread, except within a transaction)."""

    connection: LoopConnection
    tag: dict[str, str] = attrs.Factory(dict)
    dialect: ClassVar[Dialect] = Dialect(begin="BEGIN IMMEDIATE")
    """A transaction takes the write lock as it begins: a deferred one that reads and then writes
    can only wait out another writer's lock, never get it (SQLite answers busy at once)."""

    def execute(self, op: OperationSpec, params: Mapping[str, Any]) -> Awaitable[Any]:  # type: ignore[override]
        if op.sql is None:
            return self.code(op, params)
        return self.connection.run(op.sql, params)

    async def query(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        return await self.connection.run(sql, params)

    async def warm(self, operations: Sequence[OperationSpec]) -> None:
        """Compile each SQL operation as it will run, running nothing
        (``LoopConnection.prepare``): a worker's connections take their first turns one after
        another at the release, and a statement's first run on a connection read the schema and
        compiled it — 160–470 µs here; after an EXPLAIN (which compiles another text) the first
        run still took 80–120 µs, after ``prepare`` 13–25 µs."""
        for op in operations:
            if op.sql is not None:
                await self.connection.prepare(op.sql)

    def rewarm(self) -> None:
        self.connection.touch()

    async def set_phase(self, tag: Mapping[str, str]) -> None:
        self.tag = dict(tag)  # SQLite has no session tag; kept for logs and tests

    async def close(self) -> None:
        await self.connection.close()


def error_category(exc: BaseException) -> str:
    """Connector errors by what a benchmark reader cares about."""
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return "busy"
    if isinstance(exc, sqlite3.IntegrityError):
        return "constraint"
    if isinstance(exc, sqlite3.OperationalError):
        return "operational"
    if isinstance(exc, sqlite3.Error):
        return "database"
    return type(exc).__name__


@attrs.define(eq=False)
class SqliteTarget(Target):
    path: Path
    traits = TargetTraits(setup=True, sampling=True, checks_statements=True, prepares=True)
    """(``prepare`` changes nothing here: sqlite3 compiles a statement once per connection and
    keeps it in its statement cache, whatever the operation says.)"""

    async def setup(self, statements: Sequence[str]) -> None:
        """Run the scenario's ``setup`` statements once, before the run (create and load tables)."""
        db = Db(self.path)
        try:
            for sql in statements:
                await db.run(lambda c, sql=sql: c.executescript(sql))
        except trio.Cancelled:
            db.interrupt()  # Ctrl-C: the statement stops now, not when it is done
            raise
        finally:
            with trio.move_on_after(5.0, shield=True):  # an interrupted statement returns at once
                await db.close()

    async def sample(self, sql: str, size: int) -> list[Any]:
        """A ``sample`` parameter's pool: the first ``size`` distinct values of ``sql``'s first column."""
        db = Db(self.path)
        try:
            return await db.run(lambda c: sample_values(c.execute(sql), size))
        finally:
            await db.close()

    async def open_session(self, worker_id: str, slot: int) -> SqliteSession:
        session = SqliteSession(LoopConnection(self.path, confine=True))
        await session.connection.run("SELECT 1")  # connect now, not at the first query
        return session

    def error_category(self, exc: BaseException) -> str:
        return error_category(exc)

    async def check_statements(
        self, setup: Sequence[str], statements: Sequence[tuple[str, str, Mapping[str, Any]]]
    ) -> list[tuple[str, str]]:
        """``startline check --connect``: EXPLAIN each (where, sql, sample parameters) on a
        scratch in-memory copy of the file with the setup applied (the file is not touched).
        Returns (where, what SQLite said) for each statement it refused."""

        def check() -> list[tuple[str, str]]:
            scratch = sqlite3.connect(":memory:")
            try:
                if self.path.exists():
                    source = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
                    try:
                        source.backup(scratch)
                    finally:
                        source.close()
                for sql in setup:
                    try:
                        scratch.executescript(sql)
                    except sqlite3.Error as exc:
                        return [("setup", f"{type(exc).__name__}: {exc}")]
                refused = []
                for where, sql, params in statements:
                    try:
                        scratch.execute(f"EXPLAIN {sql}", dict(params)).fetchall()
                    except (sqlite3.Error, ValueError) as exc:
                        refused.append((where, f"{type(exc).__name__}: {exc}"))
                return refused
            finally:
                scratch.close()

        return await trio.to_thread.run_sync(check)
