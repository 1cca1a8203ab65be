"""The control plane on a SQLite file. Instants come from SQLite's own clock
(``julianday('now')``, millisecond resolution), so every process shares one reference."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from backends.sqlcontrol import Dialect, SqlControlPlane
from backends.sqlite.db import Db

SQLITE = Dialect(
    now="((julianday('now') - 2440587.5) * 86400.0)",
    schema=(
        """CREATE TABLE IF NOT EXISTS {RUN_STATUS} (
            RUN_ID TEXT PRIMARY KEY, STATUS TEXT NOT NULL, PHASE TEXT NOT NULL, START_TIME REAL,
            UPDATED_AT REAL NOT NULL, LAST_SEQUENCE_ID INTEGER NOT NULL, WORKER_TARGET INTEGER NOT NULL,
            EXPECTED_WORKERS INTEGER NOT NULL, STOP_REASON TEXT, VERSION INTEGER NOT NULL, SCENARIO TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS {RUN_CONTROL_EVENTS} (
            RUN_ID TEXT NOT NULL, SEQUENCE_ID INTEGER NOT NULL, EVENT_TYPE TEXT NOT NULL, EVENT TEXT NOT NULL,
            CREATED_AT REAL NOT NULL, PRIMARY KEY (RUN_ID, SEQUENCE_ID))""",
        """CREATE TABLE IF NOT EXISTS {WORKER_HEARTBEATS} (
            RUN_ID TEXT NOT NULL, WORKER_ID TEXT NOT NULL, STATUS TEXT NOT NULL, PHASE TEXT NOT NULL,
            LAST_HEARTBEAT REAL NOT NULL, HEARTBEAT_COUNT INTEGER NOT NULL, ACTIVE_CONNECTIONS INTEGER NOT NULL,
            APPLIED_SEQUENCE_ID INTEGER NOT NULL, WORKER_GROUP TEXT NOT NULL, PRIMARY KEY (RUN_ID, WORKER_ID))""",
        """CREATE TABLE IF NOT EXISTS {TEST_RESULTS} (
            RUN_ID TEXT NOT NULL, WORKER_ID TEXT NOT NULL, STATUS TEXT NOT NULL, PAYLOAD TEXT NOT NULL,
            UPDATED_AT REAL NOT NULL, PRIMARY KEY (RUN_ID, WORKER_ID))""",
        """CREATE TABLE IF NOT EXISTS {METRICS_SNAPSHOTS} (
            RUN_ID TEXT NOT NULL, WORKER_ID TEXT NOT NULL, SNAPSHOT TEXT NOT NULL, CREATED_AT REAL NOT NULL)""",
    ),
    upsert_heartbeat="""INSERT INTO {WORKER_HEARTBEATS} VALUES (?, ?, ?, ?, {NOW}, 1, ?, ?, ?)
        ON CONFLICT (RUN_ID, WORKER_ID) DO UPDATE SET
          STATUS = CASE WHEN {WORKER_HEARTBEATS}.STATUS = 'DEAD' THEN 'DEAD' ELSE excluded.STATUS END,
          PHASE = excluded.PHASE, LAST_HEARTBEAT = excluded.LAST_HEARTBEAT,
          HEARTBEAT_COUNT = {WORKER_HEARTBEATS}.HEARTBEAT_COUNT + 1, ACTIVE_CONNECTIONS = excluded.ACTIVE_CONNECTIONS,
          APPLIED_SEQUENCE_ID = excluded.APPLIED_SEQUENCE_ID, WORKER_GROUP = excluded.WORKER_GROUP""",
    upsert_result="""INSERT INTO {TEST_RESULTS} VALUES (?, ?, ?, ?, {NOW})
        ON CONFLICT (RUN_ID, WORKER_ID) DO UPDATE SET STATUS = excluded.STATUS,
          PAYLOAD = excluded.PAYLOAD, UPDATED_AT = excluded.UPDATED_AT""",
    begin="BEGIN IMMEDIATE",
    errors=(sqlite3.Error,),
)


class SqliteControlPlane(SqlControlPlane):
    """The five control tables in one SQLite file (WAL, busy timeout, created if missing)."""

    def __init__(self, path: Path) -> None:
        super().__init__(Db(path), SQLITE, str(path))
        self.path = path

    async def close(self) -> None:
        await self.executor.close()  # type: ignore[attr-defined]
