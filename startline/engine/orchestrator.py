"""The orchestrator: the only writer of the control log. It creates the run, waits for
READY workers, starts them, drives the phases and the scaling schedule, watches
heartbeats, collects results and writes the summary."""

from __future__ import annotations

import logging
import random
import types
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

from startline.engine.clocksync import ClockMap, estimate_offset
from startline.engine.counting import CountingControlPlane
from startline.engine.eventlog import EventLog
from startline.engine.files import write_summary
from startline.engine.lifecycle import adoption_refused, run_outcome, run_transition
from startline.engine.loadcontrol import initial_connections
from startline.engine.model import (
    ORCHESTRATOR,
    ControlEvent,
    EventType,
    Phase,
    RunState,
    RunStatus,
    StopReason,
    WorkerResult,
    WorkerStatus,
)
from startline.engine.ports import ControlPlane, ControlPlaneConflict, ControlPlaneError, WallClock
from startline.engine.resilience import HealthStatistics, ResilientControlPlane, RetryPolicy, single_leaf
from startline.engine.roster import Roster
from startline.engine.scenario import OnWorkerLoss, Scenario
from startline.engine.schedule import PhaseWindows
from startline.engine.secrets import settings_without_secrets
from startline.engine.startplan import StartPlan
from startline.engine.steering import Steering
from startline.engine.summary import build_summary, interval_kinds, kind_errors, kind_retries, merge_timeseries
from startline.engine.workload import derive_seed

log = logging.getLogger("startline.orchestrator")

FORCE_GRACE_S = 1.0
"""After a forced stop: how long the orchestrator may still take to write the STOP and collect
what is in, and then to record the end, before it writes the summary with what it has."""


@attrs.frozen
class OrchestratorStatistics:
    """A frozen snapshot of the orchestrator: what the CLI, the simulator and the fault checker read."""

    run_id: str
    status: RunStatus
    stop_reason: StopReason | None
    stop_detail: str | None
    start_time: float | None
    stopped_at: float | None
    worker_statuses: Mapping[str, WorkerStatus]
    worker_groups: Mapping[str, str]
    """worker → its group, as its heartbeats said."""
    dead_at: Mapping[str, float]
    """worker → trio time it was judged DEAD."""
    events: tuple[ControlEvent, ...]
    health: HealthStatistics
    queries: int
    stop_requested: bool
    forced: bool
    adopted: RunState | None
    """A run found unfinished without its orchestrator (see ``prepare``)."""


@attrs.define(eq=False)
class Orchestrator:
    """Drives one run; ``run()`` returns the summary (and writes it when ``out`` is set)."""

    control: ControlPlane
    clock: WallClock
    scenario: Scenario
    run_id: str
    out: Path | None = None
    round_trips: bool = attrs.field(default=True, kw_only=True)
    """Time each control-plane round trip by method, for ``calibrate`` (results' ``latency_us``)."""
    sleep_until: Callable[[float], Awaitable[None]] = attrs.field(default=trio.sleep_until, kw_only=True)
    """How this process and its roster sleep to a trio instant (their plain sleeps; waits that also
    end on an event keep a cancel scope): ``trio.sleep_until``, a cancel scope per sleep; a
    simulation passes its clock's, which needs none (``simulate/clock.py``)."""

    status: RunStatus = attrs.field(init=False, default=RunStatus.PREPARED)
    stop_reason: StopReason | None = attrs.field(init=False, default=None)
    """Why the run stopped, when not as planned (set once)."""
    stop_detail: str | None = attrs.field(init=False, default=None)
    start_time: float | None = attrs.field(init=False, default=None)
    stopped_at: float | None = attrs.field(init=False, default=None)
    adopted: RunState | None = attrs.field(init=False, default=None)
    _counting: CountingControlPlane = attrs.field(init=False)
    _cp: ResilientControlPlane = attrs.field(init=False)
    _clockmap: ClockMap | None = attrs.field(init=False, default=None)
    clock_uncertainty_s: float = attrs.field(init=False, default=0.0)
    """How far this process's clock map may be off the control plane's (its offset estimate's)."""
    final_payloads: list[dict[str, Any]] = attrs.field(init=False, factory=list)
    """The workers' results the summary was built from (a live view's last reading)."""
    _log: EventLog = attrs.field(init=False)
    """RUN_CONTROL_EVENTS: this orchestrator is its only writer."""
    _stop_requested: trio.Event = attrs.field(init=False, factory=trio.Event)
    _requested_reason: StopReason = attrs.field(init=False, default=StopReason.COMPLETED)
    _force: trio.Event = attrs.field(init=False, factory=trio.Event)
    _main: trio.CancelScope = attrs.field(init=False, factory=trio.CancelScope)
    _created: bool = attrs.field(init=False, default=False)
    """This orchestrator created the run, or adopted it: from then on it ends with a summary."""
    _started: trio.Event = attrs.field(init=False, factory=trio.Event)
    """Set once START_TIME is known (``_start``)."""
    _prepared: trio.Event = attrs.field(init=False, factory=trio.Event)
    """Set once ``prepare`` is through (the run exists, or this orchestrator gave up)."""
    _roster: Roster = attrs.field(init=False)
    """The workers: their statuses, liveness, results (``engine.roster``)."""
    _steering: Steering = attrs.field(init=False)
    """The load decisions (qps, find_max, a rate re-split, abort thresholds): ``engine.steering``."""

    def __attrs_post_init__(self) -> None:
        self._counting = CountingControlPlane(self.control, self.round_trips)
        self._cp = ResilientControlPlane(
            self._counting,
            RetryPolicy.of(self.scenario),
            random.Random(derive_seed("retry", self.run_id, ORCHESTRATOR)),
        )
        self._log = EventLog(self._cp, self.run_id)
        self._roster = Roster(self._cp, self.run_id, self.scenario, self.sleep_until)
        self._steering = Steering(
            self.scenario,
            emit=self._log.emit,
            set_run=lambda **changes: self._cp.update_run(self.run_id, **changes),
            read_snapshots=lambda: self._cp.read_snapshots(self.run_id),
            live_workers=self._roster.live,
            now=self._now,
            to_trio=lambda instant: self._clockmap_now().to_trio(instant),
            stop=self._stop_for,
        )

    # ---- the public face ------------------------------------------------------------------

    def request_stop(self, reason: StopReason = StopReason.USER_REQUESTED) -> None:
        """Stop early (Ctrl-C, a lost worker under ``on_worker_loss = "fail"``)."""
        if not self._stop_requested.is_set():
            self._requested_reason = reason
            self._stop_requested.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested.is_set()

    @property
    def forced(self) -> bool:
        return self._force.is_set()

    def force_stop(self) -> None:
        """A second Ctrl-C: stop now — no waiting for the drain; the summary keeps what is in.
        Whatever the orchestrator is waiting for (a control plane that keeps failing included),
        it writes the summary within ``2 × FORCE_GRACE_S``. Call it from a Trio task."""
        self.request_stop(StopReason.USER_REQUESTED)
        self._force.set()
        self._main.deadline = min(self._main.deadline, trio.current_time() + FORCE_GRACE_S)

    async def started(self) -> float:
        """Return START_TIME on this process's trio clock once the run has it; never, if the run
        does not start."""
        await self._started.wait()
        assert self.start_time is not None and self._clockmap is not None  # set before _started
        return self._clockmap.to_trio(self.start_time)

    async def measurement_began(self) -> None:
        """Return once MEASUREMENT has begun (START_TIME + warmup on this process's clock); never,
        if the run does not start."""
        await self._started.wait()
        assert self.start_time is not None and self._clockmap is not None  # set before _started
        await self.sleep_until(self._clockmap.to_trio(self.start_time + self.scenario.warmup_s))

    async def wait_prepared(self) -> None:
        """Return once the run exists (``prepare`` is through), or ``run`` has ended without it."""
        await self._prepared.wait()

    async def publish_scenario(self, scenario: Scenario) -> None:
        """The scenario as run from now on (its ``sample`` values drawn at setup), in RUN_STATUS
        for every worker — those already waiting re-read it before they draw a parameter."""
        self._use(scenario)
        await self._cp.update_run(self.run_id, scenario=settings_without_secrets(scenario.to_dict()))

    async def while_prepared(self, work: Callable[[], Awaitable[None]]) -> bool:
        """Run ``work`` (the target's setup) between ``prepare`` and ``run``: RUN_STATUS stays
        fresh meanwhile (workers waiting for the start do not take the orchestrator for gone), and
        a stop request cancels it. Returns False if it was cancelled so; if ``work`` raises, the
        run is recorded FAILED with what it raised, and the error propagates."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._touch_loop)

            async def cancel_on_stop() -> None:
                await self._stop_requested.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(cancel_on_stop)
            try:
                await work()
            except Exception as exc:
                self.stop_reason, self.stop_detail = StopReason.ERROR, f"setup: {type(exc).__name__}: {exc}"
                await self._set_status(
                    RunStatus.FAILED, phase=Phase.DONE, stop_reason=self.stop_reason, stop_detail=self.stop_detail
                )
                raise
            nursery.cancel_scope.cancel()
        return not self.stop_requested

    def statistics(self) -> OrchestratorStatistics:
        return OrchestratorStatistics(
            run_id=self.run_id,
            status=self.status,
            stop_reason=self.stop_reason,
            stop_detail=self.stop_detail,
            start_time=self.start_time,
            stopped_at=self.stopped_at,
            worker_statuses=types.MappingProxyType(dict(self._roster.statuses)),
            worker_groups=types.MappingProxyType(dict(self._roster.groups)),
            dead_at=types.MappingProxyType(dict(self._roster.dead_at)),
            events=tuple(self._log.events),
            health=self._cp.health.statistics(),
            queries=sum(self._counting.counts.values()),
            stop_requested=self.stop_requested,
            forced=self.forced,
            adopted=self.adopted,
        )

    def own_results(self) -> dict[str, Any]:
        """What the orchestrator measured of itself (OUT/orchestrator.json): its control-plane
        round trips by method (HDR, microseconds, encoded) — what ``startline calibrate`` fits
        the orchestrator's writes to. The workers' are in their own results."""
        return {
            "run_id": self.run_id,
            "control_plane": {
                "queries": dict(sorted(self._counting.counts.items())),
                "latency_us": self._counting.latency_payload(),
            },
        }

    def to_trio(self, instant: float) -> float | None:
        """A control-plane instant on this process's trio clock (None before the clock map)."""
        return None if self._clockmap is None else self._clockmap.to_trio(instant)

    def to_control(self, trio_time: float) -> float:
        """An instant of this process's trio clock on the control plane's (after ``prepare``)."""
        return self._clockmap_now().to_control(trio_time)

    async def read_snapshots(self) -> list[tuple[str, dict[str, Any]]]:
        """The workers' snapshots so far (for a live view; counted with the orchestrator's queries)."""
        return await self._cp.read_snapshots(self.run_id)

    async def read_payloads(self) -> list[dict[str, Any]]:
        """The workers' results so far (flushed every ``flush_interval_s``), for a live view."""
        return [r.payload for r in await self._cp.read_results(self.run_id) if r.payload.get("worker_id")]

    def progress(self) -> str:
        """One line for a progress display: status, phase and seconds to the planned end."""
        if self.start_time is None or self._clockmap is None:
            ready = self._roster.ready()
            return f"{self.status}: {ready}/{self.scenario.workers} workers READY"
        now = self._clockmap.to_control(trio.current_time())
        windows = PhaseWindows.from_scenario(self.scenario, self.start_time)
        left = max(0.0, windows.end - now)
        return f"{self.status} {windows.phase_at(now)}, {left:.0f} s left" + self._steering.progress()

    def load_block(self) -> dict[str, Any]:
        """``load`` of summary.json (``Steering.load_block``)."""
        return self._steering.load_block(self.stop_reason)

    async def prepare(self) -> None:
        """Create the run (PREPARED, with the scenario) and move it to STARTING; idempotent.

        A run id that exists already is a restart: an unfinished run whose orchestrator has
        been silent for ``dead_after_beats`` heartbeats is adopted, to be failed cleanly by
        ``run()``; a finished run, or one whose orchestrator is alive, is refused."""
        if self._clockmap is not None:
            return
        sc = self.scenario
        try:
            await self._cp.create_run(
                RunState(
                    self.run_id,
                    RunStatus.PREPARED,
                    Phase.PREPARING,
                    connections=initial_connections(sc),
                    expected_workers=sc.workers,
                    scenario=settings_without_secrets(sc.to_dict()),
                )
            )
        except ControlPlaneConflict:
            self.adopted = await self._cp.read_run(self.run_id)
            if self.adopted is None:
                raise
        else:
            self._created = True
        offset = await estimate_offset(self._cp, self.clock, sc.start.offset_samples)
        self._clockmap, self.clock_uncertainty_s = ClockMap.anchor(offset), offset.uncertainty_s
        if self.adopted is None:
            await self._set_status(RunStatus.STARTING)
            self._prepared.set()
            return
        found = self.adopted
        silent = self._clockmap.to_control(trio.current_time()) - found.updated_at
        refused = adoption_refused(found, silent, sc.dead_after_beats * sc.heartbeat_s)
        if refused is not None:
            raise ControlPlaneConflict(refused)
        log.warning(
            "run %s is %s without its orchestrator (silent %.1f s): failing it", self.run_id, found.status, silent
        )
        self._created = True
        if found.scenario:  # as stored (its samples drawn), with this orchestrator's own URLs
            self._use(Scenario.from_dict(found.scenario | {"control": sc.control, "target": sc.target}))
        self._log.sequence_id, self.start_time, self.status = found.last_sequence_id, found.start_time, found.status
        self._prepared.set()

    async def run(self) -> dict[str, Any]:
        """Prepare (if not done), wait for READY, start, drive the schedule, collect, summarise.

        However it ends, the summary is written: a control plane lost past its tolerance makes
        the run FAILED with what had been collected (workers keep their own results)."""
        results: list[WorkerResult] = []
        snapshots: list[tuple[str, dict[str, Any]]] = []
        try:
            with self._main:
                results, snapshots = await self._run()
        finally:
            self._prepared.set()
        if self._main.cancelled_caught:  # forced, and the control plane did not let it finish
            self.status = RunStatus.CANCELLED
            self.stop_reason = StopReason.USER_REQUESTED
            self.stop_detail = "forced stop: the summary keeps what was collected"
            results = self._roster.adopt(self._roster.results_seen)
            with trio.move_on_after(FORCE_GRACE_S):
                await self._record_end()
        summary = self._summary(results, snapshots)
        if self.out is not None:
            write_summary(self.out, summary, self.own_results())
        return summary

    async def _run(self) -> tuple[list[WorkerResult], list[tuple[str, dict[str, Any]]]]:
        results: list[WorkerResult] = []
        snapshots: list[tuple[str, dict[str, Any]]] = []
        try:
            await self.prepare()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._touch_loop)
                if self.adopted is not None:
                    await self._fail_adopted()
                elif not await self._roster.wait_ready(self._stop_requested):
                    if not self.stop_requested:
                        self.stop_detail = self._roster.not_ready()
                    reason = self._requested_reason if self.stop_requested else StopReason.READY_TIMEOUT
                    await self._stop(reason)
                elif problem := self._roster.unknown_scope():
                    # workers started elsewhere (--no-spawn) are known only now: a schedule step
                    # for a worker or group none of them is would silently do nothing
                    self.stop_detail = problem
                    await self._stop(StopReason.ERROR)
                else:
                    await self._start()
                    nursery.start_soon(self._roster.watch_liveness, self._clockmap, self._workers_lost)
                    await self._follow_schedule()
                results = await self._roster.collect(self._force)
                self._roster.collected = True
                completed = {r.worker_id for r in results if r.status is WorkerStatus.COMPLETED}
                outcome = run_outcome(
                    self.stop_reason, self.stop_detail, self._roster.statuses, completed, self.scenario.on_worker_loss
                )
                self.stop_reason, self.stop_detail = outcome.reason, outcome.detail
                await self._set_status(
                    outcome.status, phase=Phase.DONE, stop_reason=outcome.reason, stop_detail=outcome.detail
                )
                nursery.cancel_scope.cancel()
            snapshots = await self._cp.read_snapshots(self.run_id)
        except Exception as exc:
            leaf = single_leaf(exc)
            if isinstance(leaf, ControlPlaneConflict) or not self._created:
                raise  # refused, or never created: nothing was measured, nothing to summarise
            if isinstance(leaf, ControlPlaneError):
                log.error("run %s failed: %s", self.run_id, leaf)
                self.stop_reason, self.stop_detail = StopReason.CONTROL_PLANE_LOST, str(leaf)
            else:  # a bug, or the world did something unforeseen: keep what was measured, say what
                log.exception("run %s failed", self.run_id)
                self.stop_reason, self.stop_detail = StopReason.ERROR, f"{type(leaf).__name__}: {leaf}"
            self.status = RunStatus.FAILED
            if not results:  # one last look (the failing kind may not be the results' table)
                with trio.move_on_after(FORCE_GRACE_S):
                    self._cp.health.forgive()
                    try:
                        self._roster.results_seen = await self._cp.read_results(self.run_id)
                    except ControlPlaneError:
                        pass
            results = self._roster.adopt(results or self._roster.results_seen)
            self._roster.unseen_finals(results)
            await self._record_end()
        return results, snapshots

    async def _record_end(self) -> None:
        """After losing the control plane (or a forced stop): one more outage tolerance (or the
        force grace) to record the terminal status in RUN_STATUS, so workers stop; if it stays
        down, a restarted orchestrator will fail the run."""
        self._cp.health.forgive()
        try:
            await self._cp.update_run(
                self.run_id,
                status=self.status,
                phase=Phase.DONE,
                stop_reason=self.stop_reason,
                stop_detail=self.stop_detail,
            )
        except ControlPlaneError as exc:
            log.error("run %s: %s could not be recorded: %s", self.run_id, self.status, exc)

    async def _fail_adopted(self) -> None:
        """A restarted orchestrator fails the run it found unfinished: STOP(orchestrator_lost) so any
        live worker drains and reports, then the results are collected like any run's."""
        found = self.adopted
        assert found is not None  # only called for an adopted run
        await self._roster.read_heartbeats()
        self.stop_reason = StopReason.ORCHESTRATOR_LOST
        self.stop_detail = f"the run was {found.status} when its orchestrator restarted"
        stops = [e for e in await self._cp.read_events(self.run_id, 0) if e.event_type is EventType.STOP]
        if stops:  # its predecessor had stopped the run: workers are draining already
            self.stopped_at = stops[0].at
            return
        await self._stop(StopReason.ORCHESTRATOR_LOST)

    # ---- the phases ----------------------------------------------------------------------

    async def _start(self) -> None:
        """RUNNING with START_TIME: the server's now, or (scheduled) now + lead; then START."""
        sc = self.scenario
        phase = Phase.WARMUP if sc.warmup_s > 0 else Phase.MEASUREMENT
        lead = StartPlan.of(sc.start, self._cp.traits.push, sc.load.controlled).release_lead_s
        when: dict[str, Any] = (
            {"start_time_now": True} if lead is None else {"start_time": await self._cp.server_time() + lead}
        )
        run_transition(self.status, RunStatus.RUNNING)
        run = await self._cp.update_run(
            self.run_id, expect_status=RunStatus.STARTING, status=RunStatus.RUNNING, phase=phase, **when
        )
        if run is None:  # a retry after an attempt that landed finds RUNNING already
            run = await self._cp.read_run(self.run_id)
        if run is None or run.status is not RunStatus.RUNNING or run.start_time is None:
            raise RuntimeError(f"run {self.run_id} left STARTING behind the orchestrator's back")
        self.status = RunStatus.RUNNING
        self.start_time = run.start_time
        self._steering.begin(run.start_time)
        self._started.set()
        await self._log.emit(EventType.START, at=run.start_time, phase=phase, connections=initial_connections(sc))

    async def _follow_schedule(self) -> None:
        assert self.start_time is not None and self._clockmap is not None  # set by prepare and _start
        async with trio.open_nursery() as nursery:
            if self.scenario.operations_per_connection:
                nursery.start_soon(self._roster.watch_spent, self._stop_for)
            if self.scenario.load.controlled:
                nursery.start_soon(self._steering.control)
            if self.scenario.abort_thresholds:
                nursery.start_soon(self._steering.watch_thresholds)
            if self.scenario.checks.stop_after_failing_s > 0:
                nursery.start_soon(self._steering.watch_failing)
            await self._steering.follow_plan(self._stop_requested)
            nursery.cancel_scope.cancel()
        await self._stop(self._requested_reason)

    async def _stop(self, reason: StopReason) -> None:
        assert self._clockmap is not None  # set by prepare
        self.stopped_at = self._clockmap.to_control(trio.current_time())
        if reason is not StopReason.COMPLETED and self.stop_reason is None:
            self.stop_reason = reason
        await self._log.emit(EventType.STOP, at=self.stopped_at, phase=Phase.DONE, reason=reason)
        status = RunStatus.CANCELLING if reason is StopReason.USER_REQUESTED else RunStatus.STOPPING
        await self._set_status(status, phase=Phase.DONE, stop_reason=reason, stop_detail=self.stop_detail)

    async def _workers_lost(self, newly_dead: list[str]) -> None:
        """Workers judged DEAD: the run fails under ``on_worker_loss = "fail"``; an open loop's
        rate, or the connections the load control steers, are re-split over the workers left."""
        if self.scenario.on_worker_loss is OnWorkerLoss.FAIL:
            self.request_stop(StopReason.WORKER_LOST)
        if not self.stop_requested:
            await self._steering.workers_lost()

    def _use(self, scenario: Scenario) -> None:
        """The scenario as run from now on (its samples drawn, or the one an adopted run stored)."""
        self.scenario = self._roster.scenario = self._steering.scenario = scenario

    def _stop_for(self, reason: StopReason, detail: str) -> None:
        """The steering stops the run (a threshold crossed, the qps bounds reached, find-max done)."""
        self.stop_detail = detail
        self.request_stop(reason)

    def _clockmap_now(self) -> ClockMap:
        assert self._clockmap is not None  # set by prepare
        return self._clockmap

    def _now(self) -> float:
        return self._clockmap_now().to_control(trio.current_time())

    async def _set_status(self, status: RunStatus, **changes: Any) -> None:
        self.status = run_transition(self.status, status)
        await self._cp.update_run(self.run_id, status=status, **changes)

    # ---- watching workers ----------------------------------------------------------------

    async def _touch_loop(self) -> None:
        """Keep RUN_STATUS.updated_at fresh: workers leave a run whose orchestrator went quiet."""
        while True:
            await self.sleep_until(trio.current_time() + self.scenario.heartbeat_s)
            await self._cp.update_run(self.run_id)

    def _summary(self, results: list[WorkerResult], snapshots: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
        self.final_payloads = [r.payload for r in results if r.payload.get("worker_id")]
        return build_summary(
            run_id=self.run_id,
            status=str(self.status),
            reason=None if self.stop_reason is None else str(self.stop_reason),
            detail=self.stop_detail,
            scenario=self.scenario,
            start_time=self.start_time,
            stopped_at=self.stopped_at,
            payloads=[r.payload for r in results if r.payload.get("worker_id")],
            worker_statuses={w: str(s) for w, s in self._roster.statuses.items()},
            worker_events=self._roster.worker_events(results, self._clockmap),
            orchestrator_queries=sum(self._counting.counts.values()),
            timeseries=merge_timeseries(snapshots, self.scenario.snapshot_interval_s),
            intervals=interval_kinds(snapshots),
            kind_errors=kind_errors(snapshots),
            kind_retries=kind_retries(snapshots),
            crossed=self._steering.crossed,
            load=self.load_block(),
        )
