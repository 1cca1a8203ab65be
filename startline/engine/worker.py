"""The worker: register, open sessions, wait for the start, run the workload, drain.

The start path is ``_start`` (driven by a frozen ``StartPlan``); the load path is
``engine.connection``; the measure path is ``payload()`` over the ``Recorder``. Decisions live
in ``engine.events``, ``engine.liveness``, ``engine.lifecycle``, ``engine.schedule`` and
``engine.clocksync``; this module is the thin layer of Trio tasks around them.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import time
import types
import uuid
from collections.abc import Mapping
from typing import Any

import attrs
import trio

from startline.engine.arrivals import OpenLoopRate
from startline.engine.clocksync import ClockMap, OffsetEstimate, estimate_offset, sleep_until_precisely
from startline.engine.connection import Connections
from startline.engine.counting import CountingControlPlane
from startline.engine.cpu import CpuWatch
from startline.engine.determinism import on_virtual_time
from startline.engine.events import WorkerView
from startline.engine.follow import RunFollower, WorkerExit, WorkerRefused, wait_for_run
from startline.engine.lifecycle import worker_transition
from startline.engine.metrics import Recorder
from startline.engine.model import (
    ControlEvent,
    Heartbeat,
    Phase,
    StopReason,
    WorkerStatus,
)
from startline.engine.pool import Pool
from startline.engine.ports import (
    ControlPlane,
    ControlPlaneError,
    Runtime,
    Session,
    Target,
    TrioRuntime,
    WallClock,
    same_clock,
)
from startline.engine.publish import Publisher
from startline.engine.resilience import HealthStatistics, ResilientControlPlane, RetryPolicy, single_leaf
from startline.engine.scenario import Bookkeeping, Scenario
from startline.engine.schedule import PhaseWindows, ramp_steps
from startline.engine.startplan import FIRST_ISSUE_WAIT_S, StartPlan, release_order, release_turn
from startline.engine.timeline import Timeline, host_witness, target_witness
from startline.engine.workload import derive_seed

log = logging.getLogger("startline.worker")

FORCE_GRACE_S = 1.0
"""After a forced stop: how long the worker may still take to finish, and then to publish."""
CANCELLED_GRACE_S = 3.0
"""After the drain timed out: how long cancelled connections have to record their unfinished
operations (a driver asks the server to stop each, within ``CANCEL_WAIT_S`` = 2 s) before the
worker publishes its results."""


@attrs.frozen
class WorkerStatistics:
    """A frozen snapshot of one worker: what the simulator, the runner and the fault checker read."""

    worker_id: str
    status: WorkerStatus
    failure: str | None
    view: WorkerView
    marks: Mapping[str, float]
    """Timeline marks on the control plane's clock (once the worker has its clock map)."""
    trio_marks: Mapping[str, float]
    """The same marks on this process's trio clock."""
    first_query: Mapping[int, float]
    """slot → trio time of the slot's first operation."""
    applied_events: tuple[int, ...]
    offset: OffsetEstimate | None
    health: HealthStatistics
    queries: Mapping[str, int]
    """Control-plane round trips by stage (setup, waiting, running, draining)."""
    operations: int
    """Successful operations recorded, all phases."""
    errors: int
    connections: int
    """Connections running now."""


@attrs.define(eq=False)
class Worker:
    """One worker process's (or task's) life; ``run()`` returns its TEST_RESULTS payload.

    ``scenario`` may be left out: the worker reads it from RUN_STATUS.
    """

    control: ControlPlane
    target: Target
    clock: WallClock
    run_id: str
    worker_id: str
    index: int = 0
    group: str = "default"
    scenario: Scenario | None = None
    incarnation: str = attrs.field(factory=lambda: uuid.uuid4().hex, kw_only=True)
    """This process's (or task's) claim on ``worker_id`` in the run: one incarnation per id."""
    runtime: Runtime = attrs.field(factory=TrioRuntime, kw_only=True)
    launched_at: float | None = attrs.field(default=None, kw_only=True)
    """When this worker's launcher started it, on this host's wall clock (``None``: not known):
    the process's start delay is measured from it."""
    round_trips: bool = attrs.field(default=True, kw_only=True)
    """Time each control-plane round trip by method, for ``calibrate`` (results' ``latency_us``)."""

    status: WorkerStatus = attrs.field(init=False, default=WorkerStatus.STARTING)
    failure: str | None = attrs.field(init=False, default=None)
    _follower: RunFollower = attrs.field(init=False)
    """The worker's reading of its run: its view, the log applied, the waits (``engine.follow``)."""
    recorder: Recorder = attrs.field(init=False, factory=Recorder)
    _counting: CountingControlPlane = attrs.field(init=False)
    _cp: ResilientControlPlane = attrs.field(init=False)
    _offset: OffsetEstimate | None = attrs.field(init=False, default=None)
    _initial_connections: int = attrs.field(init=False, default=0)
    _conns: Connections | None = attrs.field(init=False, default=None)
    _pool: Pool | None = attrs.field(init=False, default=None)
    _ramp_scope: trio.CancelScope | None = attrs.field(init=False, default=None)
    _publisher: Publisher = attrs.field(init=False)
    """Heartbeats, snapshots and results written (``engine.publish``)."""
    _main: trio.CancelScope = attrs.field(init=False, factory=trio.CancelScope)
    _forced: bool = attrs.field(init=False, default=False)
    _spent: trio.Event = attrs.field(init=False, factory=trio.Event)
    """Every connection has issued its ``operations_per_connection``."""
    _timeline: Timeline = attrs.field(init=False)
    _rate: OpenLoopRate | None = attrs.field(init=False, default=None)
    _cpu: CpuWatch | None = attrs.field(init=False, default=None)
    """This process's CPU use, sampled while it runs (live only: None on virtual time)."""
    """The open loop's rate state, once the scenario is known."""

    def __attrs_post_init__(self) -> None:
        self._counting = CountingControlPlane(self.control, self.round_trips, by_load=self.round_trips)
        self._timeline = Timeline(self._counting.enter)
        self._cp = ResilientControlPlane(
            self._counting, rng=random.Random(derive_seed("retry", self.run_id, self.worker_id))
        )
        if self.scenario is not None:
            self._cp.policy = RetryPolicy.of(self.scenario)
        self._publisher = Publisher(
            self._cp,
            self.run_id,
            self.worker_id,
            self.incarnation,
            self.recorder,
            self._heartbeat,
            self.payload,
            lambda: self.status,
            lambda: self._conns.settle() if self._conns is not None else None,
        )
        self._follower = RunFollower(
            self._cp,
            self.run_id,
            WorkerView(self.worker_id, self.group),
            self._timeline,
            self.runtime,
            random.Random(derive_seed("worker", self.run_id, self.worker_id)),
            self._heartbeat,
            on_view=self._view_changed,
            on_rate=self._rate_changed,
        )

    # ---- the public face ------------------------------------------------------------------

    @property
    def view(self) -> WorkerView:
        """What this worker knows of the run (from RUN_STATUS and the events it applied)."""
        return self._follower.view

    @view.setter
    def view(self, view: WorkerView) -> None:
        self._follower.set_view(view)

    def _view_changed(self, view: WorkerView) -> None:
        if self._conns is not None:  # the connections read the phase on every operation: handed, not asked
            self._conns.set_phase(view.phase)

    def _rate_changed(self, event: ControlEvent) -> None:
        assert self._rate is not None and self._conns is not None  # made before any event is applied
        self._rate.change((event.at, event.rate or 0.0, event.ramp_s), self._conns.arrivals)

    async def run(self) -> dict[str, Any]:
        """Run to the end; never raises for a run-level problem (the payload says FAILED)."""
        self._timeline.began, self._timeline.launched_at = self.clock.now(), self.launched_at
        try:
            with self._main:
                await self._run()
            if self._main.cancelled_caught and self.status is not WorkerStatus.COMPLETED:
                raise WorkerExit("forced_stop" if self._forced else "stopped_before_joining")
        except WorkerRefused:
            raise  # not this worker's run to write in: nothing is published, nothing overwritten
        except Exception as exc:  # the worker's own failure is a result, not a crash
            leaf = single_leaf(exc)
            if isinstance(leaf, WorkerExit):
                log.warning("worker %s stops: %s", self.worker_id, leaf.reason)
                self.failure = leaf.reason
            else:
                log.exception("worker %s failed", self.worker_id)
                self.failure = f"{type(leaf).__name__}: {leaf}"
            self._set_status(WorkerStatus.FAILED)
            self._timeline.mark("failed")
        payload = self.payload()
        if self.status is WorkerStatus.FAILED:
            forced = self._main.cancelled_caught
            with trio.move_on_after(FORCE_GRACE_S if forced else self._drain_timeout() + 1.0) as scope:
                scope.shield = True
                try:
                    await self._publish_final(WorkerStatus.FAILED)
                except ControlPlaneError as exc:
                    log.error("worker %s could not publish its results: %s", self.worker_id, exc)
        return payload

    def request_drain(self) -> None:
        """Stop as if STOP(user_requested) arrived (SIGTERM to a worker process): drain, flush, exit.
        Before the start that is at once; before the worker joined its run, it gives up (FAILED)."""
        if not self.view.stopping:
            self.view = attrs.evolve(self.view, stop_reason=StopReason.USER_REQUESTED)
        self._follower.wake.cancel()
        if self.status in (WorkerStatus.STARTING, WorkerStatus.INITIALIZING):
            self._main.cancel()

    def force_stop(self) -> None:
        """A second signal: end within ``2 × FORCE_GRACE_S`` whatever the worker waits for (a control
        plane that keeps failing included), keeping what it measured. Call it from a Trio task."""
        self._forced = True
        self.request_drain()
        self._main.deadline = min(self._main.deadline, trio.current_time() + FORCE_GRACE_S)

    def statistics(self) -> WorkerStatistics:
        frozen = types.MappingProxyType
        if self._conns is not None:  # what the connections hold for their interval counts too
            self._conns.settle()
        return WorkerStatistics(
            worker_id=self.worker_id,
            status=self.status,
            failure=self.failure,
            view=self.view,
            marks=frozen(dict(self._timeline.marks)),
            trio_marks=frozen(dict(self._timeline.trio_marks)),
            first_query=frozen(dict(self._conns.first_query if self._conns else {})),
            applied_events=tuple(self._follower.applied),
            offset=self._offset,
            health=self._cp.health.statistics(),
            queries=frozen(dict(self._counting.counts)),
            operations=self.recorder.operations(),
            errors=self.recorder.error_total(),
            connections=self._pool.size if self._pool else 0,
        )

    # ---- the life of a worker -------------------------------------------------------------

    async def _run(self) -> None:
        self._timeline.enter("setup")
        run = await wait_for_run(self._cp, self.run_id, self.scenario.start_timeout_s if self.scenario else 120.0)
        if run.status.terminal:
            raise WorkerRefused(f"run {self.run_id!r} has ended ({run.status}): it takes no more workers")
        await self._register()
        sc = self.scenario = self.scenario or Scenario.from_dict(run.scenario)
        if sc.undrawn_samples:  # joined during setup: the orchestrator is drawing the samples
            sc = self.scenario = await self._follower.scenario_with_samples(sc)
        self._follower.scenario = sc
        self._cp.policy = RetryPolicy.of(sc)
        self.recorder.interval_s = sc.snapshot_interval_s
        self.recorder.interval_latency = sc.interval_histograms
        self._initial_connections = run.connections or sc.connections_per_worker
        self.view = attrs.evolve(self.view, connections=self._initial_connections)
        self._set_status(WorkerStatus.INITIALIZING)
        await self._heartbeat()
        self._conns = Connections(
            sc,
            self.worker_id,
            self.index,
            self.recorder,
            self.target.error_category,
            self.target.error_message,
            self.view.phase,
            self._tag,
        )
        self._conns.left_gate = self.runtime.left_gate
        if not on_virtual_time():
            self._conns.host_now = time.time  # the host's own clock: a witness of the start
            self._cpu = CpuWatch()
        async with trio.open_nursery() as nursery:
            pool = self._pool = Pool(
                nursery, self._open_session, self._conns.run, self._note_connections, self.runtime.spawned
            )
            rate = self._rate = OpenLoopRate(sc, self._to_trio)
            self._conns.grow = lambda: rate.grow(nursery, pool.size, pool.scale_to, self.view.stopping)
            try:
                await pool.prepare(self._initial_connections)
                self._offset = await estimate_offset(self._cp, self.clock, sc.start.offset_samples)
                self._timeline.clockmap = ClockMap.anchor(self._offset)
                plan = StartPlan.of(sc.start, self._cp.traits.push, sc.load.controlled)
                self._timeline.detection = plan.detection.value
                if plan.pushed:
                    await self._cp.prepare_push()  # listening before READY: the START cannot come first
                self._set_status(WorkerStatus.READY)
                if plan.heartbeat_task_while_waiting:  # the inline loop says READY with its own first beat
                    await self._heartbeat()
                self._timeline.mark("ready")
                if await self._start(nursery, plan, pool):
                    await self._follower.follow(plan, self._spent, lambda: self._start_ramp(nursery))
                    if self._spent.is_set():
                        log.info("worker %s: every connection issued its operations_per_connection", self.worker_id)
                await self._drain(pool)
            finally:
                nursery.cancel_scope.cancel()
        await pool.close()

    async def _start(self, nursery: trio.Nursery, plan: StartPlan, pool: Pool) -> bool:
        """The start path: wait for the start as the plan says, bookkeeping, release the
        connections. False when the run stopped before it started."""
        sc, cm = self.scenario, self._timeline.clockmap
        assert sc is not None and cm is not None  # known before the start path
        self._timeline.enter("waiting")
        if plan.heartbeat_task_while_waiting:
            nursery.start_soon(self._publisher.chore, self._publisher.heartbeats(sc.heartbeat_s))
        if plan.prespawn:
            await pool.scale_to(self._initial_connections)
        with trio.fail_after(sc.start_timeout_s):
            try:
                with self._follower.wake:  # a drain request (SIGTERM) ends the wait at once
                    await self._follower.wait_for_start(plan)
            except trio.TooSlowError:
                raise WorkerExit("never_started") from None
        if self.view.stopping:
            return False
        self._timeline.mark("detect")
        if not plan.at_start_time:  # found by a read: what the process pays until its release
            if plan.prespawn:  # (else the spawning is on the path too)
                self._timeline.detected_at = trio.current_time()
            await self.runtime.detected()
        start_time = self.view.start_time
        assert start_time is not None  # a started view has its start time (apply_event, _see_run)
        start_trio = cm.to_trio(start_time)
        windows = self._publisher.windows = PhaseWindows.from_scenario(sc, start_time).shifted(start_trio - start_time)
        self._set_status(WorkerStatus.RUNNING)
        if plan.bookkeeping is not Bookkeeping.DEFERRED:
            booking = trio.current_time()
            await self._publisher.bookkeeping(plan.bookkeeping is Bookkeeping.PARALLEL, start_time, self._timeline.mark)
            self._timeline.bookkeeping_s = trio.current_time() - booking
        conns, rate = self._conns, self._rate
        assert conns is not None and rate is not None  # made in _run, before the pool
        conns.arm(windows, rate.first(), rate.plan(windows))  # the connections make ready, and park
        if plan.release_as_spawned:
            # as the original design: each connection starts as it is spawned
            conns.release()
        if not plan.prespawn:
            await pool.scale_to(self.view.connections)
        order = release_order(pool.slots, release_turn(self.run_id, self.worker_id))
        if plan.at_start_time:
            self._timeline.release_at = start_trio
            release = functools.partial(self.runtime.release_until, rewarm=functools.partial(pool.rewarm, order))
            await sleep_until_precisely(start_trio, plan.spin_s, release)
        if not conns.gate.is_open:
            conns.release(order)
            # the connections' first operations before anything else this task would start
            with trio.move_on_after(FIRST_ISSUE_WAIT_S):
                await conns.first_issued.wait()
            if plan.yield_after_release:
                self.runtime.yield_core()
        if pool.size != self.view.connections:
            await pool.scale_to(self.view.connections)
        self._timeline.mark("scale")
        self._timeline.enter("running")
        if plan.bookkeeping is Bookkeeping.DEFERRED:
            nursery.start_soon(self._publisher.bookkeeping, True, start_time, self._timeline.mark)
        nursery.start_soon(self._hard_stop, pool, windows.end + sc.drain_timeout_s)
        if not plan.heartbeat_task_while_waiting:
            nursery.start_soon(self._publisher.chore, self._publisher.heartbeats(sc.heartbeat_s))
        nursery.start_soon(self._publisher.chore, self._publisher.flushes(sc))
        if self._cpu is not None:
            nursery.start_soon(self._publisher.chore, functools.partial(self._cpu.loop, sc.snapshot_interval_s))
        return True

    # ---- after the start ----------------------------------------------------------------------

    def _to_trio(self, at: float | None) -> float:
        """A control-plane instant on this process's trio clock (None, or no clock map yet: now)."""
        cm = self._timeline.clockmap
        return trio.current_time() if at is None or cm is None else cm.to_trio(at)

    def _start_ramp(self, nursery: trio.Nursery) -> None:
        if self._ramp_scope is not None:
            self._ramp_scope.cancel()
        scope = self._ramp_scope = trio.CancelScope()
        nursery.start_soon(self._ramp, scope, self.view.connections, self.view.ramp_s)

    async def _ramp(self, scope: trio.CancelScope, wanted: int, ramp_s: float) -> None:
        pool = self._pool
        assert pool is not None  # ramps start only once the pool runs
        with scope:
            t0 = trio.current_time()
            for delay, n in ramp_steps(pool.size, wanted, ramp_s):
                await trio.sleep_until(t0 + delay)
                await pool.scale_to(n)

    async def _hard_stop(self, pool: Pool, deadline: float) -> None:
        """The planned end is known from the start: nothing runs past it plus the drain timeout,
        however late this worker reads the STOP event."""
        await trio.sleep_until(deadline)
        assert self._conns is not None  # made in _run, before the pool
        self._conns.drain()  # a drain that timed out: what is cancelled now is unfinished
        pool.cancel_all()

    async def _drain(self, pool: Pool) -> None:
        """Stop issuing, let in-flight operations finish within the drain timeout, then cancel."""
        conns = self._conns
        assert conns is not None  # made in _run, before the pool
        self._timeline.enter("draining")
        self._timeline.mark("stop")
        self._set_status(WorkerStatus.DRAINING)
        if self._ramp_scope is not None:
            self._ramp_scope.cancel()
        conns.drain()
        conns.close_schedule(trio.current_time())
        if not conns.gate.is_open:
            pool.cancel_all()
        with trio.move_on_after(self._drain_timeout()):
            await pool.wait_empty()
        pool.cancel_all()
        with trio.move_on_after(CANCELLED_GRACE_S):  # what was cancelled records itself as unfinished
            await pool.wait_exited()
        self._publisher.stop_chores()
        # COMPLETED once the results saying so are published; a last heartbeat tells the orchestrator.
        await self._publish_final(WorkerStatus.COMPLETED)
        self._timeline.enter("done")

    async def _publish_final(self, status: WorkerStatus) -> None:
        await self._publisher.flush_snapshots(final=True)
        await self._cp.upsert_result(self._publisher.result(status, self.payload(status)))
        self._set_status(status)
        try:
            await self._heartbeat()
        except ControlPlaneError as exc:  # the results are in: what they say stands
            log.warning("worker %s: last heartbeat not sent: %s", self.worker_id, exc)

    # ---- connections ----------------------------------------------------------------------------

    async def _open_session(self, slot: int) -> Session:
        session = await self.target.open_session(self.worker_id, slot)
        sc = self.scenario
        assert sc is not None  # sessions open after the scenario is known
        await session.set_phase(self._tag(Phase.WARMUP if sc.warmup_s > 0 else Phase.MEASUREMENT))
        await session.warm(sc.operations)
        return session

    def _tag(self, phase: Phase) -> dict[str, str]:
        return {"run_id": self.run_id, "worker_id": self.worker_id, "phase": str(phase)}

    # ---- bookkeeping helpers ---------------------------------------------------------------------

    async def _register(self) -> None:
        """Claim this worker id in the run: refused if another process holds it, live or not."""
        row = await self._cp.register_worker(self._beat())
        if row.incarnation != self.incarnation:
            raise WorkerRefused(
                f"worker id {self.worker_id!r} is taken in run {self.run_id!r} (by another process; its status "
                f"is {row.status}): each worker of a run needs its own id"
            )

    def _set_status(self, status: WorkerStatus) -> None:
        self.status = worker_transition(self.status, status)

    def _beat(self) -> Heartbeat:
        return Heartbeat(
            self.run_id,
            self.worker_id,
            self.status,
            self.view.phase,
            active_connections=self._pool.size if self._pool else 0,
            applied_sequence_id=self.view.applied,
            group=self.group,
            incarnation=self.incarnation,
        )

    async def _heartbeat(self) -> None:
        await self._cp.upsert_heartbeat(self._beat())

    def _note_connections(self, n: int) -> None:
        w = self._publisher.windows
        at = 0 if w is None else max(0, math.floor((trio.current_time() - w.start) / self.recorder.interval_s))
        self.recorder.note_connections(at, n)
        conns = self._conns
        if n == 0 and conns is not None and conns.spent and self.view.connections > 0 and not self._spent.is_set():
            # every connection has issued its operations_per_connection: this worker is done
            self._timeline.mark("spent")
            self._spent.set()
            self._follower.wake.cancel()

    def _drain_timeout(self) -> float:
        return self.scenario.drain_timeout_s if self.scenario else 5.0

    # ---- results ---------------------------------------------------------------------------------

    def payload(self, status: WorkerStatus | None = None) -> dict[str, Any]:
        """The TEST_RESULTS payload (saying ``status``, by default the worker's own): timeline,
        clock, metrics, control-plane cost, events applied."""
        cm, conns, tl = self._timeline.clockmap, self._conns, self._timeline
        firsts = conns.first_query if conns else {}
        timeline, initial = tl.of_run(firsts)

        return {
            "worker_id": self.worker_id,
            "incarnation": self.incarnation,
            "status": str(status or self.status),
            "failure": self.failure,
            "initial_connections": self._initial_connections,
            "clock_offset_ms": None if self._offset is None else self._offset.offset_s * 1000.0,
            "clock_uncertainty_ms": None if self._offset is None else self._offset.uncertainty_s * 1000.0,
            "timeline": timeline,
            "first_query": {str(s): t for s, t in initial.items()},
            "host": host_witness(
                conns.host_first_query if conns and conns.host_now else None, self._cp.traits.clock_is_host
            ),
            "target": target_witness(
                conns.target_first_query if conns else {}, same_clock(self._cp.traits, self.target.traits)
            ),
            "process": tl.process(firsts),
            "cpu": None if self._cpu is None else self._cpu.payload(self._publisher.windows),
            "control_plane": {
                "queries": dict(sorted(self._counting.counts.items())),
                "latency_us": self._counting.latency_payload(),
                **(self._counting.load_payload(cm.to_control if cm is not None else float) if self.round_trips else {}),
                "health": self._cp.health.statistics().to_payload(),
                "waiting_s": tl.span("waiting", "running"),
                "running_s": tl.span("running", "draining"),
            },
            "applied_events": list(self._follower.applied),
            "metrics": self.recorder.to_payload(cm.to_control if cm is not None else float),
        }
