"""The control plane on a SQLite file. Instants come from the host's clock through a SQL
function registered on every connection (``startline_now()``: ``time.time()``, microseconds;
SQLite's own ``julianday('now')`` has milliseconds): every process on the host shares it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from startline.backends.sqlcontrol import Dialect, SqlControlPlane, create_tables
from startline.backends.sqlite.db import HOST_NOW, Db
from startline.engine.ports import HOST_CLOCK, ControlPlaneTraits

SQLITE = Dialect(
    now=f"{HOST_NOW}()",
    schema=create_tables("CREATE TABLE IF NOT EXISTS", {"text": "TEXT", "real": "REAL", "int": "INTEGER"}),
    upsert_heartbeat="""INSERT INTO {WORKER_HEARTBEATS} VALUES (?, ?, ?, ?, {NOW}, 1, ?, ?, ?, ?)
        ON CONFLICT (RUN_ID, WORKER_ID) DO UPDATE SET
          STATUS = CASE WHEN {WORKER_HEARTBEATS}.STATUS = 'DEAD' THEN 'DEAD' ELSE excluded.STATUS END,
          PHASE = excluded.PHASE, LAST_HEARTBEAT = excluded.LAST_HEARTBEAT,
          HEARTBEAT_COUNT = {WORKER_HEARTBEATS}.HEARTBEAT_COUNT + 1, ACTIVE_CONNECTIONS = excluded.ACTIVE_CONNECTIONS,
          APPLIED_SEQUENCE_ID = excluded.APPLIED_SEQUENCE_ID, WORKER_GROUP = excluded.WORKER_GROUP
        WHERE {WORKER_HEARTBEATS}.INCARNATION = excluded.INCARNATION""",
    upsert_result="""INSERT INTO {TEST_RESULTS} VALUES (?, ?, ?, ?, {NOW}, ?)
        ON CONFLICT (RUN_ID, WORKER_ID) DO UPDATE SET STATUS = excluded.STATUS,
          PAYLOAD = excluded.PAYLOAD, UPDATED_AT = excluded.UPDATED_AT
        WHERE {TEST_RESULTS}.INCARNATION = excluded.INCARNATION
          AND {TEST_RESULTS}.STATUS NOT IN ('COMPLETED', 'FAILED')""",
    begin="BEGIN IMMEDIATE",
    errors=(sqlite3.Error,),
)


class SqliteControlPlane(SqlControlPlane):
    """The five control tables in one SQLite file (WAL, busy timeout, created if missing)."""

    traits = ControlPlaneTraits(clock_key=HOST_CLOCK, clock_resolution_s=1e-6)
    """The control plane's clock is this host's (``time.time()`` as a float: about a microsecond):
    host-clock witnesses measure against START_TIME."""

    def __init__(self, path: Path) -> None:
        super().__init__(Db(path, private=True), SQLITE, str(path))
        self.path = path

    async def close(self) -> None:
        await self.executor.close()  # type: ignore[attr-defined]
