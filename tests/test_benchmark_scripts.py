"""The benchmarks that stand in for parts of the engine still fit it: each runs, briefly, and
counts what it claims to (issue 25: a connection's loop became its task's root, and two of
them had to follow). Behaviour only; their figures live in benchmarks/RESULTS.md."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import engine_split
import engine_steps
import fidelity_tail

from startline.simulate.models import Profile


def test_engine_splits_bare_loop_runs_as_the_engines_connection_loop_and_counts_its_operations() -> None:
    assert trio.run(engine_split.bare_in_engine, 3, 0.2) > 0


def test_engine_steps_finds_the_engines_connection_tasks_by_name() -> None:
    times = engine_steps.steps("engine", 3, 0.2)
    assert set(times) == {"p10", "p50", "p90"} and all(t > 0 for t in times.values())


def test_fidelity_tails_expected_share_is_the_late_places_share_of_lags() -> None:
    """Of two workers the last along the release wakes 2 ms late, the first 0.1; a second
    connection 0.3 ms after its first: the lags beyond 1.5 ms are the last worker's two, half."""
    constant = [{"type": "constant", "ms": ms} for ms in (0.1, 2.0, 0.3)]
    profile = Profile.from_dict(
        {"release_queue": {"0": constant[0], "1": constant[1]}, "connection_step": constant[2]}, "two places"
    )
    assert fidelity_tail.expected_share(profile, 2, 2, 1.5, 10) == pytest.approx(0.5)
    assert fidelity_tail.expected_share(profile, 2, 2, 0.35, 10) == pytest.approx(0.75)  # the first's second too
