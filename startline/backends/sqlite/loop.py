"""A SQLite target connection whose statements run on the Trio thread (issue 23).

Most of a benchmark's statements take microseconds; a hop to a worker thread and back costs more
than they do (two GIL hand-overs and a thread wake-up per operation). So a statement runs on the
Trio task itself, within a budget: a progress handler watches it, and one still running after
``BUDGET_S`` is interrupted — rolled back, as SQLite does with an interrupted statement in
autocommit mode (unless the interrupt came as it returned, after its commit: then it is done) —
and run again in a worker thread, where it may take as long as it needs while the
worker's heartbeats and control tasks go on. A busy database (another connection holds the write
lock) backs off on Trio — ``trio.sleep`` with jitter, up to ``BUSY_TIMEOUT_MS`` in all — instead of
SQLite's busy handler sleeping on the event loop. Every statement ends with a checkpoint, so that a
connection that never waits still lets the other tasks run.

Within an explicit transaction (``BEGIN`` … ``COMMIT``: a ``transaction`` or ``call`` operation)
a statement runs to its end on the loop: SQLite rolls a whole transaction back when one of its
writes is interrupted, so the budget cannot move it. Keep such statements short."""

from __future__ import annotations

import math
import random
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from startline.backends.sqlite.db import BUSY_TIMEOUT_MS, connect

BUDGET_S = 0.002
"""How long a statement may run on the event loop before it moves to a thread."""
PROGRESS_STEPS = 1000
"""SQLite virtual-machine steps between two looks at the budget."""
INTERRUPT_EVERY_S = 0.005
"""How often a cancelled statement still running in its thread is interrupted again."""
TOUCH = "SELECT 1 FROM sqlite_schema LIMIT 0"
"""What ``touch`` runs: a read transaction begun and ended, no row read."""
BACKOFF_S = (0.0005, 0.05)
"""A busy database's first and longest wait before the statement is tried again."""


class LoopConnection:
    """One SQLite connection (autocommit) whose statements run on the calling Trio task."""

    def __init__(self, path: Path, *, confine: bool = True) -> None:
        self.path, self.confine = path, confine
        self._conn: sqlite3.Connection | None = None
        self._deadline = math.inf
        self._overran = False
        self._running = False  # one statement at a time: a session is one connection's task (no lock:
        # taking even a free Trio lock is a scheduling round, and the statement's checkpoint is one)
        self.moved = 0
        """Statements that outran the budget and ran in a thread."""
        self._in_use = False  # a thread is running a statement on the connection
        self._claim = threading.Lock()  # guards _ticket and _in_use between the threads
        self._ticket: object | None = None  # the moved statement a thread may still start

    async def _open(self) -> sqlite3.Connection:
        """The connection, opened in a thread the first time (opening may wait for a lock)."""
        if self._conn is None:

            def opened() -> sqlite3.Connection:
                conn = connect(self.path, confine=self.confine)
                conn.execute("PRAGMA busy_timeout = 0")  # busy: back off on Trio, not in SQLite's handler
                conn.set_progress_handler(self._progress, PROGRESS_STEPS)
                return conn

            self._conn = await trio.to_thread.run_sync(opened)
        return self._conn

    def _progress(self) -> int:
        if time.perf_counter() > self._deadline:
            self._overran = True
            return 1  # interrupt: OperationalError (rolled back, unless it had already committed)
        return 0

    async def run(self, sql: str, params: Mapping[str, Any] | Sequence[Any] = ()) -> list[Any]:
        """``sql`` with ``params`` bound; its rows."""
        if self._running:
            raise RuntimeError("a statement is already running on this connection")
        self._running = True
        try:
            conn = await self._open()
            if self._in_use:  # a cancelled statement's thread still holds the connection
                await self._settle(conn)
            waited, backoff = 0.0, BACKOFF_S[0]
            while True:
                self._overran = False
                changes = conn.total_changes
                # (within a transaction, no budget: an interrupted write rolls the whole transaction back)
                self._deadline = math.inf if conn.in_transaction else time.perf_counter() + BUDGET_S
                try:
                    rows = conn.execute(sql, params).fetchall()
                except sqlite3.OperationalError as exc:
                    self._deadline = math.inf
                    if self._overran and conn.total_changes != changes:
                        # SQLite also asks the progress handler once as a statement returns, after
                        # its commit: "interrupted" then, its changes are in — done, not run again
                        await trio.lowlevel.checkpoint()
                        return []
                    if self._overran:
                        self.moved += 1
                        return await self._in_thread(conn, sql, params)
                    if not _busy(exc) or waited >= BUSY_TIMEOUT_MS / 1000:
                        raise
                    pause = backoff * random.uniform(0.5, 1.0)
                    await trio.sleep(pause)
                    waited, backoff = waited + pause, min(BACKOFF_S[1], 2 * backoff)
                    continue
                self._deadline = math.inf
                await trio.lowlevel.checkpoint()  # a connection that never waits lets the others run
                return rows
        finally:
            self._running = False

    async def prepare(self, sql: str) -> None:
        """Compile ``sql`` into the connection's statement cache (keyed by its text: its first
        run then compiles nothing), running nothing: it is given more parameters than any
        statement can have (``NEVER_FITS``), which ``sqlite3`` refuses after compiling it and
        before its first step. A statement SQLite cannot compile is left for its run to report."""
        conn = await self._open()
        try:
            conn.execute(sql, NEVER_FITS)
        except sqlite3.Error:  # (ProgrammingError: "Incorrect number of bindings supplied")
            pass
        await trio.lowlevel.checkpoint()

    def touch(self) -> None:
        """Read the schema table on this connection, on the calling thread (microseconds:
        ``Session.rewarm`` in the release's last millisecond): SQLite's and ``sqlite3``'s code
        and the connection's read path back in the CPU's caches. Nothing when the connection is
        not open or a statement holds it; an error is ignored (its next statement reports it)."""
        conn = self._conn
        if conn is None or self._running or self._in_use:
            return
        try:
            conn.execute(TOUCH).fetchall()
        except sqlite3.Error:
            pass

    async def _in_thread(self, conn: sqlite3.Connection, sql: str, params: Any) -> list[Any]:
        """A statement that outran its budget, run again in a thread with SQLite's own busy wait.
        Cancelled, it is interrupted; the connection is not used again until its thread has let
        go of it (``_settle``), and a thread that had not started yet never touches it."""
        ticket = self._ticket = object()

        def call() -> list[Any]:
            with self._claim:
                if self._ticket is not ticket:  # cancelled before this thread began
                    return []  # (abandoned: nobody reads it)
                self._in_use = True
            try:
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                try:
                    return conn.execute(sql, params).fetchall()
                finally:
                    conn.execute("PRAGMA busy_timeout = 0")
            finally:
                with self._claim:
                    self._in_use = False

        try:
            return await trio.to_thread.run_sync(call, abandon_on_cancel=True)
        except trio.Cancelled:
            with self._claim:
                self._ticket = None
                running = self._in_use
            if running:
                conn.interrupt()
            raise

    async def _settle(self, conn: sqlite3.Connection, within_s: float = math.inf) -> None:
        """Wait until a cancelled statement's thread has returned, interrupting it every
        ``INTERRUPT_EVERY_S`` (an interrupt that reaches SQLite before the statement starts is
        lost, and the statement would run to its end)."""
        with trio.move_on_after(within_s):
            while self._in_use:
                conn.interrupt()
                await trio.sleep(INTERRUPT_EVERY_S)

    async def close(self) -> None:
        if self._conn is not None:
            await self._settle(self._conn, within_s=1.0)
        conn, self._conn = self._conn, None
        if conn is not None and not self._in_use:
            conn.close()


class _NeverFits:
    """A sequence of 2³¹ − 1 parameters, none of them held: more than SQLite's own ceiling."""

    def __len__(self) -> int:
        return 2**31 - 1

    def __getitem__(self, i: int) -> Any:
        raise IndexError(i)


NEVER_FITS = _NeverFits()


def _busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)
