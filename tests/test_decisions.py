"""The pure decisions (h11-style): event application, reconcile, liveness, schedule, ramp."""

from __future__ import annotations

import itertools
import random
import sys

import attrs
import pytest
import trio
import trio.testing
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from startline.engine.clocksync import ClockMap
from startline.engine.events import (
    CATCH_UP_READS,
    Next,
    WorkerView,
    after_poll,
    apply_event,
    catch_up,
    events_to_apply,
    reconcile,
)
from startline.engine.lifecycle import (
    RUN_TRANSITIONS,
    WORKER_TRANSITIONS,
    IllegalTransition,
    run_outcome,
    run_transition,
    worker_transition,
)
from startline.engine.liveness import RunSeen, classify_liveness, judge_run_alive, liveness_round
from startline.engine.model import (
    TERMINAL_RUN_STATUSES,
    ControlEvent,
    Heartbeat,
    Phase,
    RunState,
    RunStatus,
    StopReason,
    WorkerStatus,
)
from startline.engine.scenario import Bookkeeping, OnWorkerLoss, StartOptions
from startline.engine.schedule import PhaseWindows, plan_events, ramp_steps
from startline.engine.startplan import (
    RELEASE_MARGIN_S,
    Detection,
    StartPlan,
    release_margin_s,
    release_order,
    release_turn,
)
from startline.testing import scenario


def _log(n: int) -> list[ControlEvent]:
    out = [ControlEvent("r", 1, "START", at=10.0, phase="WARMUP", connections=2)]
    for i in range(2, n + 1):
        out.append(ControlEvent("r", i, "SET_CONNECTIONS", connections=i))
    return out


@given(
    n=st.integers(1, 30),
    polls=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 3), st.integers(0, 2**32)), min_size=1, max_size=40),
)
def test_events_from_any_repeated_or_reordered_prefix_polls_apply_once_in_order(n, polls):
    log = _log(n)
    view, applied = WorkerView("w"), []
    for cut, repeats, seed in [*polls, (n, 0, 0)]:  # a last complete read
        rng = random.Random(seed)
        fetched = [e for e in log[:cut] if e.sequence_id > view.applied]
        fetched += [rng.choice(log[:cut]) for _ in range(repeats)] if cut else []
        rng.shuffle(fetched)
        batch = events_to_apply(view.applied, fetched)
        assert not batch.gap
        for e in batch.to_apply:
            view = apply_event(view, e)
            applied.append(e.sequence_id)
    assert applied == list(range(1, n + 1))


def test_a_hole_in_a_read_is_a_gap_and_stops_at_the_hole():
    log = _log(5)
    batch = events_to_apply(1, [log[1], log[3], log[4]])
    assert [e.sequence_id for e in batch.to_apply] == [2]
    assert batch.gap


def test_apply_event_refuses_out_of_order():
    with pytest.raises(ValueError, match="out of order"):
        apply_event(WorkerView("w"), _log(2)[1])


def test_scoped_connection_counts_address_only_their_worker_or_group():
    v = apply_event(WorkerView("w1", group="g"), _log(1)[0])
    e_other = ControlEvent("r", 2, "SET_CONNECTIONS", connections=9, scope="WORKER", scope_id="w2")
    e_group = ControlEvent("r", 3, "SET_CONNECTIONS", connections=7, scope="WORKER_GROUP", scope_id="g")
    v = apply_event(v, e_other)
    assert v.connections == 2 and v.applied == 2
    v = apply_event(v, e_group)
    assert v.connections == 7


def test_reconcile_adopts_run_status_after_missed_events():
    v = apply_event(WorkerView("w"), _log(1)[0])
    run = RunState(
        "r",
        RunStatus.STOPPING,
        Phase.DONE,
        start_time=10.0,
        last_sequence_id=9,
        connections=4,
        stop_reason="completed",
    )
    v = reconcile(v, run)
    assert v.applied == 9 and v.connections == 4 and v.phase is Phase.DONE
    assert v.stop_reason is StopReason.COMPLETED


@given(
    last=st.floats(0, 1000),
    silent=st.floats(0, 100),
    h=st.floats(0.1, 5),
    k1=st.integers(1, 5),
    extra=st.integers(1, 5),
)
def test_liveness_is_stale_after_k1_beats_and_dead_after_k2(last, silent, h, k1, extra):
    k2 = k1 + extra
    now = last + silent
    silent = now - last  # what the function sees, after float rounding
    got = classify_liveness(WorkerStatus.RUNNING, last, now, h, k1, k2)
    if silent >= k2 * h:
        assert got is WorkerStatus.DEAD
    elif silent >= k1 * h:
        assert got is WorkerStatus.STALE
    else:
        assert got is WorkerStatus.RUNNING
    for done in (WorkerStatus.COMPLETED, WorkerStatus.DEAD):
        assert classify_liveness(done, last, last + silent, h, k1, k2) is done


def test_phase_attribution_counts_measurement_only_when_inside():
    w = PhaseWindows(0.0, 1.0, 3.0, 3.0)
    assert w.attribute(0.5, 0.9) is Phase.WARMUP
    assert w.attribute(0.9, 1.1) is Phase.WARMUP
    assert w.attribute(1.0, 2.9) is Phase.MEASUREMENT
    assert w.attribute(2.9, 3.1) is Phase.DONE
    assert w.attribute(-0.1, 0.1) is Phase.PREPARING  # began before the start: not a WARMUP op


def test_plan_events_orders_phases_connection_counts_and_stop():
    sc = scenario(
        warmup_s=1.0,
        measurement_s=2.0,
        cooldown_s=1.0,
        schedule=[{"at_s": 1.0, "connections": 3}],
    )
    plan = plan_events(sc, 100.0)
    assert [(p.at, p.event_type.value) for p in plan] == [
        (101.0, "SET_PHASE"),
        (101.0, "SET_CONNECTIONS"),
        (103.0, "SET_PHASE"),
        (104.0, "STOP"),
    ]


@given(cur=st.integers(0, 50), tgt=st.integers(0, 50), ramp=st.floats(0, 10))
def test_ramp_steps_move_one_at_a_time_and_end_at_the_count_by_ramp_time(cur, tgt, ramp):
    steps = ramp_steps(cur, tgt, ramp)
    assert steps[-1][1] == tgt
    assert steps[-1][0] <= ramp + 1e-9
    counts = [cur] + [n for _, n in steps]
    if ramp > 0:
        assert all(abs(b - a) <= 1 for a, b in itertools.pairwise(counts))
    assert [d for d, _ in steps] == sorted(d for d, _ in steps)


# ---- stop reasons: codes in STOP_REASON, words in STOP_DETAIL --------------------------------

stop_statuses = st.sampled_from([RunStatus.STOPPING, RunStatus.CANCELLING, *TERMINAL_RUN_STATUSES])


@given(reason=st.sampled_from(StopReason), detail=st.none() | st.text(max_size=80), status=stop_statuses)
def test_reconcile_accepts_every_stop_reason_with_any_detail(reason, detail, status):
    run = RunState("r", status, Phase.DONE, start_time=1.0, stop_reason=reason, stop_detail=detail)
    view = reconcile(WorkerView("w"), run)
    assert view.stop_reason is reason and view.stopping


@given(reason=st.sampled_from(StopReason), detail=st.text(max_size=80), status=stop_statuses)
def test_a_stored_reason_with_its_words_appended_still_reads_as_its_code(reason, detail, status):
    # Rows written before codes and details were apart said "worker_lost: w001".
    run = RunState("r", status, Phase.DONE, stop_reason=f"{reason}: {detail}")
    assert run.stop_reason is reason
    assert reconcile(WorkerView("w"), run).stop_reason is reason


@given(text=st.text(max_size=40))
def test_any_stored_reason_text_reads_as_a_code_never_an_error(text):
    assert isinstance(StopReason.parse(text), StopReason)


@settings(max_examples=30)
@given(reason=st.sampled_from(StopReason), detail=st.none() | st.text(max_size=200))
def test_every_stop_reason_and_detail_round_trips_through_the_sqlite_control_plane(tmp_path_factory, reason, detail):
    from startline.backends.sqlite import SqliteControlPlane

    path = tmp_path_factory.mktemp("cp") / "control.db"

    async def main() -> RunState | None:
        cp = SqliteControlPlane(path)
        await cp.create_run(RunState("r", RunStatus.PREPARED, Phase.PREPARING))
        await cp.update_run("r", status=RunStatus.STOPPING, stop_reason=reason, stop_detail=detail)
        found = await cp.read_run("r")
        await cp.close()
        return found

    found = trio.run(main)
    assert found is not None and (found.stop_reason, found.stop_detail) == (reason, detail)
    assert reconcile(WorkerView("w"), found).stop_reason is reason


# ---- status transitions (tables) and the run's outcome ---------------------------------------


@pytest.mark.parametrize("current", list(WorkerStatus))
@pytest.mark.parametrize("new", list(WorkerStatus))
def test_a_worker_makes_exactly_the_transitions_its_table_lists(current, new):
    allowed = new is current or new in WORKER_TRANSITIONS.get(current, frozenset())
    if allowed:
        assert worker_transition(current, new) is new
    else:
        with pytest.raises(IllegalTransition):
            worker_transition(current, new)


def test_a_worker_never_gives_itself_a_judgement_or_leaves_a_final_status():
    for status in WorkerStatus:
        assert not WORKER_TRANSITIONS.get(status, frozenset()) & {WorkerStatus.STALE, WorkerStatus.DEAD}
    assert WORKER_TRANSITIONS[WorkerStatus.COMPLETED] == WORKER_TRANSITIONS[WorkerStatus.FAILED] == frozenset()


@pytest.mark.parametrize("current", list(RunStatus))
@pytest.mark.parametrize("new", list(RunStatus))
def test_a_run_makes_exactly_the_transitions_its_table_lists(current, new):
    if new is current or new in RUN_TRANSITIONS[current]:
        assert run_transition(current, new) is new
    else:
        with pytest.raises(IllegalTransition):
            run_transition(current, new)
    if current.terminal and new is not current:
        with pytest.raises(IllegalTransition):
            run_transition(current, new)


worker_statuses = st.dictionaries(st.sampled_from(["w0", "w1", "w2", "w3"]), st.sampled_from(WorkerStatus))


@given(
    reason=st.none() | st.sampled_from(StopReason),
    statuses=worker_statuses,
    policy=st.sampled_from(OnWorkerLoss),
)
def test_run_outcome_is_completed_only_when_stopped_as_planned_and_some_worker_completed(reason, statuses, policy):
    completed = {w for w, s in statuses.items() if s is WorkerStatus.COMPLETED}
    out = run_outcome(reason, None, statuses, completed, policy)
    assert out.status.terminal
    if out.status is RunStatus.COMPLETED:
        assert reason in (None, StopReason.COMPLETED) and completed and out.reason is None
        assert policy is OnWorkerLoss.CONTINUE or set(statuses) == completed
    else:
        assert out.reason is not None  # a run that did not complete says why
    assert (out.status is RunStatus.CANCELLED) == (reason is StopReason.USER_REQUESTED)


def test_run_outcome_names_the_lost_workers_in_its_detail():
    statuses = {"w0": WorkerStatus.COMPLETED, "w1": WorkerStatus.DEAD, "w2": WorkerStatus.FAILED}
    out = run_outcome(None, None, statuses, {"w0"}, OnWorkerLoss.FAIL)
    assert (out.status, out.reason, out.detail) == (RunStatus.FAILED, StopReason.WORKER_LOST, "w1, w2")


# ---- the start plan ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "push", "detection", "prespawn", "at_start_time", "bookkeeping"),
    [
        ("inline-poll", True, Detection.INLINE, False, False, Bookkeeping.SEQUENTIAL),
        ("poll", True, Detection.POLL, True, False, Bookkeeping.PARALLEL),
        ("push", True, Detection.PUSH, True, False, Bookkeeping.PARALLEL),
        ("push", False, Detection.POLL, True, False, Bookkeeping.PARALLEL),  # nothing to be pushed by: poll
        ("scheduled", True, Detection.POLL, True, True, Bookkeeping.PARALLEL),
    ],
)
def test_the_start_plan_follows_the_strategy(strategy, push, detection, prespawn, at_start_time, bookkeeping):
    plan = StartPlan.of(StartOptions(strategy=strategy), push_available=push)
    assert (plan.detection, plan.prespawn, plan.at_start_time, plan.bookkeeping) == (
        detection,
        prespawn,
        at_start_time,
        bookkeeping,
    )
    assert plan.heartbeat_task_while_waiting == (detection is not Detection.INLINE)
    assert plan.follow_interval_s == (1.0 if detection is Detection.INLINE else plan.poll_interval_s)


def test_one_start_option_changes_only_itself_in_the_plan():
    seed_loop = StartPlan.of(StartOptions(strategy="inline-poll"), push_available=False)
    prespawned = StartPlan.of(StartOptions(strategy="inline-poll", prespawn=True), push_available=False)
    assert attrs.evolve(seed_loop, prespawn=True) == prespawned
    assert seed_loop.release_as_spawned and not prespawned.release_as_spawned


@given(slots=st.lists(st.integers(0, 64), unique=True, max_size=16), turn=st.integers(0, 2**32))
def test_a_release_order_releases_every_parked_slot_once(slots, turn):
    assert sorted(release_order(slots, turn)) == sorted(slots)


@given(slots=st.lists(st.integers(0, 64), unique=True, min_size=1, max_size=16), start=st.integers(0, 2**32))
def test_over_consecutive_turns_no_slot_is_released_first_more_often_than_another(slots, start):
    firsts = [release_order(slots, start + t)[0] for t in range(len(slots))]
    assert sorted(firsts) == sorted(slots)  # each exactly once


def test_the_release_turn_differs_by_run_and_by_worker_and_is_reproducible():
    turns = {release_turn(f"run-{r}", f"w{w:03d}") % 4 for r in range(20) for w in range(4)}
    assert turns == {0, 1, 2, 3}  # every slot of four leads somewhere
    assert release_turn("run-1", "w000") == release_turn("run-1", "w000")


@given(st.lists(st.floats(0.0, 0.5), max_size=12))
def test_the_release_margin_stays_within_its_bounds_and_covers_the_usual_lateness(late):
    least, default, most = RELEASE_MARGIN_S
    m = release_margin_s(late)
    assert least <= m <= most
    if not late:
        assert m == default
    else:  # nine wakes in ten as measured land within the margin, unless the ceiling says no
        within = sum(x <= m for x in late)
        assert within >= 0.9 * len(late) or m == most


@given(st.lists(st.floats(0.0, 0.01), min_size=1, max_size=12), st.floats(0.0, 0.01))
def test_a_later_wake_measured_never_shrinks_the_release_margin(late, extra):
    assert release_margin_s([*late, max(late) + extra]) >= release_margin_s(late)


def test_the_start_gate_releases_every_parked_connection_in_its_place_and_passes_a_late_one_at_once():
    from startline.engine.connection import StartGate
    from startline.engine.schedule import PhaseWindows

    windows = PhaseWindows(10.0, 10.0, 20.0, 20.0)
    gate, went, places = StartGate(), [], {}

    async def connection(slot):
        w = await gate.armed()
        assert w is windows
        places[slot] = await gate.released(slot)
        went.append((slot, trio.current_time()))

    async def main():
        async with trio.open_nursery() as n:
            for slot in range(4):
                n.start_soon(connection, slot)
            await trio.sleep(1)
            gate.arm(windows)
            await trio.sleep(1)
            assert gate.parked == [0, 1, 2, 3] and not went  # armed: ready, still parked
            gate.open(release_order(gate.parked, 2))
            assert gate.is_open and gate.parked == []
            await trio.sleep(1)
            n.start_soon(connection, 9)  # after the release: through at once

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert sorted(went) == [(0, 2.0), (1, 2.0), (2, 2.0), (3, 2.0), (9, 3.0)]
    order = release_order([0, 1, 2, 3], 2)
    assert places == {slot: k for k, slot in enumerate(order)} | {9: 0}  # its place along the release


def test_a_connection_that_reaches_the_gate_just_after_it_opened_keeps_its_place_in_the_order():
    """A worker opens the gate in the same step as it arms it (a polled start): its connections,
    waiting to be armed, reach the gate after it opened — each still in its place."""
    from startline.engine.connection import StartGate

    gate = StartGate()
    gate.open([3, 1, 2, 0])

    async def main():
        assert [await gate.released(slot) for slot in (0, 1, 2, 3, 7)] == [3, 1, 2, 0, 0]
        assert await gate.released(3) == 0  # (a place is taken once)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_connection_cancelled_at_the_gate_leaves_it():
    from startline.engine.connection import StartGate

    gate = StartGate()

    async def main():
        with trio.move_on_after(1):
            await gate.released(0)
        assert gate.parked == []

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# ---- reading the log: holes and catching up -----------------------------------------------------


def test_a_poll_reads_again_once_on_a_hole_then_adopts_run_status():
    assert after_poll(gap=False, reads=1) is Next.DONE
    assert after_poll(gap=True, reads=1) is Next.READ_AGAIN
    assert after_poll(gap=True, reads=2) is Next.ADOPT_RUN_STATUS


@given(applied=st.integers(0, 50), last=st.integers(0, 50), reads=st.integers(0, 20))
def test_catching_up_reads_until_applied_reaches_run_status_within_a_bounded_number_of_reads(applied, last, reads):
    step = catch_up(applied, last, reads)
    if applied >= last:
        assert step is Next.DONE
    else:
        assert step is (Next.READ_AGAIN if reads < CATCH_UP_READS else Next.ADOPT_RUN_STATUS)


# ---- is the orchestrator alive (a worker's judgement) -------------------------------------------


@given(
    updated=st.floats(1e9, 2e9),
    silent=st.floats(0, 100),
    timeout=st.floats(0.1, 60),
    own=st.floats(0, 100),
    anchor=st.floats(-1e3, 1e3),
)
def test_the_orchestrator_is_lost_exactly_when_silent_past_the_timeout_less_the_workers_own_outage(
    updated, silent, timeout, own, anchor
):
    assume(abs(silent - own - timeout) > 1e-6)  # at the boundary itself, float rounding decides
    cm = ClockMap(trio_anchor=anchor, control_anchor=updated)  # trio `anchor` ↔ control `updated`
    now = anchor + silent
    verdict = judge_run_alive(updated, False, now, timeout, cm, own, None)
    assert verdict.lost == (silent - own > timeout)
    if not verdict.lost:
        assert verdict.recheck_at > now - 1e-6  # look again no earlier than now
        assert judge_run_alive(updated, False, verdict.recheck_at, timeout, cm, own, None).lost


def test_a_terminal_run_is_never_judged_lost():
    cm = ClockMap(0.0, 0.0)
    assert not judge_run_alive(0.0, True, 1e6, 1.0, cm, 0.0, None).lost


def test_before_its_clock_map_a_worker_times_silence_from_when_it_saw_the_row_change():
    first = judge_run_alive(100.0, False, 5.0, 10.0, None, 0.0, None)
    assert not first.lost and first.seen == RunSeen(5.0, 100.0)
    assert not judge_run_alive(100.0, False, 15.0, 10.0, None, 0.0, first.seen).lost
    assert judge_run_alive(100.0, False, 15.5, 10.0, None, 0.0, first.seen).lost
    moved = judge_run_alive(101.0, False, 15.5, 10.0, None, 0.0, first.seen)  # the row changed: alive again
    assert not moved.lost and moved.seen == RunSeen(15.5, 101.0)


# ---- the orchestrator's reading of heartbeats ---------------------------------------------------


@given(
    beats=st.lists(st.tuples(st.floats(0, 30), st.sampled_from(WorkerStatus), st.floats(0, 5)), max_size=8),
    h=st.floats(0.1, 5),
    k1=st.integers(1, 5),
    extra=st.integers(1, 5),
)
def test_a_liveness_round_judges_each_worker_and_wakes_at_the_next_threshold(beats, h, k1, extra):
    k2, now = k1 + extra, 30.0
    rows = [(Heartbeat("r", f"w{i}", s, last_heartbeat=last), own) for i, (last, s, own) in enumerate(beats)]
    judged = liveness_round(rows, {}, now, h, k1, k2)
    assert now < judged.next_check <= now + h
    for hb, own in rows:
        want = classify_liveness(hb.status, hb.last_heartbeat + own, now, h, k1, k2)
        assert judged.statuses[hb.worker_id] is want
        assert ((hb.worker_id, want) in judged.marks) == (want is not hb.status)
        assert (hb.worker_id in judged.newly_dead) == (want is WorkerStatus.DEAD)  # none was known DEAD
        if not want.finished:  # nobody crosses a threshold before the next reading
            crossings = [hb.last_heartbeat + own + k * h for k in (k1, k2)]
            assert all(c <= now or c >= judged.next_check - 1e-9 for c in crossings)
    again = liveness_round(rows, judged.statuses, now, h, k1, k2)
    assert not again.newly_dead  # judged DEAD once


def test_a_worker_whose_final_status_is_known_is_left_alone():
    row = (Heartbeat("r", "w0", WorkerStatus.RUNNING, last_heartbeat=0.0), 0.0)
    judged = liveness_round([row], {"w0": WorkerStatus.COMPLETED}, 100.0, 1.0, 2, 4)
    assert judged.statuses == {} and not judged.marks and not judged.newly_dead


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timer slack is a Linux setting (prctl)")
def test_the_release_sleeps_with_a_nanosecond_of_timer_slack_and_gives_the_thread_its_own_back():
    import ctypes

    from startline.engine.release import PR_GET_TIMERSLACK, PR_SET_TIMERSLACK, precise_timers

    prctl = ctypes.CDLL(None).prctl
    before = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0)
    prctl(PR_SET_TIMERSLACK, 70_000, 0, 0, 0)  # a value of its own, to see it given back
    try:
        with precise_timers():
            assert prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0) == 1
        assert prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0) == 70_000
        with pytest.raises(RuntimeError), precise_timers():
            raise RuntimeError
        assert prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0) == 70_000
    finally:
        prctl(PR_SET_TIMERSLACK, before, 0, 0, 0)


def test_the_release_rewarms_once_in_its_blocking_sleep_to_be_done_before_the_instant_and_not_on_virtual_time():
    from startline.engine.release import REWARM_S, release_precisely

    calls: list[tuple[float, float]] = []

    def rewarm(by: float) -> None:
        calls.append((by, trio.current_time()))

    async def release(lead: float) -> float:
        deadline = trio.current_time() + lead
        await release_precisely(deadline, release_margin_s, rewarm)
        assert trio.current_time() >= deadline
        return deadline

    deadline = trio.run(release, 0.08)  # a real clock: the probes, then the blocking sleep
    assert len(calls) == 1
    by, at = calls[0]
    assert by == deadline - REWARM_S / 2  # to be done before the instant, whatever time it was called
    assert at < deadline + 0.05  # (called before the release, not after it returned)
    calls.clear()
    trio.run(release, 0.08, clock=trio.testing.MockClock(autojump_threshold=0))
    assert calls == []  # a simulated session keeps nothing in a CPU's caches
