"""Reliability on virtual time: retries and outages, worker and orchestrator loss, cancellation,
results that survive, and the deterministic fault simulation's invariants over many seeds."""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from startline.backends.memory import MemoryControlPlane, MemoryStore
from startline.engine.model import ORCHESTRATOR, EventType, Heartbeat, Phase, RunState, RunStatus, WorkerStatus
from startline.engine.orchestrator import Orchestrator
from startline.engine.ports import ControlPlaneConflict, ControlPlaneError
from startline.engine.resilience import ResilientControlPlane, RetryPolicy, backoff_s
from startline.engine.roster import READY_POLL_S, Roster
from startline.engine.startplan import StartPlan
from startline.engine.together import make_workers, run_together
from startline.engine.worker import Worker, WorkerRefused
from startline.simulate.faults import FAULT_SCENARIO, FaultPlan, fault_report, run_fault_seeds, run_with_faults
from startline.testing import CLOCK0, RecordingTarget, scenario

REGRESSION_SEEDS = [
    196,
    247,
    354,
    716,
    785,
    810,
    848,
    906,
    936,
    967,
    988,
    1005,
    1093,
    1378,
    1442,
    1453,
    1647,
    2634,
    5472,
    5777,
    8035,
    8163,
    9330,
]
"""Seeds the fault simulation once failed on, each for a bug since fixed (see docs/reliability.md)."""


def virtual(fn, *args):
    return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


@attrs.define
class FlakyControlPlane:
    """A memory control plane that is down (every call raises) during [down_from, down_until)."""

    inner: MemoryControlPlane
    down_from: float = 0.0
    down_until: float = 0.0
    hang: bool = False
    only: str | None = None
    """Only this kind of call is down (the others go through)."""

    @property
    def traits(self):
        return self.inner.traits

    def __getattr__(self, name):
        method = getattr(self.inner, name)

        async def call(*args, **kwargs):
            if self.down_from <= trio.current_time() < self.down_until and self.only in (None, name):
                if self.hang:
                    await trio.sleep_forever()
                await trio.sleep(0.001)
                raise ControlPlaneError("connection refused")
            return await method(*args, **kwargs)

        return call


@attrs.frozen
class Together:
    """What ``together`` leaves: the run's end, its participants, the store, the virtual end."""

    ended: Any
    orchestrator: Orchestrator
    workers: tuple[Worker, ...]
    store: MemoryStore
    at: float


async def store_with_run(sc, status: RunStatus, phase: Phase) -> MemoryStore:
    """A memory store holding run "r" of ``sc`` in ``status`` and ``phase``."""
    store = MemoryStore(CLOCK0)
    await MemoryControlPlane(store).create_run(RunState("r", status, phase, scenario=sc.to_dict()))
    return store


def together(sc, worker_control=None, orchestrator_control=None) -> Together:
    """One in-process run on virtual time; ``worker_control(worker_id, cp)`` and
    ``orchestrator_control(cp)`` may wrap a participant's memory control plane."""

    async def main():
        store = MemoryStore(CLOCK0)
        wrap = orchestrator_control or (lambda cp: cp)
        orch = Orchestrator(wrap(MemoryControlPlane(store)), CLOCK0, sc, "r")
        wrap_worker = worker_control or (lambda _w, cp: cp)
        workers = make_workers(
            sc, "r", RecordingTarget(), lambda w: wrap_worker(w, MemoryControlPlane(store)), lambda _w: CLOCK0
        )
        ended = await run_together(orch, workers, {}, None, 0.0)
        return Together(ended, orch, workers, store, trio.current_time())

    return virtual(main)


# ---- retries, timeouts, outages --------------------------------------------------------------


@given(attempt=st.integers(0, 200), base=st.floats(0.001, 10), cap=st.floats(0.001, 100), u=st.floats(0, 0.999))
def test_backoff_stays_within_the_upper_half_of_the_capped_exponential(attempt, base, cap, u):
    ceiling = min(cap, base * 2.0 ** min(attempt, 60))
    assert ceiling / 2 - 1e-12 <= backoff_s(attempt, base, cap, u) <= ceiling + 1e-12


def _resilient(flaky, tolerance=5.0, timeout=1.0):
    return ResilientControlPlane(flaky, RetryPolicy(timeout_s=timeout, base_s=0.05, cap_s=0.5, tolerance_s=tolerance))


def test_a_call_survives_an_outage_shorter_than_the_tolerance_and_health_records_it():
    async def main():
        store = MemoryStore(CLOCK0)
        cp = _resilient(FlakyControlPlane(MemoryControlPlane(store), 0.0, 3.0))
        t = await cp.server_time()
        return cp.health, t

    health, t = virtual(main)
    assert 3.0 <= t < 3.0 + 0.5 + 0.01  # back within one capped backoff of the outage's end
    assert health.healthy and health.retries > 3
    assert 3.0 <= health.longest_outage_s < 3.6


def test_a_call_fails_truthfully_after_an_outage_longer_than_the_tolerance():
    async def main():
        cp = _resilient(FlakyControlPlane(MemoryControlPlane(MemoryStore(CLOCK0)), 1.0, 100.0), tolerance=2.0)
        await cp.server_time()  # reached once: from now on the full tolerance applies
        await trio.sleep(1.0)
        with pytest.raises(ControlPlaneError, match=r"unreachable for .* \(tolerance 2 s\)"):
            await cp.server_time()
        return trio.current_time()

    assert virtual(main) <= 1.0 + 2.0 + 0.01


def test_a_control_plane_never_reached_is_given_up_on_after_first_contact_s():
    from startline.engine.resilience import FIRST_CONTACT_S

    async def main():
        cp = _resilient(FlakyControlPlane(MemoryControlPlane(MemoryStore(CLOCK0)), 0.0, 100.0), tolerance=60.0)
        with pytest.raises(ControlPlaneError, match=r"tolerance 5 s"):
            await cp.server_time()
        return trio.current_time()

    assert virtual(main) <= FIRST_CONTACT_S


def test_a_call_kind_that_keeps_failing_ends_the_participant():
    # The events table is damaged for one worker from 3 s on: its heartbeats and result writes
    # still land (each a success of another kind), yet it gives up within T_out of the damage.
    sc = scenario(workers=2, measurement_s=30.0, outage_tolerance_s=4.0, on_worker_loss="continue")
    run = together(sc, lambda w, cp: FlakyControlPlane(cp, 3.0, math.inf, only="read_events") if w == "w001" else cp)
    bad = run.workers[1].statistics()
    assert bad.status is WorkerStatus.FAILED and "unreachable" in (bad.failure or "")
    assert run.ended.payloads["w001"]["status"] == "FAILED"  # its own results, as --results writes them
    assert sum(run.ended.payloads["w001"]["metrics"]["ops"].values()) > 0
    assert bad.trio_marks["failed"] - 3.0 < sc.outage_tolerance_s + sc.control_timeout_s + 1.0
    assert run.ended.summary["status"] == "COMPLETED"  # the other worker ran to the end


def test_an_orchestrator_whose_event_writes_keep_failing_ends_with_its_summary():
    # After START (4 s): the scale and phase events cannot be written.
    sc = scenario(workers=2, measurement_s=30.0, outage_tolerance_s=4.0)
    run = together(sc, orchestrator_control=lambda cp: FlakyControlPlane(cp, 4.0, math.inf, only="append_event"))
    summary = run.ended.summary
    assert (summary["status"], summary["reason"]) == ("FAILED", "control_plane_lost")
    assert {w["worker_id"] for w in summary["workers"]} == {"w000", "w001"}
    # the workers keep what they measured: they notice RUN_STATUS go quiet, stop and publish
    assert all(sum(p["metrics"]["ops"].values()) > 0 for p in run.ended.payloads.values())
    assert run.at < 4.0 + sc.outage_tolerance_s + sc.run_idle_timeout_s + 10.0  # nobody hung


def test_a_hung_call_times_out_and_is_retried():
    async def main():
        cp = _resilient(FlakyControlPlane(MemoryControlPlane(MemoryStore(CLOCK0)), 0.0, 1.5, hang=True), timeout=1.0)
        await cp.server_time()
        return cp.health, trio.current_time()

    health, t = virtual(main)
    assert health.failures >= 1 and "TooSlowError" in health.last_error
    assert 1.5 <= t < 2.6


def test_a_conflict_is_never_retried():
    async def main():
        cp = _resilient(MemoryControlPlane(MemoryStore(CLOCK0)))
        run = RunState("r", RunStatus.PREPARED, Phase.PREPARING)
        await cp.create_run(run)
        with pytest.raises(ControlPlaneConflict):
            await cp.create_run(run)
        return cp.health

    assert virtual(main).retries == 0


def test_appending_the_same_event_twice_is_a_no_op_and_a_different_one_is_refused():
    from startline.engine.model import ControlEvent

    async def main():
        store = MemoryStore(CLOCK0)
        cp = MemoryControlPlane(store)
        await cp.create_run(RunState("r", RunStatus.PREPARED, Phase.PREPARING))
        start = ControlEvent("r", 1, EventType.START, at=1.0)
        await cp.append_event(start)
        await cp.append_event(start)  # a retry of an append that had landed
        with pytest.raises(ControlPlaneConflict):
            await cp.append_event(ControlEvent("r", 1, EventType.STOP, at=2.0, reason="completed"))
        return store.events["r"]

    assert [e.sequence_id for e in virtual(main)] == [1]


# ---- worker loss ------------------------------------------------------------------------------


def _crash_run(sc, crashes, restart_after_s=None):
    async def main():
        store = MemoryStore(CLOCK0)
        target = RecordingTarget()
        orch = Orchestrator(MemoryControlPlane(store), CLOCK0, sc, "r")
        workers = make_workers(sc, "r", target, lambda _w: MemoryControlPlane(store), lambda _w: CLOCK0)
        successors = []

        def restart():
            successors.append(Orchestrator(MemoryControlPlane(store), CLOCK0, sc, "r"))
            return successors[-1]

        ended = await run_together(
            orch, workers, crashes, restart if restart_after_s is not None else None, restart_after_s or 0.0
        )
        return ended.summary, orch, workers, store, successors, trio.current_time()

    return virtual(main)


def test_a_dead_worker_keeps_its_flushed_results_in_the_summary_and_the_run_continues():
    sc = scenario(workers=3, measurement_s=6.0, flush_interval_s=1.0, on_worker_loss="continue")
    crash = 5.0
    summary, orch, *_ = _crash_run(sc, {"w001": crash})
    assert summary["status"] == "COMPLETED"
    entries = {w["worker_id"]: w for w in summary["workers"]}
    assert entries["w001"]["status"] == "DEAD"
    assert entries["w001"]["ops"] > 0  # measured up to its last flush, still counted
    assert {entries[w]["status"] for w in ("w000", "w002")} == {"COMPLETED"}
    merged = sum(block["ops"] for block in summary["phases"].values())
    assert merged == sum(e["ops"] for e in entries.values())  # the dead worker's operations are merged too
    k2h = sc.dead_after_beats * sc.heartbeat_s
    assert orch.statistics().dead_at["w001"] - crash <= k2h + 1e-6  # memory control plane: reads take no time


def test_under_on_worker_loss_fail_a_dead_worker_fails_the_run():
    sc = scenario(workers=2, measurement_s=10.0, on_worker_loss="fail")
    summary, orch, *_ = _crash_run(sc, {"w000": 3.0})
    assert summary["status"] == "FAILED"
    assert summary["reason"] == "worker_lost"
    assert orch.stopped_at is not None and orch.stopped_at < summary["start_time"] + 10.0  # stopped early


def test_a_worker_judged_dead_whose_final_results_arrive_later_counts_as_completed():
    # Its heartbeats cannot land for 9 s (longer than DEAD detection, shorter than the outage
    # tolerance): the orchestrator judges it DEAD; it was alive all along and reports COMPLETED.
    sc = scenario(workers=2, measurement_s=14.0, on_worker_loss="continue")
    run = together(sc, lambda w, cp: FlakyControlPlane(cp, 3.0, 12.0, only="upsert_heartbeat") if w == "w001" else cp)
    summary = run.ended.summary
    assert "w001" in run.orchestrator.statistics().dead_at  # it was judged DEAD ...
    entries = {w["worker_id"]: w for w in summary["workers"]}
    assert entries["w001"]["status"] == "COMPLETED"  # ... and its own last word stands
    assert summary["status"] == "COMPLETED"
    timeline = entries["w001"]["timeline"]
    assert timeline["judged_dead"] < timeline["finished"]


def test_a_stop_request_while_waiting_for_ready_ends_the_wait_by_the_next_poll() -> None:
    """The roster sleeps between its READY polls (no cancel scope: a simulation's clock sleeps
    them cheaply), so a stop is seen at the next poll, never later."""
    sc = scenario()

    async def main() -> tuple[bool, float]:
        store = await store_with_run(sc, RunStatus.PREPARED, Phase.WARMUP)
        roster = Roster(ResilientControlPlane(MemoryControlPlane(store)), "r", sc)
        stop = trio.Event()

        async def request_stop() -> None:
            await trio.sleep(1.01)
            stop.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(request_stop)
            ready = await roster.wait_ready(stop)
        return ready, trio.current_time()

    ready, at = virtual(main)
    assert ready is False
    assert 1.01 <= at <= 1.01 + READY_POLL_S
    assert at < sc.ready_timeout_s


def test_a_late_worker_is_refused_by_an_ended_run_and_writes_nothing():
    sc = scenario(workers=1, measurement_s=2.0)

    async def main():
        store = await store_with_run(sc, RunStatus.FAILED, Phase.DONE)
        worker = Worker(MemoryControlPlane(store), RecordingTarget(), CLOCK0, "r", "w000")
        with pytest.raises(WorkerRefused, match="has ended"):
            await worker.run()
        return store

    store = virtual(main)
    assert not store.heartbeats["r"] and not store.results["r"]


def test_a_second_process_with_a_taken_worker_id_is_refused_and_overwrites_nothing():
    sc = scenario(workers=1, measurement_s=2.0)

    async def main():
        store = await store_with_run(sc, RunStatus.PREPARED, Phase.PREPARING)
        first = await MemoryControlPlane(store).register_worker(
            Heartbeat("r", "w000", WorkerStatus.STARTING, incarnation="a")
        )
        worker = Worker(MemoryControlPlane(store), RecordingTarget(), CLOCK0, "r", "w000")
        with pytest.raises(WorkerRefused, match="is taken"):
            await worker.run()
        (row,) = await MemoryControlPlane(store).read_heartbeats("r")
        return first, row, store

    first, row, store = virtual(main)
    assert row == first and not store.results["r"]


def test_a_schedule_step_for_a_worker_no_one_is_fails_the_run_before_it_starts():
    # Workers started elsewhere (--no-spawn) are known only once READY: the orchestrator checks then.
    step = {"at_s": 1.0, "connections": 3, "scope": "WORKER", "scope_id": "host9"}
    run = together(scenario(workers=2, measurement_s=5.0, schedule=[step]))
    summary = run.ended.summary
    assert (summary["status"], summary["reason"]) == ("FAILED", "error")
    assert "schedule[0].scope_id" in summary["detail"] and "host9" in summary["detail"]
    assert run.store.runs["r"].start_time is None  # it never started


def test_a_late_heartbeat_never_turns_dead_back_into_running():
    async def main():
        cp = MemoryControlPlane(MemoryStore(CLOCK0))
        await cp.upsert_heartbeat(Heartbeat("r", "w", WorkerStatus.RUNNING))
        await cp.mark_worker("r", "w", WorkerStatus.DEAD)
        await cp.upsert_heartbeat(Heartbeat("r", "w", WorkerStatus.RUNNING))
        await cp.mark_worker("r", "w", WorkerStatus.STALE)
        return [hb.status for hb in await cp.read_heartbeats("r")]

    assert virtual(main) == [WorkerStatus.DEAD]


# ---- orchestrator loss and restart -------------------------------------------------------------


def test_a_restarted_orchestrator_fails_the_orphaned_run_cleanly_with_every_result():
    sc = scenario(workers=2, measurement_s=20.0, run_idle_timeout_s=30.0)
    summary, first, _workers, store, successors, _ = _crash_run(sc, {ORCHESTRATOR: 4.0}, restart_after_s=0.5)
    assert first.stopped_at is None  # it died mid-run
    assert summary["status"] == "FAILED"
    assert summary["reason"] == "orchestrator_lost"
    assert store.runs["r"].status is RunStatus.FAILED
    log = store.events["r"]
    assert [e.sequence_id for e in log] == list(range(1, len(log) + 1))
    assert log[-1].event_type is EventType.STOP and log[-1].reason == "orchestrator_lost"
    assert [w["status"] for w in summary["workers"]] == ["COMPLETED", "COMPLETED"]  # told to stop, they drained
    assert summary["phases"]["MEASUREMENT"]["ops"] > 0
    assert len(successors) > 1  # the first successor found the old orchestrator too fresh and waited


def test_a_restart_is_refused_while_the_orchestrator_is_alive_or_after_the_run_ended():
    sc = scenario(workers=1, measurement_s=2.0)

    async def main():
        store = await store_with_run(sc, RunStatus.RUNNING, Phase.WARMUP)
        with pytest.raises(ControlPlaneConflict, match="alive"):
            await Orchestrator(MemoryControlPlane(store), CLOCK0, sc, "r").run()
        store.runs["r"] = attrs.evolve(store.runs["r"], status=RunStatus.COMPLETED)
        with pytest.raises(ControlPlaneConflict, match="already ended"):
            await Orchestrator(MemoryControlPlane(store), CLOCK0, sc, "r").run()

    virtual(main)


def test_workers_stop_and_keep_their_results_when_the_orchestrator_dies_for_good():
    sc = scenario(workers=2, measurement_s=20.0, run_idle_timeout_s=3.0)
    summary, _, workers, store, _, ended = _crash_run(sc, {ORCHESTRATOR: 4.0})
    assert summary == {}
    # Its last touch of RUN_STATUS was at most at the crash: each worker left within the idle
    # timeout plus one event-poll interval (scheduled: 2 s) after it (reads are instant here).
    assert ended <= 4.0 + sc.run_idle_timeout_s + StartPlan.of(sc.start, False).poll_interval_s + 1e-6
    assert {w.failure for w in workers} == {"orchestrator_lost"}
    finals = store.results["r"]
    assert all(finals[w.worker_id].status is WorkerStatus.FAILED for w in workers)
    assert all(sum(finals[w.worker_id].payload["metrics"]["ops"].values()) > 0 for w in workers)


# ---- cancellation ------------------------------------------------------------------------------


@pytest.mark.parametrize("force", [False, True])
def test_a_stop_request_mid_run_cancels_with_the_results_so_far(force):
    sc = scenario(workers=2, measurement_s=60.0, drain_timeout_s=5.0, flush_interval_s=1.0)

    async def main():
        store = MemoryStore(CLOCK0)
        orch = Orchestrator(MemoryControlPlane(store), CLOCK0, sc, "r")
        workers = make_workers(sc, "r", RecordingTarget(), lambda _w: MemoryControlPlane(store), lambda _w: CLOCK0)

        async def ctrl_c():
            await trio.sleep(8.0)  # START at 3 s (scheduled, 3 s lead), MEASUREMENT from 4 s
            orch.request_stop()
            if force:
                await trio.sleep(0.01)
                orch.force_stop()

        async with trio.open_nursery() as n:
            n.start_soon(ctrl_c)
            ended = await run_together(orch, workers)
        return ended.summary, trio.current_time(), store

    summary, t, store = virtual(main)
    assert summary["status"] == "CANCELLED" and summary["reason"] == "user_requested"
    assert store.runs["r"].status is RunStatus.CANCELLED
    assert summary["phases"]["MEASUREMENT"]["ops"] > 0
    assert t < 8.0 + sc.drain_timeout_s + 1.0  # not the 60 s measurement


# ---- deterministic fault simulation --------------------------------------------------------------


def test_fault_runs_are_deterministic():
    assert run_with_faults(17) == run_with_faults(17)
    assert FaultPlan.draw(17) == FaultPlan.draw(17)


@pytest.mark.parametrize("seed", REGRESSION_SEEDS)
def test_regression_seed_keeps_every_invariant(seed):
    run = run_with_faults(seed)
    assert run.violations == (), run


@pytest.mark.slow
def test_two_hundred_random_fault_seeds_keep_every_invariant():
    runs = run_fault_seeds(list(range(200)), jobs=2)
    report = fault_report(runs)
    assert report["failing_seeds"] == [], [r for r in runs if r.violations][:3]
    assert report["seeds"] == 200
    # The faults were really there: every kind was drawn, and runs ended both ways.
    assert all(n > 0 for n in report["faults"].values()), report["faults"]
    assert {"COMPLETED", "FAILED"} <= set(report["statuses"])
    assert report["detection_s"]["n"] > 0
    k2h = FAULT_SCENARIO["dead_after_beats"] * FAULT_SCENARIO["heartbeat_s"]
    assert report["detection_s"]["max"] <= k2h + 0.040 + 1e-6  # + the fault profile's worst status read


def test_the_invariant_checker_catches_a_broken_run(monkeypatch):
    # Break the worker on purpose (it forgets to record its operations): the checker must say so.
    from startline.engine import metrics

    monkeypatch.setattr(metrics.Recorder, "to_payload", lambda self, to_control=float: {"ops": {}, "errors": {}})
    run = run_with_faults(3)
    assert any(v.startswith("results:") for v in run.violations)
    assert math.isfinite(run.virtual_s)


@pytest.mark.slow
@pytest.mark.parametrize(
    "load",
    [
        {"mode": "qps", "target_qps": 150, "control_interval_s": 1.0, "max_connections": 12},
        {"mode": "rate", "rate": 150, "max_in_flight": 8},
    ],
    ids=["qps", "rate"],
)
def test_random_faults_in_steered_load_modes_keep_every_invariant(load):
    """Issue 22's fault simulation additions: workers killed during a qps reading (or while an open
    loop's rate is split over them), under the same random faults as the concurrency lifecycle."""
    base = {k: v for k, v in FAULT_SCENARIO.items() if k != "schedule"} | {"load": load, "measurement_s": 6.0}
    runs = run_fault_seeds(list(range(24)), jobs=2, base=base)
    report = fault_report(runs)
    assert report["failing_seeds"] == [], [r for r in runs if r.violations][:3]
    assert report["faults"].get("worker_crash", 0) > 0  # workers did die mid-run
