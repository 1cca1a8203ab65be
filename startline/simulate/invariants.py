"""The invariants the harness promises, checked after each simulated run under faults (see
docs/reliability.md): each returns messages naming what broke. The checker reads only what a run
leaves behind — the control plane's tables, the target's record of every operation, each
participant's ``statistics()`` and each worker's own results — never a participant's internals.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from startline.backends.memory import MemoryStore
from startline.backends.memory.clock import EPOCH_2026
from startline.engine.model import ORCHESTRATOR, RunStatus, WorkerStatus
from startline.engine.orchestrator import OrchestratorStatistics
from startline.engine.scenario import OnWorkerLoss, Scenario
from startline.engine.schedule import PhaseWindows
from startline.engine.worker import WorkerStatistics
from startline.simulate.backend import SimTarget
from startline.simulate.models import Profile

RUN_ID = "faults"
EPS = 1e-6
"""Float rounding of control ↔ trio conversions (virtual time is otherwise exact)."""


def short_outage_s(sc: Scenario) -> float:
    """The longest outage the run is promised to survive: the tolerance less one capped backoff
    (a call that began failing at the outage's start retries at most that late)."""
    return sc.outage_tolerance_s - sc.retry_cap_ms / 1000.0


def terminal_bound_s(sc: Scenario, profile: Profile) -> float:
    """By when (virtual seconds from the beginning) the run is in a terminal status: READY wait,
    lead, the run, the drain, the collection, one outage tolerance, a restarted orchestrator."""
    run = sc.length_s
    collect = sc.drain_timeout_s + sc.dead_after_beats * sc.heartbeat_s + sc.outage_tolerance_s + 1.0
    collect += sc.drain_timeout_s + sc.heartbeat_s  # a worker judged DEAD gets one drain more to report
    bound = sc.ready_timeout_s + sc.start.lead_ms / 1000.0 + run + sc.drain_timeout_s + collect + sc.outage_tolerance_s
    if ORCHESTRATOR in profile.crashes:
        bound += profile.orchestrator_restart_s + (sc.dead_after_beats + 1) * sc.heartbeat_s + collect
    if profile.broken_calls:  # a kind that keeps failing: one more tolerance to give up, then collect
        bound += sc.outage_tolerance_s + collect
    return (
        bound
        + sum(hi - lo for lo, hi in profile.outages)
        + sum(hi - lo for lo, hi, _ in profile.spikes)
        + sum(hi - lo for lo, hi in profile.pauses.values())
    )


def participant_bound_s(sc: Scenario, profile: Profile) -> float:
    """By when every participant has ended: the run's terminal bound, then a worker's own
    judgement that its orchestrator is gone (T_idle), one more outage tolerance, the drain."""
    return terminal_bound_s(sc, profile) + sc.run_idle_timeout_s + sc.outage_tolerance_s + sc.drain_timeout_s + 2.0


@attrs.define
class Checker:
    """The invariants of one run; each returns messages naming what broke."""

    sc: Scenario
    profile: Profile
    store: MemoryStore
    target: SimTarget
    workers: Sequence[WorkerStatistics]
    orchestrators: Sequence[OrchestratorStatistics]
    payloads: Mapping[str, Mapping[str, Any]]  # each surviving worker's own results
    summary: Mapping[str, Any]
    ended: float  # trio time the simulation ended (every participant done)
    detections: list[float] = attrs.Factory(list)

    def all(self) -> list[str]:
        return [
            *self.terminal_within_bound(),
            *self.no_operation_outside_the_run(),
            *self.events_applied_once_in_order(),
            *self.dead_worker_detected_within_bound(),
            *self.completed_operations_in_results(),
            *self.short_outage_loses_nothing(),
            *self.status_is_truthful(),
            *self.everyone_ends_within_bound(),
            *self.no_result_replaced_by_a_less_complete_one(),
            *self.every_participant_that_ends_leaves_its_results(),
        ]

    # ---- facts about the run ----------------------------------------------------------------

    def final_status(self) -> str:
        run = self.store.runs.get(RUN_ID)
        return str(run.status) if run else "NONE"

    def crashed(self, worker_id: str) -> bool:
        return worker_id in self.profile.crashes

    def start_time(self) -> float | None:
        run = self.store.runs.get(RUN_ID)
        return None if run is None else run.start_time

    def _ops_by_worker(self) -> Counter[str]:
        return Counter(w for w, _, _ in self.target.ops or [])

    # ---- the invariants ---------------------------------------------------------------------

    def terminal_within_bound(self) -> list[str]:
        """The run reaches a terminal status in time: recorded in RUN_STATUS, or — when the
        control plane was still unreachable to record it — in the orchestrator's summary."""
        ends = [at - EPOCH_2026 for _, status, at in self.store.transitions if status.terminal]
        bound = terminal_bound_s(self.sc, self.profile)
        lost = self.summary.get("reason") == "control_plane_lost"
        if not ends and lost and self.summary.get("status") in ("FAILED", "CANCELLED"):
            ends = [self.ended]
        if not ends:
            return [f"terminal: the run ended {self.final_status()}, not in a terminal status"]
        if ends[0] > bound + EPS:
            return [f"terminal: reached at {ends[0]:.3f} s, after the bound {bound:.3f} s"]
        return []

    def no_operation_outside_the_run(self) -> list[str]:
        """No operation begins before START_TIME; none begins at or after the planned end or
        after its worker learned of the STOP; none that completed ends past that + drain."""
        start = self.start_time()
        if start is None:
            return [f"operations: {len(self.target.ops or [])} issued in a run that never started"] * bool(
                self.target.ops
            )
        end = PhaseWindows.from_scenario(self.sc, start).end
        stop_at = {
            w.worker_id: EPOCH_2026 + w.trio_marks["stop"] if "stop" in w.trio_marks else math.inf for w in self.workers
        }
        out = []
        for worker, began, ended in self.target.ops or []:
            b, e = EPOCH_2026 + began, EPOCH_2026 + ended
            last = min(end, stop_at[worker])
            if b < start - EPS:
                out.append(f"operations: {worker} began one {start - b:.6f} s before START_TIME")
            elif b > last + EPS:
                out.append(f"operations: {worker} began one {b - last:.6f} s after the end or its STOP")
            elif e > last + self.sc.drain_timeout_s + EPS:
                out.append(f"operations: {worker} ended one {e - last:.6f} s after the end or its STOP + drain")
        return out[:3]

    def events_applied_once_in_order(self) -> list[str]:
        events = self.store.events.get(RUN_ID, [])
        log = [e.sequence_id for e in events]
        first_stop = next((e.sequence_id for e in events if e.event_type.value == "STOP"), len(log))
        out = []
        for w in self.workers:
            if self.crashed(w.worker_id):
                continue
            k = len(w.applied_events)
            if list(w.applied_events) != log[:k]:
                out.append(f"events: {w.worker_id} applied {w.applied_events[:12]} of log {log[:12]}")
            elif w.status is WorkerStatus.COMPLETED and k < first_stop and w.view.applied < first_stop:
                out.append(f"events: {w.worker_id} COMPLETED having applied {k} events, the STOP is {first_stop}")
        return out

    def dead_worker_detected_within_bound(self) -> list[str]:
        """A worker that crashed while the run was being watched is judged DEAD within k2·h plus
        the status read's worst latency — when the orchestrator's control plane was healthy then."""
        sc, out = self.sc, []
        k2h = sc.dead_after_beats * sc.heartbeat_s
        worst_read = self.profile.control_latency("status_read").worst_s
        bound = k2h + worst_read
        watcher = self.orchestrators[0]
        if ORCHESTRATOR in self.profile.crashes or watcher.start_time is None:
            return []
        watched_until = min(
            (at - EPOCH_2026 for _, status, at in self.store.transitions if status.terminal), default=math.inf
        )
        watched_from = watcher.start_time - EPOCH_2026
        failures = watcher.health.outages
        for w in self.workers:
            crash = self.profile.crashes.get(w.worker_id)
            if crash is None or w.status.finished or crash < watched_from:
                continue
            # silence starts at its last heartbeat (up to h + a write before the crash): time the
            # orchestrator could not hear anyone from then on is not counted against the worker
            window = (crash - sc.heartbeat_s - self.profile.control_latency("heartbeat_merge").worst_s, crash + bound)
            if window[1] >= watched_until - sc.drain_timeout_s - 1.0 or self._unhealthy(window, failures):
                continue
            dead = watcher.dead_at.get(w.worker_id)
            if dead is None:
                out.append(f"detection: {w.worker_id} crashed at {crash:.3f} s and was never judged DEAD")
                continue
            self.detections.append(dead - crash)
            if dead - crash > bound + EPS:
                out.append(f"detection: {w.worker_id} judged DEAD {dead - crash:.3f} s after its crash > {bound:.3f}")
        return out

    def _unhealthy(self, window: tuple[float, float], watcher_outages: Sequence[tuple[float, float]]) -> bool:
        """Was the control plane slow, down, or failing the orchestrator's calls in ``window``?"""
        lo, hi = window
        spans = [
            *self.profile.outages,
            *((a, b) for a, b, _ in self.profile.spikes),
            *watcher_outages,
            *(span for host, span in self.profile.pauses.items() if host.startswith(ORCHESTRATOR)),
        ]
        broken = min(self.profile.broken_calls.values(), default=math.inf)
        if hi >= broken:  # a kind of call the orchestrator needs may be failing from then on
            return True
        return any(a <= hi and lo <= b for a, b in spans)

    def completed_operations_in_results(self) -> list[str]:
        """Every operation a surviving worker completed is in its results, and in the summary
        whenever the summary lists that worker as finished (a partial entry says RUNNING or DEAD)."""
        done, out = self._ops_by_worker(), []
        entries = {e["worker_id"]: e for e in self.summary.get("workers", [])}
        finals = {w for w, e in entries.items() if e["status"] in ("COMPLETED", "FAILED")}
        for w in self.workers:
            if self.crashed(w.worker_id):
                continue
            own = self.payloads.get(w.worker_id, {}).get("metrics", {})
            reported = sum(own.get("ops", {}).values())
            if reported != done[w.worker_id]:
                out.append(f"results: {w.worker_id} recorded {reported} of the {done[w.worker_id]} it completed")
            entry = entries.get(w.worker_id)
            if entry is not None and w.worker_id in finals and entry["ops"] != done[w.worker_id]:
                out.append(f"results: summary has {entry['ops']} of {w.worker_id}'s {done[w.worker_id]} operations")
        return out

    def short_outage_loses_nothing(self) -> list[str]:
        """Without crashes, outages (slow-call spikes past the call timeout count as outages)
        shorter than the tolerance leave every worker COMPLETED and the run COMPLETED."""
        if self.profile.crashes or self._longest_outage() > self._survivable_s():
            return []
        bad = [w.worker_id for w in self.workers if w.status is not WorkerStatus.COMPLETED]
        if self.final_status() != "COMPLETED" or bad:
            return [f"outage: run {self.final_status()}, workers not COMPLETED: {bad}, after outages survivable"]
        return []

    def _survivable_s(self) -> float:
        """T_out − cap; less three capped backoffs when calls also fail at random: a kind of call
        is judged on its own, and a few unlucky retries right after an outage prolong it."""
        random_failures = any(p > 0 for p in self.profile.error_probability.values())
        return short_outage_s(self.sc) - (3 * self.sc.retry_cap_ms / 1000.0 if random_failures else 0.0)

    def _longest_outage(self) -> float:
        """The longest stretch in which calls could not succeed: outage windows and spikes that
        push calls past their timeout (a call begun at a spike's end still times out), merged
        when the gap between them is too short for a retry to get through."""
        timeout, cap = self.sc.control_timeout_s, self.sc.retry_cap_ms / 1000.0
        if self.profile.broken_calls:
            return math.inf  # a kind of call that never works again is an outage without end
        spans = sorted(
            [
                *self.profile.outages,
                *((lo, hi + timeout) for lo, hi in self.profile.pauses.values()),
                *((lo, hi + timeout) for lo, hi, x in self.profile.spikes if x / 1000.0 >= timeout / 2),
            ]
        )
        merged: list[list[float]] = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1] + cap + timeout:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        return max((hi - lo for lo, hi in merged), default=0.0)

    def survived_outage_s(self) -> float:
        """The longest stretch any participant's control-plane calls kept failing, in a run that
        still ended with every worker and the run COMPLETED."""
        if self.profile.crashes or self.final_status() != "COMPLETED":
            return 0.0
        if any(w.status is not WorkerStatus.COMPLETED for w in self.workers):
            return 0.0
        healths = [w.health for w in self.workers] + [o.health for o in self.orchestrators]
        return max(h.longest_outage_s for h in healths)

    def status_is_truthful(self) -> list[str]:
        """COMPLETED means every worker completed (or, under "continue", the lost ones are DEAD and
        some completed); FAILED carries a reason; nothing here cancels, so nothing is CANCELLED."""
        status, out = self.final_status(), []
        reason = self.summary.get("reason") if self.summary else None
        entries = {e["worker_id"]: e["status"] for e in self.summary.get("workers", [])} if self.summary else {}
        if status == "CANCELLED":
            out.append("status: CANCELLED without a cancel")
        if status == "FAILED" and self.summary and not reason:
            out.append("status: FAILED without a reason")
        if status == "COMPLETED" and self.summary:
            if not any(s == "COMPLETED" for s in entries.values()):
                out.append("status: COMPLETED with no worker COMPLETED")
            lost = sorted(w for w, s in entries.items() if s != "COMPLETED")
            if lost and self.sc.on_worker_loss is OnWorkerLoss.FAIL:
                out.append(f"status: COMPLETED under on_worker_loss=fail with {lost} not COMPLETED")
        if status == RunStatus.COMPLETED and not self.summary and ORCHESTRATOR not in self.profile.crashes:
            out.append("status: COMPLETED without a summary")
        return out

    def everyone_ends_within_bound(self) -> list[str]:
        """Nothing hangs: the simulation (every participant) ends within the participant bound,
        whatever kind of call keeps failing."""
        bound = participant_bound_s(self.sc, self.profile)
        if self.ended > bound + EPS:
            return [f"hang: participants ran until {self.ended:.3f} s, past the bound {bound:.3f} s"]
        return []

    def no_result_replaced_by_a_less_complete_one(self) -> list[str]:
        """A worker's final results, once in TEST_RESULTS, are the ones it wrote last: no later
        write (its own partial flush, another process with its id) replaced them."""
        out = []
        rows = self.store.results.get(RUN_ID, {})
        for w, own in self.payloads.items():
            row = rows.get(w)
            if row is None or not row.status.final or own.get("status") not in ("COMPLETED", "FAILED"):
                continue
            stored = sum(row.payload.get("metrics", {}).get("ops", {}).values())
            mine = sum(own.get("metrics", {}).get("ops", {}).values())
            # (its status may differ: a final write that landed but timed out leaves the worker
            # FAILED to confirm it — its later FAILED cannot replace the COMPLETED row)
            if stored != mine:
                out.append(f"replaced: {w}'s stored result has {stored} ops, its own results {mine}")
        return out

    def every_participant_that_ends_leaves_its_results(self) -> list[str]:
        """Every worker that was not crashed and joined the run ends with its own final results
        (what `worker --results` writes); an orchestrator that was not crashed writes a summary."""
        out = []
        joined = set(self.store.heartbeats.get(RUN_ID, {}))
        for w in self.workers:
            if self.crashed(w.worker_id) or w.worker_id not in joined:
                continue
            own = self.payloads.get(w.worker_id)
            if own is None or own.get("status") not in ("COMPLETED", "FAILED"):
                out.append(f"results file: {w.worker_id} ended without final results ({own and own.get('status')})")
        if ORCHESTRATOR not in self.profile.crashes and not self.summary:
            out.append("results file: the orchestrator ended without a summary")
        return out
