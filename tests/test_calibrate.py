"""``startline calibrate``: a profile fitted to what runs measured of themselves. The round trip
(a profile → simulated runs → calibrate → the profile) on virtual time; the command on a live
run's directory is in tests/test_live.py."""

from __future__ import annotations

import json
import math
import statistics
import tomllib
from pathlib import Path
from typing import Any

import attrs
import pytest
from hdrh.histogram import HdrHistogram
from hypothesis import given
from hypothesis import strategies as st

from startline.engine.metrics import decode, new_histogram
from startline.engine.scenario import ConfigError, Scenario
from startline.simulate.backend import release_ranks
from startline.simulate.calibrate import (
    KEPT,
    QUANTILES,
    Observed,
    control_latencies,
    empirical,
    fit,
    to_toml,
)
from startline.simulate.models import Latency, Profile
from startline.simulate.runner import simulate_run
from startline.simulate.sweep import START_PATH_SCENARIO
from startline.testing import run_cli


def uniform(lo: float, hi: float) -> dict[str, Any]:
    return {"type": "uniform", "lo_ms": lo, "hi_ms": hi}


TRUE_DICT: dict[str, Any] = {
    "control": {
        "status_read": uniform(5, 15),
        "event_read": uniform(8, 20),
        "status_update": uniform(10, 30),
        "event_insert": uniform(6, 12),
        "heartbeat_merge": uniform(10, 20),
        "results_insert": uniform(12, 24),
        "server_time": uniform(2, 6),
        "other": uniform(4, 8),
    },
    "target": uniform(1, 3),
    "worker_start": uniform(0, 60),
    "worker_start_shared": uniform(300, 900),
    "wake": uniform(0.2, 1.0),
    "release_wake": uniform(1, 4),
    "notify": uniform(2, 6),
}
TRUE = Profile.from_dict(TRUE_DICT, "true")


def observed(strategy: str, seeds: range, profile: Profile = TRUE, **start: Any) -> list[Observed]:
    sc = Scenario.from_dict(dict(START_PATH_SCENARIO) | {"workers": 6, "start": {"strategy": strategy} | start})
    runs = []
    for seed in seeds:
        _, ended = simulate_run(sc, profile, seed, round_trips=True)
        runs.append(Observed(f"seed {seed}", tuple(ended.payloads.values()), ended.orchestrator, ended.summary))
    return runs


def close(fitted: Latency, true: Latency, rel: float) -> bool:
    return abs(fitted.mean_s - true.mean_s) <= rel * true.mean_s and fitted.worst_s <= true.worst_s * (1 + rel)


def close_to_sample(fitted: Latency, true: Latency, observed: HdrHistogram) -> bool:
    """The fitted mean within three standard errors of the true one (what the n round trips
    observed can tell) plus 1 % (HDR's 3 digits, the fit's 200 quantiles); its worst case within
    5 % of the truth's. A class seen 24 times is not held to what one seen 700 times is."""
    n = observed.get_total_count()
    standard_error_s = observed.get_stddev() / 1e6 / math.sqrt(n)
    return (
        abs(fitted.mean_s - true.mean_s) <= 3 * standard_error_s + 0.01 * true.mean_s
        and fitted.worst_s <= true.worst_s * 1.05
    )


@pytest.mark.slow
def test_calibrate_round_trips_a_profile_through_simulated_runs() -> None:
    """Every figure a run observes comes back within a few per cent of the profile that made it
    (HDR keeps 3 significant digits; the empirical fit keeps 200 quantiles)."""
    runs = observed("scheduled", range(12))
    fitted = Profile.from_dict(fit(runs), "fitted")
    assert set(fitted.control) == set(TRUE.control)
    seen = control_latencies(runs)
    for call_class, true in TRUE.control.items():
        assert close_to_sample(fitted.control[call_class], true, seen[call_class]), call_class
    assert close(fitted.target, TRUE.target, 0.05)
    # a start delay comes back as the run's shared part plus each worker's own: their sum, and
    # how far apart a run's workers begin (its READY spread), within what 12 runs of 6 tell
    assert fitted.worker_start is not None and fitted.worker_start_shared is not None
    mean_delay = fitted.worker_start.mean_s + fitted.worker_start_shared.mean_s
    assert mean_delay == pytest.approx(0.030 + 0.600, rel=0.12)
    sc = Scenario.from_dict(dict(START_PATH_SCENARIO) | {"workers": 6, "start": {"strategy": "scheduled"}})
    spreads = {
        name: statistics.median(simulate_run(sc, p, s)[0]["true"]["ready_spread_ms"] for s in range(100, 130))
        for name, p in (("true", TRUE), ("fitted", fitted))
    }
    assert spreads["fitted"] == pytest.approx(spreads["true"], rel=0.2)
    assert fitted.wake is not None and close(fitted.wake, TRUE.wake, 0.08)
    assert fitted.release_wake is not None and close(fitted.release_wake, TRUE.release_wake, 0.12)
    assert fitted.notify is None  # a scheduled start detects by polling
    assert fitted.clock_spread_ms == 0.0  # the simulated hosts report no host witness: offsets are 0


def test_a_fitted_profile_written_as_toml_reads_back_the_same() -> None:
    fitted = fit(observed("poll", range(3)))
    text = to_toml(fitted, ["a", "b"])
    assert tomllib.loads(text) == json.loads(json.dumps(fitted))
    assert Profile.from_dict(tomllib.loads(text)) == Profile.from_dict(fitted)
    assert "release_wake" not in fitted  # only a scheduled start has a release instant


def test_a_directory_without_worker_results_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(ConfigError) as err:
        Observed.read(tmp_path)
    assert "worker-*.json" in str(err.value)
    proc = run_cli("calibrate", str(tmp_path), "--out", str(tmp_path / "p.toml"), timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "RUN_DIR" in proc.stderr
    assert not (tmp_path / "p.toml").exists()


@pytest.mark.parametrize(
    "content",
    ["{not json", '{"worker_id": "w000", "metrics": 5}', '{"worker_id": "w000", "metrics": {}, "timeline": 3}', "[]"],
)
def test_a_corrupt_worker_results_file_is_one_line_and_exit_2(tmp_path: Path, content: str) -> None:
    """Issue 22 #17: calibrate on a corrupt worker file was a traceback."""
    (tmp_path / "worker-w000.json").write_text(content)
    proc = run_cli("calibrate", str(tmp_path), "--out", str(tmp_path / "p.toml"), timeout=60)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "RUN_DIR" in proc.stderr


@pytest.mark.parametrize(
    "latency", ['{ type = "constant", ms = 1e15 }', '{ type = "uniform", lo_ms = 1, hi_ms = 1e300 }']
)
def test_absurd_latencies_in_a_profile_are_one_line_and_exit_2(tmp_path: Path, latency: str) -> None:
    """Issue 22 #17: `simulate` with absurd latencies printed 60 tracebacks, then exited 0."""
    profile = tmp_path / "p.toml"
    profile.write_text(f"target = {latency}\n")
    proc = run_cli("simulate", "--seeds", "2", "--profile-file", str(profile), timeout=120)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "one hour" in proc.stderr


def payload(worker: str, share_max: float, share_mean: float, cores: int | None = 2, host: str = "h") -> dict:
    return {
        "worker_id": worker,
        "cpu": {"share_max": share_max, "share_mean": share_mean},
        "host": {"name": host} | ({"cores": cores} if cores else {}),
    }


def test_a_run_short_of_cpu_is_named_and_an_unloaded_one_is_not() -> None:
    """Issue 25: a new user's profile fitted from loaded runs predicted a 957 ms skew where the
    live run measured 75 ms; calibrate says when its runs were short of CPU."""
    from startline.simulate.calibrate import saturation

    calm = Observed("calm", (payload("w000", 0.4, 0.3), payload("w001", 0.5, 0.3)))
    assert saturation(calm) is None
    hot_worker = Observed("hot", (payload("w000", 0.97, 0.6), payload("w001", 0.2, 0.1)))
    assert "w000 used 97% of a core" in (saturation(hot_worker) or "")
    # four workers at 0.6 of a core each on a 2-core host: 2.4 cores wanted of 2
    crowded = Observed("crowded", tuple(payload(f"w00{i}", 0.7, 0.6) for i in range(4)))
    assert "2.40 of its 2 cores" in (saturation(crowded) or "")
    spread = Observed("spread", tuple(payload(f"w00{i}", 0.7, 0.6, host=f"h{i % 2}") for i in range(4)))
    assert saturation(spread) is None  # two hosts, 1.2 of 2 cores each
    unknown = Observed("old", tuple(payload(f"w00{i}", 0.7, 0.6, cores=None) for i in range(4)))
    assert saturation(unknown) is None  # results from before the host said its cores


def test_calibrate_names_the_figures_its_runs_could_not_fit() -> None:
    from startline.simulate.calibrate import not_fitted

    fitted = fit(observed("poll", range(3)))
    missing = not_fitted(fitted)
    assert "release_wake" in missing and "scheduled" in missing["release_wake"]
    assert not set(missing) & set(fitted)
    assert "release_wake" not in not_fitted(fit(observed("scheduled", range(2))))


@pytest.mark.slow
def test_calibrate_fits_how_late_a_pushed_start_reached_the_workers() -> None:
    """Issue 25: push is modelled (a notification ``notify`` after the write lands) and calibrated
    from runs whose workers detected the start by push."""
    runs = observed("push", range(8))
    assert {p["process"]["detection"] for r in runs for p in r.payloads} == {"push"}
    fitted = Profile.from_dict(fit(runs), "fitted")
    assert fitted.notify is not None
    # detection after START_TIME is the write landing, the notification and a status read: less
    # the read's median, within what 48 workers tell of a 2–6 ms uniform
    assert fitted.notify.mean_s == pytest.approx(TRUE.notify.mean_s, abs=0.0015)


def _loaded_reads(run: Observed) -> list[tuple[bool, float]]:
    """Each worker's (another worker's first operation came before its start-finding read began,
    how long that read took in ms)."""
    firsts = {p["worker_id"]: min(p["first_query"].values()) for p in run.payloads if p["first_query"]}
    out = []
    for p in run.payloads:
        read = p["process"]["detect_read_ms"]
        began = p["timeline"]["detect"] - read / 1000.0
        out.append((any(w != p["worker_id"] and t < began for w, t in firsts.items()), read))
    return out


def test_the_read_that_finds_a_passed_start_takes_start_read_only_while_another_workers_load_runs() -> None:
    """Issue 25's poll detection: live, the first workers to find the start read RUN_STATUS in
    0.4–0.6 ms, the later ones in 2–8 (the first ones' connections running on the same cores).
    ``start_read`` is how long that read takes once another worker has begun its first operation;
    before that it is an ordinary status read. The runs with and without it agree on everything
    before the first loaded read (a constant draws nothing)."""
    slow = attrs.evolve(TRUE, start_read=Latency.parse({"type": "constant", "ms": 40.0}, "start_read"))
    loaded_seen = unloaded_seen = 0
    for seed in range(3):
        plain, slowed = observed("poll", range(seed, seed + 1))[0], observed("poll", range(seed, seed + 1), slow)[0]
        assert slowed.summary["start_time"] == plain.summary["start_time"]
        for loaded, read in _loaded_reads(slowed):
            if loaded:
                loaded_seen += 1
                assert read == pytest.approx(40.0)
            else:  # TRUE's status reads take 5–15 ms
                unloaded_seen += 1
                assert 5.0 <= read <= 15.0
        first = min(range(len(plain.payloads)), key=lambda i: plain.payloads[i]["timeline"]["detect"])
        assert slowed.payloads[first]["timeline"] == plain.payloads[first]["timeline"]  # the first finds it unloaded
    assert loaded_seen and unloaded_seen  # (both cases ran)
    # a scheduled start is read before its instant: no read finds it passed, nothing changes
    assert observed("scheduled", range(1))[0].summary == observed("scheduled", range(1), slow)[0].summary


def test_calibrate_fits_start_read_from_polled_starts_read_while_another_workers_load_ran() -> None:
    slow = attrs.evolve(TRUE, start_read=Latency.parse(uniform(30, 50), "start_read"))
    runs = observed("poll", range(4), slow)
    loaded = [read for run in runs for was, read in _loaded_reads(run) if was]
    fitted = Profile.from_dict(fit(runs), "fitted")
    assert fitted.start_read is not None  # the loaded workers' reads of a 30–50 ms uniform, not the others' 5–15
    assert fitted.start_read.mean_s == pytest.approx(statistics.fmean(loaded) / 1000.0, rel=0.02)
    assert fitted.start_read.mean_s == pytest.approx(0.040, abs=0.005)
    assert "start_read" not in fit(observed("scheduled", range(1), slow))  # read before the instant


def test_a_worker_that_found_its_start_by_a_read_releases_after_detect_later() -> None:
    """Live, a polling worker's first operation came 1.1–8.2 ms after it found the start, its
    bookkeeping's writes among it; the rest (its status, its connections armed, its turn on cores
    the others' load holds) is ``after_detect``, recorded by each worker that spawned its
    connections first (``after_detect_ms``: the bookkeeping taken out, the simulator makes those
    calls itself) and fitted back by calibrate. A scheduled start does not take it."""
    late = attrs.evolve(TRUE, after_detect=Latency.parse({"type": "constant", "ms": 7.0}, "after_detect"))
    for bookkeeping in ("sequential", "parallel", "deferred"):
        plain = observed("poll", range(1), bookkeeping=bookkeeping)[0]
        delayed = observed("poll", range(1), late, bookkeeping=bookkeeping)[0]
        assert [p["process"]["after_detect_ms"] for p in plain.payloads] == pytest.approx([0.0] * 6, abs=1e-3)
        assert [p["process"]["after_detect_ms"] for p in delayed.payloads] == pytest.approx([7.0] * 6, abs=1e-3)
        lag = [
            b["timeline"]["first_query"] - a["timeline"]["first_query"]
            for a, b in zip(plain.payloads, delayed.payloads, strict=True)
        ]
        assert lag == pytest.approx([0.007] * 6, abs=1e-6)  # the step is on the start path
    assert observed("scheduled", range(1))[0].summary == observed("scheduled", range(1), late)[0].summary
    spread = attrs.evolve(TRUE, after_detect=Latency.parse(uniform(1, 3), "after_detect"))
    fitted = Profile.from_dict(fit(observed("poll", range(3), spread)), "fitted")
    assert fitted.after_detect is not None
    assert fitted.after_detect.mean_s == pytest.approx(0.002, abs=0.0003)  # 18 workers' draws of 1–3 ms
    assert "after_detect" not in fit(observed("scheduled", range(1), spread))
    # spawned after the detection (the seed's design): not recorded, the spawning is on the path
    assert "after_detect" not in fit(observed("inline-poll", range(1), spread))


@given(seed=st.integers(0, 2**32), workers=st.integers(1, 12))
def test_release_ranks_place_every_worker_once_along_the_release_and_the_seed_decides_the_order(seed, workers):
    ids = [f"w{i:03d}" for i in range(workers)]
    ranks = release_ranks(seed, ids)
    assert sorted(ranks) == ids and ranks == release_ranks(seed, ids)
    assert sorted(ranks.values()) == [k / max(1, workers - 1) for k in range(workers)]


def test_release_ranks_are_not_the_workers_numbering():
    firsts = {
        min(release_ranks(seed, ["w000", "w001", "w002", "w003"]).items(), key=lambda kv: kv[1])[0]
        for seed in range(40)
    }
    assert firsts == {"w000", "w001", "w002", "w003"}


def test_a_release_queue_gives_each_run_its_order_and_calibrate_fits_it_back_by_place() -> None:
    """Live, every run's 4 processes released on 2 cores: two began 0.19–0.32 ms after the
    instant, two 0.52–0.83 — the pooled ``release_wake`` drawn for each alone gives a run 0–4 in
    the lower mode. ``release_queue`` keeps each run's order; calibrate fits it by place."""
    two = {"0": uniform(0.2, 0.3), "1": uniform(0.6, 0.8)}
    queued = Profile.from_dict(TRUE_DICT | {"release_queue": two}, "queued")
    runs = observed("scheduled", range(4), queued)
    for run in runs:  # of 6 workers, the first three along draw place 0, the last three place 1
        late = sorted(p["process"]["release_late_ms"] for p in run.payloads)
        assert all(0.2 <= v <= 0.3 for v in late[:3]) and all(0.6 <= v <= 0.8 for v in late[3:])
    fitted = Profile.from_dict(tomllib.loads(to_toml(fit(runs), ["sim"])), "fitted")
    assert len(fitted.release_queue) == 6
    means = [q.mean_s * 1000 for q in fitted.release_queue]  # by place: each mode's order statistics
    assert all(0.2 <= m <= 0.3 for m in means[:3]) and all(0.6 <= m <= 0.8 for m in means[3:])
    assert means == sorted(means)
    assert "release_queue" not in fit(observed("poll", range(1), queued))  # no release instant


def test_a_runs_release_draws_every_place_at_one_quantile_of_its_own_entry() -> None:
    """Live, 8 × 2 on 2 cores, 40 runs: the places are one run's order statistics, a late run
    mostly late in its last worker. Each place drawn alone, the run's last worker came out late
    too often (its median 2.11 ms, live 1.62) and the skew p50 was 2.00 ms against 1.42. A run's
    release draws once: every place at the same quantile of its own entry."""
    two = {"0": uniform(0.2, 0.3), "1": uniform(0.6, 1.0)}
    queued = Profile.from_dict(TRUE_DICT | {"release_queue": two}, "queued")
    quantiles = []
    for run in observed("scheduled", range(6), queued):
        late = sorted(p["process"]["release_late_ms"] for p in run.payloads)
        at = [(v - 0.2) / 0.1 for v in late[:3]] + [(v - 0.6) / 0.4 for v in late[3:]]
        assert max(at) - min(at) < 0.02, late  # (each a few µs after its draw)
        quantiles.append(at[0])
    assert max(quantiles) - min(quantiles) > 0.3  # and the quantile is the run's draw


@pytest.mark.parametrize("table", [{"1": uniform(1, 2)}, {"0": uniform(1, 2), "2": uniform(1, 2)}, [uniform(1, 2)]])
def test_a_release_queue_not_keyed_0_1_2_is_refused_naming_it(table) -> None:
    with pytest.raises(ConfigError, match="release_queue"):
        Profile.from_dict(TRUE_DICT | {"release_queue": table}, "bad")


def test_a_workers_connections_released_together_begin_a_connection_step_apart_and_calibrate_fits_it() -> None:
    """Live (4 × 2, SQLite, scheduled): a worker's second connection began 0.07–0.11 ms after its
    first — the process issues them one after another; the simulator began them at one instant."""
    stepped = attrs.evolve(TRUE, connection_step=Latency.parse({"type": "constant", "ms": 0.1}, "connection_step"))
    for strategy in ("scheduled", "poll"):
        plain, run = observed(strategy, range(1))[0], observed(strategy, range(1), stepped)[0]
        for a, b in zip(plain.payloads, run.payloads, strict=True):
            before, after = sorted(a["first_query"].values()), sorted(b["first_query"].values())
            assert len(after) == 4 and len(set(before)) == 1  # (released together: one instant)
            # (in the release's order, which need not be the slots')
            assert [(t - after[0]) * 1000 for t in after] == pytest.approx(
                [0.0, 0.1, 0.2, 0.3], abs=1e-3
            )  # (epoch floats)
            assert after[0] == before[0]  # the first is not held back
    spread = attrs.evolve(TRUE, connection_step=Latency.parse(uniform(0.05, 0.15), "connection_step"))
    fitted = Profile.from_dict(fit(observed("scheduled", range(2), spread)), "fitted")
    assert fitted.connection_step is not None
    # the gaps between consecutive slots: slot k's sum of k draws less slot k−1's, mean 0.1 ms
    assert fitted.connection_step.mean_s == pytest.approx(0.0001, abs=0.00003)


def _start_calls(run: Observed) -> list[tuple[bool, str, float]]:
    """Each worker's round trips begun during its start wait: (some worker's first operation came
    before it began, method, ms)."""
    began = min(min(p["first_query"].values()) for p in run.payloads if p["first_query"])
    return [(at > began, m, ms) for p in run.payloads for m, at, ms in p["control_plane"]["start_calls"]]


def test_a_workers_calls_take_control_loaded_once_some_workers_load_began_and_the_orchestrators_never() -> None:
    """Live, 4 × 2 on SQLite under poll: a worker's start bookkeeping (a heartbeat, its results
    row) took 2.2 ms median before any worker's load began and 3.4 ms once another's ran, and
    the simulator drew every call from one distribution. ``control_loaded`` is a worker's call
    once some worker's first operation has begun."""
    slow = {"type": "constant", "ms": 40.0}
    loaded = Profile.from_dict(TRUE_DICT | {"control_loaded": {"heartbeat_merge": slow, "status_read": slow}}, "l")
    seen = {True: 0, False: 0}
    for run in observed("poll", range(2), loaded):
        for was, method, ms in _start_calls(run):
            if method in ("upsert_heartbeat", "read_run"):
                seen[was] += 1
                assert (ms == pytest.approx(40.0)) if was else (ms <= 20.0), (was, method, ms)
        for p in run.payloads:  # after its own first operation, every such call is loaded
            after = decode(p["control_plane"]["loaded_latency_us"]["upsert_heartbeat"])
            assert after.get_min_value() == pytest.approx(40_000, rel=1e-3) and after.get_max_value() == pytest.approx(
                40_000, rel=1e-3
            )
        orchestrator = run.orchestrator["control_plane"]["latency_us"]
        assert decode(orchestrator["read_heartbeats"]).get_max_value() <= 15_100  # status reads: 5–15 ms
    assert seen[True] and seen[False]  # (both cases ran)


def test_calibrate_fits_control_loaded_apart_from_control_and_pools_old_results() -> None:
    two = {"heartbeat_merge": uniform(30, 50), "status_read": uniform(30, 50)}
    loaded = Profile.from_dict(TRUE_DICT | {"control_loaded": two}, "loaded")
    runs = observed("poll", range(4), loaded)
    fitted = Profile.from_dict(tomllib.loads(to_toml(fit(runs), ["sim"])), "fitted")
    for call_class in two:
        assert fitted.control_loaded[call_class].mean_s == pytest.approx(0.040, abs=0.003), call_class
    assert fitted.control["status_read"].mean_s == pytest.approx(0.010, abs=0.0015)  # the idle ones: 5–15 ms
    assert fitted.control["heartbeat_merge"].mean_s == pytest.approx(0.015, abs=0.002)  # 10–20 ms
    # results written before round trips were kept apart by load: one pool, no control_loaded
    old = [
        attrs.evolve(
            run,
            payloads=tuple(
                p | {"control_plane": {k: v for k, v in p["control_plane"].items() if k == "latency_us"}}
                for p in run.payloads
            ),
        )
        for run in runs
    ]
    pooled = fit(old)
    assert "control_loaded" not in pooled
    mean_ms = Profile.from_dict(pooled).control["heartbeat_merge"].mean_s * 1000
    assert 16 < mean_ms < 39  # between the idle 15 and the loaded 40


def test_control_loaded_naming_an_unknown_call_class_is_refused_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"control_loaded\.status_reed"):
        Profile.from_dict(TRUE_DICT | {"control_loaded": {"status_reed": uniform(1, 2)}}, "bad")
    with pytest.raises(ConfigError, match="control_loaded"):
        Profile.from_dict(TRUE_DICT | {"control_loaded": [uniform(1, 2)]}, "bad")


def test_a_workers_round_trips_are_kept_idle_before_its_wait_one_by_one_during_it_and_loaded_after() -> None:
    """``CountingControlPlane(by_load=True)``: the calls of the setup stage are idle (no load can
    run before the start wait); those of the wait are each kept with when they began (whether
    another worker's load ran then is known only beside the others' first operations), the
    oldest past ``START_CALLS`` counted idle; those after it, loaded. Each also in ``latency``."""
    import trio
    import trio.testing

    from startline.backends.memory import MemoryStore, TrioWallClock
    from startline.engine.counting import START_CALLS, CountingControlPlane
    from startline.simulate.backend import SimControlPlane

    ms = {"type": "constant", "ms": 2.0}
    profile = Profile.from_dict({"control": {"server_time": ms}}, "p")

    async def main() -> dict[str, Any]:
        inner = SimControlPlane(MemoryStore(TrioWallClock(0.0)), profile, seed=1, host="w000")
        counting = CountingControlPlane(inner, by_load=True)  # type: ignore[arg-type]
        await counting.server_time()
        counting.enter("waiting")
        for _ in range(START_CALLS + 3):
            await counting.server_time()
        counting.enter("running")
        await counting.server_time()
        await counting.server_time()
        return {"all": counting.latency_payload()} | counting.load_payload(lambda t: t + 100.0)

    got = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert decode(got["all"]["server_time"]).get_total_count() == 1 + START_CALLS + 3 + 2
    assert decode(got["idle_latency_us"]["server_time"]).get_total_count() == 1 + 3
    assert decode(got["loaded_latency_us"]["server_time"]).get_total_count() == 2
    calls = got["start_calls"]
    assert len(calls) == START_CALLS
    # the latest START_CALLS of the wait's, each 2 ms after the one before, on the given clock
    assert calls[0][0] == "server_time" and calls[0][1] == pytest.approx(100.0 + 0.002 * 4)
    assert [c[1] for c in calls] == pytest.approx([100.0 + 0.002 * (4 + k) for k in range(START_CALLS)])
    assert [c[2] for c in calls] == pytest.approx([2.0] * START_CALLS)


def test_the_read_that_found_the_start_under_load_is_start_reads_not_control_loadeds() -> None:
    """The slow read a polling worker finds its start by once another's load runs is fitted as
    ``start_read``; counted among the loaded status reads too, every loaded read would be drawn
    as slow as it (the detection p99 predicted 1.15× the live one)."""
    constant = {"type": "constant", "ms": 40.0}
    profile = Profile.from_dict(
        TRUE_DICT | {"control_loaded": {"status_read": constant}, "start_read": {"type": "constant", "ms": 200.0}}, "p"
    )
    runs = observed("poll", range(4), profile)
    assert any(was for run in runs for was, _ in _loaded_reads(run))  # (some read found the start under load)
    fitted = Profile.from_dict(fit(runs), "fitted")
    assert fitted.start_read is not None and fitted.start_read.mean_s == pytest.approx(0.200, rel=1e-3)
    assert fitted.control_loaded["status_read"].worst_s == pytest.approx(0.040, rel=1e-3)


def test_the_read_that_found_the_start_under_load_takes_start_read_not_the_larger_of_it_and_control_loaded() -> None:
    """``start_read`` is fitted to those reads alone: drawn as the larger of it and the ordinary
    loaded read, the reads that find a polled start came out slower than any fitted (the
    detection p99 predicted 1.20× the live one). The ordinary draw still sets where in the
    round trip the read looked (here half-way: 20 ms), which the read cannot end before."""
    profile = Profile.from_dict(
        TRUE_DICT
        | {
            "control_loaded": {"status_read": {"type": "constant", "ms": 40.0}},
            "start_read": {"type": "constant", "ms": 30.0},
        },
        "p",
    )
    found = [read for run in observed("poll", range(3), profile) for was, read in _loaded_reads(run) if was]
    assert found and found == pytest.approx([30.0] * len(found))
    early = attrs.evolve(profile, start_read=Latency.parse({"type": "constant", "ms": 5.0}, "start_read"))
    found = [read for run in observed("poll", range(3), early) for was, read in _loaded_reads(run) if was]
    assert found and found == pytest.approx([20.0] * len(found))


def histogram_ms(values: list[float]) -> HdrHistogram:
    h = new_histogram()
    for v in values:
        h.record_value(round(v * 1000))
    return h


@given(
    st.lists(st.floats(0.1, 0.9), min_size=1, max_size=KEPT - 1),
    st.lists(st.floats(1.5, 20.0), min_size=1, max_size=4),
)
def test_a_distribution_fitted_from_few_observations_keeps_every_one_of_them(common, rare) -> None:
    """Live, 240 scheduled runs: 7 of a last place's 240 workers woke 1.9–17 ms late. Fitted as
    200 quantile points, the highest of the 240 and another of the 7 fell between the points (a
    late-worker share of 2.5 % where the runs had 2.9 %). From at most ``KEPT`` observations
    every one is kept, so the model draws its rare tail as often as the runs had it."""
    values = common + rare
    fitted = empirical(histogram_ms(values))["samples_ms"]
    assert len(fitted) == len(values)
    late = [v for v in fitted if v >= 1.49]  # (kept at the histogram's precision: 3 digits)
    assert len(late) == len(rare)
    assert max(fitted) == pytest.approx(max(values), rel=1e-3)


def test_a_distribution_fitted_from_many_observations_is_its_quantile_points() -> None:
    values = [0.001 * i for i in range(1, KEPT + 2)]
    fitted = empirical(histogram_ms(values))["samples_ms"]
    assert len(fitted) == QUANTILES
    assert fitted == sorted(fitted)
    assert fitted[QUANTILES // 2] == pytest.approx(statistics.median(values), rel=0.01)
