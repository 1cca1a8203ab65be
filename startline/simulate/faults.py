"""Deterministic fault simulation: whole lifecycles on the simulated backend with random faults
(worker and orchestrator crashes, outages, slow and failing calls, clock jumps, late and repeated
event reads), each run checked against the invariants the harness promises.

A seed fixes everything: the faults drawn, every latency, Trio's scheduling. A failing seed is
replayed with ``startline simulate --faults random --seeds 1 --first-seed SEED``.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import attrs
import trio
import trio.testing

from startline.backends.memory import MemoryStore, TrioWallClock
from startline.backends.memory.clock import EPOCH_2026
from startline.engine.model import ORCHESTRATOR, RunStatus, WorkerStatus
from startline.engine.orchestrator import Orchestrator
from startline.engine.scenario import OnWorkerLoss, Scenario
from startline.engine.schedule import PhaseWindows
from startline.engine.together import make_workers, run_together
from startline.engine.worker import Worker
from startline.simulate.backend import SimControlPlane, SimTarget
from startline.simulate.models import Latency, Profile, rng_for
from startline.simulate.runner import host_clock, seed_everything

RUN_ID = "faults"
EPS = 1e-6
"""Float rounding of control ↔ trio conversions (virtual time is otherwise exact)."""

FAULT_SCENARIO: dict[str, Any] = {
    "name": "faults",
    "workers": 4,
    "connections_per_worker": 2,
    "warmup_s": 1.0,
    "measurement_s": 4.0,
    "heartbeat_s": 0.5,
    "stale_after_beats": 2,
    "dead_after_beats": 4,
    "drain_timeout_s": 0.5,
    "ready_timeout_s": 10.0,
    "start_timeout_s": 20.0,
    "run_idle_timeout_s": 5.0,
    "control_timeout_s": 1.0,
    "retry_base_ms": 50.0,
    "retry_cap_ms": 500.0,
    "outage_tolerance_s": 3.0,
    "snapshot_interval_s": 0.5,
    "flush_interval_s": 1.0,
    "schedule": [{"at_s": 2.5, "connections": 3, "ramp_s": 0.5}],
    "operations": [{"name": "query", "call": "simulated:query"}],
}
"""A short, busy lifecycle: every reliability timer fires within a few virtual seconds."""

FAULT_PROFILE = Profile(
    name="faults",
    control={
        call_class: Latency("uniform", {"lo_ms": 5.0, "hi_ms": 40.0})
        for call_class in ("status_read", "event_read", "status_update", "event_insert", "other")
    }
    | {"heartbeat_merge": Latency("uniform", {"lo_ms": 5.0, "hi_ms": 60.0})},
    target=Latency("uniform", {"lo_ms": 1.0, "hi_ms": 80.0}),
)
"""Bounded latencies (so "the status read's worst latency" is a number)."""

STRATEGIES = ("inline-poll", "poll", "push", "scheduled")
FAULT_TYPES = (
    "worker_crash",
    "orchestrator_crash",
    "outage",
    "long_outage",
    "slow_calls",
    "failing_calls",
    "clock_jump",
    "stale_event_reads",
)


@attrs.frozen
class FaultPlan:
    """What goes wrong in one run, drawn from its seed."""

    scenario: Scenario
    profile: Profile
    faults: Mapping[str, int]  # fault type → how many were injected

    @classmethod
    def draw(cls, seed: int, base: Mapping[str, Any] = FAULT_SCENARIO, profile: Profile = FAULT_PROFILE) -> FaultPlan:
        rng = rng_for(seed, "faults", "plan", 0)
        policy, strategy = rng.choice(["fail", "continue"]), rng.choice(STRATEGIES)
        start = dict(base.get("start", {}))
        start.setdefault("strategy", strategy)  # a base that names its strategy keeps it
        sc = Scenario.from_dict({"on_worker_loss": policy, **base, "seed": seed, "start": start})
        horizon = 2.0 + sc.start.lead_ms / 1000.0 + sc.warmup_s + sc.measurement_s + 2.0  # roughly the run's life
        faults: Counter[str] = Counter()
        workers = [f"w{i:03d}" for i in range(sc.workers)]
        crashes = {w: rng.uniform(0.0, horizon) for w in workers if rng.random() < 0.15}
        faults["worker_crash"] = len(crashes)
        if rng.random() < 0.1:
            crashes[ORCHESTRATOR] = rng.uniform(0.0, horizon)
            faults["orchestrator_crash"] = 1
        outages = []
        for _ in range(rng.choice([0, 0, 1, 1, 2])):
            at = rng.uniform(0.0, horizon)
            long = rng.random() < 0.15
            length = rng.uniform(1.1, 1.6) * sc.outage_tolerance_s if long else rng.uniform(0.05, 0.8) * _short(sc)
            outages.append((at, at + length))
            faults["long_outage" if long else "outage"] += 1
        spikes = []
        for _ in range(rng.choice([0, 0, 1, 2])):
            at = rng.uniform(0.0, horizon)
            spikes.append((at, at + rng.uniform(0.1, 2.0), rng.choice([20.0, 200.0, 1500.0])))
            faults["slow_calls"] += 1
        errors = {k: rng.choice([0.0, 0.0, 0.01, 0.05]) for k in ("status_read", "event_read", "heartbeat_merge")}
        faults["failing_calls"] = sum(p > 0 for p in errors.values())
        jumps = {
            h: (rng.uniform(0.0, horizon), rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 5000.0))
            for h in [*workers, ORCHESTRATOR]
            if rng.random() < 0.1
        }
        faults["clock_jump"] = len(jumps)
        stale = rng.choice([0.0, 0.2, 0.5])
        faults["stale_event_reads"] = int(stale > 0)
        prof = attrs.evolve(
            profile,
            crashes=crashes,
            orchestrator_restart_s=rng.uniform(0.0, 2.0 * sc.dead_after_beats * sc.heartbeat_s),
            outages=tuple(outages),
            spikes=tuple(spikes),
            error_probability=errors,
            clock_jumps=jumps,
            stale_event_reads=stale,
        )
        return cls(sc, prof, dict(faults))


def single_outage(seed: int, at_s: float, length_s: float, base: Mapping[str, Any] = FAULT_SCENARIO) -> FaultPlan:
    """No fault but one control-plane outage of ``length_s`` from ``at_s``: the survival sweep."""
    sc = Scenario.from_dict({**base, "seed": seed, "start": {"strategy": "scheduled", **base.get("start", {})}})
    profile = attrs.evolve(FAULT_PROFILE, outages=((at_s, at_s + length_s),))
    return FaultPlan(sc, profile, {"outage": 1})


def _short(sc: Scenario) -> float:
    """The longest outage the run is promised to survive: the tolerance less one capped backoff
    (a call that began failing at the outage's start retries at most that late)."""
    return sc.outage_tolerance_s - sc.retry_cap_ms / 1000.0


def terminal_bound_s(sc: Scenario, profile: Profile) -> float:
    """By when (virtual seconds from the beginning) the run is in a terminal status: READY wait,
    lead, the run, the drain, the collection, one outage tolerance, a restarted orchestrator."""
    run = sc.warmup_s + sc.measurement_s + sc.cooldown_s
    collect = sc.drain_timeout_s + sc.dead_after_beats * sc.heartbeat_s + sc.outage_tolerance_s + 1.0
    bound = sc.ready_timeout_s + sc.start.lead_ms / 1000.0 + run + sc.drain_timeout_s + collect + sc.outage_tolerance_s
    if ORCHESTRATOR in profile.crashes:
        bound += profile.orchestrator_restart_s + (sc.dead_after_beats + 1) * sc.heartbeat_s + collect
    return bound + sum(hi - lo for lo, hi in profile.outages) + sum(hi - lo for lo, hi, _ in profile.spikes)


@attrs.frozen
class FaultRun:
    seed: int
    status: str
    reason: str | None
    faults: Mapping[str, int]
    violations: tuple[str, ...]
    detection_s: tuple[float, ...]  # crash → DEAD, for crashes judged on a healthy control plane
    survived_outage_s: float  # the longest outage in a run where nothing was lost (0 if none)
    virtual_s: float


def run_with_faults(seed: int, base: Mapping[str, Any] = FAULT_SCENARIO, plan: FaultPlan | None = None) -> FaultRun:
    """One lifecycle under the seed's faults (or ``plan``'s), and the invariants it broke (none, we hope)."""
    plan = plan or FaultPlan.draw(seed, base)
    sc, profile = plan.scenario, plan.profile
    seed_everything(seed)
    truth = TrioWallClock(EPOCH_2026)
    store = MemoryStore(truth)
    target = SimTarget(profile, seed, ops=[])

    def control(host: str) -> SimControlPlane:
        return SimControlPlane(store, profile, seed, host)

    orchestrators: list[Orchestrator] = []

    def orchestrator(name: str) -> Orchestrator:
        o = Orchestrator(control(name), host_clock(profile, seed, ORCHESTRATOR), sc, RUN_ID)
        orchestrators.append(o)
        return o

    async def main() -> tuple[dict[str, Any], tuple[Worker, ...], float]:
        workers = make_workers(sc, RUN_ID, target, control, lambda w: host_clock(profile, seed, w))
        summary = await run_together(
            orchestrator("orchestrator"),
            workers,
            crashes=profile.crashes,
            restart=lambda: orchestrator(f"orchestrator-{len(orchestrators)}"),
            restart_after_s=profile.orchestrator_restart_s,
        )
        return summary, workers, trio.current_time()

    summary, workers, ended = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    check = Checker(sc, profile, store, target, workers, orchestrators, summary, ended)
    violations = tuple(check.all())
    return FaultRun(
        seed=seed,
        status=check.final_status(),
        reason=summary.get("reason"),
        faults=plan.faults,
        violations=violations,
        detection_s=tuple(check.detections),
        survived_outage_s=check.survived_outage_s(),
        virtual_s=ended,
    )


@attrs.define
class Checker:
    """The invariants of one run; each returns messages naming what broke."""

    sc: Scenario
    profile: Profile
    store: MemoryStore
    target: SimTarget
    workers: Sequence[Worker]
    orchestrators: Sequence[Orchestrator]
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
        lost = str(self.summary.get("reason") or "").startswith("control_plane_lost")
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
            if w.applied_events != log[:k]:
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
        failures = watcher.cp.health.outages
        for w in self.workers:
            crash = self.profile.crashes.get(w.worker_id)
            if crash is None or w.status.finished or crash < watched_from:
                continue
            window = (crash, crash + bound)
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
        spans = [*self.profile.outages, *((a, b) for a, b, _ in self.profile.spikes), *watcher_outages]
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
            own = w.recorder.to_payload()
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
        if self.profile.crashes or self._longest_outage() > _short(self.sc):
            return []
        bad = [w.worker_id for w in self.workers if w.status is not WorkerStatus.COMPLETED]
        if self.final_status() != "COMPLETED" or bad:
            return [f"outage: run {self.final_status()}, workers not COMPLETED: {bad}, after outages survivable"]
        return []

    def _longest_outage(self) -> float:
        """The longest stretch in which calls could not succeed: outage windows and spikes that
        push calls past their timeout (a call begun at a spike's end still times out), merged
        when the gap between them is too short for a retry to get through."""
        timeout, cap = self.sc.control_timeout_s, self.sc.retry_cap_ms / 1000.0
        spans = sorted(
            [
                *self.profile.outages,
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
        healths = [w.cp.health for w in self.workers] + [o.cp.health for o in self.orchestrators]
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


def fault_report(runs: Sequence[FaultRun]) -> dict[str, Any]:
    """Seeds run, faults injected by type, violations, detection delays, outages survived."""
    detections = sorted(d for r in runs for d in r.detection_s)
    faults: Counter[str] = Counter()
    for r in runs:
        faults.update(r.faults)
    return {
        "seeds": len(runs),
        "statuses": dict(sorted(Counter(r.status for r in runs).items())),
        "faults": {k: faults.get(k, 0) for k in FAULT_TYPES},
        "violations": sum(len(r.violations) for r in runs),
        "failing_seeds": [r.seed for r in runs if r.violations],
        "detection_s": {
            "n": len(detections),
            "max": round(detections[-1], 6) if detections else None,
            "p50": round(detections[len(detections) // 2], 6) if detections else None,
        },
        "largest_outage_survived_s": round(max((r.survived_outage_s for r in runs), default=0.0), 6),
        "virtual_s": round(sum(r.virtual_s for r in runs), 3),
    }


def _run_chunk(seeds: Sequence[int], base: Mapping[str, Any]) -> list[FaultRun]:
    logging.disable(logging.CRITICAL)  # thousands of runs: their warnings are the point, not the output
    return [run_with_faults(seed, base) for seed in seeds]


def run_fault_seeds(
    seeds: Sequence[int],
    jobs: int = 1,
    base: Mapping[str, Any] = FAULT_SCENARIO,
    progress: Callable[[int], None] | None = None,
    chunk: int = 20,
) -> list[FaultRun]:
    """``run_with_faults`` over ``seeds`` in ``jobs`` processes; results in seed order."""
    parts = [list(seeds[i : i + chunk]) for i in range(0, len(seeds), chunk)]
    runs: list[FaultRun] = []
    if jobs <= 1:
        for part in parts:
            runs.extend(_run_chunk(part, base))
            if progress:
                progress(len(part))
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for fut in as_completed([pool.submit(_run_chunk, part, base) for part in parts]):
                done = fut.result()
                runs.extend(done)
                if progress:
                    progress(len(done))
    return sorted(runs, key=lambda r: r.seed)


def replay_command(seed: int, config: str | None = None) -> str:
    return f"startline simulate {config + ' ' if config else ''}--faults random --seeds 1 --first-seed {seed}"
