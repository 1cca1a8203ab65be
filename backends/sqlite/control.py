"""The control plane on a SQLite file. Instants come from SQLite's own clock
(``julianday('now')``, millisecond resolution), so every process shares one reference."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

from backends.sqlite.db import Db, rows, transaction
from engine.model import ControlEvent, Heartbeat, RunState, RunStatus, WorkerResult, WorkerStatus
from engine.ports import ControlPlaneError

NOW = "((julianday('now') - 2440587.5) * 86400.0)"
"""SQLite's now as epoch seconds (UTC), evaluated once per statement."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS RUN_STATUS (
    RUN_ID TEXT PRIMARY KEY, STATUS TEXT NOT NULL, PHASE TEXT NOT NULL, START_TIME REAL,
    UPDATED_AT REAL NOT NULL, LAST_SEQUENCE_ID INTEGER NOT NULL DEFAULT 0, WORKER_TARGET INTEGER NOT NULL,
    EXPECTED_WORKERS INTEGER NOT NULL, STOP_REASON TEXT, VERSION INTEGER NOT NULL DEFAULT 0, SCENARIO TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS RUN_CONTROL_EVENTS (
    RUN_ID TEXT NOT NULL, SEQUENCE_ID INTEGER NOT NULL, EVENT_TYPE TEXT NOT NULL, EVENT TEXT NOT NULL,
    CREATED_AT REAL NOT NULL, PRIMARY KEY (RUN_ID, SEQUENCE_ID)
);
CREATE TABLE IF NOT EXISTS WORKER_HEARTBEATS (
    RUN_ID TEXT NOT NULL, WORKER_ID TEXT NOT NULL, STATUS TEXT NOT NULL, PHASE TEXT NOT NULL,
    LAST_HEARTBEAT REAL NOT NULL, HEARTBEAT_COUNT INTEGER NOT NULL, ACTIVE_CONNECTIONS INTEGER NOT NULL,
    APPLIED_SEQUENCE_ID INTEGER NOT NULL, WORKER_GROUP TEXT NOT NULL, PRIMARY KEY (RUN_ID, WORKER_ID)
);
CREATE TABLE IF NOT EXISTS TEST_RESULTS (
    RUN_ID TEXT NOT NULL, WORKER_ID TEXT NOT NULL, STATUS TEXT NOT NULL, PAYLOAD TEXT NOT NULL,
    UPDATED_AT REAL NOT NULL, PRIMARY KEY (RUN_ID, WORKER_ID)
);
CREATE TABLE IF NOT EXISTS METRICS_SNAPSHOTS (
    ID INTEGER PRIMARY KEY AUTOINCREMENT, RUN_ID TEXT NOT NULL, WORKER_ID TEXT NOT NULL,
    SNAPSHOT TEXT NOT NULL, CREATED_AT REAL NOT NULL
);
"""

_RUN_COLUMNS = {
    "status": "STATUS",
    "phase": "PHASE",
    "start_time": "START_TIME",
    "last_sequence_id": "LAST_SEQUENCE_ID",
    "worker_target": "WORKER_TARGET",
    "expected_workers": "EXPECTED_WORKERS",
    "stop_reason": "STOP_REASON",
}


def _run(row: Mapping[str, Any]) -> RunState:
    return RunState(
        row["RUN_ID"],
        row["STATUS"],
        row["PHASE"],
        start_time=row["START_TIME"],
        updated_at=row["UPDATED_AT"],
        last_sequence_id=row["LAST_SEQUENCE_ID"],
        worker_target=row["WORKER_TARGET"],
        expected_workers=row["EXPECTED_WORKERS"],
        stop_reason=row["STOP_REASON"],
        version=row["VERSION"],
        scenario=json.loads(row["SCENARIO"]),
    )


def _plain(value: Any) -> Any:
    return value.value if hasattr(value, "value") else value


@attrs.define(eq=False)
class SqliteControlPlane:
    """RUN_STATUS, RUN_CONTROL_EVENTS, WORKER_HEARTBEATS, TEST_RESULTS, METRICS_SNAPSHOTS in one file."""

    path: Path
    _db: Db = attrs.field(init=False)
    _ready: bool = False

    def __attrs_post_init__(self) -> None:
        self._db = Db(self.path)

    async def _call(self, fn: Any) -> Any:
        try:
            if not self._ready:
                await self._db.run(lambda c: c.executescript(SCHEMA))
                self._ready = True
            return await self._db.run(fn)
        except sqlite3.Error as exc:
            raise ControlPlaneError(f"sqlite control plane {self.path}: {exc}") from exc

    async def close(self) -> None:
        await self._db.close()

    async def create_run(self, run: RunState) -> None:
        def q(c: sqlite3.Connection) -> None:
            try:
                c.execute(
                    f"INSERT INTO RUN_STATUS VALUES (?, ?, ?, ?, {NOW}, ?, ?, ?, ?, ?, ?)",
                    (
                        run.run_id,
                        run.status.value,
                        run.phase.value,
                        run.start_time,
                        run.last_sequence_id,
                        run.worker_target,
                        run.expected_workers,
                        run.stop_reason,
                        run.version,
                        json.dumps(run.scenario),
                    ),
                )
            except sqlite3.IntegrityError:
                raise ControlPlaneError(f"run {run.run_id!r} exists already") from None

        await self._call(q)

    async def read_run(self, run_id: str) -> RunState | None:
        found = await self._call(lambda c: rows(c, "SELECT * FROM RUN_STATUS WHERE RUN_ID = ?", (run_id,)))
        return _run(found[0]) if found else None

    async def update_run(
        self, run_id: str, *, expect_status: RunStatus | None = None, start_time_now: bool = False, **changes: Any
    ) -> RunState | None:
        sets, params = [f"UPDATED_AT = {NOW}", "VERSION = VERSION + 1"], []
        for key, value in changes.items():
            sets.append(f"{_RUN_COLUMNS[key]} = ?")  # KeyError for an unknown field: a bug, not input
            params.append(_plain(value))
        if start_time_now:
            sets.append(f"START_TIME = {NOW}")
        where, wparams = "RUN_ID = ?", [run_id]
        if expect_status is not None:
            where += " AND STATUS = ?"
            wparams.append(expect_status.value)

        def q(c: sqlite3.Connection) -> RunState | None:
            def body(c: sqlite3.Connection) -> RunState | None:
                cur = c.execute(f"UPDATE RUN_STATUS SET {', '.join(sets)} WHERE {where}", (*params, *wparams))
                if cur.rowcount == 0:
                    return None
                return _run(rows(c, "SELECT * FROM RUN_STATUS WHERE RUN_ID = ?", (run_id,))[0])

            return transaction(c, body)

        return await self._call(q)

    async def append_event(self, event: ControlEvent) -> None:
        def body(c: sqlite3.Connection) -> None:
            (last,) = c.execute(
                "SELECT COALESCE(MAX(SEQUENCE_ID), 0) FROM RUN_CONTROL_EVENTS WHERE RUN_ID = ?", (event.run_id,)
            ).fetchone()
            if event.sequence_id != last + 1:
                raise ControlPlaneError(f"event sequence {event.sequence_id} does not follow {last}")
            c.execute(
                f"INSERT INTO RUN_CONTROL_EVENTS VALUES (?, ?, ?, ?, {NOW})",
                (event.run_id, event.sequence_id, event.event_type.value, json.dumps(event.to_dict())),
            )
            c.execute(
                f"UPDATE RUN_STATUS SET LAST_SEQUENCE_ID = ?, VERSION = VERSION + 1, UPDATED_AT = {NOW} "
                "WHERE RUN_ID = ?",
                (event.sequence_id, event.run_id),
            )

        await self._call(lambda c: transaction(c, body))

    async def read_events(self, run_id: str, after: int) -> list[ControlEvent]:
        found = await self._call(
            lambda c: c.execute(
                "SELECT EVENT FROM RUN_CONTROL_EVENTS WHERE RUN_ID = ? AND SEQUENCE_ID > ? ORDER BY SEQUENCE_ID",
                (run_id, after),
            ).fetchall()
        )
        return [ControlEvent.from_dict(json.loads(e)) for (e,) in found]

    async def upsert_heartbeat(self, heartbeat: Heartbeat) -> None:
        hb = heartbeat
        await self._call(
            lambda c: c.execute(
                f"""INSERT INTO WORKER_HEARTBEATS VALUES (?, ?, ?, ?, {NOW}, 1, ?, ?, ?)
                ON CONFLICT (RUN_ID, WORKER_ID) DO UPDATE SET
                  STATUS = CASE WHEN WORKER_HEARTBEATS.STATUS = 'DEAD' THEN 'DEAD' ELSE excluded.STATUS END,
                  PHASE = excluded.PHASE, LAST_HEARTBEAT = excluded.LAST_HEARTBEAT,
                  HEARTBEAT_COUNT = WORKER_HEARTBEATS.HEARTBEAT_COUNT + 1,
                  ACTIVE_CONNECTIONS = excluded.ACTIVE_CONNECTIONS,
                  APPLIED_SEQUENCE_ID = excluded.APPLIED_SEQUENCE_ID, WORKER_GROUP = excluded.WORKER_GROUP""",
                (
                    hb.run_id,
                    hb.worker_id,
                    hb.status.value,
                    hb.phase.value,
                    hb.active_connections,
                    hb.applied_sequence_id,
                    hb.group,
                ),
            )
        )

    async def mark_worker(self, run_id: str, worker_id: str, status: WorkerStatus) -> None:
        await self._call(
            lambda c: c.execute(
                "UPDATE WORKER_HEARTBEATS SET STATUS = ? WHERE RUN_ID = ? AND WORKER_ID = ? AND STATUS != 'DEAD'",
                (status.value, run_id, worker_id),
            )
        )

    async def read_heartbeats(self, run_id: str) -> list[Heartbeat]:
        found = await self._call(
            lambda c: rows(c, "SELECT * FROM WORKER_HEARTBEATS WHERE RUN_ID = ? ORDER BY WORKER_ID", (run_id,))
        )
        return [
            Heartbeat(
                r["RUN_ID"],
                r["WORKER_ID"],
                r["STATUS"],
                r["PHASE"],
                r["LAST_HEARTBEAT"],
                r["HEARTBEAT_COUNT"],
                r["ACTIVE_CONNECTIONS"],
                r["APPLIED_SEQUENCE_ID"],
                r["WORKER_GROUP"],
            )
            for r in found
        ]

    async def upsert_result(self, result: WorkerResult) -> None:
        await self._call(
            lambda c: c.execute(
                f"""INSERT INTO TEST_RESULTS VALUES (?, ?, ?, ?, {NOW})
                ON CONFLICT (RUN_ID, WORKER_ID) DO UPDATE SET STATUS = excluded.STATUS,
                  PAYLOAD = excluded.PAYLOAD, UPDATED_AT = excluded.UPDATED_AT""",
                (result.run_id, result.worker_id, result.status.value, json.dumps(result.payload)),
            )
        )

    async def read_results(self, run_id: str) -> list[WorkerResult]:
        found = await self._call(
            lambda c: rows(c, "SELECT * FROM TEST_RESULTS WHERE RUN_ID = ? ORDER BY WORKER_ID", (run_id,))
        )
        return [
            WorkerResult(r["RUN_ID"], r["WORKER_ID"], r["STATUS"], json.loads(r["PAYLOAD"]), r["UPDATED_AT"])
            for r in found
        ]

    async def append_snapshot(self, run_id: str, worker_id: str, snapshot: Mapping[str, Any]) -> None:
        await self._call(
            lambda c: c.execute(
                f"INSERT INTO METRICS_SNAPSHOTS (RUN_ID, WORKER_ID, SNAPSHOT, CREATED_AT) VALUES (?, ?, ?, {NOW})",
                (run_id, worker_id, json.dumps(dict(snapshot))),
            )
        )

    async def read_snapshots(self, run_id: str) -> list[tuple[str, dict[str, Any]]]:
        found = await self._call(
            lambda c: c.execute(
                "SELECT WORKER_ID, SNAPSHOT FROM METRICS_SNAPSHOTS WHERE RUN_ID = ? ORDER BY ID", (run_id,)
            ).fetchall()
        )
        return [(w, json.loads(s)) for w, s in found]

    async def server_time(self) -> float:
        (now,) = await self._call(lambda c: c.execute(f"SELECT {NOW}").fetchone())
        return float(now)


_ = trio
