"""The simulated backend: determinism, the detection bounds of each strategy, clock offsets."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from startline.engine.determinism import scheduler_random, seed_everything
from startline.engine.scenario import Scenario
from startline.simulate.heap import keep_freed_memory
from startline.simulate.models import Latency, Profile
from startline.simulate.runner import simulate_once
from startline.simulate.sweep import START_PATH_SCENARIO
from startline.testing import run_cli

FLOAT_MS = 1e-3  # epoch seconds near 1.8e9 resolve to ~0.24 µs: differences below 1 µs are float noise


def profile(read: tuple[float, float], write: tuple[float, float] = (5, 20), spread_ms: float = 0.0) -> Profile:
    r = {"type": "uniform", "lo_ms": read[0], "hi_ms": read[1]}
    w = {"type": "uniform", "lo_ms": write[0], "hi_ms": write[1]}
    return Profile.from_dict(
        {
            "name": "t",
            "clock_spread_ms": spread_ms,
            "control": {
                "status_read": r,
                "event_read": r,
                "server_time": r,
                "status_update": w,
                "event_insert": w,
                "heartbeat_merge": w,
                "results_insert": w,
                "other": w,
            },
            "target": {"type": "uniform", "lo_ms": 1, "hi_ms": 10},
        }
    )


def start_path(workers: int, **start) -> Scenario:
    return Scenario.from_dict({**START_PATH_SCENARIO, "workers": workers, "connections_per_worker": 2, "start": start})


def test_same_seed_same_bytes():
    sc, prof = start_path(4, strategy="poll", jitter_ms=20), profile((10, 80), spread_ms=3)
    a = json.dumps(simulate_once(sc, prof, 7), sort_keys=True)
    b = json.dumps(simulate_once(sc, prof, 7), sort_keys=True)
    assert a == b
    assert a != json.dumps(simulate_once(sc, prof, 8), sort_keys=True)


sim_settings = settings(max_examples=15)


@sim_settings
@given(
    lo=st.integers(1, 100),
    extra=st.integers(0, 150),
    poll_ms=st.integers(10, 500),
    workers=st.integers(1, 6),
    seed=st.integers(0, 10_000),
)
def test_poll_detects_within_one_poll_period_plus_the_worst_status_read(lo, extra, poll_ms, workers, seed):
    hi = lo + extra
    result = simulate_once(start_path(workers, strategy="poll", poll_interval_ms=poll_ms), profile((lo, hi)), seed)
    period_ms = poll_ms + hi  # the loop: one read, then the interval
    # The orchestrator may start the run as soon as a worker's READY heartbeat lands, while that
    # worker still waits for the reply (the write's second half, <= 20/2 ms) before it polls.
    ready_reply_ms = 20 / 2
    for w in result["workers"]:
        assert 0 <= w["detection_ms"] <= ready_reply_ms + period_ms + hi + FLOAT_MS, w


@sim_settings
@given(lo=st.integers(1, 100), extra=st.integers(0, 150), workers=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_seed_legacy_detects_within_its_loops_worst_period_plus_the_worst_status_read(lo, extra, workers, seed):
    hi, write_hi = lo + extra, 20
    result = simulate_once(start_path(workers, strategy="inline-poll"), profile((lo, hi), (5, write_hi)), seed)
    # The loop: status read, (once a second) event read and heartbeat inline, 200 ms sleep.
    period_ms = hi + hi + write_hi + 200
    for w in result["workers"]:
        assert 0 <= w["detection_ms"] <= period_ms + hi + FLOAT_MS, w


@sim_settings
@given(
    lo=st.integers(1, 60),
    extra=st.integers(0, 60),
    poll_ms=st.integers(20, 400),
    workers=st.integers(1, 6),
    spread=st.floats(0, 50),
    seed=st.integers(0, 10_000),
)
def test_scheduled_lag_and_skew_are_bounded_by_the_clock_error_alone(lo, extra, poll_ms, workers, spread, seed):
    hi = lo + extra
    # Lead longer than the worst detection plus the bookkeeping and the orchestrator's own writes.
    lead = poll_ms + 4 * hi + 4 * 20 + 2 * spread + 50
    sc = start_path(workers, strategy="scheduled", poll_interval_ms=poll_ms, lead_ms=lead)
    result = simulate_once(sc, profile((lo, hi), spread_ms=spread), seed)
    errors = []
    for w in result["workers"]:
        err = w["estimated_offset_ms"] - w["true_offset_ms"]  # the only thing left between release and truth
        errors.append(err)
        for lag in w["true_lag_ms"]:
            assert abs(lag + err) < FLOAT_MS, (lag, err)
    lags = [lag for w in result["workers"] for lag in w["true_lag_ms"]]
    assert max(lags) - min(lags) <= max(errors) - min(errors) + FLOAT_MS


@sim_settings
@given(lo=st.integers(0, 100), extra=st.integers(0, 200), spread=st.floats(0, 100), seed=st.integers(0, 10_000))
def test_offset_estimate_is_within_half_the_lowest_round_trip_of_the_truth(lo, extra, spread, seed):
    result = simulate_once(start_path(3, strategy="poll"), profile((lo, lo + extra), spread_ms=spread), seed)
    for w in result["workers"]:
        assert abs(w["estimated_offset_ms"] - w["true_offset_ms"]) <= w["lowest_rtt_ms"] / 2 + FLOAT_MS, w


def test_latency_models_sample_within_their_bounds():
    import random

    rng = random.Random(1)
    mix = Latency.parse(
        {
            "type": "mixture",
            "components": [
                {"weight": 9, "model": {"type": "uniform", "lo_ms": 50, "hi_ms": 150}},
                {"weight": 1, "model": {"type": "uniform", "lo_ms": 1000, "hi_ms": 3000}},
            ],
        },
        "m",
    )
    xs = [mix.sample(rng) for _ in range(2000)]
    assert all(0.05 <= x <= 3.0 for x in xs)
    assert 0.05 < sum(x > 1 for x in xs) / len(xs) < 0.15
    ln = Latency.parse({"type": "lognormal", "p50_ms": 10, "p99_ms": 100}, "l")
    ys = sorted(ln.sample(rng) for _ in range(4000))
    assert 0.008 < ys[2000] < 0.012
    assert 0.07 < ys[3960] < 0.14


def test_simulate_cli_prints_a_table_and_writes_json(tmp_path):
    out = tmp_path / "sim.json"
    proc = run_cli(
        "simulate",
        "--profile",
        "seed",
        "--strategy",
        "inline-poll",
        "--workers",
        "3",
        "--seeds",
        "3",
        "--json",
        str(out),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "skew ms" in proc.stdout and "measured − true" in proc.stdout
    data = json.loads(out.read_text())
    assert {"skew_error_ms", "lag_max_error_ms", "skew_uncertainty_ms"} <= set(data["start"])
    assert data["runs"] == 3
    assert set(data["start"]["lag_ms"]["p50"]) == {"p50", "p99", "max"}
    assert set(data["control_plane"]) == {"per_worker_per_s_waiting", "per_worker_per_s_running"}


def test_unknown_profile_exits_2():
    proc = run_cli("simulate", "--profile", "nope", timeout=60)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "nope" in proc.stderr


def test_sweep_writes_cells_summary_and_plots(tmp_path):
    spec = tmp_path / "sweep.toml"
    spec.write_text(
        'name = "t"\nseeds = 3\nprofile = "snowflake-hybrid"\n[scenario]\nworkers = 3\n'
        '[grid]\n"start.strategy" = ["poll", "inline-poll"]\n"start.poll_interval_ms" = [50, 200]\n'
        '[[cells]]\nname = "sched"\n"start.strategy" = "scheduled"\n"profile.clock_spread_ms" = 0.5\n'
    )
    out = tmp_path / "out"
    proc = run_cli("sweep", str(spec), "--jobs", "2", "--out", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr
    import csv

    rows = list(csv.DictReader((out / "cells.csv").open()))
    assert len(rows) == 5
    assert {r["strategy"] for r in rows} == {"poll", "inline-poll", "scheduled"}
    assert all(int(r["seeds"]) == 3 for r in rows)
    for png in ("lag_vs_poll_interval.png", "precision_vs_cost.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert "| sched |" in (out / "summary.md").read_text()


def test_bad_sweep_field_exits_2(tmp_path):
    spec = tmp_path / "sweep.toml"
    spec.write_text('seeds = 2\n[grid]\n"start.strategy" = ["warp"]\n')
    proc = run_cli("sweep", str(spec), "--out", str(tmp_path), timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "start.strategy" in proc.stderr


def test_fault_hooks_crash_a_host_and_fail_calls_in_an_outage():
    base = profile((10, 20))
    crashed = Profile(**{**__import__("attrs").asdict(base, recurse=False), "crashes": {"w001": 2.5}})
    sc = Scenario.from_dict(
        {
            **START_PATH_SCENARIO,
            "workers": 3,
            "connections_per_worker": 1,
            "measurement_s": 8.0,
            "heartbeat_s": 0.5,
            "start": {"strategy": "poll"},
        }
    )
    result = simulate_once(sc, crashed, 1)
    # The crashed worker is noticed (DEAD after 6 missed beats) and the run still completes.
    assert result["status"] == "COMPLETED"
    outage = Profile.from_dict({"control": {"status_read": 10}, "faults": {"outages": [[0, 100]]}})
    assert outage.in_outage(50.0) and not outage.in_outage(100.0)
    spiky = Profile.from_dict({"faults": {"spikes": [[1, 2, 300]]}})
    assert spiky.extra_latency_s(1.5) == 0.3 and spiky.extra_latency_s(2.0) == 0.0


def _wake_order(seed: int) -> list[int]:
    """Ten tasks woken by one event: the order Trio runs them in."""
    seed_everything(seed)
    order: list[int] = []

    async def main() -> None:
        go = trio.Event()

        async def task(i: int) -> None:
            await go.wait()
            order.append(i)

        async with trio.open_nursery() as n:
            for i in range(10):
                n.start_soon(task, i)
            await trio.sleep(0)
            go.set()

    trio.run(main)
    return order


def test_trio_scheduler_hook_is_where_startline_expects_it():
    # A Trio that moves its scheduler's random source must fail here, loudly, not make
    # simulations silently depend on the process they run in.
    assert isinstance(scheduler_random(), random.Random)


def test_seeding_the_scheduler_fixes_the_order_of_tasks_that_wake_together():
    assert _wake_order(7) == _wake_order(7)
    assert len({tuple(_wake_order(s)) for s in range(12)}) > 1  # the seed, not chance, decides it


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(["scheduled", "poll", "inline-poll", "push"]),
    st.floats(0.0, 0.5),
    st.floats(0.0, 100.0),
    st.floats(0.0, 100.0),
    st.floats(0.0, 500.0),
    st.floats(0.0, 3.0),
    st.integers(0, 2**32),
)
def test_measured_skew_within_its_error_bar_brackets_the_true_skew(
    strategy: str, jitter: float, spread_ms: float, drift_ppm: float, monotonic_ppm: float, wake_ms: float, seed: int
) -> None:
    """Asymmetric round-trip legs (the server reads its clock anywhere in the round trip), clocks
    spread and drifting, sleeps that wake late and last longer: the true skew lies within the
    measured skew ± start.skew_uncertainty_ms."""
    profile = Profile.from_dict(
        {
            "control": {"other": {"type": "uniform", "lo_ms": 10, "hi_ms": 80}},
            "target": 5.0,
            "visibility_jitter": jitter,
            "clock_spread_ms": spread_ms,
            "drift_ppm": drift_ppm,
            "monotonic_drift_ppm": monotonic_ppm,
            "wake": {"type": "uniform", "lo_ms": 0, "hi_ms": wake_ms},
        }
    )
    sc = Scenario.from_dict(dict(START_PATH_SCENARIO) | {"start": {"strategy": strategy}})
    start = simulate_once(sc, profile, seed)["measured"]["start"]
    truth = start["witnesses"]["truth"]["skew_ms"]
    assert abs(truth - start["skew_ms"]) <= start["skew_uncertainty_ms"] + 1e-9


def test_worker_processes_that_start_late_reach_ready_late_and_the_run_still_starts_together() -> None:
    """The issue's live finding: worker processes start 1.1–1.5 s after the orchestrator. A profile's
    ``worker_start`` draws each worker's delay (seeded); READY then spreads by as much, and a
    scheduled start still releases every connection at one instant."""
    from startline.engine.model import ORCHESTRATOR

    base = {"control": {"other": {"type": "uniform", "lo_ms": 5, "hi_ms": 15}}, "target": 2.0}
    late = Profile.from_dict(base | {"worker_start": {"type": "uniform", "lo_ms": 1100, "hi_ms": 1500}})
    sc = Scenario.from_dict(dict(START_PATH_SCENARIO) | {"workers": 6})
    on_time, delayed = simulate_once(sc, Profile.from_dict(base), 3), simulate_once(sc, late, 3)
    delays = [late.start_delay_s(3, w["worker_id"]) for w in delayed["workers"]]
    assert all(1.1 <= d <= 1.5 for d in delays) and len(set(delays)) == len(delays)
    assert ORCHESTRATOR not in {w["worker_id"] for w in delayed["workers"]}
    assert delayed["status"] == on_time["status"] == "COMPLETED"
    assert delayed["true"]["skew_ms"] == pytest.approx(on_time["true"]["skew_ms"], abs=1.0)
    spread = (max(delays) - min(delays)) * 1000.0
    assert on_time["true"]["ready_spread_ms"] < 100 < spread
    assert delayed["true"]["ready_spread_ms"] == pytest.approx(spread, abs=on_time["true"]["ready_spread_ms"] + 50)
    assert Profile.from_dict(base).start_delay_s(3, "w000") == 0.0


@pytest.mark.parametrize(
    ("deadline_ms", "raises_at_ms", "landed"),
    [(30.0, 30.0, False), (70.0, 70.0, True), (200.0, None, True)],
)
def test_a_simulated_call_past_its_deadline_ends_there_and_its_write_lands_only_if_it_landed_before(
    deadline_ms, raises_at_ms, landed
):
    """The simulator ends a call at its CALL_DEADLINE itself, as a cancel scope would: an update
    that lands at 50 ms of its 100 ms round trip has not landed at a 30 ms deadline, has at 70 ms
    (the reply is what is lost), and a 200 ms deadline changes nothing."""
    import trio.testing

    from startline.backends.memory import MemoryStore, TrioWallClock
    from startline.engine.model import Phase, RunState, RunStatus
    from startline.engine.ports import CALL_DEADLINE
    from startline.simulate.backend import SimControlPlane

    profile = Profile.from_dict({"control": {"status_update": 100.0}, "visibility": 0.5})

    async def main() -> tuple[float | None, RunStatus]:
        store = MemoryStore(TrioWallClock(0.0))
        cp = SimControlPlane(store, profile, 1, "orchestrator")
        assert cp.traits.honours_deadline
        await cp.inner.create_run(RunState("r", RunStatus.PREPARED, Phase.WARMUP))
        t0 = trio.current_time()
        token = CALL_DEADLINE.set(t0 + deadline_ms / 1000.0)
        raised_at = None
        try:
            await cp.update_run("r", status=RunStatus.STARTING)
        except trio.TooSlowError:
            raised_at = (trio.current_time() - t0) * 1000.0
        finally:
            CALL_DEADLINE.reset(token)
        return raised_at, store.runs["r"].status

    raised_at, status = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert raised_at == pytest.approx(raises_at_ms) if raises_at_ms is not None else raised_at is None
    assert (status is RunStatus.STARTING) is landed


def test_a_simulated_run_leaves_the_garbage_collectors_thresholds_as_it_found_them():
    import gc

    before = gc.get_threshold()
    sc = Scenario.from_dict({**START_PATH_SCENARIO, "workers": 2})
    simulate_once(sc, Profile.from_dict({}), 1)
    assert gc.get_threshold() == before


def test_a_simulated_run_keeps_its_virtual_workers_log_lines_off_the_console_and_restores_logging(caplog):
    """A worker crashed in a simulated run is STALE, then DEAD: the orchestrator's warnings about
    it described virtual workers and reached the console of `startline simulate` (issue 25)."""
    import logging

    from startline.simulate.runner import simulate_run

    scenario = Scenario.from_dict(
        {
            "name": "quiet",
            "workers": 3,
            "warmup_s": 0.5,
            "measurement_s": 4,
            "heartbeat_s": 0.5,
            "stale_after_beats": 2,
            "dead_after_beats": 4,
            "operations": [{"name": "q", "call": "simulated:query"}],
        }
    )
    profile = Profile.from_dict({"target": 1.0, "faults": {"crashes": {"w001": 2.0}}})
    caplog.set_level(logging.INFO)
    _, ended = simulate_run(scenario, profile, 3)
    assert {w["worker_id"]: w["status"] for w in ended.summary["workers"]}["w001"] == "DEAD"
    said = [r.getMessage() for r in caplog.records]
    assert not any("is STALE" in m or "is DEAD" in m for m in said), said
    assert logging.root.manager.disable == logging.NOTSET  # the process's logging as it was


@pytest.mark.live
def test_simulating_a_push_start_says_it_ran_as_poll(tmp_path):
    """The simulated control plane cannot notify: a push scenario runs as poll, as it would live
    on such a control plane — said under the table, never silently (issue 25)."""
    from startline.testing import run_cli

    path = tmp_path / "push.toml"
    path.write_text(
        'name = "p"\nworkers = 2\n[start]\nstrategy = "push"\n[[operations]]\nname = "q"\nsql = "SELECT 1"\n'
    )
    proc = run_cli("simulate", str(path), "--seeds", "1", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "note: push is simulated as poll" in proc.stdout and "poll_interval_ms = 50" in proc.stdout
    assert "1 of 1 seeds simulated" in proc.stderr  # progress off a terminal: a plain line (issue 25)
    poll = run_cli("simulate", str(path), "--seeds", "1", "--strategy", "poll", timeout=120)
    assert poll.returncode == 0 and "simulated as poll" not in poll.stdout
    pg = run_cli("simulate", str(path), "--seeds", "1", "--profile", "postgres", timeout=120)
    assert pg.returncode == 0 and "simulated as poll" not in pg.stdout  # a profile that notifies


# ---- push on a control plane that notifies (issue 25) -----------------------------------------

CONSTANT_10MS = {
    c: {"type": "constant", "ms": 10}
    for c in ("status_read", "event_read", "status_update", "event_insert", "heartbeat_merge", "results_insert")
} | {"server_time": {"type": "constant", "ms": 10}, "other": {"type": "constant", "ms": 10}}


def push_run(profile: dict, seed: int = 1) -> dict:
    sc = Scenario.from_dict(dict(START_PATH_SCENARIO) | {"workers": 3, "start": {"strategy": "push"}})
    return simulate_once(sc, Profile.from_dict({"control": CONSTANT_10MS} | profile), seed)


def test_a_simulated_push_reaches_each_worker_a_notification_and_a_status_read_after_the_write() -> None:
    r = push_run({"notify": {"type": "constant", "ms": 3}})
    assert [round(w["detection_ms"], 3) for w in r["workers"]] == [13.0, 13.0, 13.0]  # 3 ms + one 10 ms read


def test_a_notification_sent_while_the_listener_was_down_is_lost_and_polling_finds_the_change() -> None:
    """The start written 295 ms in; an outage from 250 to 280 ms drops the workers' listening
    connections: their notification is lost, and reading RUN_STATUS every 50 ms finds the start."""
    from startline.engine.ports import PUSH_FALLBACK_POLL_S

    r = push_run({"notify": {"type": "constant", "ms": 3}, "faults": {"outages": [[0.25, 0.28]]}})
    assert r["status"] == "COMPLETED"
    assert all(w["detection_ms"] >= 1000 * PUSH_FALLBACK_POLL_S for w in r["workers"]), r["workers"]


def test_push_on_a_profile_that_cannot_notify_runs_as_poll_row_for_row() -> None:
    pushed = push_run({})
    sc = Scenario.from_dict(dict(START_PATH_SCENARIO) | {"workers": 3, "start": {"strategy": "poll"}})
    polled = simulate_once(sc, Profile.from_dict({"control": CONSTANT_10MS}), 1)
    assert pushed["true"] == polled["true"]


def test_the_postgres_profile_ships_with_its_provenance_and_simulates_push_as_push() -> None:
    from startline.simulate.sweep import PROFILES_DIR, load_profile

    text = (PROFILES_DIR / "postgres.toml").read_text()
    assert "seed" not in text.lower()  # fitted from live runs of this project's own design
    assert "startline calibrate" in text and "benchmarks/live_start.py" in text  # how it was made
    profile = load_profile("postgres")
    assert profile.notify is not None and profile.release_wake is not None
    sc = Scenario.from_dict(dict(START_PATH_SCENARIO) | {"workers": 3, "start": {"strategy": "push"}})
    pushed = simulate_once(sc, profile, 1)
    polled = simulate_once(Scenario.from_dict(sc.to_dict() | {"start": {"strategy": "poll"}}), profile, 1)
    assert pushed["true"] != polled["true"]


HEAP_CHURN = """
import resource, sys
from startline.engine.metrics import new_histogram
if sys.argv[1] == "kept":
    from startline.simulate.heap import keep_freed_memory
    assert keep_freed_memory()
if sys.argv[1] == "after a simulated run":  # (which asks for it)
    from startline.engine.scenario import Scenario
    from startline.simulate.runner import simulate_once
    from startline.simulate.sweep import START_PATH_SCENARIO, load_profile
    simulate_once(Scenario.from_dict({**START_PATH_SCENARIO, "workers": 2}), load_profile(), 1)
def churn():  # what a simulated run does with its histograms: make a few dozen, drop them
    made = [new_histogram() for _ in range(40)]
    del made
churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(way: str) -> int:
    run = subprocess.run([sys.executable, "-c", HEAP_CHURN, way], capture_output=True, text=True, check=True)
    return int(run.stdout)


def test_histograms_dropped_by_one_run_are_reused_by_the_next_without_page_faults() -> None:
    """With ``keep_freed_memory`` (each simulated run asks for it) the memory a run's histograms
    freed serves the next run's; without it glibc gives it back and faults it in again (a fresh
    process each way, so neither inherits the other's heap)."""
    if not os.confstr("CS_GNU_LIBC_VERSION"):
        pytest.skip("glibc's malloc only: elsewhere keep_freed_memory does nothing")
    given_back, kept, simulated = _faults("given back"), _faults("kept"), _faults("after a simulated run")
    assert given_back > 1000  # 40 histograms × 190 KB, ten times: thousands of pages
    assert kept < given_back / 100
    assert simulated < given_back / 100
    assert keep_freed_memory() is True
