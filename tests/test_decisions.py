"""The pure decisions (h11-style): event application, reconcile, liveness, schedule, ramp."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from startline.engine.events import WorkerView, apply_event, events_to_apply, reconcile
from startline.engine.liveness import classify_liveness
from startline.engine.model import ControlEvent, Phase, RunState, RunStatus, StopReason, WorkerStatus
from startline.engine.schedule import PhaseWindows, plan_events, ramp_steps
from tests.helpers import scenario


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


def test_scoped_targets_address_only_their_worker_or_group():
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


def test_plan_events_orders_phases_targets_and_stop():
    sc = scenario(
        warmup_s=1.0,
        measurement_s=2.0,
        cooldown_s=1.0,
        schedule=[{"at_s": 1.0, "connections": 3}, {"at_s": 9.0, "connections": 1}],
    )
    plan = plan_events(sc, 100.0)
    assert [(p.at, p.event_type.value) for p in plan] == [
        (101.0, "SET_PHASE"),
        (101.0, "SET_CONNECTIONS"),
        (103.0, "SET_PHASE"),
        (104.0, "STOP"),
    ]


@given(cur=st.integers(0, 50), tgt=st.integers(0, 50), ramp=st.floats(0, 10))
def test_ramp_steps_move_one_at_a_time_and_end_at_target_by_ramp_time(cur, tgt, ramp):
    steps = ramp_steps(cur, tgt, ramp)
    assert steps[-1][1] == tgt
    assert steps[-1][0] <= ramp + 1e-9
    counts = [cur] + [n for _, n in steps]
    if ramp > 0:
        assert all(abs(b - a) <= 1 for a, b in itertools.pairwise(counts))
    assert [d for d, _ in steps] == sorted(d for d, _ in steps)
