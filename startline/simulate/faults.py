"""Deterministic fault simulation: whole lifecycles on the simulated backend with random faults
(worker and orchestrator crashes, outages, slow and failing calls, clock jumps, late and repeated
event reads), each run checked against the invariants the harness promises.

A seed fixes everything: the faults drawn, every latency, Trio's scheduling. A failing seed is
replayed with ``startline simulate --faults random --seeds 1 --first-seed SEED``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from typing import Any

import attrs
import trio
import trio.testing

from startline.backends.memory import MemoryStore, TrioWallClock
from startline.backends.memory.clock import EPOCH_2026
from startline.engine.determinism import seed_everything
from startline.engine.model import ORCHESTRATOR
from startline.engine.orchestrator import Orchestrator
from startline.engine.scenario import Scenario
from startline.engine.together import Ended, make_workers, run_together, worker_ids
from startline.engine.worker import Worker
from startline.simulate.backend import SimControlPlane, SimRuntime, SimTarget, release_ranks
from startline.simulate.clock import SimClock
from startline.simulate.invariants import RUN_ID, Checker, short_outage_s
from startline.simulate.models import Latency, Profile, rng_for
from startline.simulate.runner import fewer_collections, host_clock

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
    "broken_call_kind",
    "pause",
)
BREAKABLE = ("event_read", "heartbeat_merge", "results_insert", "status_update", "event_insert")
"""Call kinds a damaged control table breaks (each its own table or statement)."""


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
        workers = worker_ids(sc)
        crashes = {w: rng.uniform(0.0, horizon) for w in workers if rng.random() < 0.15}
        faults["worker_crash"] = len(crashes)
        if rng.random() < 0.1:
            crashes[ORCHESTRATOR] = rng.uniform(0.0, horizon)
            faults["orchestrator_crash"] = 1
        outages = []
        for _ in range(rng.choice([0, 0, 1, 1, 2])):
            at = rng.uniform(0.0, horizon)
            long = rng.random() < 0.15
            length = (
                rng.uniform(1.1, 1.6) * sc.outage_tolerance_s if long else rng.uniform(0.05, 0.8) * short_outage_s(sc)
            )
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
        # Drawn last, so that the faults above stay what they were for every seed.
        broken = {}
        if rng.random() < 0.1:  # a control table dropped or damaged: one kind of call fails from then on
            broken[rng.choice(BREAKABLE)] = rng.uniform(0.0, horizon)
            faults["broken_call_kind"] = 1
        pauses = {}
        if rng.random() < 0.1:  # a process descheduled for seconds (SIGSTOP, a busy host): it cannot talk
            host = rng.choice([*workers, ORCHESTRATOR])
            at = rng.uniform(0.0, horizon)
            pauses[host] = (at, at + rng.uniform(0.5, 2.0) * sc.dead_after_beats * sc.heartbeat_s)
            faults["pause"] = 1
        prof = attrs.evolve(
            profile,
            crashes=crashes,
            orchestrator_restart_s=rng.uniform(0.0, 2.0 * sc.dead_after_beats * sc.heartbeat_s),
            outages=tuple(outages),
            spikes=tuple(spikes),
            error_probability=errors,
            clock_jumps=jumps,
            stale_event_reads=stale,
            broken_calls=broken,
            pauses=pauses,
        )
        return cls(sc, prof, dict(faults))


def single_outage(seed: int, at_s: float, length_s: float, base: Mapping[str, Any] = FAULT_SCENARIO) -> FaultPlan:
    """No fault but one control-plane outage of ``length_s`` from ``at_s``: the survival sweep."""
    sc = Scenario.from_dict({**base, "seed": seed, "start": {"strategy": "scheduled", **base.get("start", {})}})
    profile = attrs.evolve(FAULT_PROFILE, outages=((at_s, at_s + length_s),))
    return FaultPlan(sc, profile, {"outage": 1})


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
    """One lifecycle under the original design's faults (or ``plan``'s), and the invariants it broke (none, we hope)."""
    plan = plan or FaultPlan.draw(seed, base)
    sc, profile = plan.scenario, plan.profile
    seed_everything(seed)
    truth = TrioWallClock(EPOCH_2026)
    store = MemoryStore(truth)
    target = SimTarget(profile, seed, ops=[])
    ranks = release_ranks(seed, worker_ids(sc))

    def control(host: str) -> SimControlPlane:
        return SimControlPlane(store, profile, seed, host, target)

    orchestrators: list[Orchestrator] = []

    def orchestrator(name: str) -> Orchestrator:
        o = Orchestrator(control(name), host_clock(profile, seed, ORCHESTRATOR), sc, RUN_ID, round_trips=False)
        orchestrators.append(o)
        return o

    async def main() -> tuple[Ended, tuple[Worker, ...], float]:
        workers = make_workers(
            sc,
            RUN_ID,
            target,
            control,
            lambda w: host_clock(profile, seed, w),
            lambda w: SimRuntime(profile, seed, w, ranks[w]),
            round_trips=False,
        )
        ended = await run_together(
            orchestrator("orchestrator"),
            workers,
            crashes=profile.crashes,
            restart=lambda: orchestrator(f"orchestrator-{len(orchestrators)}"),
            restart_after_s=profile.orchestrator_restart_s,
        )
        return ended, workers, trio.current_time()

    with fewer_collections():
        ended, workers, at = trio.run(main, clock=SimClock().for_trio())
    summary = ended.summary
    check = Checker(
        sc,
        profile,
        store,
        target,
        [w.statistics() for w in workers],
        [o.statistics() for o in orchestrators],
        ended.payloads,
        summary,
        at,
    )
    violations = tuple(check.all())
    return FaultRun(
        seed=seed,
        status=check.final_status(),
        reason=summary.get("reason"),
        faults=plan.faults,
        violations=violations,
        detection_s=tuple(check.detections),
        survived_outage_s=check.survived_outage_s(),
        virtual_s=at,
    )


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
    from startline.engine.determinism import SIMULATION

    logging.disable(logging.CRITICAL)  # thousands of runs: their warnings are the point, not the output
    with SIMULATION:  # one chunk at a time per process (a Dask worker may run tasks in threads)
        return [run_with_faults(seed, base) for seed in seeds]


def run_fault_seeds(
    seeds: Sequence[int],
    jobs: int = 1,
    base: Mapping[str, Any] = FAULT_SCENARIO,
    progress: Callable[[int], None] | None = None,
    chunk: int = 20,
    executor: Executor | None = None,
) -> list[FaultRun]:
    """``run_with_faults`` over ``seeds`` in ``jobs`` processes (or on ``executor``: a Dask
    cluster's); results in seed order."""
    parts = [list(seeds[i : i + chunk]) for i in range(0, len(seeds), chunk)]
    runs: list[FaultRun] = []
    if executor is not None:
        for fut in as_completed([executor.submit(_run_chunk, part, base) for part in parts]):
            done = fut.result()
            runs.extend(done)
            if progress:
                progress(len(done))
    elif jobs <= 1:
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
