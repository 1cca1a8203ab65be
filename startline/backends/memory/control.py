"""The control plane in memory: the tables as dicts, one shared ``MemoryStore`` per run
set, one ``MemoryControlPlane`` per participant. Writes are atomic (one Trio thread)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

import attrs
import trio

from startline.engine.model import ControlEvent, Heartbeat, RunState, RunStatus, WorkerResult, WorkerStatus
from startline.engine.ports import ControlPlane, ControlPlaneConflict, ControlPlaneError, ControlPlaneTraits, WallClock

STAMPED_AT: ContextVar[float | None] = ContextVar("STAMPED_AT", default=None)
"""Set by a caller (the simulator) for the length of one write: the instant its statement read
the clock (``CURRENT_TIMESTAMP()`` as a statement begins), where it lands later."""


@attrs.define(eq=False)
class MemoryStore:
    """RUN_STATUS, RUN_CONTROL_EVENTS, WORKER_HEARTBEATS, TEST_RESULTS, METRICS_SNAPSHOTS."""

    clock: WallClock
    runs: dict[str, RunState] = attrs.Factory(dict)
    events: dict[str, list[ControlEvent]] = attrs.Factory(lambda: defaultdict(list))
    heartbeats: dict[str, dict[str, Heartbeat]] = attrs.Factory(lambda: defaultdict(dict))
    results: dict[str, dict[str, WorkerResult]] = attrs.Factory(lambda: defaultdict(dict))
    snapshots: dict[str, list[tuple[str, dict[str, Any]]]] = attrs.Factory(lambda: defaultdict(list))
    transitions: list[tuple[str, RunStatus, float]] = attrs.Factory(list)  # (run, new status, at): an audit trail
    _changed: dict[str, trio.Event] = attrs.Factory(dict)

    def now(self) -> float:
        stamped = STAMPED_AT.get()
        return self.clock.now() if stamped is None else stamped

    def run(self, run_id: str) -> RunState:
        try:
            return self.runs[run_id]
        except KeyError:
            raise ControlPlaneError(f"no run {run_id!r}") from None

    def bump(self, run_id: str, **changes: Any) -> RunState:
        run = self.run(run_id)
        before = run.status
        run = self.runs[run_id] = attrs.evolve(run, version=run.version + 1, updated_at=self.now(), **changes)
        if run.status is not before:
            self.transitions.append((run_id, run.status, run.updated_at))
        self._changed.pop(run_id, trio.Event()).set()
        return run

    async def wait_for_change(self, run_id: str, seen_version: int) -> int:
        while self.run(run_id).version <= seen_version:
            await self._changed.setdefault(run_id, trio.Event()).wait()
        return self.run(run_id).version


@attrs.define(eq=False)
class MemoryControlPlane(ControlPlane):
    """One participant's handle on a ``MemoryStore``; every call is a Trio checkpoint (unless
    ``checkpoints`` is off: the simulator, whose every call already waited on the clock)."""

    traits = ControlPlaneTraits(push=True)

    store: MemoryStore
    checkpoints: bool = True

    async def create_run(self, run: RunState) -> None:
        if self.checkpoints:
            await trio.lowlevel.checkpoint()
        if run.run_id in self.store.runs:
            raise ControlPlaneConflict(f"run {run.run_id!r} exists already")
        self.store.runs[run.run_id] = attrs.evolve(run, updated_at=self.store.now())

    async def read_run(self, run_id: str) -> RunState | None:
        if self.checkpoints:
            await trio.lowlevel.checkpoint()
        return self.store.runs.get(run_id)

    async def update_run(
        self, run_id: str, *, expect_status: RunStatus | None = None, start_time_now: bool = False, **changes: Any
    ) -> RunState | None:
        if self.checkpoints:
            await trio.lowlevel.checkpoint()
        if expect_status is not None and self.store.run(run_id).status is not expect_status:
            return None
        if start_time_now:
            changes["start_time"] = self.store.now()
        return self.store.bump(run_id, **changes)

    async def append_event(self, event: ControlEvent) -> None:
        if self.checkpoints:
            await trio.lowlevel.checkpoint()
        log = self.store.events[event.run_id]
        last = log[-1].sequence_id if log else 0
        if 0 < event.sequence_id <= last and log[event.sequence_id - 1] == event:
            return  # a retry of an append that landed: the log has it once
        if event.sequence_id != last + 1:
            raise ControlPlaneConflict(f"event sequence {event.sequence_id} does not follow {last}")
        log.append(event)
        self.store.bump(event.run_id, last_sequence_id=event.sequence_id)

    async def read_events(self, run_id: str, after: int) -> list[ControlEvent]:
        if self.checkpoints:
            await trio.lowlevel.checkpoint()
        return [e for e in self.store.events.get(run_id, ()) if e.sequence_id > after]

    async def register_worker(self, heartbeat: Heartbeat) -> Heartbeat:
        if self.checkpoints:
            await trio.lowlevel.checkpoint()
        rows = self.store.heartbeats[heartbeat.run_id]
        if heartbeat.worker_id not in rows:
            rows[heartbeat.worker_id] = attrs.evolve(heartbeat, last_heartbeat=self.store.now(), heartbeat_count=1)
        return rows[heartbeat.worker_id]

    async def upsert_heartbeat(self, heartbeat: Heartbeat) -> None:
        if self.checkpoints:
            await trio.lowlevel.checkpoint()
        rows = self.store.heartbeats[heartbeat.run_id]
        old = rows.get(heartbeat.worker_id)
        if old is not None and old.incarnation != heartbeat.incarnation:
            return  # another incarnation's row
        status = WorkerStatus.DEAD if old is not None and old.status is WorkerStatus.DEAD else heartbeat.status
        rows[heartbeat.worker_id] = attrs.evolve(
            heartbeat,
            status=status,
            last_heartbeat=self.store.now(),
            heartbeat_count=(old.heartbeat_count if old else 0) + 1,
        )

    async def mark_worker(self, run_id: str, worker_id: str, status: WorkerStatus) -> None:
        if self.checkpoints:
            await trio.lowlevel.checkpoint()
        rows = self.store.heartbeats[run_id]
        if worker_id in rows and rows[worker_id].status is not WorkerStatus.DEAD:
            rows[worker_id] = attrs.evolve(rows[worker_id], status=status)

    async def read_heartbeats(self, run_id: str) -> list[Heartbeat]:
        if self.checkpoints:
            await trio.lowlevel.checkpoint()
        return [hb for _, hb in sorted(self.store.heartbeats.get(run_id, {}).items())]

    async def upsert_result(self, result: WorkerResult) -> None:
        if self.checkpoints:
            await trio.lowlevel.checkpoint()
        rows = self.store.results[result.run_id]
        old = rows.get(result.worker_id)
        if old is not None and (old.incarnation != result.incarnation or old.status.final):
            return  # never another incarnation's, never once final
        rows[result.worker_id] = attrs.evolve(result, updated_at=self.store.now())

    async def read_results(self, run_id: str) -> list[WorkerResult]:
        if self.checkpoints:
            await trio.lowlevel.checkpoint()
        return [r for _, r in sorted(self.store.results.get(run_id, {}).items())]

    async def append_snapshot(self, run_id: str, worker_id: str, snapshot: Mapping[str, Any]) -> None:
        if self.checkpoints:
            await trio.lowlevel.checkpoint()
        self.store.snapshots[run_id].append((worker_id, dict(snapshot)))

    async def read_snapshots(self, run_id: str) -> list[tuple[str, dict[str, Any]]]:
        if self.checkpoints:
            await trio.lowlevel.checkpoint()
        return list(self.store.snapshots.get(run_id, ()))

    async def server_time(self) -> float:
        if self.checkpoints:
            await trio.lowlevel.checkpoint()
        return self.store.now()

    async def wait_for_change(self, run_id: str, seen_version: int) -> int:
        return await self.store.wait_for_change(run_id, seen_version)
