"""SQLite target statements on the Trio thread (issue 23): no thread hop for the statements that
take microseconds; one that outruns its budget moves to a thread, and the event loop keeps
running meanwhile; a busy database backs off on Trio. Real SQLite files."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import trio

from startline.backends.sqlite import SqliteTarget
from startline.backends.sqlite.loop import LoopConnection
from startline.engine.scenario import OperationSpec
from startline.testing import thread_hops

LONG = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :to) SELECT count(*) FROM n"


async def test_quick_statements_run_without_a_thread_hop(tmp_path, monkeypatch) -> None:
    target = SqliteTarget(tmp_path / "data.db")
    await target.setup(["CREATE TABLE kv (k INTEGER PRIMARY KEY, v INTEGER)"])
    session = await target.open_session("w000", 0)
    hops = thread_hops(monkeypatch)
    try:
        for k in range(300):
            await session.execute(OperationSpec("w", sql="INSERT INTO kv VALUES (:k, :k)"), {"k": k})
            await session.execute(OperationSpec("r", sql="SELECT v FROM kv WHERE k = :k"), {"k": k})
    finally:
        await session.close()
    # a hop only for a statement that outran its budget on the loop (the process descheduled mid-
    # statement on a busy host, a WAL checkpoint's write): a few at most, none for the rest
    assert len(hops) == session.connection.moved <= 30, (len(hops), session.connection.moved)
    with sqlite3.connect(tmp_path / "data.db") as db:  # the same rows as a plain sqlite3 reference
        assert db.execute("SELECT count(*), sum(v) FROM kv").fetchone() == (300, sum(range(300)))


async def test_a_statement_past_its_budget_moves_to_a_thread_and_the_loop_goes_on(tmp_path) -> None:
    conn = LoopConnection(tmp_path / "data.db")
    ticks = 0
    done = trio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            await trio.sleep(0.001)
            ticks += 1

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            await trio.sleep(0.01)
            before = ticks
            rows = await conn.run(LONG, {"to": 3_000_000})
            during = ticks - before
            done.set()
        assert rows == [(3_000_000,)] and conn.moved == 1
        assert during > 0  # on the event loop, no other task could have run while it did
        assert await conn.run("SELECT 1") == [(1,)] and conn.moved == 1
    finally:
        await conn.close()


async def test_a_moved_statement_cancelled_is_interrupted_and_the_connection_goes_on(tmp_path) -> None:
    conn = LoopConnection(tmp_path / "data.db")
    try:
        with trio.move_on_after(0.2) as scope:
            await conn.run(LONG, {"to": 10**12})
        assert scope.cancelled_caught
        assert await conn.run("SELECT 2") == [(2,)]
    finally:
        await conn.close()


async def test_a_cancelled_moved_statement_has_let_go_of_the_connection_before_the_next_one_runs(
    tmp_path, monkeypatch
) -> None:
    """A cancelled statement moved to a thread may still be running there when the next one
    starts — longer when the interrupt reached SQLite before the statement did (it is lost).
    Used from two threads at once, SQLite's connection lock and the GIL can deadlock (the
    statement's progress handler waiting for the GIL held by a call waiting for the connection):
    a test process hung on it once. The next statement now waits, interrupting, until the
    thread has let go; a connection that sees two threads at once says so here instead of
    hanging."""
    import threading

    class Watched(sqlite3.Connection):
        interrupts_lost = 1
        inside = 0
        guard = threading.Lock()

        def interrupt(self) -> None:
            if self.interrupts_lost:
                self.interrupts_lost -= 1
                return
            super().interrupt()

        def execute(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            with self.guard:
                if self.inside:
                    raise AssertionError("the connection was used by two threads at once")
                self.inside += 1
            try:
                return super().execute(*args, **kwargs)
            finally:
                with self.guard:
                    self.inside -= 1

    real = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **kw: real(*a, factory=Watched, **kw))
    conn = LoopConnection(tmp_path / "data.db")
    try:
        await conn.run("CREATE TABLE t (x INTEGER)")
        insert = "INSERT INTO t " + LONG.replace("SELECT count(*) FROM n", "SELECT i FROM n")
        with trio.move_on_after(0.2) as scope:
            await conn.run(insert, {"to": 10**12})
        assert scope.cancelled_caught and conn.moved == 1
        assert await conn.run("SELECT count(*) FROM t") == [(0,)]  # interrupted for real: nothing written
    finally:
        await conn.close()


async def test_a_busy_database_backs_off_on_trio_and_the_write_lands(tmp_path) -> None:
    path = tmp_path / "data.db"
    conn = LoopConnection(path)
    await conn.run("CREATE TABLE t (x INTEGER)")  # (opened before the run, as a session is)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, held by another connection
    ticks = 0

    async def release_later() -> None:
        nonlocal ticks
        for _ in range(20):  # the loop turns while the write waits for the lock
            await trio.sleep(0.01)
            ticks += 1
        holder.execute("COMMIT")

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(release_later)
            await conn.run("INSERT INTO t VALUES (1)")
        assert ticks == 20 and conn.moved == 0
        assert await conn.run("SELECT count(*) FROM t") == [(1,)]
    finally:
        await conn.close()
        holder.close()


async def test_a_statement_interrupted_after_its_commit_is_not_run_again(tmp_path) -> None:
    """SQLite asks the progress handler once more as a statement returns — after its commit — and
    a statement interrupted then reports "interrupted" with its changes in. Run again in a thread,
    an INSERT landed twice (a pool run held a row more than it counted, under load). Every point at
    which the budget can run out, for a small INSERT: it lands once."""
    from startline.backends.sqlite import loop

    for steps in range(1, 40):
        conn = LoopConnection(tmp_path / f"data-{steps}.db")
        try:
            await conn.run("CREATE TABLE t (x INTEGER)")
            conn._conn.set_progress_handler(conn._progress, steps)  # look at the budget every `steps`
            budget, loop.BUDGET_S = loop.BUDGET_S, -1.0  # and find it spent at the first look
            try:
                await conn.run("INSERT INTO t VALUES (1)")
            finally:
                loop.BUDGET_S = budget
            assert await conn.run("SELECT count(*) FROM t") == [(1,)], steps
        finally:
            await conn.close()


def _connect_at(path: str, start: float, results: Any) -> None:
    import time

    from startline.backends.sqlite.db import connect

    while time.time() < start:  # every process at the same instant
        pass
    try:
        connect(Path(path)).execute("SELECT count(*) FROM t").fetchall()
        results.put("ok")
    except sqlite3.Error as exc:
        results.put(str(exc))


def test_processes_opening_a_new_database_at_the_same_instant_all_get_it_in_wal_mode(tmp_path) -> None:
    """A run failed at its start with "target: cannot reach it: database is locked": its
    orchestrator and workers opened the new target file together, and SQLite answers processes
    that switch a database to WAL at the same moment "locked" at once, without the busy wait
    (here: 2 rounds of 4 failed before). Each is now tried again after a jittered pause."""
    import multiprocessing
    import time

    ctx = multiprocessing.get_context("fork")
    for round_ in range(8):
        path = tmp_path / f"new-{round_}.db"
        with sqlite3.connect(path) as c:  # a new database, in the default (rollback) journal mode
            c.execute("CREATE TABLE t (x INTEGER)")
        results = ctx.Queue()
        start = time.time() + 0.3
        procs = [ctx.Process(target=_connect_at, args=(str(path), start, results)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        assert sorted(results.get(timeout=5) for _ in procs) == ["ok"] * 6, round_


async def test_warming_a_session_compiles_its_statements_so_their_first_runs_compile_nothing_and_changes_no_data(
    tmp_path,
) -> None:
    """Issue 25: a worker's connections take their first turns one after another at the release,
    and a statement's first run on a connection read the schema and compiled it (160–470 µs):
    ``warm`` compiles each statement as it will run — read-only, so a write changes nothing."""
    target = SqliteTarget(tmp_path / "data.db")
    await target.setup(["CREATE TABLE kv (k INTEGER PRIMARY KEY, v INTEGER)", "INSERT INTO kv VALUES (1, 1)"])
    session = await target.open_session("w000", 0)
    ops = [
        OperationSpec("w", sql="INSERT INTO kv VALUES (:k, :v)"),
        OperationSpec("u", sql="UPDATE kv SET v = v + :d WHERE k = :k"),
        OperationSpec("d", sql="DELETE FROM kv"),
        OperationSpec("r", sql="SELECT v FROM kv WHERE k = :k"),
        OperationSpec("bad", sql="SELECT nope FROM nowhere"),  # left for its run to report
        OperationSpec("c", call="tests.session_ops:add"),  # not SQL: nothing to warm
    ]
    compiled: list[int] = []
    raw = session.connection._conn
    assert raw is not None  # opened by open_session

    def authorize(action: int, *_: Any) -> int:  # SQLite asks as it compiles a statement
        compiled.append(action)
        return sqlite3.SQLITE_OK

    raw.set_authorizer(authorize)
    try:
        await session.warm(ops)
        writes = {sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE}
        assert writes | {sqlite3.SQLITE_READ} <= set(compiled)
        assert not raw.in_transaction
        with sqlite3.connect(tmp_path / "data.db") as other:  # nothing written, from any connection
            assert other.execute("SELECT k, v FROM kv").fetchall() == [(1, 1)]
        compiled.clear()
        await session.execute(ops[1], {"d": 2, "k": 1})  # the warmed statements run as written,
        assert await session.execute(ops[3], {"k": 1}) == [(3,)]
        await session.execute(ops[0], {"k": 2, "v": 5})
        assert compiled == []  # and compile nothing as they do
        await session.query("SELECT count(*) FROM kv", {})  # (a statement not warmed compiles)
        assert compiled
        raw.set_authorizer(None)
        assert await session.query("SELECT k, v FROM kv ORDER BY k", {}) == [(1, 3), (2, 5)]
    finally:
        await session.close()


async def test_a_touch_reads_the_schema_on_the_connection_changing_nothing_and_waits_for_no_statement(
    tmp_path,
) -> None:
    """Issue 25: ``Session.rewarm`` in the release's last millisecond: SQLite's read path back
    in the caches (a first statement after the wait took 150 µs, 60 µs after a touch)."""
    from startline.backends.sqlite.loop import TOUCH

    target = SqliteTarget(tmp_path / "data.db")
    await target.setup(["CREATE TABLE kv (k INTEGER PRIMARY KEY, v INTEGER)", "INSERT INTO kv VALUES (1, 1)"])
    LoopConnection(tmp_path / "data.db").touch()  # never opened: nothing to touch, no error
    session = await target.open_session("w000", 0)
    raw = session.connection._conn
    assert raw is not None
    ran: list[str] = []
    raw.set_trace_callback(ran.append)
    try:
        session.rewarm()
        assert ran == [TOUCH] and not raw.in_transaction and raw.total_changes == 0
        session.connection._running = True  # a statement holds the connection: left alone
        session.rewarm()
        assert ran == [TOUCH]
        session.connection._running = False
        assert await session.query("SELECT k, v FROM kv", {}) == [(1, 1)]
    finally:
        await session.close()
