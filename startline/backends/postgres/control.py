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

from startline.backends.postgres.conn import PgExecutor, clock_key, connect, helper_name, safe
from startline.backends.sqlcontrol import Dialect, SqlControlPlane, create_tables
from startline.engine.ports import ControlPlaneTraits, fallback_read

CHANNEL = "startline_run"
LISTEN_WAIT_S = 0.5
"""How often the listening thread looks whether it is still wanted, and a waiter re-checks."""

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

    def __init__(self, url: str, application_name: str = helper_name("control")) -> None:
        super().__init__(PgExecutor(url, application_name), POSTGRES, safe(url))
        self.url = url
        self.traits = ControlPlaneTraits(push=True, clock_key=clock_key(url), clock_resolution_s=1e-6)
        self._listener: psycopg.Connection[Any] | None = None
        self._latest: dict[str, int] = {}
        self._notified = trio.Event()
        self._listens = self._notifications = self._fallbacks = 0

    @classmethod
    def from_url(cls, url: Any) -> PostgresControlPlane:
        return cls(url.connection)

    def statistics(self) -> PushStatistics:
        return PushStatistics(self._listener is not None, self._listens, self._notifications, self._fallbacks)

    @property
    def listener_pid(self) -> int | None:
        return None if self._listener is None else self._listener.info.backend_pid

    async def prepare_push(self) -> None:
        """Open the listening connection now (a worker does it before READY), not at the first wait."""
        await self._listen()

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
            if listening and self._listener is not None:
                with trio.move_on_after(LISTEN_WAIT_S):  # the listener thread sets it on every notification
                    await self._notified.wait()
                continue
            self._fallbacks += 1
            if (found := await fallback_read(self, run_id, seen_version)) is not None:
                return found
            listening = await self._listen()

    async def _listen(self) -> bool:
        """A listening connection, with its thread (opened if there is none): False when it
        cannot be had."""
        if self._listener is not None and not self._listener.closed:
            return True

        def open_listener() -> psycopg.Connection[Any]:
            conn = connect(self.url, helper_name("listen"))
            conn.execute(f"LISTEN {CHANNEL}")
            return conn

        try:
            conn = await trio.to_thread.run_sync(open_listener, abandon_on_cancel=True)
        except psycopg.Error:
            self._listener = None
            return False
        self._listener = conn
        self._listens += 1
        token = trio.lowlevel.current_trio_token()
        threading.Thread(target=self._receive, args=(conn, token), name="startline-listen", daemon=True).start()
        return True

    def _receive(self, conn: psycopg.Connection[Any], token: trio.lowlevel.TrioToken) -> None:
        """The listening thread: each notification into ``_latest`` and a wake-up of the waiters,
        until this connection is replaced or closed, or breaks (the waiters then poll)."""
        try:
            while self._listener is conn:
                for n in conn.notifies(timeout=LISTEN_WAIT_S):
                    run_id, _, version = n.payload.rpartition(":")
                    self._notifications += 1
                    if version.isdigit():
                        self._latest[run_id] = max(self._latest.get(run_id, -1), int(version))
                    trio.from_thread.run_sync(self._wake, trio_token=token)
        except psycopg.Error:
            if self._listener is conn:
                self._listener = None
            try:
                conn.close()
            except psycopg.Error:
                pass
            try:
                trio.from_thread.run_sync(self._wake, trio_token=token)  # the waiters fall back to polling
            except trio.RunFinishedError:
                pass
        except trio.RunFinishedError:
            pass

    def _wake(self) -> None:
        self._notified.set()
        self._notified = trio.Event()

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            await trio.to_thread.run_sync(listener.close)
        await self.executor.close()  # type: ignore[attr-defined]
