"""A worker's reading of its run: RUN_STATUS and the control log, from joining to the STOP.

``RunFollower`` holds what the worker knows of the run (its ``WorkerView``), waits for the start
as the start plan says (inline, poll, push), applies the log's events once and in order, reads
RUN_STATUS to catch up and to judge whether the orchestrator is still there. The decisions are
pure (``engine.events``, ``engine.liveness``); the worker hears of each change through the hooks
it hands over (a phase, a count to ramp to, a rate) and never the other way round.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable

import attrs
import trio

from startline.engine.events import Next, WorkerView, after_poll, apply_event, catch_up, events_to_apply, reconcile
from startline.engine.liveness import RunSeen, judge_run_alive
from startline.engine.model import ControlEvent, EventType, RunState, RunStatus
from startline.engine.ports import ControlPlaneConflict, Runtime
from startline.engine.resilience import ResilientControlPlane
from startline.engine.scenario import Scenario
from startline.engine.startplan import INLINE_PERIOD_S, Detection, StartPlan
from startline.engine.timeline import Timeline

REGISTER_POLL_S = 0.1
"""How often a worker looks for its run's RUN_STATUS row before it exists."""


class WorkerRefused(ControlPlaneConflict):
    """The run will not have this worker: it has ended, or its id belongs to another process."""


class WorkerExit(Exception):
    """The worker stops on its own: the run never started, or its orchestrator went quiet."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def wait_for_run(cp: ResilientControlPlane, run_id: str, timeout_s: float = 120.0) -> RunState:
    """The run's RUN_STATUS row, once it exists (a worker may be started before its run)."""
    with trio.move_on_after(timeout_s):
        while True:
            run = await cp.read_run(run_id)
            if run is not None:
                return run
            await trio.sleep(REGISTER_POLL_S)
    raise WorkerExit("run_not_found")


@attrs.define(eq=False)
class RunFollower:
    cp: ResilientControlPlane
    run_id: str
    view: WorkerView
    timeline: Timeline
    runtime: Runtime
    rng: random.Random
    """Draws the jitter of poll intervals."""
    heartbeat: Callable[[], Awaitable[None]]
    """The inline wait beats itself (the original design's loop)."""
    on_view: Callable[[WorkerView], None] = lambda _view: None
    """Told of every new view (the connections read the phase from it)."""
    on_rate: Callable[[ControlEvent], None] = lambda _event: None
    """Told of every SET_RATE that addresses this worker."""
    scenario: Scenario | None = None
    applied: list[int] = attrs.field(factory=list)
    """Sequence ids applied, in order."""
    wake: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    """Cancelled to end the current wait at once (a drain request, every connection spent)."""
    _run_seen: RunSeen | None = None
    _idle_deadline: float = math.inf
    """Trio time RUN_STATUS would be stale past ``run_idle_timeout_s``: read it again then."""
    _last_run_check: float = -math.inf

    def set_view(self, view: WorkerView) -> None:
        self.view = view
        self.on_view(view)

    async def scenario_with_samples(self, sc: Scenario) -> Scenario:
        """``sc`` with its ``sample`` values, once they are in RUN_STATUS (read every
        ``REGISTER_POLL_S``, for up to ``start_timeout_s``). Only the values are taken from there:
        the operations stay ``sc``'s, the scenario this worker joined with (and vetted)."""
        with trio.move_on_after(sc.start_timeout_s):
            while True:
                run = await self.cp.read_run(self.run_id)
                if run is not None and run.status.terminal:
                    raise WorkerRefused(f"run {self.run_id!r} ended ({run.status}) before its samples were drawn")
                if run is not None:
                    drawn = Scenario.from_dict(run.scenario)
                    if not drawn.undrawn_samples:
                        return sc.with_samples(drawn.sample_values())
                await trio.sleep(REGISTER_POLL_S)
        raise WorkerRefused(f"run {self.run_id!r}: no samples after {sc.start_timeout_s:g} s")

    # ---- waiting for the start ----------------------------------------------------------------

    async def wait_for_start(self, plan: StartPlan) -> None:
        sc = self.scenario
        assert sc is not None  # known before the wait
        match plan.detection:
            case Detection.INLINE:
                await self._wait_inline(plan.poll_interval_s)
            case Detection.PUSH:
                await self._wait_push(sc.heartbeat_s * sc.stale_after_beats)
            case Detection.POLL:
                await self._wait_poll(plan.poll_interval_s, plan.jitter_s)

    async def _wait_inline(self, sleep_s: float) -> None:
        """The original design's ``_wait_for_start``: status poll each pass, events and heartbeat inline
        at most once a second (the first beat says READY), then sleep (200 ms in the seed). As
        the original design's loop, it leaves on what RUN_STATUS says, not on a START read among the events
        (a STOP there ends the wait)."""
        last_poll = last_beat = -math.inf
        while True:
            run = self.see_run(await self._read_run())
            if (run.status is RunStatus.RUNNING and self.view.started) or self.view.stopping:
                return
            now = trio.current_time()
            if now - last_poll >= INLINE_PERIOD_S:
                last_poll = now
                await self.poll_events(None)
                if self.view.stopping:
                    return
            if now - last_beat >= INLINE_PERIOD_S:
                last_beat = now
                await self.heartbeat()
            await self.timeline.sleep(self.runtime, sleep_s)

    async def _wait_poll(self, interval: float, jitter: float) -> None:
        """Poll RUN_STATUS every interval. The first poll waits one interval: the run cannot have
        started before the orchestrator read this worker's READY beat, which has only just landed."""
        while True:
            await self.timeline.sleep(self.runtime, self._interval(interval, jitter))
            self.see_run(await self._read_run())
            if self.view.started or self.view.stopping:
                return

    async def _wait_push(self, recheck_s: float) -> None:
        while True:
            run = self.see_run(await self._read_run())
            if self.view.started or self.view.stopping:
                return
            with trio.move_on_after(recheck_s):
                await self.cp.wait_for_change(self.run_id, run.version)

    async def _read_run(self) -> RunState | None:
        """RUN_STATUS, read while waiting for the start; how long the read took is kept (the one
        that finds the run started is the last: ``Timeline.detect_read``)."""
        began = trio.current_time()
        run = await self.cp.read_run(self.run_id)
        self.timeline.detect_read = trio.current_time() - began
        return run

    def _interval(self, interval: float, jitter: float) -> float:
        return max(0.0, interval + (self.rng.uniform(-jitter, jitter) if jitter > 0 else 0.0))

    # ---- RUN_STATUS ---------------------------------------------------------------------------

    def see_run(self, run: RunState | None) -> RunState:
        """Take what RUN_STATUS says about the start and the stop (events are applied apart)."""
        if run is None:
            raise WorkerExit("run_vanished")
        self._judge_orchestrator(run)
        if run.status is RunStatus.RUNNING and run.start_time is not None and not self.view.started:
            self.set_view(
                attrs.evolve(
                    self.view,
                    started=True,
                    start_time=run.start_time,
                    phase=run.phase,
                    connections=run.connections or self.view.connections,
                )
            )
        elif run.status in (RunStatus.STOPPING, RunStatus.CANCELLING) or run.status.terminal:
            self.set_view(reconcile(self.view, run))
        return run

    def _judge_orchestrator(self, run: RunState) -> None:
        sc = self.scenario
        assert sc is not None  # read before any RUN_STATUS is judged
        now, cm = trio.current_time(), self.timeline.clockmap
        # Time this worker could not reach the control plane itself is not the orchestrator's silence.
        own = self.cp.health.unreachable_s(cm.to_trio(run.updated_at), now) if cm is not None else 0.0
        verdict = judge_run_alive(
            run.updated_at, run.status.terminal, now, sc.run_idle_timeout_s, cm, own, self._run_seen
        )
        if verdict.lost:
            raise WorkerExit("orchestrator_lost")
        self._run_seen = verdict.seen
        if cm is not None:
            self._idle_deadline = verdict.recheck_at

    # ---- after the start ----------------------------------------------------------------------

    async def follow(self, plan: StartPlan, spent: trio.Event, ramp: Callable[[], None]) -> None:
        """Apply the log's events as they come (polled, or pushed), and read RUN_STATUS every
        check period and whenever the orchestrator could be judged lost, until the STOP (or every
        connection is ``spent``); ``ramp`` when the count this worker should run changes."""
        sc = self.scenario
        assert sc is not None  # known before the start
        check_every = max(sc.heartbeat_s, sc.run_idle_timeout_s / 4)
        seen_version = -1
        while not spent.is_set():
            await self.poll_events(ramp)
            if self.view.stopping:
                return
            now = trio.current_time()
            if now - self._last_run_check >= check_every or now >= self._idle_deadline:
                self._last_run_check = trio.current_time()
                run = await self.cp.read_run(self.run_id)
                if run is not None:
                    await self._catch_up(run.last_sequence_id, ramp)
                seen_version = self.see_run(run).version
                if self.view.stopping:
                    return
            self.wake = trio.CancelScope()
            with self.wake:
                if plan.pushed:
                    with trio.move_on_at(min(trio.current_time() + check_every, self._idle_deadline)):
                        seen_version = await self.cp.wait_for_change(self.run_id, seen_version)
                else:
                    await self.timeline.sleep(self.runtime, self._interval(plan.follow_interval_s, plan.jitter_s))
            if self.view.stopping:
                return

    async def poll_events(self, ramp: Callable[[], None] | None) -> None:
        """Read the log and apply what follows the last applied event; a hole is read again,
        then taken from RUN_STATUS (``events.after_poll``). ``ramp``: None before the start."""
        reads = 0
        while True:
            batch = events_to_apply(self.view.applied, await self.cp.read_events(self.run_id, self.view.applied))
            reads += 1
            for event in batch.to_apply:
                self._apply(event, ramp)
            step = after_poll(batch.gap, reads)
            if step is Next.DONE:
                return
            if step is Next.ADOPT_RUN_STATUS:
                run = await self.cp.read_run(self.run_id)
                if run is None:
                    raise WorkerExit("run_vanished")
                before = self.view.connections
                self.set_view(reconcile(self.view, run))
                if ramp is not None and self.view.connections != before:
                    ramp()
                return

    async def _catch_up(self, sequence_id: int, ramp: Callable[[], None]) -> None:
        """RUN_STATUS is ahead of this worker's log (a STOP seen there first): apply the events up to
        it, so each is applied once and in order; what a few reads cannot bring, RUN_STATUS reconciles."""
        reads = 0
        while catch_up(self.view.applied, sequence_id, reads) is Next.READ_AGAIN:
            await self.poll_events(ramp)
            reads += 1

    def _apply(self, event: ControlEvent, ramp: Callable[[], None] | None) -> None:
        before = self.view
        self.set_view(apply_event(self.view, event))
        self.applied.append(event.sequence_id)
        if ramp is not None and self.view.connections != before.connections and before.started:
            ramp()
        if event.event_type is EventType.SET_RATE and self.view.addresses(event) and event.rate is not None:
            self.on_rate(event)
