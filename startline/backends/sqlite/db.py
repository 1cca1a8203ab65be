"""One SQLite connection used from Trio: every call runs in a worker thread, one at a time."""

from __future__ import annotations

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


def connect(path: Path) -> sqlite3.Connection:
    """Autocommit connection in WAL mode with a busy timeout, usable from any one thread at a time."""
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    # The control plane's clock: this host's, at full resolution (julianday('now') has 1 ms).
    conn.create_function(HOST_NOW, 0, time.time)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


class Db:
    """A connection and the limiter that serialises its use across Trio tasks."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._limiter = trio.CapacityLimiter(1)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._conn is None:
                self._conn = connect(self.path)
            return fn(self._conn)

        # A call timed out by the caller is abandoned: its thread finishes alone, still holding the limiter.
        return await trio.to_thread.run_sync(call, limiter=self._limiter, abandon_on_cancel=True)

    def interrupt(self) -> None:
        """Abort the statement running on this connection (from any thread): it raises
        ``sqlite3.OperationalError('interrupted')`` in its own thread."""
        if self._conn is not None:
            self._conn.interrupt()

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await trio.to_thread.run_sync(conn.close, limiter=self._limiter)
