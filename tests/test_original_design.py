"""The simulator's model of the original design's design, each part against the original design's own figures
(shared/seed/000_4c54c9063e8c18ea.txt): a write stamped as it begins and landing as it commits,
READY from inside the waiting loop after the pool's set-up, a loop that leaves only on
RUN_STATUS, the cost of spawning connection tasks, late wakes and drifting monotonic clocks."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from startline.engine.scenario import ConfigError, Scenario
from startline.simulate.models import Profile
from startline.simulate.runner import simulate_once
from startline.simulate.sweep import START_PATH_SCENARIO, load_profile

FLOAT_MS = 1e-3


def flat(**extra: Any) -> Profile:
    """Every control-plane call 20 ms, the target 2 ms: the model's other parts stand out."""
    return Profile.from_dict({"control": {"other": 20.0}, "target": 2.0} | extra)


def scenario(workers: int = 4, connections: int = 3, **start: Any) -> Scenario:
    return Scenario.from_dict(
        dict(START_PATH_SCENARIO) | {"workers": workers, "connections_per_worker": connections, "start": start}
    )


def lags_by_worker(result: dict[str, Any]) -> list[list[float]]:
    return [w["true_lag_ms"] for w in result["workers"]]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_a_start_stamped_as_its_update_begins_is_seen_only_after_the_update_commits(seed: int) -> None:
    """PART 1 Query 1: UPDATE RUN_STATUS takes 100–200 ms and its START_TIME = CURRENT_TIMESTAMP()
    is taken as the statement begins; the row is visible when it commits. No worker can see
    RUNNING earlier than 100 ms after START_TIME plus the back half of its own 50–150 ms read."""
    seed_profile = load_profile("snowflake-hybrid", None)
    assert seed_profile.write_points() == (0.0, 1.0)
    sc = scenario(strategy="poll", poll_interval_ms=50)
    result = simulate_once(sc, seed_profile, seed)
    assert min(w["detection_ms"] for w in result["workers"]) >= 100 + 25 - FLOAT_MS
    # the same profile with one instant for both (the model before): detection can come sooner
    merged = simulate_once(sc, Profile.from_dict({"control": {"status_update": 150.0, "status_read": 100.0}}), seed)
    split = simulate_once(
        sc,
        Profile.from_dict({"control": {"status_update": 150.0, "status_read": 100.0}, "stamp": 0, "commit": 1}),
        seed,
    )
    assert min(w["detection_ms"] for w in split["workers"]) >= 150 + 50 - FLOAT_MS
    assert min(w["detection_ms"] for w in merged["workers"]) < 150 + 50


def test_stamp_after_commit_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        Profile.from_dict({"stamp": 0.8, "commit": 0.2})
    assert err.value.field == "stamp"


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_the_seed_loop_leaves_on_run_status_only_not_on_a_start_among_the_events(seed: int) -> None:
    """The original design's ``_wait_for_start`` returns only when its RUN_STATUS read says RUNNING; the
    event poll inside the loop does not end it. With status reads of 300–500 ms (looking halfway)
    and event reads of 1 ms, a worker can only detect 150 ms or more after the start lands
    (leaving on the START event, about one worker in eight would detect sooner)."""
    prof = Profile.from_dict(
        {
            "control": {
                "status_read": {"type": "uniform", "lo_ms": 300, "hi_ms": 500},
                "event_read": 1.0,
                "other": 5.0,
            },
            "target": 1.0,
            "worker_start": {"type": "uniform", "lo_ms": 0, "hi_ms": 1000},  # loops at different phases
        }
    )
    result = simulate_once(scenario(workers=8, strategy="inline-poll"), prof, seed)
    assert min(w["detection_ms"] for w in result["workers"]) >= 150 - FLOAT_MS


def test_pool_set_up_comes_before_ready_and_the_loops_meet_the_start_at_different_phases() -> None:
    """PART 4 §2: the pool's initialisation (15–20 s) now runs before ``_wait_for_start``; READY
    is the loop's first heartbeat. The run starts after the slowest pool; the workers' loops,
    begun 0–5 s apart, are at different phases when it does, so their detections differ."""
    prof = flat(worker_init={"type": "uniform", "lo_ms": 15000, "hi_ms": 20000})
    result = simulate_once(scenario(workers=6, strategy="inline-poll"), prof, 11)
    assert result["status"] == "COMPLETED"
    assert result["start_time"] - 1_767_225_600.0 >= 15.0  # virtual seconds since the run existed
    assert 0 < result["true"]["ready_spread_ms"] <= 5000
    detections = sorted(w["detection_ms"] for w in result["workers"])
    assert detections[-1] - detections[0] > 20  # not in lockstep: at least one status read apart


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32), lo=st.integers(10, 60))
def test_connections_spawned_per_task_start_one_spawn_cost_apart_and_prespawned_ones_at_once(
    seed: int, lo: int
) -> None:
    """The per-task reading (``spawn_per = "connection"``, PART 3's "~0.1 ms per task creation"):
    spawned after detection, a worker's connections begin at least one spawn cost apart;
    pre-spawned (R3), they begin together."""
    prof = flat(spawn={"type": "uniform", "lo_ms": lo, "hi_ms": lo + 40}, spawn_per="connection")
    spawned = simulate_once(scenario(strategy="inline-poll"), prof, seed)
    for lags in lags_by_worker(spawned):
        assert all(b - a >= lo - FLOAT_MS for a, b in itertools.pairwise(lags)), lags
    pre = simulate_once(scenario(strategy="inline-poll", prespawn=True), prof, seed)
    for lags in lags_by_worker(pre):
        assert max(lags) - min(lags) < FLOAT_MS, lags


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32), lo=st.integers(10, 60))
def test_a_scale_up_pays_one_spawn_cost_and_its_connections_begin_together(seed: int, lo: int) -> None:
    """The step reading (the default, PART 7's one row for the whole ``_scale_to``): a worker's
    connections spawned after detection begin together, one spawn cost after it detected."""
    prof = flat(spawn={"type": "uniform", "lo_ms": lo, "hi_ms": lo + 40})
    result = simulate_once(scenario(strategy="inline-poll"), prof, seed)
    without = simulate_once(scenario(strategy="inline-poll"), flat(), seed)  # the same draws, no spawn cost
    for lags, free in zip(lags_by_worker(result), lags_by_worker(without), strict=True):
        assert max(lags) - min(lags) < FLOAT_MS, lags
        assert lo - FLOAT_MS <= min(lags) - min(free) <= lo + 40 + FLOAT_MS, (lags, free)


def test_the_seed_profile_reads_the_spawn_row_as_one_cost_for_the_whole_scale_up() -> None:
    """PART 7 of the seed: "Spawn worker tasks | 10 | 100 | 50 | Depends on initial_target" — one
    row for all the initial tasks, not a cost per task."""
    from startline.simulate.models import Latency

    row = "Spawn worker tasks | 10 | 100 | 50 | Depends on initial_target"
    seed = Path(__file__).resolve().parents[2] / "shared" / "seed" / "000_4c54c9063e8c18ea.txt"
    if seed.exists():  # (the seed sits beside the project's checkout, not in every clone of it)
        assert row in " ".join(seed.read_text().split())
    toml = Path(__file__).resolve().parents[1] / "startline" / "simulate" / "profiles" / "snowflake-hybrid.toml"
    assert f'"{row}"' in toml.read_text()  # the profile quotes the row it reads
    prof = load_profile("snowflake-hybrid")
    assert prof.spawn == Latency.parse({"type": "uniform", "lo_ms": 10, "hi_ms": 100}, "spawn")
    assert prof.spawn_per == "step"


@pytest.mark.parametrize("spin_ms", [0.0, 1.0, 5.0])
def test_a_scheduled_release_wakes_late_by_the_overshoot_less_the_spin(spin_ms: float) -> None:
    """Live, sleeps overshot 0.5–0.65 ms (median) and up to 2.8 ms with 5 processes on 2 cores:
    with ``wake = 2 ms`` every connection of a scheduled start issues 2 ms late, less what the
    last ``spin_ms`` absorbs."""
    prof = flat(wake=2.0)
    result = simulate_once(scenario(strategy="scheduled", lead_ms=2000, spin_ms=spin_ms), prof, 5)
    late = max(0.0, 2.0 - spin_ms)
    for lags in lags_by_worker(result):
        assert all(lag == pytest.approx(late, abs=FLOAT_MS) for lag in lags), lags


def test_a_drifting_monotonic_clock_releases_early_or_late_by_the_drift_over_the_lead() -> None:
    """A host whose monotonic clock runs 1000 ppm fast or slow wakes from a 2 s wait up to 2 ms
    off; perfect clocks release at START_TIME exactly."""
    sc = scenario(workers=6, strategy="scheduled", lead_ms=2000, poll_interval_ms=100)
    drifting = simulate_once(sc, flat(monotonic_drift_ppm=1000), 9)
    lags = [lag for w in lags_by_worker(drifting) for lag in w]
    assert all(abs(lag) <= 2.0 + FLOAT_MS for lag in lags)
    assert max(abs(lag) for lag in lags) > 0.1
    exact = simulate_once(sc, flat(), 9)
    assert all(abs(lag) < FLOAT_MS for w in lags_by_worker(exact) for lag in w)


def test_a_sweep_cell_sets_a_latency_valued_profile_field() -> None:
    from startline.simulate.models import Latency
    from startline.simulate.sweep import Cell

    base = load_profile("snowflake-hybrid", None)
    _, prof = Cell("no spawn", {"profile.spawn": 0, "profile.wake": {"type": "constant", "ms": 2}}).build(
        dict(START_PATH_SCENARIO), base
    )
    assert prof.spawn == Latency("constant", {"ms": 0.0}) and prof.wake == Latency("constant", {"ms": 2})
    with pytest.raises(ConfigError) as err:
        Cell("bad", {"profile.spawn": "fast"}).build(dict(START_PATH_SCENARIO), base)
    assert "profile.spawn" in err.value.field


@pytest.mark.parametrize(
    ("start", "offers"),
    [
        ({"strategy": "scheduled", "lead_ms": 2000}, True),
        ({"strategy": "scheduled", "lead_ms": 2000, "yield_after_release": False}, False),
        ({"strategy": "poll"}, False),
    ],
)
def test_a_scheduled_worker_offers_its_core_once_after_its_first_operations_are_issued(
    monkeypatch: pytest.MonkeyPatch, start: dict[str, Any], offers: bool
) -> None:
    """Workers released together queue for the host's cores; one that has issued its first
    operations offers its core once (``Runtime.yield_core``) — not before, and not when told
    not to or when its start is not a common instant."""
    from startline.simulate.backend import SimRuntime, SimTarget

    targets: list[SimTarget] = []
    offered: list[tuple[str, int]] = []
    open_session = SimTarget.open_session

    async def opening(self: SimTarget, worker_id: str, slot: int) -> Any:
        targets.append(self)
        return await open_session(self, worker_id, slot)

    def yield_core(self: SimRuntime) -> None:  # how many of this worker's connections had begun
        offered.append((self.host, len(targets[0].first_query.get(self.host, {}))))

    monkeypatch.setattr(SimTarget, "open_session", opening)
    monkeypatch.setattr(SimRuntime, "yield_core", yield_core)
    simulate_once(scenario(workers=3, connections=4, **start), flat(), 3)
    if offers:
        assert len({host for host, _ in offered}) == 3 and len(offered) == 3, offered
        assert all(begun == 4 for _, begun in offered), offered
    else:
        assert offered == []
