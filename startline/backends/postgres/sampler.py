"""A PostgreSQL target's server statistics over time (``ports.ServerSampler``): one connection of
the orchestrator's own (``application_name`` "startline observer", not one of the run's), one
query per reading — ``pg_stat_database`` for the target database with the server's clock, the
run's active sessions in ``pg_stat_activity`` by wait event type, and the locks they wait for.

The three statements go as one message and run as one implicit transaction: one round trip, one
consistent statistics snapshot (``stats_fetch_consistency``), and one ``xact_commit`` a reading,
which the summary counts (``server.sampling.transactions``). PostgreSQL (15 and later) publishes
a busy session's counts at the end of a transaction at most once a second, and an idle one's
within ten seconds or when it disconnects: an interval's deltas can trail its operations by up to
a second; their sum over a run whose sessions have ended is exact."""

from __future__ import annotations

import attrs
import trio

from startline.backends.postgres.conn import helper_name, run_sessions
from startline.backends.postgres.native import NativeConnection
from startline.engine.serverstats import COUNTERS, ServerReading

OBSERVER = helper_name("observer")

READING_SQL = (
    "SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8, "
    + ", ".join(COUNTERS)
    + " FROM pg_stat_database WHERE datname = current_database(); "
    "SELECT coalesce(wait_event_type, 'CPU'), count(*) FROM pg_stat_activity"
    f" WHERE state = 'active' AND {run_sessions()} GROUP BY 1; "
    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    f" WHERE NOT l.granted AND {run_sessions('a.application_name')}"
)
"""One reading: the clock and the counters, the waits, the locks waited for."""


@attrs.define(eq=False)
class PostgresServerSampler:
    url: str
    source: str = "pg_stat_database"
    connection: NativeConnection = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.connection = NativeConnection(self.url, OBSERVER)

    async def read(self, index: int) -> ServerReading:
        conn = self.connection
        sent = trio.current_time()
        stats, waits, locks = await conn.query(READING_SQL)
        received = trio.current_time()
        (row,) = conn.rows(stats)
        return ServerReading(
            index=index,
            sent=sent,
            received=received,
            server_s=float(row[0]),
            counters={k: int(v or 0) for k, v in zip(COUNTERS, row[1:], strict=True)},
            waits={str(kind): int(n) for kind, n in conn.rows(waits)},
            locks_waiting=int(conn.rows(locks)[0][0]),
        )

    async def close(self) -> None:
        await self.connection.close()
