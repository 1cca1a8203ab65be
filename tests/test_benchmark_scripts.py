"""The benchmarks that stand in for parts of the engine still fit it: each runs, briefly, and
counts what it claims to (issue 25: a connection's loop became its task's root, and two of
them had to follow). Behaviour only; their figures live in benchmarks/RESULTS.md."""

from __future__ import annotations

import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import engine_split
import engine_steps


def test_engine_splits_bare_loop_runs_as_the_engines_connection_loop_and_counts_its_operations() -> None:
    assert trio.run(engine_split.bare_in_engine, 3, 0.2) > 0


def test_engine_steps_finds_the_engines_connection_tasks_by_name() -> None:
    times = engine_steps.steps("engine", 3, 0.2)
    assert set(times) == {"p10", "p50", "p90"} and all(t > 0 for t in times.values())
