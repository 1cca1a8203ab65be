"""The orchestrator's roster of its workers: what their heartbeats say (READY, groups), what it
judged of them (STALE, DEAD: ``engine.liveness`` decides, this reads and writes), and their
results at the end. The orchestrator keeps the run's lifecycle and decides what a lost worker
means (fail the run, re-split the rate); the roster only knows the workers."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from startline.engine.clocksync import ClockMap
from startline.engine.liveness import MIN_LIVENESS_WAIT_S, liveness_round
from startline.engine.model import StopReason, WorkerResult, WorkerStatus
from startline.engine.resilience import ResilientControlPlane
from startline.engine.scenario import ConfigError, Scenario

log = logging.getLogger("startline.orchestrator")

COLLECT_POLL_S = 0.25
"""How often TEST_RESULTS is read while waiting for final results."""
READY_POLL_S = 0.05
"""How often WORKER_HEARTBEATS is read while waiting for READY."""
OVERSLEPT_S = 0.25
"""A wake-up this much later than asked means the process was descheduled (not a timer's jitter)."""


@attrs.define(eq=False)
class Roster:
    cp: ResilientControlPlane
    run_id: str
    scenario: Scenario
    sleep_until: Callable[[float], Awaitable[None]] = trio.sleep_until
    """How the roster sleeps between its reads (``Orchestrator.sleep_until``)."""
    statuses: dict[str, WorkerStatus] = attrs.field(init=False, factory=dict)
    dead_at: dict[str, float] = attrs.field(init=False, factory=dict)
    """worker → trio time it was judged DEAD."""
    groups: dict[str, str] = attrs.field(init=False, factory=dict)
    """worker id → its group, as its heartbeats say."""
    results_seen: list[WorkerResult] = attrs.field(init=False, factory=list)
    """The last TEST_RESULTS read."""
    collected: bool = attrs.field(init=False, default=False)
    """The final results are in: liveness judges no more."""
    _blind: list[tuple[float, float]] = attrs.field(init=False, factory=list)
    """Trio-time spans this process overslept a wake-up by more than ``OVERSLEPT_S``."""

    def live(self) -> list[str]:
        """The workers a run-wide level is split over: every one not lost."""
        gone = (WorkerStatus.DEAD, WorkerStatus.FAILED)
        return sorted(w for w, s in self.statuses.items() if s not in gone)

    def ready(self) -> int:
        return sum(s is WorkerStatus.READY for s in self.statuses.values())

    def unknown_scope(self) -> str | None:
        """The first schedule step whose WORKER / WORKER_GROUP scope no READY worker has (workers
        started elsewhere are known only once READY)."""
        try:
            self.scenario.check_scopes(set(self.groups), set(self.groups.values()))
        except ConfigError as exc:
            return str(exc)
        return None

    async def watch_spent(self, stop: Callable[[StopReason, str], None]) -> None:
        """With ``operations_per_connection``: once every worker has published its final results
        (it has issued all its operations, or failed), the run ends — it does not idle to its
        planned end."""
        while True:
            await self.sleep_until(trio.current_time() + self.scenario.heartbeat_s)
            results = await self.cp.read_results(self.run_id)
            final = {r.worker_id for r in results if r.status.final}
            if final and set(self.statuses) <= final:
                stop(StopReason.COMPLETED, "every connection issued its operations_per_connection")
                return

    async def read_heartbeats(self) -> None:
        """Take every worker's status as its heartbeat says (a restarted orchestrator's first look)."""
        for hb in await self.cp.read_heartbeats(self.run_id):
            self.statuses[hb.worker_id] = hb.status

    def not_ready(self) -> str:
        """Who was not READY when the wait ended, in words (the READY_TIMEOUT detail)."""
        sc = self.scenario
        ready = sorted(w for w, s in self.statuses.items() if s is WorkerStatus.READY)
        others = ", ".join(f"{w} {s}" for w, s in sorted(self.statuses.items()) if s is not WorkerStatus.READY)
        return f"{len(ready)} of {sc.workers} workers READY within ready_timeout_s = {sc.ready_timeout_s:g}" + (
            f"; not READY: {others}" if others else "; the others never joined (see their logs)"
        )

    async def wait_ready(self, stop_requested: trio.Event) -> bool:
        """True once the expected workers are READY; False on timeout or a stop request (seen
        at the next read, within ``READY_POLL_S``: a plain sleep between reads, which a
        simulation's clock sleeps without a cancel scope)."""
        with trio.move_on_after(self.scenario.ready_timeout_s):
            while not stop_requested.is_set():
                beats = await self.cp.read_heartbeats(self.run_id)
                for hb in beats:
                    self.statuses[hb.worker_id] = hb.status
                    self.groups[hb.worker_id] = hb.group
                if sum(hb.status is WorkerStatus.READY for hb in beats) >= self.scenario.workers:
                    return True
                await self.sleep_until(trio.current_time() + READY_POLL_S)
        return False

    async def watch_liveness(self, cm: ClockMap, on_lost: Callable[[list[str]], Awaitable[None]]) -> None:
        """Read the heartbeats every period, and at the instant the next worker would cross its
        STALE or DEAD threshold (``liveness_round``); write what changed; ``on_lost`` hears of the
        workers newly judged DEAD."""
        sc = self.scenario
        wake = trio.current_time() + sc.heartbeat_s
        while True:
            await self.sleep_until(wake)
            woke = trio.current_time()
            if woke - wake > OVERSLEPT_S:  # this process was descheduled (a busy host, a pause)
                self._blind.append((wake, woke))
            beats = await self.cp.read_heartbeats(self.run_id)
            if self.collected:
                return  # the final results are in: a stale row changes nothing
            now = trio.current_time()
            judged = liveness_round(
                [(hb, self._own_outage(cm.to_trio(hb.last_heartbeat), now)) for hb in beats],
                self.statuses,
                cm.to_control(now),
                sc.heartbeat_s,
                sc.stale_after_beats,
                sc.dead_after_beats,
            )
            self.statuses.update(judged.statuses)  # decided before any await: collection may overrule it
            for worker_id in judged.newly_dead:
                self.dead_at.setdefault(worker_id, now)
            if judged.newly_dead:
                await on_lost(list(judged.newly_dead))
            for worker_id, status in judged.marks:
                await self.cp.mark_worker(self.run_id, worker_id, status)
                log.warning("worker %s is %s", worker_id, status)
            wake = max(cm.to_trio(judged.next_check), trio.current_time() + MIN_LIVENESS_WAIT_S)

    def _own_outage(self, since: float, now: float) -> float:
        """How long, of the trio-time span [since, now], this orchestrator could not hear anyone:
        it could not reach the control plane, or its own process was descheduled."""
        blind = sum(max(0.0, min(b, now) - max(a, since)) for a, b in self._blind)
        return self.cp.health.unreachable_s(since, now) + blind

    async def collect(self, force: trio.Event) -> list[WorkerResult]:
        """Final results of every worker, waiting up to drain + DEAD detection for stragglers (a
        forced stop takes what is in)."""
        sc = self.scenario
        known = set(self.statuses)

        def dead() -> set[str]:
            return {w for w, s in self.statuses.items() if s is WorkerStatus.DEAD}

        def all_in(results: list[WorkerResult]) -> bool:
            done = {r.worker_id for r in results if r.status.finished} | dead()
            return known <= done and len(done) >= min(len(known), sc.workers)

        wait = sc.drain_timeout_s + sc.dead_after_beats * sc.heartbeat_s + sc.outage_tolerance_s + 1.0
        results = await self._read_results_until(all_in, wait, force)
        judged = dead()

        def finals(rs: list[WorkerResult]) -> set[str]:
            return {r.worker_id for r in rs if r.status.final}

        # A worker judged DEAD may only have been descheduled, or have blocked its event loop:
        # alive, it drains and reports like the others. Give it one drain (and a heartbeat) more —
        # and as long as it beats again (its heartbeat row's time moves on), the whole wait again —
        # then take what is there.
        until = trio.current_time() + wait
        beats = await self._last_beats() if judged and not force.is_set() else {}
        while judged and not force.is_set():
            within = max(0.0, min(sc.drain_timeout_s + sc.heartbeat_s, until - trio.current_time()))
            results = await self._read_results_until(lambda rs: judged <= finals(rs), within, force)
            missing = judged - finals(results)
            if not missing or force.is_set() or trio.current_time() >= until:
                break
            now = await self._last_beats()
            if not any(now.get(w, -math.inf) > beats.get(w, -math.inf) for w in missing):
                break
            beats = now
        return self.adopt(results)

    async def _last_beats(self) -> dict[str, float]:
        """worker → the time of its last heartbeat (the control plane's clock)."""
        return {hb.worker_id: hb.last_heartbeat for hb in await self.cp.read_heartbeats(self.run_id)}

    async def _read_results_until(
        self, done: Callable[[list[WorkerResult]], bool], within: float, force: trio.Event
    ) -> list[WorkerResult]:
        """Read TEST_RESULTS every ``COLLECT_POLL_S`` until ``done`` says so, a forced stop (one
        last read after it), or ``within`` seconds; the last read (also kept as ``results_seen``)."""
        with trio.move_on_after(within):
            while True:
                self.results_seen = await self.cp.read_results(self.run_id)
                if force.is_set() or done(self.results_seen):
                    break
                with trio.move_on_after(COLLECT_POLL_S):
                    await force.wait()
        return self.results_seen

    def adopt(self, results: list[WorkerResult]) -> list[WorkerResult]:
        """Each worker's status is what its results say once they are final, even after it was
        judged DEAD (a worker that was only descheduled, or cut off for a while, and reported in
        the end: the judgement stays in its timeline); a partial row (RUNNING) does not overrule
        a DEAD judgement."""
        for r in results:
            if r.status.final or self.statuses.get(r.worker_id) is not WorkerStatus.DEAD:
                self.statuses[r.worker_id] = r.status
        return sorted(results, key=lambda r: r.worker_id)

    def unseen_finals(self, results: list[WorkerResult]) -> None:
        """A worker whose heartbeat said it finished but whose final results were never read is
        listed as RUNNING (its last known row): the summary never claims more than it holds."""
        seen = {r.worker_id: r.status for r in results}
        for w, status in self.statuses.items():
            if status.final and not (w in seen and seen[w].final):
                self.statuses[w] = WorkerStatus.RUNNING

    def worker_events(self, results: list[WorkerResult], cm: ClockMap | None) -> dict[str, dict[str, Any]]:
        """The orchestrator's marks in each worker's timeline (control-plane clock): when it was
        judged DEAD, and when its final results landed."""
        events: dict[str, dict[str, Any]] = {}
        if cm is not None:
            for w, t in self.dead_at.items():
                events.setdefault(w, {})["judged_dead"] = cm.to_control(t)
        for r in results:
            if r.status.final:
                events.setdefault(r.worker_id, {})["finished"] = r.updated_at
        return events
