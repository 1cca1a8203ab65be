"""Load steering: what the orchestrator decides about the load while a run runs — the scenario's
planned phases and ``[[schedule]]``, the qps controller, the find-max search, a rate re-split
after a lost worker, the ``abort_on_fail`` thresholds — and the ``load`` block of summary.json
that records it.

Kept apart from the run's lifecycle (``engine.orchestrator``) as Locust keeps ``LoadTestShape``
apart from its runner: the orchestrator hands it callables (emit an event, the live workers, the
control plane's now, stop the run) and never the other way round. The decisions themselves are
pure (``engine.loadcontrol``); this is the thin layer of Trio tasks that reads the workers'
intervals, asks them and writes what they decide.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import trio
from hdrh.histogram import HdrHistogram

from startline.engine.failing import FailingWatch
from startline.engine.loadcontrol import (
    FindMaxSearch,
    MergedIntervals,
    QpsController,
    QpsDecision,
    initial_connections,
    initial_total,
    merged_intervals,
    move_readable,
    planned_offers,
    qps_result_reason,
    rate_at,
    rate_plan,
    reported_through,
    split,
)
from startline.engine.model import EventType, Scope, StopReason
from startline.engine.scenario import FindMaxOver, LoadMode, Scenario
from startline.engine.schedule import plan_events
from startline.engine.startplan import STEERED_FOLLOW_S
from startline.engine.summary import interval_kinds, interval_latency, merge_timeseries
from startline.engine.thresholds import Measured, crossing, judged_spans
from startline.engine.thresholds import Result as ThresholdResult

log = logging.getLogger("startline.orchestrator")

SNAPSHOT_POLL_S = 0.25
"""How often the steering reads METRICS_SNAPSHOTS while waiting for an interval to be shipped."""

Snapshots = list[tuple[str, dict[str, Any]]]


@attrs.define(eq=False)
class Steering:
    """The load decisions of one run. ``begin(start_time)`` once START_TIME is known; then
    ``control()`` (qps, find_max) and ``watch_thresholds()`` run as tasks until the run stops."""

    scenario: Scenario
    emit: Callable[..., Awaitable[None]]
    """Append a control event: ``emit(event_type, **fields)``."""
    set_run: Callable[..., Awaitable[None]]
    """Change RUN_STATUS fields: ``set_run(connections=n)``."""
    read_snapshots: Callable[[], Awaitable[Snapshots]]
    live_workers: Callable[[], list[str]]
    """The workers a run-wide level is split over: every one not lost."""
    now: Callable[[], float]
    """The control plane's now (on the orchestrator's clock map)."""
    to_trio: Callable[[float], float]
    stop: Callable[[StopReason, str], None]
    """Stop the run for a reason, with the words that go with it."""

    start_time: float | None = attrs.field(init=False, default=None)
    qps_steps: list[QpsDecision] = attrs.field(init=False, factory=list)
    search: FindMaxSearch | None = attrs.field(init=False, default=None)
    rate_level: float = attrs.field(init=False, default=0.0)
    """Find-max over the rate: the run-wide rate of the current step."""
    crossed: dict[tuple[str, str], ThresholdResult] = attrs.field(init=False, factory=dict)
    """``abort_on_fail`` thresholds crossed during the run (by key and expression)."""
    connections_level: int = attrs.field(init=False, default=0)
    """The run-wide connections last set by the load control (qps, find-max over concurrency)."""
    lost_at: float | None = attrs.field(init=False, default=None)
    """When workers were last lost while the load control steered the connections (the control
    plane's clock)."""

    def begin(self, start_time: float) -> None:
        self.start_time = start_time

    # ---- the scenario's plan ------------------------------------------------------------------

    async def follow_plan(self, stop_requested: trio.Event) -> None:
        """The scenario's planned events at their instants: SET_PHASE, the ``[[schedule]]``'s
        SET_CONNECTIONS (RUN_STATUS follows the run-wide ones); returns at the planned STOP's
        instant, or at once when a stop is requested (the orchestrator stops the run then)."""
        assert self.start_time is not None  # after the start
        for planned in plan_events(self.scenario, self.start_time):
            with trio.move_on_at(self.to_trio(planned.at)):
                await stop_requested.wait()
            if stop_requested.is_set() or planned.event_type is EventType.STOP:
                return
            await self.emit(
                planned.event_type,
                at=planned.at,
                phase=planned.phase,
                connections=planned.connections,
                scope=planned.scope,
                scope_id=planned.scope_id,
                ramp_s=planned.ramp_s,
            )
            if planned.event_type is EventType.SET_PHASE:
                await self.set_run(phase=planned.phase)
            elif planned.scope is Scope.RUN and planned.connections is not None:
                await self.set_run(connections=planned.connections)

    # ---- acting on the level ---------------------------------------------------------------

    async def set_connections(self, total: int) -> None:
        """Run-wide ``total`` connections, split over the live workers: one RUN event with the
        base count, one WORKER event for each worker that takes one more."""
        self.connections_level = total
        live = self.live_workers()
        if not live:
            return
        shares = split(max(total, len(live)), live)
        base = min(shares.values())
        at = self.now()
        await self.emit(EventType.SET_CONNECTIONS, at=at, connections=base)
        await self.set_run(connections=base)
        for w, n in shares.items():
            if n != base:
                await self.emit(EventType.SET_CONNECTIONS, at=at, connections=n, scope=Scope.WORKER, scope_id=w)

    async def complete_start_split(self, total: int) -> None:
        """START gave every worker the base of the run-wide level; split the rest (or a level the
        bounds moved) over the workers now."""
        self.connections_level = total
        if total != initial_connections(self.scenario) * self.scenario.workers:
            await self.set_connections(total)

    async def set_rate(self, level: float) -> None:
        """Find-max over the rate: the run-wide ``level`` from now, split over the live workers."""
        self.rate_level = level
        live = self.live_workers() or [""]
        await self.emit(EventType.SET_RATE, at=self.now(), rate=level / len(live))

    async def workers_lost(self) -> None:
        """Workers were judged lost: an open loop's rate is re-split over the workers left
        (``resplit``); connections the load control steers are re-split too (the total it chose
        stays the total), and what it read before the loss is no guide to what it reads after."""
        if self.scenario.load.open_loop:
            await self.resplit()
        elif self.connections_level:
            self.lost_at = self.now()
            await self.set_connections(self.connections_level)

    async def resplit(self) -> None:
        """A worker was lost: the others take its share of the rate. Workers follow the scenario's
        stages themselves (their share of them); this amends their plan from now on: the rest of
        the current stage, then every stage to come, split over the workers left."""
        assert self.start_time is not None  # workers are judged only after the start
        if self.scenario.load.mode is LoadMode.FIND_MAX:
            await self.set_rate(self.rate_level)
            return
        n, now = max(1, len(self.live_workers())), self.now()
        load, t = self.scenario.load, now - self.start_time
        plan = rate_plan(load)
        current = next(((at, to, ramp) for at, to, ramp in plan if at <= t < at + ramp), None)
        if current is None:
            await self.emit(EventType.SET_RATE, at=now, rate=rate_at(load.rate, plan, t) / n)
        else:
            at, to, ramp = current
            await self.emit(EventType.SET_RATE, at=now, rate=to / n, ramp_s=at + ramp - t)
        for at, to, ramp in plan:
            if at > t:
                await self.emit(EventType.SET_RATE, at=self.start_time + at, rate=to / n, ramp_s=ramp)

    # ---- reading the workers' intervals ------------------------------------------------------

    async def merged(self, first: int, last: int) -> MergedIntervals:
        """The merged figures of intervals ``first..last``."""
        return merged_intervals(await self.snapshots_through(last), first, last, self.scenario.snapshot_interval_s)

    async def snapshots_through(self, last: int) -> Snapshots:
        """The run's snapshots once every live worker has shipped interval ``last`` (or a few
        snapshot periods passed: a worker that stalls does not stall the control)."""
        sc = self.scenario
        snaps: Snapshots = []
        with trio.move_on_after(3 * sc.snapshot_interval_s + sc.heartbeat_s):
            while True:
                snaps = await self.read_snapshots()
                upto = reported_through(snaps)
                if all(upto.get(w, -1) >= last for w in self.live_workers()):
                    break
                await trio.sleep(SNAPSHOT_POLL_S)
        return snaps

    def _interval_at(self, t: float) -> int:
        assert self.start_time is not None  # the load control runs after the start
        return math.floor((t - self.start_time) / self.scenario.snapshot_interval_s + 1e-9)

    # ---- the tasks ---------------------------------------------------------------------------

    async def control(self) -> None:
        """qps and find_max: decide the level from the intervals the workers ship."""
        if self.scenario.load.mode is LoadMode.QPS:
            await self._qps_control()
        else:
            await self._find_max()

    async def watch_thresholds(self) -> None:
        """The ``abort_on_fail`` thresholds, judged on MEASUREMENT so far at the end of each of its
        snapshot intervals (once a threshold's ``delay_abort_eval_s`` has passed): the first one
        crossed stops the run (THRESHOLD), which then completes and fails it."""
        sc = self.scenario
        assert self.start_time is not None  # after the start
        iv, first = sc.snapshot_interval_s, sc.measurement_intervals.start
        for k in sc.measurement_intervals:
            await trio.sleep_until(self.to_trio(self.start_time + (k + 1) * iv))
            snaps = await self.snapshots_through(k)
            kinds = interval_kinds(snaps)
            wanted = {t.kind for t in sc.abort_thresholds if t.kind is not None}
            by_kind: dict[str | None, Mapping[int, HdrHistogram]] = {None: interval_latency(kinds)}
            by_kind |= {kind: {i: h[kind] for i, h in kinds.items() if kind in h} for kind in wanted}
            latency = {kind: judged_spans(of, first, k, k - first + 1)[0] for kind, of in by_kind.items()}
            counts = merge_timeseries(snaps, iv)[first : k + 1]  # each latency histogram decoded once, above
            ops, errors = sum(r["ops"] for r in counts), sum(r["errors"] for r in counts)
            elapsed = (k - first + 1) * iv
            so_far = Measured({"ops": ops, "errors": errors, "qps": ops / elapsed}, {}, latency, {})
            for t in sc.abort_thresholds:
                crossed = crossing(t, so_far, elapsed)
                if crossed is not None:
                    self.crossed[(t.key, t.expression)] = crossed
                    self.stop(StopReason.THRESHOLD, f"threshold {t.key}: {t.expression} crossed ({crossed.detail})")
                    return

    async def watch_failing(self) -> None:
        """``[checks] stop_after_failing_s``: at the end of each snapshot interval, the last
        seconds of every operation kind; one whose every attempt failed over them stops the run
        (ALL_FAILING), its first error in the words."""
        sc = self.scenario
        assert self.start_time is not None  # after the start
        iv, limit = sc.snapshot_interval_s, sc.checks.stop_after_failing_s
        span = max(1, math.ceil(limit / iv - 1e-9))
        watch = FailingWatch()
        for k in range(span - 1, math.ceil(sc.length_s / iv - 1e-9)):
            await trio.sleep_until(self.to_trio(self.start_time + (k + 1) * iv))
            snaps = await self.read_snapshots()
            watch.add(snaps)
            # judged on the intervals every live worker has shipped (each every ship_interval_s)
            shipped = reported_through(snaps)
            through = min((shipped.get(w, -1) for w in self.live_workers()), default=-1)
            if through < span - 1:
                continue
            found = watch.failing(through - span + 1, through)
            if found is not None:
                kind, errors, said = found
                what = f"every {kind!r} operation" if kind else "every operation"
                self.stop(
                    StopReason.ALL_FAILING,
                    f"{what} failed for {limit:g} s ({errors:,} errors; the first: {said}) — "
                    "[checks] stop_after_failing_s",
                )
                return

    async def _qps_control(self) -> None:
        sc, load = self.scenario, self.scenario.load
        assert self.start_time is not None  # after the start
        iv = sc.snapshot_interval_s
        per_window = max(1, round(load.control_interval_s / iv))
        ctl = QpsController.of(load, sc.workers, initial_total(sc))
        await self.complete_start_split(ctl.connections)
        clean_from = self._interval_at(self.now() + STEERED_FOLLOW_S) + 1
        wake = self.start_time + load.control_interval_s
        seen_loss = self.lost_at
        while True:
            await trio.sleep_until(self.to_trio(wake))
            wake += load.control_interval_s
            now = self.now()
            if self.lost_at != seen_loss:  # a worker lost: read afresh from the re-split on
                seen_loss, ctl = self.lost_at, ctl.forget()
                clean_from = self._interval_at(now + STEERED_FOLLOW_S) + 1
                continue
            last = self._interval_at(now) - 1
            first = max(clean_from, last - per_window + 1)
            if first > last:
                continue
            merged = await self.merged(first, last)
            at, end = now - self.start_time, sc.warmup_s + sc.measurement_s
            final = not move_readable(at, wake - self.start_time, end, STEERED_FOLLOW_S, iv)
            ctl, decision = ctl.decide(round(at, 3), merged, final=final)
            self.qps_steps.append(decision)
            log.info("qps control: %s", decision)
            if decision.action == "bounds_limit_reached":
                self.stop(
                    StopReason.BOUNDS_LIMIT_REACHED,
                    f"{decision.qps:g} qps at the ceiling of {decision.connections} connections, under "
                    f"98 % of target_qps {load.target_qps:g} for {load.bounds_patience} readings",
                )
                return
            if decision.to != decision.connections:
                await self.set_connections(decision.to)
                # the workers read the change within STEERED_FOLLOW_S: the window starts after that
                clean_from = self._interval_at(self.now() + STEERED_FOLLOW_S) + 1

    async def _find_max(self) -> None:
        sc, fm = self.scenario, self.scenario.load.find_max
        assert self.start_time is not None  # after the start
        search = self.search = FindMaxSearch(fm)
        level = self.rate_level = fm.start
        by_rate = fm.over is FindMaxOver.RATE
        if not by_rate:
            await self.complete_start_split(max(int(level), len(self.live_workers())))
        step_start = self.start_time + sc.warmup_s
        await trio.sleep_until(self.to_trio(step_start))
        budget_end = self.start_time + sc.warmup_s + sc.measurement_s
        while True:
            step_end = step_start + fm.step_s
            if step_end > budget_end:
                return  # the measurement time is spent: the result says time_budget
            await trio.sleep_until(self.to_trio(step_end))
            iv = sc.snapshot_interval_s
            first = math.ceil((step_start + fm.settle - self.start_time) / iv - 1e-9)  # whole intervals after settling
            last = self._interval_at(step_end) - 1
            merged = await self.merged(first, last)
            step = search.judge(level, merged, round(step_start - self.start_time, 3))
            search, nxt = search.after(step)
            self.search = search
            log.info("find_max step: %s", step)
            if nxt is None:
                best = search.result()
                found = best.get("concurrency") or best.get("rate")
                self.stop(StopReason.COMPLETED, f"find_max: {best['reason']}; best {found} at {best['qps']} qps")
                return
            level = nxt
            if by_rate:
                await self.set_rate(level)
            else:
                await self.set_connections(int(level))
            step_start = self.now()

    # ---- what it says ------------------------------------------------------------------------

    def progress(self) -> str:
        """The last step, for the progress line ("" when there is none)."""
        load = self.scenario.load
        if self.qps_steps:
            d = self.qps_steps[-1]
            return f"; qps {d.qps:,.0f} of {load.target_qps:,.0f} with {d.to} connections ({d.action})"
        search = self.search
        if search is not None and search.steps:
            st = search.steps[-1]
            unit = "ops/s" if load.find_max.over is FindMaxOver.RATE else "connections"
            mark = "stable" if st.stable else f"unstable: {st.reason}"
            return f"; find-max step {len(search.steps)}: {st.level:g} {unit}, {st.qps:,.0f} qps ({mark})"
        return ""

    def load_block(self, stop_reason: StopReason | None) -> dict[str, Any]:
        """``load`` of summary.json: the mode, its steps and its result (what was decided; rate
        mode's offered/achieved figures are the phases')."""
        load = self.scenario.load
        block: dict[str, Any] = {"mode": str(load.mode), "steps": [], "result": None}
        if load.mode is LoadMode.QPS:
            block["steps"] = [attrs.asdict(d) for d in self.qps_steps]
            last = self.qps_steps[-1] if self.qps_steps else None
            if last is not None and self.start_time is not None and self.lost_at is not None:
                if self.start_time + last.at_s < self.lost_at + STEERED_FOLLOW_S:
                    last = None  # its last reading came before workers were lost: nothing read since
            block["result"] = {
                "target_qps": load.target_qps,
                "connections": last.to if last else None,
                "qps": last.qps if last else None,
                "read_with": last.connections if last else None,
                "reason": qps_result_reason(last, load.target_qps, stop_reason),
            }
        elif load.mode is LoadMode.FIND_MAX and self.search is not None:
            block["steps"] = [st.to_dict(load.find_max.over) for st in self.search.steps]
            block["result"] = self.search.result() | {"over": str(load.find_max.over)}
        elif load.mode is LoadMode.RATE:
            sc = self.scenario
            planned = planned_offers(load, sc.warmup_s, sc.warmup_s + sc.measurement_s)
            block["result"] = {
                "rate": load.rate,
                "arrival": str(load.arrival),
                "stages": len(load.stages),
                "planned": round(planned, 3),
            }
        return block
