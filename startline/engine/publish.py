"""What a worker writes while it runs and at its end: heartbeats, its snapshot intervals, its
results so far (a RUNNING TEST_RESULTS row) and its final results. Background writes are
"chores" that stop before the final results, so a late partial write never lands after them."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from startline.engine.metrics import Recorder
from startline.engine.model import WorkerResult, WorkerStatus
from startline.engine.resilience import ResilientControlPlane
from startline.engine.scenario import Scenario
from startline.engine.schedule import PhaseWindows


@attrs.define(eq=False)
class Publisher:
    cp: ResilientControlPlane
    run_id: str
    worker_id: str
    incarnation: str
    recorder: Recorder
    heartbeat: Callable[[], Awaitable[None]]
    payload: Callable[[], dict[str, Any]]
    """The results so far, saying the worker's status."""
    status: Callable[[], WorkerStatus]
    settle: Callable[[], None]
    """The connections hand the interval counts they hold to the recorder."""
    windows: PhaseWindows | None = None
    """The phase windows on this process's trio clock, once the start is detected."""
    snapshots: int = 0
    """Snapshots appended (each one's ``n``: a retried append is harmless)."""
    _chores: list[trio.CancelScope] = attrs.field(factory=list)

    def result(self, status: WorkerStatus, payload: dict[str, Any]) -> WorkerResult:
        return WorkerResult(self.run_id, self.worker_id, status, payload, incarnation=self.incarnation)

    async def bookkeeping(self, parallel: bool, start_time: float, mark: Callable[[str], None]) -> None:
        """The start's bookkeeping: a heartbeat saying RUNNING and the TEST_RESULTS row, one after
        the other or at once; each ``mark``ed (``heartbeat``, ``insert``) as it lands."""

        async def beat() -> None:
            await self.heartbeat()
            mark("heartbeat")

        async def insert() -> None:
            await self.cp.upsert_result(self.result(WorkerStatus.RUNNING, {"start_time": start_time}))
            mark("insert")

        if parallel:
            async with trio.open_nursery() as n:
                n.start_soon(beat)
                n.start_soon(insert)
        else:
            await beat()
            await insert()

    async def chore(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Run a background loop until ``stop_chores``."""
        with trio.CancelScope() as scope:
            self._chores.append(scope)
            await loop()

    def stop_chores(self) -> None:
        for chore in self._chores:
            chore.cancel()

    def heartbeats(self, every_s: float) -> Callable[[], Awaitable[None]]:
        async def loop() -> None:
            while True:
                await trio.sleep(every_s)
                await self.heartbeat()

        return loop

    def flushes(self, sc: Scenario) -> Callable[[], Awaitable[None]]:
        """Every flush interval: the finished snapshot intervals, and the results so far, so a worker
        that dies keeps what it measured up to its last flush."""
        flush_every = max(sc.flush_interval_s, sc.snapshot_interval_s)
        snap_every = sc.ship_interval_s

        async def loop() -> None:
            next_results = trio.current_time() + flush_every
            while True:
                await trio.sleep(snap_every)
                await self.flush_snapshots(final=False)
                if trio.current_time() >= next_results - 1e-9:
                    next_results += flush_every
                    await self.cp.upsert_result(self.result(self.status(), self.payload()))

        return loop

    async def flush_snapshots(self, final: bool) -> None:
        windows = self.windows
        if windows is None:
            return
        self.settle()
        now = trio.current_time()
        # the last flush takes every interval up to now (and no further than the planned end)
        upto = math.ceil if final else math.floor
        before = upto((min(now, windows.end) - windows.start) / self.recorder.interval_s)
        intervals = self.recorder.take_intervals(before, final=final)
        if intervals:
            # ``n`` makes a retried append harmless: readers keep one snapshot per (worker, n).
            self.snapshots += 1
            await self.cp.append_snapshot(self.run_id, self.worker_id, {"n": self.snapshots, "intervals": intervals})
