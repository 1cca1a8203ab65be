"""The orchestrator: the only writer of the control log. It creates the run, waits for
READY workers, starts them, drives the phases and the scaling schedule, watches
heartbeats, collects results and writes the summary."""

from __future__ import annotations

import logging
import math
import random
import types
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import trio
from hdrh.histogram import HdrHistogram

from startline.engine.clocksync import ClockMap, estimate_offset
from startline.engine.counting import CountingControlPlane
from startline.engine.files import (
    FAILURES_HEADER,
    INTERVALS_HEADER,
    STEPS_HEADER,
    failure_rows,
    interval_rows,
    step_rows,
    write_csv,
    write_json,
)
from startline.engine.lifecycle import run_outcome, run_transition
from startline.engine.liveness import MIN_LIVENESS_WAIT_S, liveness_round
from startline.engine.loadcontrol import (
    FindMaxSearch,
    QpsController,
    QpsDecision,
    Window,
    deadband,
    rate_at,
    rate_plan,
    reported_through,
    split,
    window,
)
from startline.engine.model import (
    ORCHESTRATOR,
    ControlEvent,
    EventType,
    Phase,
    RunState,
    RunStatus,
    Scope,
    StopReason,
    WorkerResult,
    WorkerStatus,
)
from startline.engine.ports import ControlPlane, ControlPlaneConflict, ControlPlaneError, WallClock
from startline.engine.resilience import HealthStatistics, ResilientControlPlane, RetryPolicy, single_leaf
from startline.engine.scenario import ConfigError, FindMaxOver, LoadMode, OnWorkerLoss, Scenario, Strategy
from startline.engine.schedule import PhaseWindows, PlannedEvent, plan_events
from startline.engine.startplan import STEERED_FOLLOW_S
from startline.engine.summary import build_summary, interval_kinds, interval_latency, kind_errors, merge_timeseries
from startline.engine.thresholds import Measured, crossing, windows_of
from startline.engine.thresholds import Result as ThresholdResult
from startline.engine.workload import derive_seed

log = logging.getLogger("startline.orchestrator")

COLLECT_POLL_S = 0.25
"""How often the orchestrator reads TEST_RESULTS while waiting for final results."""
READY_POLL_S = 0.05
"""How often the orchestrator reads WORKER_HEARTBEATS while waiting for READY."""
OVERSLEPT_S = 0.25
"""A wake-up this much later than asked means the process was descheduled (not a timer's jitter)."""
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
    _sequence_id: int = attrs.field(init=False, default=0)
    _statuses: dict[str, WorkerStatus] = attrs.field(init=False, factory=dict)
    _events: list[ControlEvent] = attrs.field(init=False, factory=list)
    _dead_at: dict[str, float] = attrs.field(init=False, factory=dict)
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
    _groups: dict[str, str] = attrs.field(init=False, factory=dict)
    """worker id → its group, as its heartbeats say."""
    _blind: list[tuple[float, float]] = attrs.field(init=False, factory=list)
    """Trio-time spans this process overslept a wake-up by more than ``OVERSLEPT_S``."""
    _collected: bool = attrs.field(init=False, default=False)
    _results_seen: list[WorkerResult] = attrs.field(init=False, factory=list)
    _emitting: trio.StrictFIFOLock = attrs.field(init=False, factory=trio.StrictFIFOLock)
    """Sequence ids are gap-free: one append at a time (the plan, the load control, a re-split)."""
    _crossed: dict[tuple[str, str], ThresholdResult] = attrs.field(init=False, factory=dict)
    """``abort_on_fail`` thresholds crossed during the run (by key and expression)."""
    _qps_steps: list[QpsDecision] = attrs.field(init=False, factory=list)
    _search: FindMaxSearch | None = attrs.field(init=False, default=None)
    _rate_level: float = attrs.field(init=False, default=0.0)
    """Find-max over the rate: the run-wide rate of the current step."""

    def __attrs_post_init__(self) -> None:
        self._counting = CountingControlPlane(self.control, self.round_trips)
        self._cp = ResilientControlPlane(
            self._counting,
            RetryPolicy.of(self.scenario),
            random.Random(derive_seed("retry", self.run_id, ORCHESTRATOR)),
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

    async def measurement_began(self) -> None:
        """Return once MEASUREMENT has begun (START_TIME + warmup on this process's clock); never,
        if the run does not start."""
        await self._started.wait()
        assert self.start_time is not None and self._clockmap is not None  # set before _started
        await trio.sleep_until(self._clockmap.to_trio(self.start_time + self.scenario.warmup_s))

    async def wait_prepared(self) -> None:
        """Return once the run exists (``prepare`` is through), or ``run`` has ended without it."""
        await self._prepared.wait()

    async def publish_scenario(self, scenario: Scenario) -> None:
        """The scenario as run from now on (its ``sample`` pools drawn at setup), in RUN_STATUS
        for every worker — those already waiting re-read it before they draw a parameter."""
        self.scenario = scenario
        await self._cp.update_run(self.run_id, scenario=scenario.to_dict())

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
            worker_statuses=types.MappingProxyType(dict(self._statuses)),
            dead_at=types.MappingProxyType(dict(self._dead_at)),
            events=tuple(self._events),
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

    async def progress_line(self) -> str:
        """One plain line for a log (pgbench ``-P`` style): the progress, the operations and errors
        so far and the last complete interval's throughput, from the workers' snapshots."""
        line = self.progress()
        if self.start_time is None:
            return line
        try:
            snapshots = await self._cp.read_snapshots(self.run_id)
        except ControlPlaneError:
            return line + "; figures: control plane unreachable"
        series = merge_timeseries(snapshots, self.scenario.snapshot_interval_s)
        ops, errors = sum(r["ops"] for r in series), sum(r["errors"] for r in series)
        if not series:
            return f"{line}; no snapshot from the workers yet"
        last = series[-2] if len(series) > 1 else series[-1]  # the newest interval may still be arriving
        iv = self.scenario.snapshot_interval_s
        upto = series[-1]["t_s"] + iv
        return f"{line}; {ops:,} ops, {errors:,} errors in the first {upto:g} s, {last['ops'] / iv:,.0f} ops/s then"

    def to_trio(self, instant: float) -> float | None:
        """A control-plane instant on this process's trio clock (None before the clock map)."""
        return None if self._clockmap is None else self._clockmap.to_trio(instant)

    async def read_snapshots(self) -> list[tuple[str, dict[str, Any]]]:
        """The workers' snapshots so far (for a live view; counted with the orchestrator's queries)."""
        return await self._cp.read_snapshots(self.run_id)

    async def read_payloads(self) -> list[dict[str, Any]]:
        """The workers' results so far (flushed every ``flush_interval_s``), for a live view."""
        return [r.payload for r in await self._cp.read_results(self.run_id) if r.payload.get("worker_id")]

    def progress(self) -> str:
        """One line for a progress display: status, phase and seconds to the planned end."""
        if self.start_time is None or self._clockmap is None:
            ready = sum(s is WorkerStatus.READY for s in self._statuses.values())
            return f"{self.status}: {ready}/{self.scenario.workers} workers READY"
        now = self._clockmap.to_control(trio.current_time())
        windows = PhaseWindows.from_scenario(self.scenario, self.start_time)
        left = max(0.0, windows.end - now)
        return f"{self.status} {windows.phase_at(now)}, {left:.0f} s left" + self._load_progress()

    def _load_progress(self) -> str:
        """The load control's last step, for the progress line."""
        if self._qps_steps:
            d = self._qps_steps[-1]
            return f"; qps {d.qps:,.0f} of {self.scenario.load.target_qps:,.0f} with {d.to} connections ({d.action})"
        search = self._search
        if search is not None and search.steps:
            st = search.steps[-1]
            unit = "ops/s" if self.scenario.load.find_max.over is FindMaxOver.RATE else "connections"
            mark = "stable" if st.stable else f"unstable: {st.reason}"
            return f"; find-max step {len(search.steps)}: {st.level:g} {unit}, {st.qps:,.0f} qps ({mark})"
        return ""

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
                    scenario=sc.to_dict(),
                )
            )
        except ControlPlaneConflict:
            self.adopted = await self._cp.read_run(self.run_id)
            if self.adopted is None:
                raise
        else:
            self._created = True
        offset = await estimate_offset(self._cp, self.clock, sc.start.offset_samples)
        self._clockmap = ClockMap.anchor(offset)
        if self.adopted is None:
            await self._set_status(RunStatus.STARTING)
            self._prepared.set()
            return
        found = self.adopted
        if found.status.terminal:
            raise ControlPlaneConflict(f"run {self.run_id!r} has already ended ({found.status}); choose a new run id")
        silent = self._clockmap.to_control(trio.current_time()) - found.updated_at
        alive_for = sc.dead_after_beats * sc.heartbeat_s
        if silent < alive_for:
            raise ControlPlaneConflict(
                f"run {self.run_id!r} is {found.status} and its orchestrator was heard {silent:.1f} s ago "
                f"(< {alive_for:g} s): it is alive; not taking it over"
            )
        log.warning(
            "run %s is %s without its orchestrator (silent %.1f s): failing it", self.run_id, found.status, silent
        )
        self._created = True
        if found.scenario:
            self.scenario = Scenario.from_dict(found.scenario)
        self._sequence_id, self.start_time, self.status = found.last_sequence_id, found.start_time, found.status
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
            results = self._adopt(self._results_seen)
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
                elif not await self._wait_ready():
                    reason = self._requested_reason if self.stop_requested else StopReason.READY_TIMEOUT
                    await self._stop(reason)
                elif problem := self._unknown_scope():
                    # workers started elsewhere (--no-spawn) are known only now: a schedule step
                    # for a worker or group none of them is would silently do nothing
                    self.stop_detail = problem
                    await self._stop(StopReason.ERROR)
                else:
                    await self._start()
                    nursery.start_soon(self._liveness_loop)
                    await self._follow_schedule()
                results = await self._collect()
                self._collected = True
                completed = {r.worker_id for r in results if r.status is WorkerStatus.COMPLETED}
                outcome = run_outcome(
                    self.stop_reason, self.stop_detail, self._statuses, completed, self.scenario.on_worker_loss
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
                        self._results_seen = await self._cp.read_results(self.run_id)
                    except ControlPlaneError:
                        pass
            results = self._adopt(results or self._results_seen)
            self._unseen_finals(results)
            await self._record_end()
        return results, snapshots

    def _unseen_finals(self, results: list[WorkerResult]) -> None:
        """A worker whose heartbeat said it finished but whose final results were never read is
        listed as RUNNING (its last known row): the summary never claims more than it holds."""
        seen = {r.worker_id: r.status for r in results}
        for w, status in self._statuses.items():
            if status.final and not (w in seen and seen[w].final):
                self._statuses[w] = WorkerStatus.RUNNING

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
        for hb in await self._cp.read_heartbeats(self.run_id):
            self._statuses[hb.worker_id] = hb.status
        self.stop_reason = StopReason.ORCHESTRATOR_LOST
        self.stop_detail = f"the run was {found.status} when its orchestrator restarted"
        stops = [e for e in await self._cp.read_events(self.run_id, 0) if e.event_type is EventType.STOP]
        if stops:  # its predecessor had stopped the run: workers are draining already
            self.stopped_at = stops[0].at
            return
        await self._stop(StopReason.ORCHESTRATOR_LOST)

    # ---- the phases ----------------------------------------------------------------------

    async def _wait_ready(self) -> bool:
        """True once the expected workers are READY; False on timeout or a stop request."""
        with trio.move_on_after(self.scenario.ready_timeout_s):
            while not self.stop_requested:
                beats = await self._cp.read_heartbeats(self.run_id)
                for hb in beats:
                    self._statuses[hb.worker_id] = hb.status
                    self._groups[hb.worker_id] = hb.group
                if sum(hb.status is WorkerStatus.READY for hb in beats) >= self.scenario.workers:
                    return True
                with trio.move_on_after(READY_POLL_S):
                    await self._stop_requested.wait()
        return False

    def _unknown_scope(self) -> str | None:
        """The first schedule step whose WORKER / WORKER_GROUP scope no READY worker has."""
        try:
            self.scenario.check_scopes(set(self._groups), set(self._groups.values()))
        except ConfigError as exc:
            return str(exc)
        return None

    async def _start(self) -> None:
        """RUNNING with START_TIME: the server's now, or (scheduled) now + lead; then START."""
        sc = self.scenario
        phase = Phase.WARMUP if sc.warmup_s > 0 else Phase.MEASUREMENT
        when: dict[str, Any] = (
            {"start_time": await self._cp.server_time() + sc.start.lead_ms / 1000.0}
            if sc.start.strategy is Strategy.SCHEDULED
            else {"start_time_now": True}
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
        self._started.set()
        await self._emit(EventType.START, at=run.start_time, phase=phase, connections=initial_connections(sc))

    async def _follow_schedule(self) -> None:
        assert self.start_time is not None and self._clockmap is not None  # set by prepare and _start
        async with trio.open_nursery() as nursery:
            if self.scenario.operations_per_connection:
                nursery.start_soon(self._watch_spent)
            if self.scenario.load.controlled:
                nursery.start_soon(self._load_control)
            if self.scenario.abort_thresholds:
                nursery.start_soon(self._watch_thresholds)
            await self._follow_plan()
            nursery.cancel_scope.cancel()

    async def _watch_spent(self) -> None:
        """With ``operations_per_connection``: once every worker has published its final results
        (it has issued all its operations, or failed), the run ends — it does not idle to its
        planned end."""
        while True:
            await trio.sleep(self.scenario.heartbeat_s)
            results = await self._cp.read_results(self.run_id)
            final = {r.worker_id for r in results if r.status.final}
            if final and set(self._statuses) <= final:
                self.stop_detail = "every connection issued its operations_per_connection"
                self.request_stop(StopReason.COMPLETED)
                return

    async def _follow_plan(self) -> None:
        assert self.start_time is not None and self._clockmap is not None  # set by prepare and _start
        for planned in plan_events(self.scenario, self.start_time):
            with trio.move_on_at(self._clockmap.to_trio(planned.at)):
                await self._stop_requested.wait()
            if self.stop_requested or planned.event_type is EventType.STOP:
                break
            await self._emit_planned(planned)
        await self._stop(self._requested_reason)

    async def _emit_planned(self, p: PlannedEvent) -> None:
        await self._emit(
            p.event_type,
            at=p.at,
            phase=p.phase,
            connections=p.connections,
            scope=p.scope,
            scope_id=p.scope_id,
            ramp_s=p.ramp_s,
        )
        if p.event_type is EventType.SET_PHASE:
            await self._cp.update_run(self.run_id, phase=p.phase)
        elif p.scope is Scope.RUN and p.connections is not None:
            await self._cp.update_run(self.run_id, connections=p.connections)

    async def _stop(self, reason: StopReason) -> None:
        assert self._clockmap is not None  # set by prepare
        self.stopped_at = self._clockmap.to_control(trio.current_time())
        if reason is not StopReason.COMPLETED and self.stop_reason is None:
            self.stop_reason = reason
        await self._emit(EventType.STOP, at=self.stopped_at, phase=Phase.DONE, reason=reason)
        status = RunStatus.CANCELLING if reason is StopReason.USER_REQUESTED else RunStatus.STOPPING
        await self._set_status(status, phase=Phase.DONE, stop_reason=reason, stop_detail=self.stop_detail)

    async def _emit(self, event_type: EventType, **fields: Any) -> None:
        """Append the next event: sequence ids are gap-free because only this method writes them,
        one at a time."""
        async with self._emitting:
            event = ControlEvent(self.run_id, self._sequence_id + 1, event_type, **fields)
            await self._cp.append_event(event)
            self._sequence_id = event.sequence_id
            self._events.append(event)

    # ---- the load modes ------------------------------------------------------------------

    def _live_workers(self) -> list[str]:
        """The workers a run-wide level is split over: every one not lost."""
        gone = (WorkerStatus.DEAD, WorkerStatus.FAILED)
        return sorted(w for w, s in self._statuses.items() if s not in gone)

    async def _set_connections(self, total: int) -> None:
        """Run-wide ``total`` connections, split over the live workers: one RUN event with the
        base count, one WORKER event for each worker that takes one more."""
        live = self._live_workers()
        if not live:
            return
        shares = split(max(total, len(live)), live)
        base = min(shares.values())
        at = self._now()
        await self._emit(EventType.SET_CONNECTIONS, at=at, connections=base)
        await self._cp.update_run(self.run_id, connections=base)
        for w, n in shares.items():
            if n != base:
                await self._emit(EventType.SET_CONNECTIONS, at=at, connections=n, scope=Scope.WORKER, scope_id=w)

    async def _complete_start_split(self, total: int) -> None:
        """START gave every worker the base of the run-wide level; split the rest (or a level the
        bounds moved) over the workers now."""
        if total != initial_connections(self.scenario) * self.scenario.workers:
            await self._set_connections(total)

    async def _set_rate(self, level: float) -> None:
        """Find-max over the rate: the run-wide ``level`` from now, split over the live workers."""
        self._rate_level = level
        live = self._live_workers() or [""]
        await self._emit(EventType.SET_RATE, at=self._now(), rate=level / len(live))

    async def _resplit(self) -> None:
        """A worker was lost: the others take its share of the rate. Workers follow the scenario's
        stages themselves (their share of them); this amends their plan from now on: the rest of
        the current stage, then every stage to come, split over the workers left."""
        assert self.start_time is not None  # workers are judged only after the start
        if self.scenario.load.mode is LoadMode.FIND_MAX:
            await self._set_rate(self._rate_level)
            return
        n, now = max(1, len(self._live_workers())), self._now()
        load, t = self.scenario.load, now - self.start_time
        plan = rate_plan(load)
        current = next(((at, to, ramp) for at, to, ramp in plan if at <= t < at + ramp), None)
        if current is None:
            await self._emit(EventType.SET_RATE, at=now, rate=rate_at(load.rate, plan, t) / n)
        else:
            at, to, ramp = current
            await self._emit(EventType.SET_RATE, at=now, rate=to / n, ramp_s=at + ramp - t)
        for at, to, ramp in plan:
            if at > t:
                await self._emit(EventType.SET_RATE, at=self.start_time + at, rate=to / n, ramp_s=ramp)

    def _now(self) -> float:
        assert self._clockmap is not None  # set by prepare
        return self._clockmap.to_control(trio.current_time())

    async def _load_control(self) -> None:
        """qps and find_max: decide the level from the intervals the workers ship."""
        if self.scenario.load.mode is LoadMode.QPS:
            await self._qps_control()
        else:
            await self._find_max()

    async def _window(self, first: int, last: int) -> Window:
        """The merged figures of intervals ``first..last``."""
        return window(await self._snapshots_through(last), first, last, self.scenario.snapshot_interval_s)

    async def _snapshots_through(self, last: int) -> list[tuple[str, dict[str, Any]]]:
        """The run's snapshots once every live worker has shipped interval ``last`` (or a few
        snapshot periods passed: a worker that stalls does not stall the control)."""
        sc = self.scenario
        snaps: list[tuple[str, dict[str, Any]]] = []
        with trio.move_on_after(3 * sc.snapshot_interval_s + sc.heartbeat_s):
            while True:
                snaps = await self._cp.read_snapshots(self.run_id)
                upto = reported_through(snaps)
                if all(upto.get(w, -1) >= last for w in self._live_workers()):
                    break
                await trio.sleep(COLLECT_POLL_S)
        return snaps

    async def _watch_thresholds(self) -> None:
        """The ``abort_on_fail`` thresholds, judged on MEASUREMENT so far at the end of each of its
        snapshot intervals (once a threshold's ``delay_abort_eval_s`` has passed): the first one
        crossed stops the run (THRESHOLD), which then completes and fails it."""
        sc = self.scenario
        assert self.start_time is not None and self._clockmap is not None  # after the start
        iv, first = sc.snapshot_interval_s, sc.measurement_intervals.start
        for k in sc.measurement_intervals:
            await trio.sleep_until(self._clockmap.to_trio(self.start_time + (k + 1) * iv))
            snaps = await self._snapshots_through(k)
            kinds = interval_kinds(snaps)
            wanted = {t.kind for t in sc.abort_thresholds if t.kind is not None}
            by_kind: dict[str | None, Mapping[int, HdrHistogram]] = {None: interval_latency(kinds)}
            by_kind |= {kind: {i: h[kind] for i, h in kinds.items() if kind in h} for kind in wanted}
            latency = {kind: windows_of(of, first, k, k - first + 1)[0] for kind, of in by_kind.items()}
            counts = merge_timeseries(snaps, iv)[first : k + 1]  # each latency histogram decoded once, above
            ops, errors = sum(r["ops"] for r in counts), sum(r["errors"] for r in counts)
            elapsed = (k - first + 1) * iv
            so_far = Measured({"ops": ops, "errors": errors, "qps": ops / elapsed}, {}, latency, {})
            for t in sc.abort_thresholds:
                crossed = crossing(t, so_far, elapsed)
                if crossed is not None:
                    self._crossed[(t.key, t.expression)] = crossed
                    self.stop_detail = f"threshold {t.key}: {t.expression} crossed ({crossed.detail})"
                    self.request_stop(StopReason.THRESHOLD)
                    return

    def _interval_at(self, t: float) -> int:
        assert self.start_time is not None  # the load control runs after the start
        return math.floor((t - self.start_time) / self.scenario.snapshot_interval_s + 1e-9)

    async def _qps_control(self) -> None:
        sc, load = self.scenario, self.scenario.load
        assert self.start_time is not None and self._clockmap is not None  # after the start
        iv = sc.snapshot_interval_s
        per_window = max(1, round(load.control_interval_s / iv))
        ctl = QpsController.of(load, sc.workers, initial_total(sc))
        await self._complete_start_split(ctl.connections)
        clean_from = self._interval_at(self._now() + STEERED_FOLLOW_S) + 1
        wake = self.start_time + load.control_interval_s
        while True:
            await trio.sleep_until(self._clockmap.to_trio(wake))
            wake += load.control_interval_s
            now = self._now()
            last = self._interval_at(now) - 1
            first = max(clean_from, last - per_window + 1)
            if first > last:
                continue
            w = await self._window(first, last)
            ctl, decision = ctl.decide(round(now - self.start_time, 3), w)
            self._qps_steps.append(decision)
            log.info("qps control: %s", decision)
            if decision.action == "bounds_limit_reached":
                self.stop_detail = (
                    f"{decision.qps:g} qps at the ceiling of {decision.connections} connections, under "
                    f"98 % of target_qps {load.target_qps:g} for {load.bounds_patience} readings"
                )
                self.request_stop(StopReason.BOUNDS_LIMIT_REACHED)
                return
            if decision.to != decision.connections:
                await self._set_connections(decision.to)
                # the workers read the change within STEERED_FOLLOW_S: the window starts after that
                clean_from = self._interval_at(self._now() + STEERED_FOLLOW_S) + 1

    async def _find_max(self) -> None:
        sc, fm = self.scenario, self.scenario.load.find_max
        assert self.start_time is not None and self._clockmap is not None  # after the start
        search = self._search = FindMaxSearch(fm)
        level = self._rate_level = fm.start
        by_rate = fm.over is FindMaxOver.RATE
        if not by_rate:
            await self._complete_start_split(max(int(level), len(self._live_workers())))
        step_start = self.start_time + sc.warmup_s
        await trio.sleep_until(self._clockmap.to_trio(step_start))
        budget_end = self.start_time + sc.warmup_s + sc.measurement_s
        while True:
            step_end = step_start + fm.step_s
            if step_end > budget_end:
                return  # the measurement time is spent: the result says time_budget
            await trio.sleep_until(self._clockmap.to_trio(step_end))
            iv = sc.snapshot_interval_s
            first = math.ceil((step_start + fm.settle - self.start_time) / iv - 1e-9)  # whole intervals after settling
            last = self._interval_at(step_end) - 1
            w = await self._window(first, last)
            step = search.judge(level, w, round(step_start - self.start_time, 3))
            search, nxt = search.after(step)
            self._search = search
            log.info("find_max step: %s", step)
            if nxt is None:
                best = search.result()
                found = best.get("concurrency") or best.get("rate")
                self.stop_detail = f"find_max: {best['reason']}; best {found} at {best['qps']} qps"
                self.request_stop(StopReason.COMPLETED)
                return
            level = nxt
            if by_rate:
                await self._set_rate(level)
            else:
                await self._set_connections(int(level))
            step_start = self._now()

    def load_block(self) -> dict[str, Any]:
        """``load`` of summary.json: the mode, its steps and its result (what the orchestrator decided;
        rate mode's offered/achieved figures are the phases')."""
        load = self.scenario.load
        block: dict[str, Any] = {"mode": str(load.mode), "steps": [], "result": None}
        if load.mode is LoadMode.QPS:
            block["steps"] = [attrs.asdict(d) for d in self._qps_steps]
            last = self._qps_steps[-1] if self._qps_steps else None
            block["result"] = {
                "target_qps": load.target_qps,
                "connections": last.to if last else None,
                "qps": last.qps if last else None,
                "reason": qps_result_reason(last, load.target_qps, self.stop_reason),
            }
        elif load.mode is LoadMode.FIND_MAX and self._search is not None:
            block["steps"] = [st.to_dict(load.find_max.over) for st in self._search.steps]
            block["result"] = self._search.result() | {"over": str(load.find_max.over)}
        elif load.mode is LoadMode.RATE:
            block["result"] = {"rate": load.rate, "arrival": str(load.arrival), "stages": len(load.stages)}
        return block

    async def _set_status(self, status: RunStatus, **changes: Any) -> None:
        self.status = run_transition(self.status, status)
        await self._cp.update_run(self.run_id, status=status, **changes)

    # ---- watching workers ----------------------------------------------------------------

    async def _touch_loop(self) -> None:
        """Keep RUN_STATUS.updated_at fresh: workers leave a run whose orchestrator went quiet."""
        while True:
            await trio.sleep(self.scenario.heartbeat_s)
            await self._cp.update_run(self.run_id)

    async def _liveness_loop(self) -> None:
        """Read the heartbeats every period, and at the instant the next worker would cross its
        STALE or DEAD threshold (``liveness_round``); write what changed."""
        sc, cm = self.scenario, self._clockmap
        assert cm is not None  # set by prepare
        wake = trio.current_time() + sc.heartbeat_s
        while True:
            await trio.sleep_until(wake)
            woke = trio.current_time()
            if woke - wake > OVERSLEPT_S:  # this process was descheduled (a busy host, a pause)
                self._blind.append((wake, woke))
            beats = await self._cp.read_heartbeats(self.run_id)
            if self._collected:
                return  # the final results are in: a stale row changes nothing
            now = trio.current_time()

            judged = liveness_round(
                [(hb, self._own_outage(cm.to_trio(hb.last_heartbeat), now)) for hb in beats],
                self._statuses,
                cm.to_control(now),
                sc.heartbeat_s,
                sc.stale_after_beats,
                sc.dead_after_beats,
            )
            self._statuses.update(judged.statuses)  # decided before any await: collection may overrule it
            for worker_id in judged.newly_dead:
                self._dead_at.setdefault(worker_id, now)
                if sc.on_worker_loss is OnWorkerLoss.FAIL:
                    self.request_stop(StopReason.WORKER_LOST)
            if judged.newly_dead and sc.load.open_loop and not self.stop_requested:
                await self._resplit()
            for worker_id, status in judged.marks:
                await self._cp.mark_worker(self.run_id, worker_id, status)
                log.warning("worker %s is %s", worker_id, status)
            wake = max(cm.to_trio(judged.next_check), trio.current_time() + MIN_LIVENESS_WAIT_S)

    def _own_outage(self, since: float, now: float) -> float:
        """How long, of the trio-time span [since, now], this orchestrator could not hear anyone:
        it could not reach the control plane, or its own process was descheduled."""
        blind = sum(max(0.0, min(b, now) - max(a, since)) for a, b in self._blind)
        return self._cp.health.unreachable_s(since, now) + blind

    async def _collect(self) -> list[WorkerResult]:
        """Final results of every worker, waiting up to drain + DEAD detection for stragglers."""
        sc = self.scenario
        known = set(self._statuses)

        def dead() -> set[str]:
            return {w for w, s in self._statuses.items() if s is WorkerStatus.DEAD}

        def all_in(results: list[WorkerResult]) -> bool:
            done = {r.worker_id for r in results if r.status.finished} | dead()
            return known <= done and len(done) >= min(len(known), sc.workers)

        wait = sc.drain_timeout_s + sc.dead_after_beats * sc.heartbeat_s + sc.outage_tolerance_s + 1.0
        results = await self._read_results_until(all_in, wait)
        judged = dead()
        if judged and not self.forced:
            # A worker judged DEAD may only have been descheduled: alive, it drains and reports
            # like the others. Give it one drain (and a heartbeat) more, then take what is there.
            results = await self._read_results_until(
                lambda rs: judged <= {r.worker_id for r in rs if r.status.final}, sc.drain_timeout_s + sc.heartbeat_s
            )
        return self._adopt(results)

    async def _read_results_until(
        self, done: Callable[[list[WorkerResult]], bool], within: float
    ) -> list[WorkerResult]:
        """Read TEST_RESULTS every ``COLLECT_POLL_S`` until ``done`` says so, a forced stop (one
        last read after it), or ``within`` seconds; the last read (also kept as ``_results_seen``)."""
        with trio.move_on_after(within):
            while True:
                self._results_seen = await self._cp.read_results(self.run_id)
                if self.forced or done(self._results_seen):
                    break
                with trio.move_on_after(COLLECT_POLL_S):
                    await self._force.wait()
        return self._results_seen

    def _adopt(self, results: list[WorkerResult]) -> list[WorkerResult]:
        """Each worker's status is what its results say once they are final, even after it was
        judged DEAD (a worker that was only descheduled, or cut off for a while, and reported in
        the end: the judgement stays in its timeline); a partial row (RUNNING) does not overrule
        a DEAD judgement."""
        for r in results:
            if r.status.final or self._statuses.get(r.worker_id) is not WorkerStatus.DEAD:
                self._statuses[r.worker_id] = r.status
        return sorted(results, key=lambda r: r.worker_id)

    def _worker_events(self, results: list[WorkerResult]) -> dict[str, dict[str, float]]:
        """The orchestrator's marks in each worker's timeline (control-plane clock): when it was
        judged DEAD, and when its final results landed."""
        events: dict[str, dict[str, float]] = {}
        if self._clockmap is not None:
            for w, t in self._dead_at.items():
                events.setdefault(w, {})["judged_dead"] = self._clockmap.to_control(t)
        for r in results:
            if r.status.final:
                events.setdefault(r.worker_id, {})["finished"] = r.updated_at
        return events

    def _summary(self, results: list[WorkerResult], snapshots: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
        return build_summary(
            run_id=self.run_id,
            status=str(self.status),
            reason=None if self.stop_reason is None else str(self.stop_reason),
            detail=self.stop_detail,
            scenario=self.scenario,
            start_time=self.start_time,
            stopped_at=self.stopped_at,
            payloads=[r.payload for r in results if r.payload.get("worker_id")],
            worker_statuses={w: str(s) for w, s in self._statuses.items()},
            worker_events=self._worker_events(results),
            orchestrator_queries=sum(self._counting.counts.values()),
            timeseries=merge_timeseries(snapshots, self.scenario.snapshot_interval_s),
            intervals=interval_kinds(snapshots),
            kind_errors=kind_errors(snapshots),
            crossed=self._crossed,
            load=self.load_block(),
        )


def qps_result_reason(last: QpsDecision | None, target: float, stop: StopReason | None) -> str:
    """How the QPS control ended: ``bounds_limit_reached``; ``settled`` (holding within the deadband);
    ``nearest_whole_count`` (holding the whole number of connections nearest the target, which no
    count reaches within the deadband); or ``not_settled`` (still moving when the run ended)."""
    if stop is StopReason.BOUNDS_LIMIT_REACHED:
        return "bounds_limit_reached"
    if last is None or last.action != "hold":
        return "not_settled"
    return "settled" if abs(last.qps - target) <= deadband(target) else "nearest_whole_count"


def initial_total(scenario: Scenario) -> int:
    """Run-wide connections at the start: qps mode's ``starting_connections``, find-max's first level
    (over concurrency), or ``connections_per_worker`` on each worker."""
    load = scenario.load
    if load.mode is LoadMode.QPS and load.starting_connections:
        return max(load.starting_connections, scenario.workers)
    if load.mode is LoadMode.FIND_MAX and load.find_max.over is FindMaxOver.CONCURRENCY:
        return max(int(load.find_max.start), scenario.workers)
    return scenario.total_connections


def initial_connections(scenario: Scenario) -> int:
    """Connections per worker in the START event (the base of the split of ``initial_total``)."""
    return initial_total(scenario) // scenario.workers


def write_summary(out: Path, summary: dict[str, Any], own: Mapping[str, Any] | None = None) -> Path:
    """OUT/summary.json, OUT/intervals.csv, OUT/failures.csv, (with load steps) OUT/steps.csv and (given ``own``) the
    orchestrator's own results in OUT/orchestrator.json, each written whole or not at all."""
    out.mkdir(parents=True, exist_ok=True)
    if own is not None:
        write_json(out / "orchestrator.json", own)
    write_csv(out / "failures.csv", FAILURES_HEADER, failure_rows(summary.get("failures", ())))
    write_csv(
        out / "intervals.csv",
        INTERVALS_HEADER,
        interval_rows(summary.get("timeseries", ()), summary.get("snapshot_interval_s", 1.0)),
    )
    steps = (summary.get("load") or {}).get("steps") or ()
    if steps:
        write_csv(out / "steps.csv", STEPS_HEADER, step_rows(steps))
    return write_json(out / "summary.json", summary)
