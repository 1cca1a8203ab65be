"""One SQLite connection used from Trio: every call runs in a worker thread, one at a time."""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import trio

T = TypeVar("T")

BUSY_TIMEOUT_MS = 10_000
HOST_NOW = "startline_now"
"""A SQL function on every connection: this host's clock as epoch seconds (``time.time()``)."""


CONFINED_PRAGMAS = frozenset({"temp_store_directory", "data_store_directory"})


def confined(action: int, arg1: str | None, *_: object) -> int:
    """The authorizer of a session that runs operations: nothing outside its database file — no
    ``ATTACH`` (a file of any name written anywhere), no ``DETACH``, no pragma that moves files.
    (Extensions cannot load: Python's sqlite3 leaves ``load_extension`` disabled.)"""
    if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in CONFINED_PRAGMAS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def wal(conn: sqlite3.Connection) -> None:
    """Put the database in WAL mode. Processes that switch a new database to WAL at the same
    moment can be told "database is locked" at once — SQLite does not call the busy handler on
    that path — so it is tried again after a jittered pause, within ``BUSY_TIMEOUT_MS`` (a run's
    orchestrator and its workers open the target together: a run failed at its start on it)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    pause = 0.002
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                raise
        time.sleep(pause * random.uniform(0.5, 1.5))
        pause = min(0.1, 2 * pause)


def connect(path: Path, *, private: bool = False, confine: bool = False) -> sqlite3.Connection:
    """Autocommit connection in WAL mode with a busy timeout, usable from any one thread at a time.
    ``private``: a file created here is readable by its owner only (0600; SQLite gives its WAL and
    shared-memory files the same mode). ``confine``: the connection can reach no other file
    (``confined``; no database attached, which ``VACUUM INTO`` needs too)."""
    if private:
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    # The control plane's clock: this host's, at full resolution (julianday('now') has 1 ms).
    conn.create_function(HOST_NOW, 0, time.time)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    wal(conn)
    conn.execute("PRAGMA synchronous = NORMAL")
    if confine:
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.set_authorizer(confined)
    return conn


class Db:
    """A connection and the limiter that serialises its use across Trio tasks."""

    def __init__(self, path: Path, *, private: bool = False) -> None:
        self.path, self.private = path, private
        self._conn: sqlite3.Connection | None = None
        self._limiter = trio.CapacityLimiter(1)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        started = False

        def call() -> T:
            nonlocal started
            started = True
            if self._conn is None:
                self._conn = connect(self.path, private=self.private)
            return fn(self._conn)

        # A call cancelled by the caller is abandoned and its statement interrupted: its thread
        # returns at once, then releases the limiter.
        try:
            return await trio.to_thread.run_sync(call, limiter=self._limiter, abandon_on_cancel=True)
        except trio.Cancelled:
            if started:  # (not while it waited for the connection: that statement is another's)
                self.interrupt()
            raise

    def interrupt(self) -> None:
        """Abort the statement running on this connection (from any thread): it raises
        ``sqlite3.OperationalError('interrupted')`` in its own thread."""
        if self._conn is not None:
            self._conn.interrupt()

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await trio.to_thread.run_sync(conn.close, limiter=self._limiter)
