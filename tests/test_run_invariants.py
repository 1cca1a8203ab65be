"""Whole runs (orchestrator + workers, one trio.run, virtual time) and the invariants they keep."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from startline.backends.memory import MemoryControlPlane, MemoryStore
from startline.engine.model import EventType, Phase
from startline.engine.scenario import SCHEDULED_MARGIN_MS
from startline.engine.schedule import PhaseWindows
from startline.engine.startplan import StartPlan
from startline.engine.workload import derive_seed
from startline.inprocess import InProcessRun, run_in_process_async
from startline.testing import CLOCK0, RecordingTarget, SluggishControlPlane, scenario

STRATEGIES = ["inline-poll", "poll", "push", "scheduled"]
EPS = 1e-9  # float rounding of clock conversions (control ↔ trio time); virtual time is otherwise exact


def run_virtual(sc, target=None, *, sluggish_seed=None, max_latency_s=0.05, mangle=True) -> InProcessRun:
    """Run ``sc`` on virtual time; optionally every control-plane call is sluggish."""
    target = target or RecordingTarget()

    async def main() -> InProcessRun:
        if sluggish_seed is None:
            return await run_in_process_async(sc, target=target, clock=CLOCK0)
        # Same run, but every participant's control plane is wrapped.
        store = MemoryStore(CLOCK0)
        participants = iter(range(1_000))  # each participant its own draws, the same in every process

        def control(_participant: str) -> SluggishControlPlane:
            return SluggishControlPlane(
                MemoryControlPlane(store),
                seed=sluggish_seed * 1_000 + next(participants),
                max_latency_s=max_latency_s,
                mangle_events=mangle,
            )

        return await run_in_process_async(sc, target=target, clock=CLOCK0, store=store, control=control)

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


slow_settings = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@slow_settings
@given(
    strategy=st.sampled_from(STRATEGIES),
    warmup=st.sampled_from([0.0, 0.5, 1.0]),
    op_ms=st.integers(1, 400),
    drain=st.sampled_from([0.0, 0.1, 1.0]),
    seed=st.integers(0, 1000),
)
@pytest.mark.slow
def test_no_measurement_op_before_start_and_nothing_after_stop_plus_drain(strategy, warmup, op_ms, drain, seed):
    sc = scenario(
        warmup_s=warmup,
        measurement_s=2.0,
        drain_timeout_s=drain,
        seed=seed,
        operations=[
            {
                "name": "q",
                "call": "startline.backends.memory.ops:sleep_ms",
                "params": {"ms": {"type": "int", "min": 1, "max": op_ms}},
            }
        ],
        start={"strategy": strategy},
    )
    target = RecordingTarget()
    result = run_virtual(sc, target, sluggish_seed=seed)
    summary = result.summary
    assert summary["status"] == "COMPLETED"
    start = summary["start_time"]
    stop = result.orchestrator.stopped_at
    assert target.ops, "the run issued no operation"
    assert min(op.began for op in target.ops) >= start - EPS
    assert max(op.began for op in target.ops) <= stop + drain + EPS
    assert max(op.ended for op in target.ops) <= stop + drain + EPS
    # The summary's MEASUREMENT count is exactly the operations that began and ended inside it
    # (an operation within EPS of a boundary may fall either way: float rounding of the clock map).
    w = PhaseWindows.from_scenario(sc, start)
    surely = sum(1 for op in target.ops if w.measure + EPS <= op.began and op.ended < w.cooldown - EPS)
    maybe = sum(1 for op in target.ops if w.measure - EPS <= op.began and op.ended < w.cooldown + EPS)
    assert surely <= summary["phases"]["MEASUREMENT"]["ops"] <= maybe


@pytest.mark.slow
@slow_settings
@given(strategy=st.sampled_from(STRATEGIES), seed=st.integers(0, 10_000), latency=st.sampled_from([0.0, 0.02, 0.2]))
def test_every_live_worker_applies_every_event_once_in_order(strategy, seed, latency):
    sc = scenario(
        workers=3,
        warmup_s=1.0,
        measurement_s=3.0,
        seed=seed,
        start={"strategy": strategy},
        schedule=[
            {"at_s": 1.5, "connections": 4},
            {"at_s": 2.0, "connections": 1, "scope": "WORKER", "scope_id": "w001"},
            {"at_s": 2.5, "connections": 3, "ramp_s": 0.3},
        ],
    )
    result = run_virtual(sc, sluggish_seed=seed, max_latency_s=latency)
    log = [e.sequence_id for e in result.store.events[sc.name]]
    assert log == list(range(1, len(log) + 1))
    assert next(e.event_type for e in result.store.events[sc.name]) is EventType.START
    for w in result.workers:
        assert w.status.value == "COMPLETED"
        assert list(w.statistics().applied_events) == log, w.worker_id


def test_scaling_schedule_reaches_each_connection_count():
    sc = scenario(
        workers=2,
        connections_per_worker=2,
        warmup_s=0.0,
        measurement_s=4.0,
        schedule=[
            {"at_s": 1.0, "connections": 5, "ramp_s": 0.4},
            {"at_s": 2.0, "connections": 1, "scope": "WORKER", "scope_id": "w000"},
        ],
        start={"strategy": "poll", "poll_interval_ms": 50},
    )
    target = RecordingTarget()
    result = run_virtual(sc, target)
    start = result.summary["start_time"]

    def active(worker_id: str, t: float) -> int:
        return len({op.slot for op in target.ops if op.worker_id == worker_id and op.began <= t < op.ended})

    assert active("w000", start + 0.5) == 2
    assert active("w000", start + 1.8) == 5
    assert active("w000", start + 3.5) == 1
    assert active("w001", start + 3.5) == 5


def test_sequence_ids_are_gap_free_and_strictly_increasing():
    sc = scenario(
        warmup_s=1.0,
        measurement_s=2.0,
        cooldown_s=0.5,
        schedule=[{"at_s": 0.5, "connections": 3}, {"at_s": 0.5, "connections": 1}, {"at_s": 1.0, "connections": 2}],
    )
    result = run_virtual(sc)
    seqs = [e.sequence_id for e in result.store.events[sc.name]]
    assert seqs == list(range(1, len(seqs) + 1))
    types = [e.event_type for e in result.store.events[sc.name]]
    assert types[0] is EventType.START and types[-1] is EventType.STOP
    assert result.store.runs[sc.name].last_sequence_id == seqs[-1]


def test_memory_control_plane_refuses_a_sequence_gap():
    from startline.backends.memory import MemoryStore
    from startline.engine.model import ControlEvent, Phase, RunState, RunStatus
    from startline.engine.ports import ControlPlaneError

    async def main() -> None:
        cp = MemoryControlPlane(MemoryStore(CLOCK0))
        await cp.create_run(RunState("r", RunStatus.PREPARED, Phase.PREPARING))
        await cp.append_event(ControlEvent("r", 1, "START", at=0.0))
        with pytest.raises(ControlPlaneError, match="does not follow 1"):
            await cp.append_event(ControlEvent("r", 3, "SET_PHASE", phase="MEASUREMENT"))
        with pytest.raises(ControlPlaneError):
            await cp.append_event(ControlEvent("r", 1, "SET_PHASE", phase="MEASUREMENT"))

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_operation_straddling_the_measurement_boundary_counts_in_warmup():
    # Every operation takes 300 ms; warmup is 1 s: the one in flight at the boundary is WARMUP.
    sc = scenario(
        workers=1,
        connections_per_worker=1,
        warmup_s=1.0,
        measurement_s=1.0,
        operations=[{"name": "q", "call": "x:y", "params": {"ms": {"type": "int", "min": 300, "max": 300}}}],
        start={"strategy": "scheduled"},
    )
    target = RecordingTarget()
    result = run_virtual(sc, target)
    start = result.summary["start_time"]
    w = PhaseWindows.from_scenario(sc, start)
    straddlers = [op for op in target.ops if op.began < w.measure <= op.ended]
    assert len(straddlers) == 1
    # ops at start+0, .3, .6, .9 (straddles 1.0), 1.2, 1.5 inside, 1.8 straddles the end.
    phases = result.summary["phases"]
    assert phases["WARMUP"]["ops"] == 4
    assert phases["MEASUREMENT"]["ops"] == 2


def test_with_zero_warmup_every_operation_is_measurement():
    sc = scenario(workers=2, warmup_s=0.0, measurement_s=5.0, operations_per_connection=7, start={"strategy": "poll"})
    result = run_virtual(sc)
    phases = result.summary["phases"]
    assert "WARMUP" not in phases or phases["WARMUP"]["ops"] == 0
    assert phases["MEASUREMENT"]["ops"] == 2 * 2 * 7
    assert sum(b["ops"] for b in phases.values()) == 2 * 2 * 7


def test_a_run_whose_connections_spend_their_budget_ends_early_and_its_qps_is_over_the_time_it_ran():
    # 3 workers x 2 connections x 40 operations of 5-50 ms: about 1 s of work in a 60 s window.
    sc = scenario(workers=3, warmup_s=0.0, measurement_s=60.0, operations_per_connection=40, start={"strategy": "poll"})
    result = run_virtual(sc)
    s = result.summary
    block = s["phases"]["MEASUREMENT"]
    assert block["ops"] == 3 * 2 * 40
    assert s["status"] == "COMPLETED" and "operations_per_connection" in s["detail"]
    spent = max(w["timeline"]["spent"] for w in s["workers"])
    assert block["duration_s"] == pytest.approx(spent - s["start_time"])
    assert block["duration_s"] < 5.0 and block["qps"] > 40  # not 240 ops over 60 s
    assert result.orchestrator.stopped_at - s["start_time"] < 10.0  # it did not idle to the planned end


def test_the_time_series_has_every_interval_with_the_connections_running():
    sc = scenario(
        workers=2,
        warmup_s=1.0,
        measurement_s=4.0,
        schedule=[{"at_s": 2.0, "connections": 4}],
        start={"strategy": "poll"},  # events seen within 50 ms: in interval 2
    )
    series = run_virtual(sc).summary["timeseries"]
    assert [x["t_s"] for x in series] == [float(i) for i in range(len(series))]
    assert len(series) >= 5
    assert [x["connections"] for x in series[:4]] == [2 * 2, 2 * 2, 2 * 4, 2 * 4]


@slow_settings
@given(
    poll_ms=st.integers(20, 1000),
    latency=st.floats(0.0, 0.1),
    workers=st.integers(1, 6),
    seed=st.integers(0, 10_000),
)
def test_scheduled_start_issues_every_first_operation_at_start_time_exactly(poll_ms, latency, workers, seed):
    # Worst detection: a poll interval plus a read plus bookkeeping (two writes) plus the
    # orchestrator's update: well under poll + 5 latencies. The lead is longer than that.
    lead_ms = poll_ms + max(SCHEDULED_MARGIN_MS, 5 * latency * 1000 + 10)
    sc = scenario(
        workers=workers,
        connections_per_worker=3,
        seed=seed,
        start={"strategy": "scheduled", "poll_interval_ms": poll_ms, "lead_ms": lead_ms},
    )
    target = RecordingTarget()
    result = run_virtual(sc, target, sluggish_seed=seed, max_latency_s=latency)
    start = result.summary["start_time"]
    firsts = {}
    for op in target.ops:
        firsts.setdefault((op.worker_id, op.slot), op.began)
    assert len(firsts) == workers * 3
    assert all(abs(t - start) < EPS for t in firsts.values()), sorted(firsts.values())[:3]
    assert result.summary["start"]["skew_ms"] < 1e-6
    assert result.summary["start"]["lag_ms"]["max"] < 1e-6


def test_summary_follows_the_results_contract():
    sc = scenario(warmup_s=0.5, measurement_s=1.0)
    s = run_virtual(sc).summary
    assert s["schema_version"] == 1
    for key in ("run_id", "status", "start_strategy", "start_time", "start", "control_plane", "workers", "phases"):
        assert key in s
    assert set(s["start"]) == {
        "lag_ms",
        "lag_uncertainty_ms",
        "skew_ms",
        "skew_uncertainty_ms",
        "connections",
        "by_worker",
        "witnesses",
    }
    assert s["start"]["witnesses"] == {}  # virtual time: no host clock is read
    # each initial connection's lag, per worker: the same figures as the lag distribution's
    lags = sorted(v for vs in s["start"]["by_worker"].values() for v in vs)
    assert len(lags) == s["start"]["connections"] and set(s["start"]["by_worker"]) == {
        w["worker_id"] for w in s["workers"]
    }
    assert lags[0] == pytest.approx(s["start"]["lag_ms"]["min"], abs=1e-3)
    assert lags[-1] == pytest.approx(s["start"]["lag_ms"]["max"], abs=1e-3)
    # every interval with its phase, latency and figures per kind; their ops add up to the phases'
    series = s["timeseries"]
    assert [r["t_s"] for r in series] == [i * s["snapshot_interval_s"] for i in range(len(series))]
    mid = [r["t_s"] + s["snapshot_interval_s"] / 2 for r in series]  # warmup 0.5 s, measurement 1 s
    assert [r["phase"] for r in series] == ["WARMUP" if t < 0.5 else "MEASUREMENT" if t < 1.5 else "DONE" for t in mid]
    assert all(sum(k["ops"] for k in r["by_kind"].values()) == r["ops"] for r in series)
    assert sum(r["ops"] for r in series) == sum(b["ops"] for b in s["phases"].values())
    assert s["config"]["scenario"]["name"] == sc.name
    assert s["load"] == {"mode": "concurrency", "steps": [], "result": None}
    assert set(s["start"]["lag_ms"]) == {"min", "p50", "p99", "max"}
    assert set(s["control_plane"]) == {"queries", "per_worker_per_s_waiting", "per_worker_per_s_running"}
    w = s["workers"][0]
    for key in (
        "worker_id",
        "status",
        "clock_offset_ms",
        "clock_uncertainty_ms",
        "timeline",
        "ops",
        "errors",
        "health",
    ):
        assert key in w
    assert set(w["timeline"]) == {"ready", "detect", "heartbeat", "insert", "scale", "first_query", "spent", "finished"}
    assert all(v is not None for k, v in w["timeline"].items() if k != "spent")  # no operations_per_connection
    m = s["phases"]["MEASUREMENT"]
    assert set(m) >= {"ops", "errors", "duration_s", "qps", "latency_ms", "by_kind"}
    assert set(m) >= {"service_ms", "offered", "completed", "skipped", "late"}
    assert m["service_ms"] == m["latency_ms"] and m["offered"] == m["completed"] == m["ops"] + m["errors"]
    assert set(m["latency_ms"]) == {"p50", "p90", "p95", "p99", "p999", "max", "mean"}
    assert m["duration_s"] == pytest.approx(1.0)
    assert sum(x["ops"] for x in s["workers"]) == sum(b["ops"] for b in s["phases"].values())


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_completes_and_orders_the_timeline(strategy):
    sc = scenario(start={"strategy": strategy, "bookkeeping": "sequential"})
    s = run_virtual(sc, sluggish_seed=3, mangle=False).summary
    assert s["status"] == "COMPLETED"
    for w in s["workers"]:
        t = w["timeline"]
        assert t["ready"] <= t["detect"] <= t["heartbeat"] <= t["insert"] <= t["scale"] <= t["first_query"]


def test_worker_gives_up_when_the_run_never_starts():
    # Two workers expected, one arrives: the orchestrator times out waiting for READY and the
    # lone worker is told to stop; the run FAILS with the reason.
    sc = scenario(workers=2, ready_timeout_s=2.0)

    summary, w, _ = lone_worker_run(sc)
    assert summary["status"] == "FAILED"
    assert summary["reason"] == "ready_timeout"
    assert w.status.value == "COMPLETED"  # it stopped cleanly when told to


def test_worker_exits_by_itself_when_the_orchestrator_goes_quiet():
    sc = scenario(workers=1, run_idle_timeout_s=3.0, start_timeout_s=100.0)

    async def main():
        from startline.backends.memory import MemoryStore
        from startline.engine.model import RunState, RunStatus
        from startline.engine.worker import Worker

        store = MemoryStore(CLOCK0)
        cp = MemoryControlPlane(store)
        await cp.create_run(RunState("r", RunStatus.STARTING, Phase.PREPARING, scenario=sc.to_dict(), connections=2))
        w = Worker(MemoryControlPlane(store), RecordingTarget(), CLOCK0, "r", "w000")
        payload = await w.run()
        return payload, trio.current_time()

    payload, t = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert payload["status"] == "FAILED"
    assert payload["failure"] == "orchestrator_lost"
    assert t < 3.0 + StartPlan.of(sc.start, False).poll_interval_s  # the first status read past the idle timeout


def test_same_seed_same_summary_bytes_on_virtual_time():
    import json

    sc = scenario(seed=5, start={"strategy": "poll", "jitter_ms": 10})
    a = run_virtual(sc).summary
    b = run_virtual(sc).summary
    # Draws depend on (seed, worker, slot), never on the order tasks wake in.
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_same_seed_same_summary_bytes_in_another_process():
    # Each process draws its own Trio scheduling order unless the run seeds it: a poll and an
    # event append at one virtual instant must not be ordered by the process.
    import subprocess
    import sys

    code = (
        "import json, trio, trio.testing\n"
        "from startline.inprocess import run_in_process_async\n"
        "from startline.testing import CLOCK0, RecordingTarget, scenario\n"
        "sc = scenario(seed=7, workers=2, warmup_s=1.0, measurement_s=4.0, "
        "schedule=[{'at_s': 2.0, 'connections': 4}])\n"
        "run = trio.run(lambda: run_in_process_async(sc, target=RecordingTarget(), clock=CLOCK0), "
        "clock=trio.testing.MockClock(autojump_threshold=0))\n"
        "print(json.dumps(run.summary, sort_keys=True))\n"
    )
    outs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        for _ in range(3)
    }
    assert len(outs) == 1


def test_a_stop_requested_before_the_start_cancels_the_run_cleanly():
    sc = scenario(workers=3, ready_timeout_s=60.0)

    summary, _, t = lone_worker_run(sc, stop_after_s=1.0)
    assert summary["status"] == "CANCELLED"
    assert summary["reason"] == "user_requested"
    assert t < 10.0  # not the 60 s ready timeout


def lone_worker_run(sc, stop_after_s=None):
    """The orchestrator and one worker (of ``sc.workers`` expected), on virtual time; the
    orchestrator is asked to stop after ``stop_after_s`` if given. Returns (summary, worker, t)."""
    from startline.backends.memory import MemoryStore
    from startline.engine.orchestrator import Orchestrator
    from startline.engine.worker import Worker

    async def main():
        store = MemoryStore(CLOCK0)
        orch = Orchestrator(MemoryControlPlane(store), CLOCK0, sc, "r")
        w = Worker(MemoryControlPlane(store), RecordingTarget(), CLOCK0, "r", "w000", scenario=sc)

        async def stop_later():
            await trio.sleep(stop_after_s)
            orch.request_stop()

        async with trio.open_nursery() as n:
            n.start_soon(w.run)
            if stop_after_s is not None:
                n.start_soon(stop_later)
            summary = await orch.run()
        return summary, w, trio.current_time()

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


NOTED: list[tuple[float, float]] = []


async def noted_sleep(ms: int) -> None:
    """An operation that notes, on the trio clock, when it ran: for the loop's direct calls."""
    began = trio.current_time()
    await trio.sleep(ms / 1000.0)
    NOTED.append((began, trio.current_time()))


def test_a_directly_called_operations_latencies_land_in_the_histogram_its_phase_and_interval_say() -> None:
    """The callable target's operations are called with nothing between (``direct_call``) and
    their MEASUREMENT latencies counted by the loop itself and folded per interval: the summary's
    MEASUREMENT histogram is exactly that of the operations that began and ended inside it
    (latencies of 1 to 60 ms: HDR's exact buckets below 2,048 µs and its rounded ones above,
    across 1 s intervals). Those counted by the loop and those counted one by one (in the
    warm-up, across the ends) all reach the interval counts: the time series has every one."""
    from startline.engine.metrics import latency_block, new_histogram, to_us

    NOTED.clear()
    params = {"ms": {"type": "int", "min": 1, "max": 60}}
    sc = scenario(
        workers=2,
        connections_per_worker=3,
        warmup_s=0.7,
        measurement_s=4.0,
        seed=7,
        operations=[
            {"name": "a", "weight": 3, "call": "tests.test_run_invariants:noted_sleep", "params": params},
            {"name": "b", "weight": 1, "call": "tests.test_run_invariants:noted_sleep", "params": params},
        ],
        start={"strategy": "scheduled"},
    )
    result = trio.run(
        lambda: run_in_process_async(sc, clock=CLOCK0), clock=trio.testing.MockClock(autojump_threshold=0)
    )
    summary = result.summary
    w = PhaseWindows.from_scenario(sc, summary["start_time"])
    inside = [(b, e) for b, e in NOTED if w.measure <= b and e < w.cooldown]
    assert len(inside) > 500
    assert any(e - b < 0.002048 for b, e in inside) and any(e - b > 0.002048 for b, e in inside)
    expected = new_histogram()
    for b, e in inside:
        expected.record_value(to_us(e - b))
    measured = summary["phases"]["MEASUREMENT"]
    assert measured["ops"] == len(inside)
    assert measured["latency_ms"] == latency_block(expected)
    phases = summary["phases"]
    assert phases["WARMUP"]["ops"] > 0
    assert sum(x["ops"] for x in summary["timeseries"]) == sum(p["ops"] for p in phases.values())


CHOSEN: list[str] = []


def _noting(name: str):
    """An operation that notes its name in ``CHOSEN`` as it runs."""

    async def chose() -> None:
        CHOSEN.append(name)
        await trio.sleep(0.001)

    return chose


chose_a, chose_b, chose_c = (_noting(n) for n in "abc")


@pytest.mark.parametrize("weights", [(3, 1), (1, 2, 3), (0.25, 0.75)])
def test_a_connection_draws_its_operations_as_the_mix_chooses_with_its_slots_seed(weights) -> None:
    """The loop's draws, made a list of ``PICKS`` ahead (300 operations: the list is refilled
    once), pick, draw for draw, what ``Mix.choose`` picks from the slot's own seeded generator."""
    import random

    from startline.engine.workload import Mix

    CHOSEN.clear()
    names = "abc"[: len(weights)]
    sc = scenario(
        workers=1,
        connections_per_worker=1,
        warmup_s=0.0,
        measurement_s=60.0,
        operations_per_connection=300,
        seed=5,
        operations=[
            {"name": n, "weight": w, "call": f"tests.test_run_invariants:chose_{n}"}
            for n, w in zip(names, weights, strict=True)
        ],
        start={"strategy": "scheduled"},
    )
    summary = trio.run(
        lambda: run_in_process_async(sc, clock=CLOCK0), clock=trio.testing.MockClock(autojump_threshold=0)
    ).summary
    mix, rng = Mix.of(sc.operations), random.Random(derive_seed(sc.seed, summary["workers"][0]["worker_id"], 0, "mix"))
    assert CHOSEN == [mix.choose(rng).name for _ in range(300)]
    assert set(CHOSEN) == set(names)


@settings(max_examples=50, deadline=None)
@given(
    weights=st.lists(st.sampled_from([1, 3, 0.5, 1e-3, 1e12]), min_size=1, max_size=5),
    seed=st.integers(0, 2**32),
    n=st.integers(0, 40),
)
def test_mix_picks_are_the_next_choices_choose_makes_from_the_same_generator(weights, seed, n) -> None:
    import random

    from startline.engine.workload import Mix

    sc = scenario(operations=[{"name": f"o{i}", "weight": w, "sql": "SELECT 1"} for i, w in enumerate(weights)])
    mix = Mix.of(sc.operations)
    ahead, one_by_one = random.Random(seed), random.Random(seed)
    assert mix.picks(ahead, n, sc.operations) == [mix.choose(one_by_one) for _ in range(n)]
    assert ahead.random() == one_by_one.random()  # both generators drew as many


def test_a_connections_task_is_its_loop_with_no_frame_above_it() -> None:
    """Every suspension of every operation passes through each frame of its task's await chain:
    the connection's task runs the loop itself (the pool's bookkeeping held in its ``Lease``)."""

    class Roots(trio.abc.Instrument):
        def __init__(self) -> None:
            self.names: list[str] = []

        def task_spawned(self, task: trio.lowlevel.Task) -> None:
            self.names.append(task.coro.cr_code.co_qualname)

    for load in ({}, {"load": {"mode": "rate", "rate": 200.0}}):
        roots = Roots()
        sc = scenario(workers=2, connections_per_worker=3, warmup_s=0.0, measurement_s=1.0, **load)

        async def main(sc=sc, roots=roots) -> None:
            trio.lowlevel.add_instrument(roots)
            await run_in_process_async(sc, clock=CLOCK0)

        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        loop = "Connections._open_loop" if load else "Connections._closed_loop"
        assert roots.names.count(loop) == 6, roots.names


def test_a_connection_without_those_draws_holds_no_generator_and_any_draw_from_it_fails_loudly() -> None:
    """One operation has no mix to draw and no parameters none to draw: the connection takes the
    process's ``NOTHING_DRAWN`` (no 2.5 KB of state each), and a draw from it is an error, never a
    silent shared sequence. When the draws are made, the generator is the seeded one."""
    import random

    from startline.engine.workload import NOTHING_DRAWN, draws

    assert draws(False, 5, "w000", 0, "mix") is NOTHING_DRAWN
    for draw in (NOTHING_DRAWN.random, lambda: NOTHING_DRAWN.randint(1, 9), lambda: NOTHING_DRAWN.choice("ab")):
        with pytest.raises(AssertionError, match="never made"):
            draw()
    made, seeded = draws(True, 5, "w000", 0, "mix"), random.Random(derive_seed(5, "w000", 0, "mix"))
    assert [made.random() for _ in range(5)] == [seeded.random() for _ in range(5)]
