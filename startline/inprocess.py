"""Run an orchestrator and its workers as tasks of one ``trio.run`` on the memory backend."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from startline.backends.memory import CallableTarget, MemoryControlPlane, MemoryStore, TrioWallClock
from startline.engine.orchestrator import Orchestrator
from startline.engine.ports import Target, WallClock
from startline.engine.scenario import Scenario
from startline.engine.together import make_workers, run_together
from startline.engine.worker import Worker


@attrs.frozen
class InProcessRun:
    """What an in-process run leaves behind: the summary and the live objects, for inspection."""

    summary: dict[str, Any]
    orchestrator: Orchestrator
    workers: tuple[Worker, ...]
    store: MemoryStore


async def run_in_process_async(
    scenario: Scenario,
    *,
    target: Target | None = None,
    out: Path | None = None,
    run_id: str | None = None,
    clock: WallClock | None = None,
    worker_clocks: Sequence[WallClock] | None = None,
    watch: Callable[[Orchestrator], Awaitable[None]] | None = None,
) -> InProcessRun:
    """Create a memory control plane, start ``scenario.workers`` worker tasks and orchestrate.

    ``clock`` is the control plane's (and orchestrator's) wall clock; each worker may
    have its own in ``worker_clocks``. By default all follow ``time.time()``. ``watch`` runs
    beside the run until it ends (the CLI's signal handler: Ctrl-C stops the run).
    """
    clock = clock or TrioWallClock.aligned_to_system()
    store = MemoryStore(clock)
    target = target or CallableTarget.for_scenario(scenario)
    run_id = run_id or scenario.name
    orchestrator = Orchestrator(MemoryControlPlane(store), clock, scenario, run_id, out)
    workers = make_workers(
        scenario,
        run_id,
        target,
        lambda _w: MemoryControlPlane(store),
        lambda w: worker_clocks[int(w[1:])] if worker_clocks else clock,
    )
    async with trio.open_nursery() as nursery:
        if watch is not None:
            nursery.start_soon(watch, orchestrator)
        summary = await run_together(orchestrator, workers)
        nursery.cancel_scope.cancel()
    return InProcessRun(summary, orchestrator, workers, store)


def run_in_process(scenario: Scenario, **kwargs: Any) -> dict[str, Any]:
    """Blocking form of ``run_in_process_async``: runs Trio and returns the summary."""
    return trio.run(functools.partial(run_in_process_async, scenario, **kwargs)).summary
