"""The control plane on PostgreSQL: the five tables, instants from the server's
``clock_timestamp()``, upserts with ``ON CONFLICT``, and **push**: a trigger NOTIFYs
``startline_run`` with ``RUN_ID:VERSION`` whenever RUN_STATUS changes (every status change and
every event append moves its version), and ``wait_for_change`` LISTENs on a connection of its
own. When that connection drops, waiting falls back to polling RUN_STATUS, and LISTENs again
at the next wait (``statistics()`` counts both)."""

from __future__ import annotations

import threading
from typing import Any

import attrs
import psycopg
import trio

from startline.backends.postgres.conn import PgExecutor, connect, safe
from startline.backends.sqlcontrol import Dialect, SqlControlPlane, create_tables
from startline.engine.ports import ControlPlaneError

CHANNEL = "startline_run"
FALLBACK_POLL_S = 0.05
"""Between two reads of RUN_STATUS while the listening connection is down."""
LISTEN_WAIT_S = 0.5
"""How long one listening thread waits for a notification before it returns (and is asked again)."""

POSTGRES = Dialect(
    now="EXTRACT(EPOCH FROM clock_timestamp())::float8",
    schema=(
        *create_tables("CREATE TABLE IF NOT EXISTS", {"text": "TEXT", "real": "DOUBLE PRECISION", "int": "BIGINT"}),
        f"""CREATE OR REPLACE FUNCTION startline_notify_run() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_notify('{CHANNEL}', NEW.RUN_ID || ':' || NEW.VERSION); RETURN NEW; END $$""",
        """CREATE OR REPLACE TRIGGER startline_run_changed AFTER INSERT OR UPDATE ON {RUN_STATUS}
            FOR EACH ROW EXECUTE FUNCTION startline_notify_run()""",
    ),
    upsert_heartbeat="""INSERT INTO {WORKER_HEARTBEATS} AS T VALUES (?, ?, ?, ?, {NOW}, 1, ?, ?, ?, ?)
        ON CONFLICT (RUN_ID, WORKER_ID) DO UPDATE SET
          STATUS = CASE WHEN T.STATUS = 'DEAD' THEN 'DEAD' ELSE excluded.STATUS END,
          PHASE = excluded.PHASE, LAST_HEARTBEAT = excluded.LAST_HEARTBEAT,
          HEARTBEAT_COUNT = T.HEARTBEAT_COUNT + 1, ACTIVE_CONNECTIONS = excluded.ACTIVE_CONNECTIONS,
          APPLIED_SEQUENCE_ID = excluded.APPLIED_SEQUENCE_ID, WORKER_GROUP = excluded.WORKER_GROUP
        WHERE T.INCARNATION = excluded.INCARNATION""",
    upsert_result="""INSERT INTO {TEST_RESULTS} AS T VALUES (?, ?, ?, ?, {NOW}, ?)
        ON CONFLICT (RUN_ID, WORKER_ID) DO UPDATE SET STATUS = excluded.STATUS,
          PAYLOAD = excluded.PAYLOAD, UPDATED_AT = excluded.UPDATED_AT
        WHERE T.INCARNATION = excluded.INCARNATION AND T.STATUS NOT IN ('COMPLETED', 'FAILED')""",
    begin="BEGIN",
    errors=(psycopg.Error,),
)


@attrs.frozen
class PushStatistics:
    listening: bool
    listens: int
    """Times a listening connection was opened (1 + recoveries)."""
    notifications: int
    fallback_polls: int
    """RUN_STATUS reads made because the listening connection was down."""


class PostgresControlPlane(SqlControlPlane):
    """The five control tables in the connection's schema (its ``search_path``), and push."""

    clock_resolution_s = 1e-6
    supports_push = True

    def __init__(self, url: str, application_name: str = "startline control") -> None:
        super().__init__(PgExecutor(url, application_name), POSTGRES, safe(url))
        self.url = url
        self._listener: psycopg.Connection[Any] | None = None
        self._latest: dict[str, int] = {}
        self._pump = threading.Lock()
        self._listens = self._notifications = self._fallbacks = 0

    @classmethod
    def from_url(cls, url: Any) -> PostgresControlPlane:
        return cls(url.connection)

    def statistics(self) -> PushStatistics:
        return PushStatistics(self._listener is not None, self._listens, self._notifications, self._fallbacks)

    @property
    def listener_pid(self) -> int | None:
        return None if self._listener is None else self._listener.info.backend_pid

    async def wait_for_change(self, run_id: str, seen_version: int) -> int:
        """Return once RUN_STATUS's version for ``run_id`` is past ``seen_version``: woken by its
        NOTIFY, or — the listening connection down — by polling until it is back."""
        listening = await self._listen()
        run = await self.read_run(run_id)  # a change before LISTEN took effect is seen here
        if run is not None and run.version > seen_version:
            return run.version
        while True:
            if self._latest.get(run_id, -1) > seen_version:
                return self._latest[run_id]
            if listening:
                listening = await trio.to_thread.run_sync(self._receive, abandon_on_cancel=True)
                continue
            await trio.sleep(FALLBACK_POLL_S)
            self._fallbacks += 1
            try:
                run = await self.read_run(run_id)
            except ControlPlaneError:
                continue
            if run is not None and run.version > seen_version:
                return run.version
            listening = await self._listen()

    async def _listen(self) -> bool:
        """A listening connection (opened if there is none): False when it cannot be had."""
        if self._listener is not None and not self._listener.closed:
            return True

        def open_listener() -> psycopg.Connection[Any]:
            conn = connect(self.url, "startline listen")
            conn.execute(f"LISTEN {CHANNEL}")
            return conn

        try:
            self._listener = await trio.to_thread.run_sync(open_listener, abandon_on_cancel=True)
        except psycopg.Error:
            self._listener = None
            return False
        self._listens += 1
        return True

    def _receive(self) -> bool:
        """In a thread: take the notifications that arrive within ``LISTEN_WAIT_S`` into
        ``_latest`` (a cancelled waiter's thread still records what it received); False when the
        listening connection broke."""
        conn = self._listener
        if conn is None:
            return False
        if not self._pump.acquire(timeout=LISTEN_WAIT_S):
            return True  # another thread is listening; look again
        try:
            for n in conn.notifies(timeout=LISTEN_WAIT_S, stop_after=1):
                run_id, _, version = n.payload.rpartition(":")
                self._notifications += 1
                if version.isdigit():
                    self._latest[run_id] = max(self._latest.get(run_id, -1), int(version))
            return True
        except psycopg.Error:
            self._listener = None
            try:
                conn.close()
            except psycopg.Error:
                pass
            return False
        finally:
            self._pump.release()

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            await trio.to_thread.run_sync(listener.close)
        await self.executor.close()  # type: ignore[attr-defined]
