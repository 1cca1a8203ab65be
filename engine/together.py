"""Run an orchestrator and its workers as tasks of one Trio nursery (in-process and simulated runs)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import trio

from engine.orchestrator import Orchestrator
from engine.ports import ControlPlane, Target, WallClock
from engine.scenario import Scenario
from engine.worker import Worker


def make_workers(
    scenario: Scenario,
    run_id: str,
    target: Target,
    control: Callable[[str], ControlPlane],
    clock: Callable[[str], WallClock],
) -> tuple[Worker, ...]:
    """``scenario.workers`` workers named w000, w001, …, each with its own control-plane handle and clock."""
    ids = [f"w{i:03d}" for i in range(scenario.workers)]
    return tuple(Worker(control(w), target, clock(w), run_id, w, index=i, scenario=scenario) for i, w in enumerate(ids))


async def run_together(
    orchestrator: Orchestrator, workers: Sequence[Worker], crashes: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """Start every worker, orchestrate, return the summary. ``crashes`` (worker id → trio time)
    stops a worker dead at that instant, writing nothing more: a simulated host crash."""
    summary: dict[str, Any] = {}

    async def orchestrate() -> None:
        summary.update(await orchestrator.run())

    async def work(w: Worker) -> None:
        with trio.move_on_at((crashes or {}).get(w.worker_id, math.inf)):
            await w.run()

    async with trio.open_nursery() as nursery:
        for w in workers:
            nursery.start_soon(work, w)
        nursery.start_soon(orchestrate)
    return summary
