"""The worker: register, open sessions, wait for the start, run the workload, drain.

Decisions live in ``startline.engine.events``, ``startline.engine.schedule`` and ``startline.engine.clocksync``;
this module is the thin layer of Trio tasks around them.
"""

from __future__ import annotations

import bisect
import logging
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from startline.engine.clocksync import ClockMap, OffsetEstimate, estimate_offset, sleep_until_precisely
from startline.engine.counting import CountingControlPlane
from startline.engine.events import WorkerView, apply_event, events_to_apply, reconcile
from startline.engine.metrics import HIGHEST_US, Recorder
from startline.engine.model import (
    ControlEvent,
    Heartbeat,
    Phase,
    RunState,
    RunStatus,
    StopReason,
    WorkerResult,
    WorkerStatus,
)
from startline.engine.pool import Pool
from startline.engine.ports import ControlPlane, ControlPlaneError, Session, Target, WallClock
from startline.engine.resilience import ResilientControlPlane, RetryPolicy, single_leaf
from startline.engine.scenario import Bookkeeping, Scenario, Strategy
from startline.engine.schedule import PhaseWindows, ramp_steps
from startline.engine.workload import Mix, ParamSource, derive_seed

log = logging.getLogger("startline.worker")

REGISTER_POLL_S = 0.1
"""How often a worker looks for its run's RUN_STATUS row before it exists."""
INLINE_PERIOD_S = 1.0
"""The seed's loop polls events and heartbeats inline at most once a second."""
MEASUREMENT = Phase.MEASUREMENT
NO_PARAMS: dict[str, Any] = {}
"""Shared by every parameterless operation (never mutated)."""
IDLE_MARGIN_S = 0.001
"""A read at the idle deadline itself finds the row just not stale yet: read a hair after."""
CATCH_UP_READS = 8
"""Event reads a worker tries before adopting RUN_STATUS for events it has not seen."""
SLOT_STRIDE = 100_000
"""Connection slots of worker ``index`` are ``index * SLOT_STRIDE + slot`` run-wide."""


class WorkerExit(Exception):
    """The worker stops on its own: the run never started, or its orchestrator went quiet."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def wait_for_run(cp: ControlPlane, run_id: str, timeout_s: float = 120.0) -> RunState:
    """The run's RUN_STATUS row, once it exists (a worker may be started before its run)."""
    with trio.move_on_after(timeout_s):
        while True:
            run = await cp.read_run(run_id)
            if run is not None:
                return run
            await trio.sleep(REGISTER_POLL_S)
    raise WorkerExit("run_not_found")


@attrs.define(eq=False)
class Worker:
    """One worker process's (or task's) life; ``run()`` returns its TEST_RESULTS payload."""

    control: ControlPlane
    target: Target
    clock: WallClock
    run_id: str
    worker_id: str
    index: int = 0
    group: str = "default"
    scenario: Scenario | None = None

    counting: CountingControlPlane = attrs.field(init=False)
    cp: ResilientControlPlane = attrs.field(init=False)
    status: WorkerStatus = WorkerStatus.STARTING
    view: WorkerView = attrs.field(init=False)
    recorder: Recorder = attrs.Factory(Recorder)
    marks: dict[str, float] = attrs.Factory(dict)
    trio_marks: dict[str, float] = attrs.Factory(dict)  # the same marks on this process's trio clock
    first_query: dict[int, float] = attrs.Factory(dict)
    applied_events: list[int] = attrs.Factory(list)
    offset: OffsetEstimate | None = None
    clockmap: ClockMap | None = None
    windows: PhaseWindows | None = None  # on this process's trio clock
    stage_started: dict[str, float] = attrs.Factory(dict)
    failure: str | None = None
    _initial_connections: int = 0
    _go: trio.Event = attrs.Factory(trio.Event)
    _draining: trio.Event = attrs.Factory(trio.Event)
    _pool: Pool | None = None
    _ramp_scope: trio.CancelScope | None = None
    _rng: random.Random = attrs.field(init=False)
    _last_run_check: float = -math.inf
    _run_seen_at: tuple[float, float] | None = None  # (trio time, RUN_STATUS.updated_at)
    _wake: trio.CancelScope = attrs.Factory(trio.CancelScope)
    _snapshots: int = 0
    _idle_deadline: float = math.inf  # trio time RUN_STATUS would be stale past run_idle_timeout_s
    _chores: list[trio.CancelScope] = attrs.Factory(list)

    def __attrs_post_init__(self) -> None:
        self.counting = CountingControlPlane(self.control)
        self.cp = ResilientControlPlane(
            self.counting, rng=random.Random(derive_seed("retry", self.run_id, self.worker_id))
        )
        if self.scenario is not None:
            self.cp.policy = RetryPolicy.of(self.scenario)
        self.view = WorkerView(self.worker_id, self.group)
        self._rng = random.Random(derive_seed("worker", self.run_id, self.worker_id))

    # ---- the life of a worker -------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        """Run to the end; never raises for a run-level problem (the payload says FAILED)."""
        try:
            await self._run()
        except Exception as exc:  # the worker's own failure is a result, not a crash
            leaf = single_leaf(exc)
            if isinstance(leaf, WorkerExit):
                log.warning("worker %s stops: %s", self.worker_id, leaf.reason)
                self.failure = leaf.reason
            else:
                log.exception("worker %s failed", self.worker_id)
                self.failure = f"{type(leaf).__name__}: {leaf}"
            self.status = WorkerStatus.FAILED
        payload = self.payload()
        if self.status is WorkerStatus.FAILED:
            with trio.move_on_after(self._drain_timeout() + 1.0) as scope:
                scope.shield = True
                try:
                    await self._publish_final()
                except ControlPlaneError as exc:
                    log.error("worker %s could not publish its results: %s", self.worker_id, exc)
        return payload

    async def _run(self) -> None:
        self._enter("setup")
        await self._heartbeat()
        run = await self._await_run_row()
        if self.scenario is None:
            self.scenario = Scenario.from_dict(run.scenario)
        sc = self.scenario
        self.cp.policy = RetryPolicy.of(sc)
        self.recorder.interval_s = sc.snapshot_interval_s
        self._initial_connections = run.connections or sc.connections_per_worker
        self.view = attrs.evolve(self.view, connections=self._initial_connections)
        self.status = WorkerStatus.INITIALIZING
        await self._heartbeat()
        async with trio.open_nursery() as nursery:
            self._pool = Pool(nursery, self._open_session, self._connection)
            try:
                await self._pool.prepare(self._initial_connections)
                self.offset = await estimate_offset(self.cp, self.clock, sc.start.offset_samples)
                self.clockmap = ClockMap.anchor(self.offset)
                self.status = WorkerStatus.READY
                await self._heartbeat()
                self._mark("ready")
                await self._life(nursery, sc)
            finally:
                nursery.cancel_scope.cancel()
        await self._pool.close()

    async def _life(self, nursery: trio.Nursery, sc: Scenario) -> None:
        assert self._pool is not None
        strategy = sc.start.strategy
        self._enter("waiting")
        legacy = strategy is Strategy.INLINE_POLL
        if not legacy:
            nursery.start_soon(self._chore, self._heartbeat_loop)
        prespawn = sc.start.prespawns
        if prespawn:
            await self._pool.scale_to(self._initial_connections)
        with trio.fail_after(sc.start_timeout_s):
            try:
                if legacy:
                    await self._wait_seed_legacy(sc.start.poll_interval_s)
                elif strategy is Strategy.PUSH and self.cp.supports_push:
                    await self._wait_push()
                else:
                    await self._wait_poll(sc.start.poll_interval_s, sc.start.jitter_ms / 1000.0)
            except trio.TooSlowError:
                raise WorkerExit("never_started") from None
        if self.view.stopping:
            await self._drain(nursery)
            return
        self._mark("detect")
        assert self.view.start_time is not None and self.clockmap is not None
        start_trio = self.clockmap.to_trio(self.view.start_time)
        self.windows = PhaseWindows.from_scenario(sc, self.view.start_time).shifted(start_trio - self.view.start_time)
        self.status = WorkerStatus.RUNNING
        mode = sc.start.bookkeeping_mode
        if mode is not Bookkeeping.DEFERRED:
            await self._bookkeeping(parallel=mode is Bookkeeping.PARALLEL)
        scheduled = strategy is Strategy.SCHEDULED
        if not prespawn:
            if not scheduled:
                self._go.set()  # as the seed: each connection starts as it is spawned
            await self._pool.scale_to(self.view.connections)
        if scheduled:
            await sleep_until_precisely(start_trio, sc.start.spin_ms / 1000.0)
        self._go.set()
        if self._pool.size != self.view.connections:
            await self._pool.scale_to(self.view.connections)
        self._mark("scale")
        self._enter("running")
        if mode is Bookkeeping.DEFERRED:
            nursery.start_soon(self._bookkeeping, True)
        nursery.start_soon(self._hard_stop, self.windows.end + sc.drain_timeout_s)
        if legacy:
            nursery.start_soon(self._chore, self._heartbeat_loop)
        nursery.start_soon(self._chore, self._flush_loop)
        await self._follow_events(nursery)
        await self._drain(nursery)

    # ---- waiting for the start --------------------------------------------------------------

    async def _wait_seed_legacy(self, sleep_s: float) -> None:
        """The seed's ``_wait_for_start``: status poll each pass, events and heartbeat inline
        at most once a second, then sleep (200 ms in the seed)."""
        last_poll = last_beat = -math.inf
        while True:
            self._see_run(await self.cp.read_run(self.run_id))
            if self.view.started or self.view.stopping:
                return
            now = trio.current_time()
            if now - last_poll >= INLINE_PERIOD_S:
                last_poll = now
                await self._poll_events()
                if self.view.started or self.view.stopping:
                    return
            if now - last_beat >= INLINE_PERIOD_S:
                last_beat = now
                await self._heartbeat()
            await trio.sleep(sleep_s)

    async def _wait_poll(self, interval: float, jitter: float) -> None:
        """Poll RUN_STATUS every interval. The first poll waits one interval: the run cannot have
        started before the orchestrator read this worker's READY beat, which has only just landed."""
        while True:
            await trio.sleep(self._interval(interval, jitter))
            self._see_run(await self.cp.read_run(self.run_id))
            if self.view.started or self.view.stopping:
                return

    async def _wait_push(self) -> None:
        sc = self.scenario
        assert sc is not None
        while True:
            run = await self.cp.read_run(self.run_id)
            self._see_run(run)
            if self.view.started or self.view.stopping:
                return
            assert run is not None
            with trio.move_on_after(sc.heartbeat_s * sc.stale_after_beats):
                await self.cp.wait_for_change(self.run_id, run.version)

    def _interval(self, interval: float, jitter: float) -> float:
        return max(0.0, interval + (self._rng.uniform(-jitter, jitter) if jitter > 0 else 0.0))

    def _see_run(self, run: RunState | None) -> None:
        """Take what RUN_STATUS says about the start and the stop (events are applied apart)."""
        if run is None:
            raise WorkerExit("run_vanished")
        self._check_run_alive(run)
        if run.status is RunStatus.RUNNING and run.start_time is not None and not self.view.started:
            self.view = attrs.evolve(
                self.view,
                started=True,
                start_time=run.start_time,
                phase=run.phase,
                connections=run.connections or self.view.connections,
            )
        elif run.status in (RunStatus.STOPPING, RunStatus.CANCELLING) or run.status.terminal:
            self.view = reconcile(self.view, run)

    def _check_run_alive(self, run: RunState) -> None:
        """Exit when RUN_STATUS has not been updated for ``run_idle_timeout_s`` (orchestrator lost):
        judged on the control plane's clock once this worker knows its offset, so the exit comes
        at the first read past the timeout; before that, from when this worker saw the row change."""
        assert self.scenario is not None
        if run.status.terminal:
            return
        now = trio.current_time()
        if self.clockmap is not None:
            # Time this worker could not reach the control plane itself is not the orchestrator's silence.
            seen = run.updated_at + self.cp.health.unreachable_s(self.clockmap.to_trio(run.updated_at), now)
            if self.clockmap.to_control(now) - seen > self.scenario.run_idle_timeout_s:
                raise WorkerExit("orchestrator_lost")
            # Read RUN_STATUS again as soon as it could be past the timeout, not a check period later.
            self._idle_deadline = self.clockmap.to_trio(seen + self.scenario.run_idle_timeout_s) + IDLE_MARGIN_S
            return
        if self._run_seen_at is None or run.updated_at != self._run_seen_at[1]:
            self._run_seen_at = (now, run.updated_at)
        elif now - self._run_seen_at[0] > self.scenario.run_idle_timeout_s:
            raise WorkerExit("orchestrator_lost")

    # ---- after the start ----------------------------------------------------------------------

    async def _bookkeeping(self, parallel: bool) -> None:
        """The start bookkeeping: heartbeat RUNNING and the TEST_RESULTS row."""

        async def beat() -> None:
            await self._heartbeat()
            self._mark("heartbeat")

        async def insert() -> None:
            await self.cp.upsert_result(
                WorkerResult(self.run_id, self.worker_id, WorkerStatus.RUNNING, {"start_time": self.view.start_time})
            )
            self._mark("insert")

        if parallel:
            async with trio.open_nursery() as n:
                n.start_soon(beat)
                n.start_soon(insert)
        else:
            await beat()
            await insert()

    async def _follow_events(self, nursery: trio.Nursery) -> None:
        sc = self.scenario
        assert sc is not None
        push = sc.start.strategy is Strategy.PUSH and self.cp.supports_push
        interval = INLINE_PERIOD_S if sc.start.strategy is Strategy.INLINE_POLL else sc.start.poll_interval_s
        check_every = max(sc.heartbeat_s, sc.run_idle_timeout_s / 4)
        seen_version = -1
        while True:
            await self._poll_events(nursery)
            if self.view.stopping:
                return
            now = trio.current_time()
            if now - self._last_run_check >= check_every or now >= self._idle_deadline:
                self._last_run_check = trio.current_time()
                run = await self.cp.read_run(self.run_id)
                if run is not None and run.last_sequence_id > self.view.applied:
                    await self._catch_up(run.last_sequence_id, nursery)
                self._see_run(run)
                assert run is not None
                seen_version = run.version
                if self.view.stopping:
                    return
            self._wake = trio.CancelScope()
            with self._wake:
                if push:
                    with trio.move_on_at(min(trio.current_time() + check_every, self._idle_deadline)):
                        seen_version = await self.cp.wait_for_change(self.run_id, seen_version)
                else:
                    await trio.sleep(self._interval(interval, sc.start.jitter_ms / 1000.0))
            if self.view.stopping:
                return

    async def _poll_events(self, nursery: trio.Nursery | None = None) -> None:
        batch = events_to_apply(self.view.applied, await self.cp.read_events(self.run_id, self.view.applied))
        for event in batch.to_apply:
            self._apply(event, nursery)
        if batch.gap:
            # A hole in what we read: read again once; whatever is still missing, take from RUN_STATUS.
            batch = events_to_apply(self.view.applied, await self.cp.read_events(self.run_id, self.view.applied))
            for event in batch.to_apply:
                self._apply(event, nursery)
            if batch.gap:
                run = await self.cp.read_run(self.run_id)
                assert run is not None
                before = self.view.connections
                self.view = reconcile(self.view, run)
                if nursery is not None and self.view.connections != before:
                    self._start_ramp(nursery)

    async def _catch_up(self, sequence_id: int, nursery: trio.Nursery) -> None:
        """RUN_STATUS is ahead of this worker's log (a STOP seen there first): apply the events up to
        it, so each is applied once and in order; what a few reads cannot bring, RUN_STATUS reconciles."""
        for _ in range(CATCH_UP_READS):
            if self.view.applied >= sequence_id:
                return
            await self._poll_events(nursery)

    def _apply(self, event: ControlEvent, nursery: trio.Nursery | None) -> None:
        before = self.view
        self.view = apply_event(self.view, event)
        self.applied_events.append(event.sequence_id)
        if nursery is not None and self.view.connections != before.connections and before.started:
            self._start_ramp(nursery)

    def _start_ramp(self, nursery: trio.Nursery) -> None:
        if self._ramp_scope is not None:
            self._ramp_scope.cancel()
        scope = self._ramp_scope = trio.CancelScope()
        nursery.start_soon(self._ramp, scope, self.view.connections, self.view.ramp_s)

    async def _ramp(self, scope: trio.CancelScope, wanted: int, ramp_s: float) -> None:
        assert self._pool is not None
        with scope:
            t0 = trio.current_time()
            for delay, n in ramp_steps(self._pool.size, wanted, ramp_s):
                await trio.sleep_until(t0 + delay)
                await self._pool.scale_to(n)

    async def _hard_stop(self, deadline: float) -> None:
        """The planned end is known from the start: nothing runs past it plus the drain timeout,
        however late this worker reads the STOP event."""
        assert self._pool is not None
        await trio.sleep_until(deadline)
        self._pool.cancel_all()

    async def _drain(self, nursery: trio.Nursery) -> None:
        """Stop issuing, let in-flight operations finish within the drain timeout, then cancel."""
        assert self._pool is not None
        self._enter("draining")
        self._mark("stop")
        self.status = WorkerStatus.DRAINING
        if self._ramp_scope is not None:
            self._ramp_scope.cancel()
        self._draining.set()
        if not self._go.is_set():
            self._pool.cancel_all()
        with trio.move_on_after(self._drain_timeout()):
            await self._pool.wait_empty()
        self._pool.cancel_all()
        for chore in self._chores:
            chore.cancel()
        self.status = WorkerStatus.COMPLETED
        await self._publish_final()
        self._enter("done")

    async def _publish_final(self) -> None:
        await self._flush_snapshots(final=True)
        await self.cp.upsert_result(WorkerResult(self.run_id, self.worker_id, self.status, self.payload()))
        await self._heartbeat()

    # ---- connections ----------------------------------------------------------------------------

    async def _open_session(self, slot: int) -> Session:
        session = await self.target.open_session(self.worker_id, slot)
        sc = self.scenario
        assert sc is not None
        await session.set_phase(self._tag(Phase.WARMUP if sc.warmup_s > 0 else Phase.MEASUREMENT))
        return session

    def _tag(self, phase: Phase) -> dict[str, str]:
        return {"run_id": self.run_id, "worker_id": self.worker_id, "phase": str(phase)}

    async def _connection(self, slot: int, session: Session) -> None:
        """One closed-loop connection: choose, draw, execute, record, think; until drained.

        The hot path: histograms and the current interval's counts are held locally, and
        the common case (an operation wholly inside MEASUREMENT) skips the general rule.
        """
        sc = self.scenario
        assert sc is not None
        mix = Mix.of(sc.operations)
        ops, total = mix.operations, mix.cumulative[-1]
        bounds = (*mix.cumulative[:-1], math.inf)  # bisect never runs off the end
        many = len(ops) > 1
        uniform = random.Random(derive_seed(sc.seed, self.worker_id, slot, "mix")).random
        bisect_right = bisect.bisect_right
        params = ParamSource(
            random.Random(derive_seed(sc.seed, self.worker_id, slot, "params")), slot=self.index * SLOT_STRIDE + slot
        )
        await self._go.wait()
        windows, rec, target, draining = self.windows, self.recorder, self.target, self._draining
        assert windows is not None
        now = trio.current_time
        measure, cooldown, end, origin = windows.measure, windows.cooldown, windows.end, windows.start
        interval_s = rec.interval_s
        limit, think = sc.operations_per_connection or math.inf, sc.think_time_ms / 1000.0
        hists: dict[tuple[str, Phase], Any] = {}
        measured = [rec.histogram(op.name, Phase.MEASUREMENT) for op in ops]
        tagged = self.view.phase
        first = slot not in self.first_query
        iv, iv_ops, iv_errors, iv_end = 0, 0, 0, -math.inf
        done = 0
        try:
            while done < limit and not draining.is_set():
                if self.view.phase is not tagged and self.view.phase is not Phase.DONE:
                    tagged = self.view.phase
                    await session.set_phase(self._tag(tagged))
                i = bisect_right(bounds, uniform() * total) if many else 0
                op = ops[i]
                args = params.draw(op) if op.params else NO_PARAMS
                began = now()
                if began >= end:
                    break
                if first:
                    self.first_query[slot] = began
                    first = False
                failed: Exception | None = None
                try:
                    await session.execute(op, args)
                except Exception as exc:
                    failed = exc
                ended = now()
                phase = MEASUREMENT if measure <= began and ended < cooldown else windows.attribute(began, ended)
                if ended >= iv_end:
                    if iv_ops or iv_errors:
                        rec.add_interval(iv, iv_ops, iv_errors)
                    iv = math.floor((ended - origin) / interval_s)
                    iv_end, iv_ops, iv_errors = origin + (iv + 1) * interval_s, 0, 0
                if failed is None:
                    if phase is MEASUREMENT:
                        hist = measured[i]
                    else:
                        hist = hists.get((op.name, phase))
                        if hist is None:
                            hist = hists[(op.name, phase)] = rec.histogram(op.name, phase)
                    us = int((ended - began) * 1e6 + 0.5)  # to_us, inlined: this is the hot path
                    hist.record_value(1 if us < 1 else us if us < HIGHEST_US else HIGHEST_US)
                    iv_ops += 1
                else:
                    rec.add_error(phase, target.error_category(failed))
                    iv_errors += 1
                    await trio.lowlevel.checkpoint()  # a failing call may not have yielded
                done += 1
                if think > 0:
                    with trio.move_on_after(think):
                        await draining.wait()
        finally:
            if iv_ops or iv_errors:
                rec.add_interval(iv, iv_ops, iv_errors)

    # ---- bookkeeping helpers ---------------------------------------------------------------------

    async def _await_run_row(self) -> RunState:
        return await wait_for_run(self.cp, self.run_id, self.scenario.start_timeout_s if self.scenario else 120.0)

    def request_drain(self) -> None:
        """Stop as if STOP(user_requested) arrived (SIGTERM to a worker process): drain, flush, exit."""
        if not self.view.stopping:
            self.view = attrs.evolve(self.view, stop_reason=StopReason.USER_REQUESTED)
        self._wake.cancel()

    async def _heartbeat(self) -> None:
        await self.cp.upsert_heartbeat(
            Heartbeat(
                self.run_id,
                self.worker_id,
                self.status,
                self.view.phase,
                active_connections=self._pool.size if self._pool else 0,
                applied_sequence_id=self.view.applied,
                group=self.group,
            )
        )

    async def _chore(self, loop: Callable[[], Awaitable[None]]) -> None:
        """A background loop (heartbeats, flushes) that ``_drain`` stops before the final results:
        a late partial write never lands after them."""
        with trio.CancelScope() as scope:
            self._chores.append(scope)
            await loop()

    async def _heartbeat_loop(self) -> None:
        assert self.scenario is not None
        while True:
            await trio.sleep(self.scenario.heartbeat_s)
            await self._heartbeat()

    async def _flush_loop(self) -> None:
        """Every flush interval: the finished snapshot intervals, and the results so far (a RUNNING
        TEST_RESULTS row), so a worker that dies keeps what it measured up to its last flush."""
        assert self.scenario is not None
        while True:
            await trio.sleep(max(self.scenario.flush_interval_s, self.scenario.snapshot_interval_s))
            await self._flush_snapshots(final=False)
            await self.cp.upsert_result(WorkerResult(self.run_id, self.worker_id, self.status, self.payload()))

    async def _flush_snapshots(self, final: bool) -> None:
        if self.windows is None:
            return
        before = (
            math.inf if final else math.floor((trio.current_time() - self.windows.start) / self.recorder.interval_s)
        )
        intervals = self.recorder.take_intervals(before)  # type: ignore[arg-type]
        if intervals:
            # ``n`` makes a retried append harmless: readers keep one snapshot per (worker, n).
            self._snapshots += 1
            await self.cp.append_snapshot(self.run_id, self.worker_id, {"n": self._snapshots, "intervals": intervals})

    def _drain_timeout(self) -> float:
        return self.scenario.drain_timeout_s if self.scenario else 5.0

    def _enter(self, stage: str) -> None:
        self.counting.stage = stage
        self.stage_started[stage] = trio.current_time()

    def _mark(self, name: str) -> None:
        self.trio_marks[name] = trio.current_time()
        if self.clockmap is not None:
            self.marks[name] = self.clockmap.to_control(trio.current_time())

    # ---- results ---------------------------------------------------------------------------------

    def payload(self) -> dict[str, Any]:
        """The TEST_RESULTS payload: timeline, clock, metrics, control-plane cost, events applied."""
        cm = self.clockmap
        initial = {s: (cm.to_control(t) if cm else t) for s, t in sorted(self.first_query.items())}
        timeline = dict(self.marks)
        if initial:
            timeline["first_query"] = min(initial.values())
        st = self.stage_started
        now = trio.current_time()

        def span(a: str, b: str) -> float:
            return (st.get(b, now) - st[a]) if a in st else 0.0

        return {
            "worker_id": self.worker_id,
            "status": str(self.status),
            "failure": self.failure,
            "initial_connections": self._initial_connections,
            "clock_offset_ms": None if self.offset is None else self.offset.offset_s * 1000.0,
            "clock_uncertainty_ms": None if self.offset is None else self.offset.uncertainty_s * 1000.0,
            "timeline": timeline,
            "first_query": {str(s): t for s, t in initial.items()},
            "control_plane": {
                "queries": dict(sorted(self.counting.counts.items())),
                "health": self.cp.health.to_payload(),
                "waiting_s": span("waiting", "running"),
                "running_s": span("running", "draining"),
            },
            "applied_events": list(self.applied_events),
            "metrics": self.recorder.to_payload(),
        }
