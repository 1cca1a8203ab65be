"""The orchestrator: the only writer of the control log. It creates the run, waits for
READY workers, starts them, drives the phases and the scaling schedule, watches
heartbeats, collects results and writes the summary."""

from __future__ import annotations

import json
import logging
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import attrs
import trio

from startline.engine.clocksync import ClockMap, estimate_offset
from startline.engine.counting import CountingControlPlane
from startline.engine.liveness import classify_liveness
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
from startline.engine.resilience import ResilientControlPlane, RetryPolicy, single_leaf
from startline.engine.scenario import OnWorkerLoss, Scenario, Strategy
from startline.engine.schedule import PhaseWindows, PlannedEvent, plan_events
from startline.engine.summary import build_summary
from startline.engine.workload import derive_seed

log = logging.getLogger("startline.orchestrator")

COLLECT_POLL_S = 0.25
"""How often the orchestrator reads TEST_RESULTS while waiting for final results."""
READY_POLL_S = 0.05
"""How often the orchestrator reads WORKER_HEARTBEATS while waiting for READY."""
MIN_LIVENESS_WAIT_S = 0.001
"""Between two heartbeat reads at least this long (clock rounding never makes a busy loop)."""


def _now_local_control(clockmap: ClockMap) -> float:
    return clockmap.to_control(trio.current_time())


@attrs.define(eq=False)
class Orchestrator:
    """Drives one run; ``run()`` returns the summary (and writes it when ``out`` is set)."""

    control: ControlPlane
    clock: WallClock
    scenario: Scenario
    run_id: str
    out: Path | None = None

    counting: CountingControlPlane = attrs.field(init=False)
    cp: ResilientControlPlane = attrs.field(init=False)
    sequence_id: int = 0
    status: RunStatus = RunStatus.PREPARED
    reason: str | None = None
    start_time: float | None = None
    stopped_at: float | None = None
    statuses: dict[str, WorkerStatus] = attrs.Factory(dict)
    events: list[ControlEvent] = attrs.Factory(list)
    clockmap: ClockMap | None = None
    _stop_requested: trio.Event = attrs.Factory(trio.Event)
    adopted: RunState | None = None  # a run found unfinished without its orchestrator (see prepare)
    dead_at: dict[str, float] = attrs.Factory(dict)  # worker → trio time it was judged DEAD
    _stop_reason: StopReason = StopReason.COMPLETED
    _force: trio.Event = attrs.Factory(trio.Event)
    _collected: bool = False
    _results_seen: list[WorkerResult] = attrs.Factory(list)

    def __attrs_post_init__(self) -> None:
        self.counting = CountingControlPlane(self.control)
        self.cp = ResilientControlPlane(
            self.counting, RetryPolicy.of(self.scenario), random.Random(derive_seed("retry", self.run_id, ORCHESTRATOR))
        )

    def request_stop(self, reason: StopReason = StopReason.USER_REQUESTED) -> None:
        """Stop early (Ctrl-C, a lost worker under ``on_worker_loss = "fail"``)."""
        if not self._stop_requested.is_set():
            self._stop_reason = reason
            self._stop_requested.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested.is_set()

    @property
    def forced(self) -> bool:
        return self._force.is_set()

    def force_stop(self) -> None:
        """A second Ctrl-C: stop now — no waiting for the drain; the summary keeps what is in."""
        self.request_stop(StopReason.USER_REQUESTED)
        self._force.set()

    def progress(self) -> str:
        """One line for a progress display: status, phase and seconds to the planned end."""
        if self.start_time is None or self.clockmap is None:
            ready = sum(s is WorkerStatus.READY for s in self.statuses.values())
            return f"{self.status}: {ready}/{self.scenario.workers} workers READY"
        now = _now_local_control(self.clockmap)
        windows = PhaseWindows.from_scenario(self.scenario, self.start_time)
        left = max(0.0, windows.end - now)
        return f"{self.status} {windows.phase_at(now)}, {left:.0f} s left"

    async def prepare(self) -> None:
        """Create the run (PREPARED, with the scenario) and move it to STARTING; idempotent.

        A run id that exists already is a restart: an unfinished run whose orchestrator has
        been silent for ``dead_after_beats`` heartbeats is adopted, to be failed cleanly by
        ``run()``; a finished run, or one whose orchestrator is alive, is refused."""
        if self.clockmap is not None:
            return
        sc = self.scenario
        try:
            await self.cp.create_run(
                RunState(
                    self.run_id,
                    RunStatus.PREPARED,
                    Phase.PREPARING,
                    connections=sc.connections_per_worker,
                    expected_workers=sc.workers,
                    scenario=sc.to_dict(),
                )
            )
        except ControlPlaneConflict:
            self.adopted = await self.cp.read_run(self.run_id)
            if self.adopted is None:
                raise
        offset = await estimate_offset(self.cp, self.clock, sc.start.offset_samples)
        self.clockmap = ClockMap.anchor(offset)
        if self.adopted is None:
            await self._set_status(RunStatus.STARTING)
            return
        found = self.adopted
        if found.status.terminal:
            raise ControlPlaneConflict(f"run {self.run_id!r} has already ended ({found.status}); choose a new run id")
        silent = self.clockmap.to_control(trio.current_time()) - found.updated_at
        alive_for = sc.dead_after_beats * sc.heartbeat_s
        if silent < alive_for:
            raise ControlPlaneConflict(
                f"run {self.run_id!r} is {found.status} and its orchestrator was heard {silent:.1f} s ago "
                f"(< {alive_for:g} s): it is alive; not taking it over"
            )
        log.warning(
            "run %s is %s without its orchestrator (silent %.1f s): failing it", self.run_id, found.status, silent
        )
        if found.scenario:
            self.scenario = Scenario.from_dict(found.scenario)
        self.sequence_id, self.start_time, self.status = found.last_sequence_id, found.start_time, found.status

    async def run(self) -> dict[str, Any]:
        """Prepare (if not done), wait for READY, start, drive the schedule, collect, summarise.

        However it ends, the summary is written: a control plane lost past its tolerance makes
        the run FAILED with what had been collected (workers keep their own results)."""
        results: list[WorkerResult] = []
        snapshots: list[tuple[str, dict[str, Any]]] = []
        try:
            await self.prepare()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._touch_loop)
                if self.adopted is not None:
                    await self._fail_adopted()
                elif await self._wait_ready():
                    await self._start()
                    nursery.start_soon(self._liveness_loop)
                    await self._follow_schedule()
                else:
                    reason = self._stop_reason if self._stop_requested.is_set() else StopReason.READY_TIMEOUT
                    self.reason = str(reason)
                    await self._stop(reason)
                results = await self._collect()
                self._collected = True
                self.status = self._final_status(results)
                await self._set_status(self.status, phase=Phase.DONE, stop_reason=self.reason)
                nursery.cancel_scope.cancel()
            snapshots = await self.cp.read_snapshots(self.run_id)
        except Exception as exc:
            leaf = single_leaf(exc)
            if not isinstance(leaf, ControlPlaneError) or isinstance(leaf, ControlPlaneConflict):
                raise
            log.error("run %s failed: %s", self.run_id, leaf)
            self.status = RunStatus.FAILED
            self.reason = f"{StopReason.CONTROL_PLANE_LOST}: {leaf}"
            results = self._adopt(results or self._results_seen)
            await self._record_failure()
        summary = self._summary(results, snapshots)
        if self.out is not None:
            write_summary(self.out, summary)
        return summary

    async def _record_failure(self) -> None:
        """After losing the control plane: one more outage tolerance to record FAILED in RUN_STATUS
        (workers then stop); if it stays down, a restarted orchestrator will fail the run."""
        self.cp.health.forgive()
        try:
            await self._set_status(RunStatus.FAILED, phase=Phase.DONE, stop_reason=self.reason)
        except ControlPlaneError as exc:
            log.error("run %s: FAILED could not be recorded: %s", self.run_id, exc)

    async def _fail_adopted(self) -> None:
        """A restarted orchestrator fails the run it found unfinished: STOP(orchestrator_lost) so any
        live worker drains and reports, then the results are collected like any run's."""
        found = self.adopted
        assert found is not None and self.clockmap is not None
        for hb in await self.cp.read_heartbeats(self.run_id):
            self.statuses[hb.worker_id] = hb.status
        self.reason = f"{StopReason.ORCHESTRATOR_LOST}: the run was {found.status} when its orchestrator restarted"
        stops = [e for e in await self.cp.read_events(self.run_id, 0) if e.event_type is EventType.STOP]
        if stops:  # its predecessor had stopped the run: workers are draining already
            self.stopped_at = stops[0].at
            return
        await self._stop(StopReason.ORCHESTRATOR_LOST)

    # ---- the phases ----------------------------------------------------------------------

    async def _wait_ready(self) -> bool:
        """True once the expected workers are READY; False on timeout or a stop request."""
        with trio.move_on_after(self.scenario.ready_timeout_s):
            while not self._stop_requested.is_set():
                beats = await self.cp.read_heartbeats(self.run_id)
                for hb in beats:
                    self.statuses[hb.worker_id] = hb.status
                if sum(hb.status is WorkerStatus.READY for hb in beats) >= self.scenario.workers:
                    return True
                with trio.move_on_after(READY_POLL_S):
                    await self._stop_requested.wait()
        return False

    async def _start(self) -> None:
        """RUNNING with START_TIME: the server's now, or (scheduled) now + lead; then START."""
        sc = self.scenario
        phase = Phase.WARMUP if sc.warmup_s > 0 else Phase.MEASUREMENT
        when: dict[str, Any] = (
            {"start_time": await self.cp.server_time() + sc.start.lead_ms / 1000.0}
            if sc.start.strategy is Strategy.SCHEDULED
            else {"start_time_now": True}
        )
        run = await self.cp.update_run(
            self.run_id, expect_status=RunStatus.STARTING, status=RunStatus.RUNNING, phase=phase, **when
        )
        if run is None:  # a retry after an attempt that landed finds RUNNING already
            run = await self.cp.read_run(self.run_id)
        if run is None or run.status is not RunStatus.RUNNING or run.start_time is None:
            raise RuntimeError(f"run {self.run_id} left STARTING behind the orchestrator's back")
        self.status = RunStatus.RUNNING
        self.start_time = run.start_time
        await self._emit(EventType.START, at=run.start_time, phase=phase, connections=sc.connections_per_worker)

    async def _follow_schedule(self) -> None:
        assert self.start_time is not None and self.clockmap is not None
        for planned in plan_events(self.scenario, self.start_time):
            with trio.move_on_at(self.clockmap.to_trio(planned.at)):
                await self._stop_requested.wait()
            if self._stop_requested.is_set() or planned.event_type is EventType.STOP:
                break
            await self._emit_planned(planned)
        await self._stop(self._stop_reason)

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
            await self.cp.update_run(self.run_id, phase=p.phase)
        elif p.scope is Scope.RUN and p.connections is not None:
            await self.cp.update_run(self.run_id, connections=p.connections)

    async def _stop(self, reason: StopReason) -> None:
        assert self.clockmap is not None
        self.stopped_at = _now_local_control(self.clockmap)
        if reason is not StopReason.COMPLETED:
            self.reason = self.reason or str(reason)
        await self._emit(EventType.STOP, at=self.stopped_at, phase=Phase.DONE, reason=reason)
        status = RunStatus.CANCELLING if reason is StopReason.USER_REQUESTED else RunStatus.STOPPING
        await self._set_status(status, phase=Phase.DONE, stop_reason=str(reason))

    async def _emit(self, event_type: EventType, **fields: Any) -> None:
        """Append the next event: sequence ids are gap-free because only this method writes them."""
        event = ControlEvent(self.run_id, self.sequence_id + 1, event_type, **fields)
        await self.cp.append_event(event)
        self.sequence_id = event.sequence_id
        self.events.append(event)

    async def _set_status(self, status: RunStatus, **changes: Any) -> None:
        self.status = status
        await self.cp.update_run(self.run_id, status=status, **changes)

    # ---- watching workers ----------------------------------------------------------------

    async def _touch_loop(self) -> None:
        """Keep RUN_STATUS.updated_at fresh: workers leave a run whose orchestrator went quiet."""
        while True:
            await trio.sleep(self.scenario.heartbeat_s)
            await self.cp.update_run(self.run_id)

    async def _liveness_loop(self) -> None:
        """Read the heartbeats every period, and also at the instant the next worker would cross
        its STALE or DEAD threshold: a dead worker is judged within k2·h plus one read."""
        sc = self.scenario
        cm = self.clockmap
        assert cm is not None
        wake = trio.current_time() + sc.heartbeat_s
        while True:
            await trio.sleep_until(wake)
            beats = await self.cp.read_heartbeats(self.run_id)
            now_trio = trio.current_time()
            now = cm.to_control(now_trio)
            next_check = now + sc.heartbeat_s
            marks: list[tuple[str, WorkerStatus]] = []
            for hb in beats:
                known = self.statuses.get(hb.worker_id)
                if self._collected or (known is not None and known.finished):
                    continue  # its final results (or its death) are in: a stale row changes nothing
                # Time the orchestrator itself could not reach the control plane is nobody's silence.
                last = hb.last_heartbeat + self.cp.health.unreachable_s(cm.to_trio(hb.last_heartbeat), now_trio)
                status = classify_liveness(
                    hb.status, last, now, sc.heartbeat_s, sc.stale_after_beats, sc.dead_after_beats
                )
                if status is WorkerStatus.DEAD and hb.worker_id not in self.dead_at:
                    self.dead_at[hb.worker_id] = trio.current_time()
                if status is not hb.status:
                    marks.append((hb.worker_id, status))
                self.statuses[hb.worker_id] = status  # decided before any await: collection may overrule it
                if status is WorkerStatus.DEAD and sc.on_worker_loss is OnWorkerLoss.FAIL:
                    self.request_stop(StopReason.WORKER_LOST)
                if not status.finished and status is not WorkerStatus.DEAD:
                    for beats_ in (sc.stale_after_beats, sc.dead_after_beats):
                        crossing = last + beats_ * sc.heartbeat_s
                        if crossing > now:
                            next_check = min(next_check, crossing)
                            break
            for worker_id, status in marks:
                await self.cp.mark_worker(self.run_id, worker_id, status)
                log.warning("worker %s is %s", worker_id, status)
            wake = max(cm.to_trio(next_check), trio.current_time() + MIN_LIVENESS_WAIT_S)

    async def _collect(self) -> list[WorkerResult]:
        """Final results of every worker, waiting up to drain + DEAD detection for stragglers."""
        sc = self.scenario
        known = set(self.statuses)
        results: list[WorkerResult] = []
        wait = sc.drain_timeout_s + sc.dead_after_beats * sc.heartbeat_s + sc.outage_tolerance_s + 1.0
        with trio.move_on_after(wait):
            while True:
                results = self._results_seen = await self.cp.read_results(self.run_id)
                final = {r.worker_id for r in results if r.status.finished}
                dead = {w for w, s in self.statuses.items() if s is WorkerStatus.DEAD}
                if self.forced or (known <= final | dead and len(final | dead) >= min(len(known), sc.workers)):
                    break
                with trio.move_on_after(COLLECT_POLL_S):
                    await self._force.wait()
        return self._adopt(results)

    def _adopt(self, results: list[WorkerResult]) -> list[WorkerResult]:
        """Each worker's status is what its results say (a partial row says RUNNING), unless DEAD."""
        for r in results:
            if self.statuses.get(r.worker_id) is not WorkerStatus.DEAD:
                self.statuses[r.worker_id] = r.status
        return sorted(results, key=lambda r: r.worker_id)

    def _final_status(self, results: list[WorkerResult]) -> RunStatus:
        if self.reason == str(StopReason.USER_REQUESTED):
            return RunStatus.CANCELLED
        if self.reason is not None:
            return RunStatus.FAILED
        lost = [w for w, s in self.statuses.items() if s is not WorkerStatus.COMPLETED]
        if lost and self.scenario.on_worker_loss is OnWorkerLoss.FAIL:
            self.reason = f"{StopReason.WORKER_LOST}: {', '.join(sorted(lost))}"
            return RunStatus.FAILED
        if not any(r.status is WorkerStatus.COMPLETED for r in results):
            self.reason = "no worker completed"
            return RunStatus.FAILED
        return RunStatus.COMPLETED

    def _summary(self, results: list[WorkerResult], snapshots: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
        series: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        unique = {(worker, snap.get("n", i)): snap for i, (worker, snap) in enumerate(snapshots)}  # retried appends
        for snap in unique.values():
            for item in snap.get("intervals", []):
                series[item["interval"]][0] += item["ops"]
                series[item["interval"]][1] += item["errors"]
        interval = self.scenario.snapshot_interval_s
        timeseries = [{"t_s": i * interval, "ops": n, "errors": e} for i, (n, e) in sorted(series.items())]
        payloads = [r.payload for r in results if r.payload.get("worker_id")]
        return build_summary(
            run_id=self.run_id,
            status=str(self.status),
            reason=self.reason,
            scenario=self.scenario,
            start_time=self.start_time,
            stopped_at=self.stopped_at,
            payloads=payloads,
            worker_statuses={w: str(s) for w, s in self.statuses.items()},
            orchestrator_queries=sum(self.counting.counts.values()),
            timeseries=timeseries,
        )


def write_summary(out: Path, summary: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "summary.json"
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return path
