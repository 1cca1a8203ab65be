"""The benchmark pool: one connection per session, ``QUERY_TAG`` carrying run, worker and
phase (changed at the phase boundary), ``USE_CACHED_RESULT`` FALSE unless asked."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import attrs
import snowflake.connector.errors
import trio

from startline.backends.snowflake.conn import SnowflakeExecutor, SnowflakeSettings, error_category, safe_message
from startline.backends.sqlcontrol import execute
from startline.backends.sqlparams import positional
from startline.backends.sqlsession import SqlTargetSession
from startline.engine.ports import HistoryRequest, Target, TargetTraits
from startline.engine.scenario import OperationSpec
from startline.engine.workload import sample_values

log = logging.getLogger("startline.snowflake")


def rows(conn: Any, sql: str, params: Any) -> list[tuple[Any, ...]]:
    """``sql``'s rows, as tuples (none for a statement that returns none)."""
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        return [] if cur.description is None else [tuple(r) for r in cur.fetchall()]
    finally:
        cur.close()


@attrs.define(eq=False)
class SnowflakeSession(SqlTargetSession):
    executor: SnowflakeExecutor
    query_tag: str = ""
    issued: list[str] = attrs.Factory(list)  # session statements sent (ALTER SESSION …), for reading back

    async def execute(self, op: OperationSpec, params: Mapping[str, Any]) -> None:
        if op.sql is None:
            await self.code(op, params)
            return
        await self.query(op.sql, params)

    async def query(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        text, names = positional(sql)
        values = tuple(params[n] for n in names)
        return await self.executor.run(lambda c: rows(c, text, values))

    async def set_phase(self, tag: Mapping[str, str]) -> None:
        self.query_tag = json.dumps(dict(tag), sort_keys=True)
        statement = "ALTER SESSION SET QUERY_TAG = ?"
        self.issued.append(f"{statement} [{self.query_tag}]")
        try:
            await self.executor.run(lambda c: execute(c, statement, (self.query_tag,)))
        except snowflake.connector.errors.ProgrammingError as exc:
            # Emulators may not implement it; the statement was sent and the run goes on.
            log.warning("QUERY_TAG not set: %s", safe_message(exc))

    async def close(self) -> None:
        await self.executor.close()


class QueryHistoryUnread(Exception):
    """The query history could not be read (the connector's error, credentials taken out)."""


@attrs.define(eq=False)
class SnowflakeTarget(Target):
    settings: SnowflakeSettings
    use_cached_result: bool = False
    limiter: trio.CapacityLimiter = attrs.Factory(lambda: trio.CapacityLimiter(1))
    """The worker's thread pool for its sessions (the connector is blocking HTTP): one thread per
    session it opened (grown as they open), reused from operation to operation — never one created
    per operation, never an operation waiting for a thread another session holds."""
    traits = TargetTraits(setup=True, sampling=True, query_history=True)

    @classmethod
    def from_url(cls, url: Any) -> SnowflakeTarget:
        return cls(SnowflakeSettings.from_url(url, default_schema="PUBLIC", in_context=True))

    async def setup(self, statements: list[str]) -> None:
        ex = SnowflakeExecutor(self.settings)
        try:
            for sql in statements:
                await ex.run(lambda c, sql=sql: execute(c, sql))
        finally:
            await ex.close()

    async def sample(self, sql: str, size: int) -> list[Any]:
        """A ``sample`` parameter's pool: the first ``size`` distinct values of ``sql``'s first column."""
        ex = SnowflakeExecutor(self.settings)

        def draw(c: Any) -> list[Any]:
            cur = c.cursor()
            try:
                cur.execute(sql)
                return sample_values(cur, size)
            finally:
                cur.close()

        try:
            return await ex.run(draw)
        finally:
            await ex.close()

    async def open_session(self, worker_id: str, slot: int) -> SnowflakeSession:
        params = {"USE_CACHED_RESULT": self.use_cached_result}
        self.limiter.total_tokens = max(self.limiter.total_tokens, slot + 1)
        ex = SnowflakeExecutor(self.settings, params, limiter=self.limiter)
        await ex.run(lambda c: None)  # connect now, before the barrier
        return SnowflakeSession(ex)

    def error_category(self, exc: BaseException) -> str:
        return error_category(exc)

    async def query_history(self, request: HistoryRequest) -> dict[str, Any] | None:
        """The run's statements in INFORMATION_SCHEMA.QUERY_HISTORY_BY_WAREHOUSE (``history.py``)."""
        from startline.backends.snowflake.history import FUNCTION, recent_history

        try:
            return await recent_history(self.settings, request)
        except snowflake.connector.errors.Error as exc:
            raise QueryHistoryUnread(f"{FUNCTION}: {safe_message(exc)}") from None
