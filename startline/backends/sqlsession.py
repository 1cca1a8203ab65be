"""Operations that hold a session (issue 24): a ``call`` operation on a SQL target is awaited as
``op(session, params)`` and a ``transaction`` operation runs its steps, both through the
connection's ``SqlSession``:

    async def transfer(session, params):
        async with session.transaction():
            (balance,) = (await session.execute("SELECT balance FROM accounts WHERE id = :id", params))[0]
            await session.execute("UPDATE accounts SET balance = :b WHERE id = :id", {**params, "b": balance - 1})

``execute`` binds ``:name`` parameters by the same rules as a ``sql`` operation's and returns the
rows (tuples). ``transaction()`` is BEGIN … COMMIT in the backend's dialect, ROLLBACK when the body
raises (or is cancelled). The operation's whole body is timed as one operation; its error is
categorised by the target as a statement's is.

Each SQL backend's session subclasses ``SqlTargetSession``: it says how to run one statement
(``query``) and its dialect; the dispatch to code and steps is here, once."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar

import attrs
import trio

from startline.engine.ports import Session
from startline.engine.scenario import OperationSpec, Step
from startline.engine.workload import resolve_call

ROLLBACK_WAIT_S = 5.0
"""How long a ROLLBACK after a failed or cancelled transaction may take before it is abandoned."""


class NoRow(Exception):
    """A transaction step with ``into`` returned no row (pgbench's ``\\gset`` refuses it too)."""


@attrs.frozen
class Dialect:
    begin: str = "BEGIN"
    commit: str = "COMMIT"
    rollback: str = "ROLLBACK"


@attrs.define(eq=False)
class SqlSession:
    """The connection's session as an operation's code sees it."""

    _query: Callable[[str, Mapping[str, Any]], Awaitable[list[tuple[Any, ...]]]]
    _dialect: Dialect
    _run: Callable[[str, Mapping[str, Any]], Awaitable[Any]]
    """A statement whose rows nobody reads (the backend's cheaper path)."""
    _open: bool = False

    async def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run ``sql`` with its ``:name`` parameters taken from ``params``; its rows."""
        return await self._query(sql, params or {})

    def run(self, sql: str, params: Mapping[str, Any]) -> Awaitable[Any]:
        """``sql`` run for its effect: its rows, if any, are not made into Python values."""
        return self._run(sql, params)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlSession]:
        """BEGIN … COMMIT around the body; ROLLBACK (within ``ROLLBACK_WAIT_S``, whatever it
        says) when the body raises or is cancelled, and the error goes on."""
        if self._open:
            raise RuntimeError("a transaction is already open on this session")
        await self.run(self._dialect.begin, {})
        self._open = True
        try:
            yield self
        except BaseException:
            with trio.move_on_after(ROLLBACK_WAIT_S, shield=True), contextlib.suppress(Exception):
                await self.run(self._dialect.rollback, {})
            raise
        else:
            await self.run(self._dialect.commit, {})
        finally:
            self._open = False


async def run_steps(session: SqlSession, steps: Sequence[Step], params: Mapping[str, Any]) -> None:
    """A ``transaction`` operation: its steps in one transaction, each step's ``into`` binding its
    first row's columns, in order, for the steps after it."""
    bound = dict(params)
    async with session.transaction():
        for step in steps:
            if not step.into:
                await session.run(step.sql, bound)
                continue
            rows = await session.execute(step.sql, bound)
            if not rows:
                raise NoRow(f"a step with into = {list(step.into)} returned no row")
            bound.update(zip(step.into, rows[0], strict=False))


_CALLS: dict[Any, Callable[..., Awaitable[Any]]] = {}


class SqlTargetSession(Session):
    """A SQL backend's session: ``query`` runs one statement with named parameters and returns
    its rows; ``code`` dispatches the operations that are not one statement."""

    dialect: ClassVar[Dialect] = Dialect()
    _for_code: SqlSession | None = None

    async def query(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def statement(self, sql: str, params: Mapping[str, Any]) -> None:
        """One statement run for its effect (default: ``query``, its rows dropped)."""
        await self.query(sql, params)

    def code(self, op: OperationSpec, params: Mapping[str, Any]) -> Awaitable[Any]:
        """Run ``op`` (a ``call`` or a ``transaction``) on this session."""
        session = self._for_code
        if session is None:
            session = self._for_code = SqlSession(self.query, self.dialect, self.statement)
        if op.transaction:
            return run_steps(session, op.transaction, params)
        fn = _CALLS.get(op.call)
        if fn is None:
            fn = _CALLS[op.call] = resolve_call(op.call)
        return fn(session, params)
