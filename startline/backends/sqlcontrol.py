"""The control plane in SQL tables, for any DB-API driver with qmark (``?``) parameters.

A ``Dialect`` holds what differs between databases (the server's now, the schema,
upserts, transactions); an ``Executor`` runs a blocking function on a connection in a
thread. Every instant is the database's own clock, so all processes share one reference.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import attrs

from startline.engine.model import ControlEvent, Heartbeat, RunState, RunStatus, WorkerResult, WorkerStatus
from startline.engine.ports import ControlPlane, ControlPlaneConflict, ControlPlaneError

T = TypeVar("T")

TABLES = ("RUN_STATUS", "RUN_CONTROL_EVENTS", "WORKER_HEARTBEATS", "TEST_RESULTS", "METRICS_SNAPSHOTS")

COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "RUN_STATUS": (
        ("RUN_ID", "text key"),
        ("STATUS", "text"),
        ("PHASE", "text"),
        ("START_TIME", "real null"),
        ("UPDATED_AT", "real"),
        ("LAST_SEQUENCE_ID", "int"),
        ("CONNECTIONS", "int"),
        ("EXPECTED_WORKERS", "int"),
        ("STOP_REASON", "text null"),
        ("STOP_DETAIL", "text null"),
        ("VERSION", "int"),
        ("SCENARIO", "text"),
    ),
    "RUN_CONTROL_EVENTS": (
        ("RUN_ID", "text key"),
        ("SEQUENCE_ID", "int key"),
        ("EVENT_TYPE", "text"),
        ("EVENT", "text"),
        ("CREATED_AT", "real"),
    ),
    "WORKER_HEARTBEATS": (
        ("RUN_ID", "text key"),
        ("WORKER_ID", "text key"),
        ("STATUS", "text"),
        ("PHASE", "text"),
        ("LAST_HEARTBEAT", "real"),
        ("HEARTBEAT_COUNT", "int"),
        ("ACTIVE_CONNECTIONS", "int"),
        ("APPLIED_SEQUENCE_ID", "int"),
        ("WORKER_GROUP", "text"),
        ("INCARNATION", "text"),
    ),
    "TEST_RESULTS": (
        ("RUN_ID", "text key"),
        ("WORKER_ID", "text key"),
        ("STATUS", "text"),
        ("PAYLOAD", "text"),
        ("UPDATED_AT", "real"),
        ("INCARNATION", "text"),
    ),
    "METRICS_SNAPSHOTS": (  # an append-only log: keyed only where the database demands a key
        ("RUN_ID", "text key?"),
        ("WORKER_ID", "text key?"),
        ("SNAPSHOT", "text"),
        ("CREATED_AT", "real key?"),
    ),
}
"""The five control tables, in column order; every dialect's schema is made from this list."""


def create_tables(create: str, types: Mapping[str, str], keys_required: bool = False) -> tuple[str, ...]:
    """``CREATE`` statements for ``COLUMNS`` with a dialect's ``create`` prefix (e.g. ``CREATE TABLE IF
    NOT EXISTS``) and types (``text``, ``real``, ``int`` → the database's). ``key?`` columns form a key
    only where the database requires one (Snowflake's hybrid tables)."""
    statements = []
    for table, columns in COLUMNS.items():
        parts, key = [], []
        for name, spec in columns:
            kind, *flags = spec.split()
            parts.append(f"{name} {types[kind]}{'' if 'null' in flags else ' NOT NULL'}")
            if "key" in flags or ("key?" in flags and keys_required):
                key.append(name)
        if key:
            parts.append(f"PRIMARY KEY ({', '.join(key)})")
        statements.append(f"{create} {{{table}}} ({', '.join(parts)})")
    return tuple(statements)


_RUN_COLUMNS = {
    "status": "STATUS",
    "phase": "PHASE",
    "start_time": "START_TIME",
    "last_sequence_id": "LAST_SEQUENCE_ID",
    "connections": "CONNECTIONS",
    "expected_workers": "EXPECTED_WORKERS",
    "stop_reason": "STOP_REASON",
    "stop_detail": "STOP_DETAIL",
    "scenario": "SCENARIO",  # the scenario as run, once its samples are drawn (JSON)
}


@attrs.frozen
class Dialect:
    """What differs between SQL control planes. ``{t}`` in SQL is a table's qualified name."""

    now: str  # the server's now as epoch seconds (UTC), evaluated once per statement
    schema: tuple[str, ...]  # idempotent CREATE statements, with {RUN_STATUS} etc. placeholders
    upsert_heartbeat: str  # params: run, worker, status, phase, active, applied, group, incarnation
    upsert_result: str  # params: run, worker, status, payload, incarnation
    begin: str = "BEGIN"
    table: Callable[[str], str] = str  # a table's (validated, quoted) qualified name
    errors: tuple[type[BaseException], ...] = (Exception,)


class Executor(Protocol):
    async def run(self, fn: Callable[[Any], T]) -> T: ...


def fetch(conn: Any, sql: str, params: Any = ()) -> list[dict[str, Any]]:
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        if cur.description is None:
            return []
        cols = [d[0].upper() for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    finally:
        cur.close()


def execute(conn: Any, sql: str, params: Any = ()) -> int:
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        return cur.rowcount
    finally:
        cur.close()


def _run(row: Mapping[str, Any]) -> RunState:
    return RunState(
        row["RUN_ID"],
        row["STATUS"],
        row["PHASE"],
        start_time=row["START_TIME"],
        updated_at=row["UPDATED_AT"],
        last_sequence_id=row["LAST_SEQUENCE_ID"],
        connections=row["CONNECTIONS"],
        expected_workers=row["EXPECTED_WORKERS"],
        stop_reason=row["STOP_REASON"],
        stop_detail=row["STOP_DETAIL"],
        version=row["VERSION"],
        scenario=json.loads(row["SCENARIO"]),
    )


def _heartbeat(r: Mapping[str, Any]) -> Heartbeat:
    return Heartbeat(
        r["RUN_ID"],
        r["WORKER_ID"],
        r["STATUS"],
        r["PHASE"],
        r["LAST_HEARTBEAT"],
        r["HEARTBEAT_COUNT"],
        r["ACTIVE_CONNECTIONS"],
        r["APPLIED_SEQUENCE_ID"],
        r["WORKER_GROUP"],
        r["INCARNATION"],
    )


def _heartbeat_params(hb: Heartbeat) -> tuple[Any, ...]:
    """A heartbeat's values in the order of ``Dialect.upsert_heartbeat``'s parameters."""
    return (
        hb.run_id,
        hb.worker_id,
        hb.status.value,
        hb.phase.value,
        hb.active_connections,
        hb.applied_sequence_id,
        hb.group,
        hb.incarnation,
    )


def _plain(value: Any) -> Any:
    return value.value if hasattr(value, "value") else value


@attrs.define(eq=False)
class SqlControlPlane(ControlPlane):
    """RUN_STATUS, RUN_CONTROL_EVENTS, WORKER_HEARTBEATS, TEST_RESULTS, METRICS_SNAPSHOTS."""

    executor: Executor
    dialect: Dialect
    where: str  # for error messages: the file or connection
    _ready: bool = False

    def _sql(self, text: str) -> str:
        return text.format(NOW=self.dialect.now, **{t: self.dialect.table(t) for t in TABLES})

    async def _call(self, fn: Callable[[Any], T]) -> T:
        try:
            if not self._ready:
                statements = [self._sql(s) for s in self.dialect.schema]
                await self.executor.run(lambda c: self.create_schema(c, statements))
                await self.executor.run(self._check_columns)
                self._ready = True
            return await self.executor.run(fn)
        except ControlPlaneError:
            raise
        except self.dialect.errors as exc:
            raise ControlPlaneError(f"control plane {self.where}: {exc}") from exc

    def create_schema(self, conn: Any, statements: list[str]) -> None:
        """Create the tables if missing (idempotent); a dialect may override this."""
        for sql in statements:
            execute(conn, sql)

    def _check_columns(self, conn: Any) -> None:
        """Tables made by another version of startline lack columns: say so once, plainly."""
        for table, columns in COLUMNS.items():
            cur = conn.cursor()
            try:
                cur.execute(self._sql(f"SELECT * FROM {{{table}}} WHERE 1 = 0"))
                have = {d[0].upper() for d in cur.description or ()}
            finally:
                cur.close()
            missing = [name for name, _ in columns if name not in have]
            if missing:
                raise ControlPlaneConflict(
                    f"control plane {self.where}: table {table} lacks column {missing[0]} (made by another "
                    "version of startline): use a new control database or schema"
                )

    def _tx(self, conn: Any, body: Callable[[Any], T]) -> T:
        execute(conn, self.dialect.begin)
        try:
            result = body(conn)
        except BaseException:
            execute(conn, "ROLLBACK")
            raise
        execute(conn, "COMMIT")
        return result

    async def create_run(self, run: RunState) -> None:
        # One statement, so that two orchestrators racing on one id cannot both create it.
        sql = self._sql(
            "INSERT INTO {RUN_STATUS} (RUN_ID, STATUS, PHASE, START_TIME, UPDATED_AT, LAST_SEQUENCE_ID, "
            "CONNECTIONS, EXPECTED_WORKERS, STOP_REASON, STOP_DETAIL, VERSION, SCENARIO) "
            "SELECT ?, ?, ?, ?, {NOW}, ?, ?, ?, ?, ?, ?, ? "
            "WHERE NOT EXISTS (SELECT 1 FROM {RUN_STATUS} WHERE RUN_ID = ?)"
        )

        def q(c: Any) -> None:
            inserted = execute(
                c,
                sql,
                (
                    run.run_id,
                    run.status.value,
                    run.phase.value,
                    run.start_time,
                    run.last_sequence_id,
                    run.connections,
                    run.expected_workers,
                    _plain(run.stop_reason),
                    run.stop_detail,
                    run.version,
                    json.dumps(run.scenario),
                    run.run_id,
                ),
            )
            if inserted == 0:
                raise ControlPlaneConflict(f"run {run.run_id!r} exists already")

        await self._call(q)

    async def read_run(self, run_id: str) -> RunState | None:
        sql = self._sql("SELECT * FROM {RUN_STATUS} WHERE RUN_ID = ?")
        found = await self._call(lambda c: fetch(c, sql, (run_id,)))
        return _run(found[0]) if found else None

    async def update_run(
        self, run_id: str, *, expect_status: RunStatus | None = None, start_time_now: bool = False, **changes: Any
    ) -> RunState | None:
        sets, params = ["UPDATED_AT = {NOW}", "VERSION = VERSION + 1"], []
        for key, value in changes.items():
            sets.append(f"{_RUN_COLUMNS[key]} = ?")  # an unknown field is a bug, never input
            params.append(json.dumps(value) if key == "scenario" else _plain(value))
        if start_time_now:
            sets.append("START_TIME = {NOW}")
        where, wparams = "RUN_ID = ?", [run_id]
        if expect_status is not None:
            where += " AND STATUS = ?"
            wparams.append(expect_status.value)
        update = self._sql(f"UPDATE {{RUN_STATUS}} SET {', '.join(sets)} WHERE {where}")
        select = self._sql("SELECT * FROM {RUN_STATUS} WHERE RUN_ID = ?")

        def body(c: Any) -> RunState | None:
            if expect_status is not None:
                current = fetch(c, select, (run_id,))
                if not current or current[0]["STATUS"] != expect_status.value:
                    return None
            execute(c, update, (*params, *wparams))
            found = fetch(c, select, (run_id,))
            return _run(found[0]) if found else None

        return await self._call(lambda c: self._tx(c, body))

    async def append_event(self, event: ControlEvent) -> None:
        last_sql = self._sql("SELECT COALESCE(MAX(SEQUENCE_ID), 0) AS LAST FROM {RUN_CONTROL_EVENTS} WHERE RUN_ID = ?")
        insert = self._sql(
            "INSERT INTO {RUN_CONTROL_EVENTS} (RUN_ID, SEQUENCE_ID, EVENT_TYPE, EVENT, CREATED_AT) "
            "SELECT ?, ?, ?, ?, {NOW}"
        )
        bump = self._sql(
            "UPDATE {RUN_STATUS} SET LAST_SEQUENCE_ID = ?, VERSION = VERSION + 1, UPDATED_AT = {NOW} WHERE RUN_ID = ?"
        )

        same = self._sql("SELECT EVENT FROM {RUN_CONTROL_EVENTS} WHERE RUN_ID = ? AND SEQUENCE_ID = ?")
        text = json.dumps(event.to_dict())

        def body(c: Any) -> None:
            last = fetch(c, last_sql, (event.run_id,))[0]["LAST"]
            if event.sequence_id <= last:
                stored = fetch(c, same, (event.run_id, event.sequence_id))
                if stored and json.loads(stored[0]["EVENT"]) == event.to_dict():
                    return  # a retry of an append that landed: the log has it once
            if event.sequence_id != last + 1:
                raise ControlPlaneConflict(f"event sequence {event.sequence_id} does not follow {last}")
            execute(c, insert, (event.run_id, event.sequence_id, event.event_type.value, text))
            execute(c, bump, (event.sequence_id, event.run_id))

        await self._call(lambda c: self._tx(c, body))

    async def read_events(self, run_id: str, after: int) -> list[ControlEvent]:
        sql = self._sql(
            "SELECT EVENT FROM {RUN_CONTROL_EVENTS} WHERE RUN_ID = ? AND SEQUENCE_ID > ? ORDER BY SEQUENCE_ID"
        )
        found = await self._call(lambda c: fetch(c, sql, (run_id, after)))
        return [ControlEvent.from_dict(json.loads(r["EVENT"])) for r in found]

    async def register_worker(self, heartbeat: Heartbeat) -> Heartbeat:
        hb = heartbeat
        insert = self._sql(
            "INSERT INTO {WORKER_HEARTBEATS} (RUN_ID, WORKER_ID, STATUS, PHASE, LAST_HEARTBEAT, HEARTBEAT_COUNT, "
            "ACTIVE_CONNECTIONS, APPLIED_SEQUENCE_ID, WORKER_GROUP, INCARNATION) "
            "SELECT ?, ?, ?, ?, {NOW}, 1, ?, ?, ?, ? "
            "WHERE NOT EXISTS (SELECT 1 FROM {WORKER_HEARTBEATS} WHERE RUN_ID = ? AND WORKER_ID = ?)"
        )
        select = self._sql("SELECT * FROM {WORKER_HEARTBEATS} WHERE RUN_ID = ? AND WORKER_ID = ?")
        params = (*_heartbeat_params(hb), hb.run_id, hb.worker_id)

        def body(c: Any) -> Heartbeat:
            execute(c, insert, params)  # one statement: two processes racing for an id cannot both win
            return _heartbeat(fetch(c, select, (hb.run_id, hb.worker_id))[0])

        return await self._call(body)

    async def upsert_heartbeat(self, heartbeat: Heartbeat) -> None:
        sql = self._sql(self.dialect.upsert_heartbeat)
        params = _heartbeat_params(heartbeat)
        await self._call(lambda c: execute(c, sql, params))

    async def mark_worker(self, run_id: str, worker_id: str, status: WorkerStatus) -> None:
        sql = self._sql(
            "UPDATE {WORKER_HEARTBEATS} SET STATUS = ? WHERE RUN_ID = ? AND WORKER_ID = ? AND STATUS <> 'DEAD'"
        )
        await self._call(lambda c: execute(c, sql, (status.value, run_id, worker_id)))

    async def read_heartbeats(self, run_id: str) -> list[Heartbeat]:
        sql = self._sql("SELECT * FROM {WORKER_HEARTBEATS} WHERE RUN_ID = ? ORDER BY WORKER_ID")
        found = await self._call(lambda c: fetch(c, sql, (run_id,)))
        return [_heartbeat(r) for r in found]

    async def upsert_result(self, result: WorkerResult) -> None:
        sql = self._sql(self.dialect.upsert_result)
        r = result
        params = (r.run_id, r.worker_id, r.status.value, json.dumps(r.payload), r.incarnation)
        await self._call(lambda c: execute(c, sql, params))

    async def read_results(self, run_id: str) -> list[WorkerResult]:
        sql = self._sql("SELECT * FROM {TEST_RESULTS} WHERE RUN_ID = ? ORDER BY WORKER_ID")
        found = await self._call(lambda c: fetch(c, sql, (run_id,)))
        return [
            WorkerResult(
                r["RUN_ID"], r["WORKER_ID"], r["STATUS"], json.loads(r["PAYLOAD"]), r["UPDATED_AT"], r["INCARNATION"]
            )
            for r in found
        ]

    async def append_snapshot(self, run_id: str, worker_id: str, snapshot: Mapping[str, Any]) -> None:
        sql = self._sql(
            "INSERT INTO {METRICS_SNAPSHOTS} (RUN_ID, WORKER_ID, SNAPSHOT, CREATED_AT) SELECT ?, ?, ?, {NOW}"
        )
        await self._call(lambda c: execute(c, sql, (run_id, worker_id, json.dumps(dict(snapshot)))))

    async def read_snapshots(self, run_id: str) -> list[tuple[str, dict[str, Any]]]:
        sql = self._sql(
            "SELECT WORKER_ID, SNAPSHOT FROM {METRICS_SNAPSHOTS} WHERE RUN_ID = ? ORDER BY CREATED_AT, WORKER_ID"
        )
        found = await self._call(lambda c: fetch(c, sql, (run_id,)))
        return [(r["WORKER_ID"], json.loads(r["SNAPSHOT"])) for r in found]

    async def server_time(self) -> float:
        sql = self._sql("SELECT {NOW} AS NOW")
        found = await self._call(lambda c: fetch(c, sql))
        return float(found[0]["NOW"])
