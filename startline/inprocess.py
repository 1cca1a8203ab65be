"""Run an orchestrator and its workers as tasks of one ``trio.run`` on the memory backend."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from startline.backends.memory import CallableTarget, MemoryControlPlane, MemoryStore, TrioWallClock
from startline.engine.determinism import on_virtual_time
from startline.engine.model import ORCHESTRATOR
from startline.engine.orchestrator import Orchestrator
from startline.engine.ports import ControlPlane, Target, WallClock
from startline.engine.scenario import Scenario
from startline.engine.together import make_workers, run_together
from startline.engine.worker import Worker


@attrs.frozen
class InProcessRun:
    """What an in-process run leaves behind: the summary, each worker's own results, and the
    live objects (read them through their ``statistics()``)."""

    summary: dict[str, Any]
    payloads: Mapping[str, dict[str, Any]]
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
    store: MemoryStore | None = None,
    control: Callable[[str], ControlPlane] | None = None,
    watch: Callable[[Orchestrator], Awaitable[None]] | None = None,
) -> InProcessRun:
    """Start ``scenario.workers`` worker tasks and orchestrate them, all in this ``trio.run``.

    ``clock`` is the control plane's (and orchestrator's) wall clock; each worker may
    have its own in ``worker_clocks``. By default all follow ``time.time()``. The control plane
    is a ``MemoryStore`` (``store``, or a new one); ``control`` gives each participant (named
    ``"orchestrator"``, ``"w000"``, …) its own handle on a control plane — by default a
    ``MemoryControlPlane`` on the store; pass your own to wrap it or to use another backend.
    ``watch`` runs beside the run until it ends (the CLI's signal handler: Ctrl-C stops the run).
    """
    if on_virtual_time():
        # On virtual time instants coincide exactly (a poll and an append at one instant): the
        # order of tasks that wake together must not depend on the process.
        from startline.engine.determinism import scheduler_random

        scheduler_random().seed(scenario.seed)
    clock = clock or TrioWallClock.aligned_to_system()
    memory = store if store is not None else MemoryStore(clock)
    handle = control or (lambda _participant: MemoryControlPlane(memory))
    target = target or CallableTarget.for_scenario(scenario)
    run_id = run_id or scenario.name
    orchestrator = Orchestrator(handle(ORCHESTRATOR), clock, scenario, run_id, out)
    workers = make_workers(
        scenario,
        run_id,
        target,
        handle,
        lambda w: worker_clocks[int(w[1:])] if worker_clocks else clock,
    )
    async with trio.open_nursery() as nursery:
        if watch is not None:
            nursery.start_soon(watch, orchestrator)
        ended = await run_together(orchestrator, workers)
        nursery.cancel_scope.cancel()
    return InProcessRun(ended.summary, ended.payloads, orchestrator, workers, memory)


def run_in_process(scenario: Scenario, **kwargs: Any) -> dict[str, Any]:
    """Blocking form of ``run_in_process_async``: runs Trio and returns the summary."""
    return trio.run(functools.partial(run_in_process_async, scenario, **kwargs)).summary
