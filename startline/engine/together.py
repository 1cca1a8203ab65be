"""Run an orchestrator and its workers as tasks of one Trio nursery (in-process and simulated runs)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import trio

from startline.engine.model import ORCHESTRATOR
from startline.engine.orchestrator import Orchestrator
from startline.engine.ports import (
    ControlPlane,
    ControlPlaneConflict,
    ControlPlaneError,
    Runtime,
    Target,
    TrioRuntime,
    WallClock,
)
from startline.engine.scenario import Scenario
from startline.engine.worker import Worker, WorkerRefused


def make_workers(
    scenario: Scenario,
    run_id: str,
    target: Target,
    control: Callable[[str], ControlPlane],
    clock: Callable[[str], WallClock],
    runtime: Callable[[str], Runtime] = lambda _w: TrioRuntime(),
    round_trips: bool = True,
) -> tuple[Worker, ...]:
    """``scenario.workers`` workers named w000, w001, …, each with its own control-plane handle,
    clock and runtime (``round_trips``: see ``Worker.round_trips``)."""
    return tuple(
        # one task per id: the incarnation is named, not drawn, so that runs are reproducible
        Worker(
            control(w),
            target,
            clock(w),
            run_id,
            w,
            index=i,
            scenario=scenario,
            incarnation=f"{run_id}/{w}",
            runtime=runtime(w),
            round_trips=round_trips,
        )
        for i, w in enumerate(worker_ids(scenario))
    )


def worker_id(index: int) -> str:
    """The id of worker ``index`` when startline names the workers: w000, w001, …"""
    return f"w{index:03d}"


def worker_ids(scenario: Scenario) -> list[str]:
    return [worker_id(i) for i in range(scenario.workers)]


@attrs.frozen
class Ended:
    """What a run of ``run_together`` leaves: the summary, each worker's own results (what a
    worker process writes to its ``--results`` file) for the workers that did not crash, and the
    first orchestrator's own results (what it writes to orchestrator.json)."""

    summary: dict[str, Any]
    payloads: Mapping[str, dict[str, Any]]
    orchestrator: Mapping[str, Any] = attrs.field(factory=dict)


async def run_together(
    orchestrator: Orchestrator,
    workers: Sequence[Worker],
    crashes: Mapping[str, float] | None = None,
    restart: Callable[[], Orchestrator] | None = None,
    restart_after_s: float = 0.0,
    start_delays: Mapping[str, float] | None = None,
) -> Ended:
    """Create the run, start every worker, orchestrate, return the summary. ``crashes`` (worker id or
    ``"orchestrator"`` → trio time) stops that participant dead at that instant, writing
    nothing more: a simulated host crash. A crashed orchestrator is replaced ``restart_after_s``
    later by ``restart()``, which fails the orphaned run cleanly (see ``Orchestrator.prepare``);
    it retries every heartbeat while the old one still looks alive, or the control plane is out.
    ``start_delays`` (worker id → seconds): a worker begins that long after the run exists, as a
    worker process starts a while after its launcher (interpreter, imports, connecting)."""
    crashes = crashes or {}
    start_delays = start_delays or {}
    summary: dict[str, Any] = {}

    async def orchestrate() -> None:
        with trio.move_on_at(crashes.get(ORCHESTRATOR, math.inf)):
            summary.update(await orchestrator.run())
            if orchestrator.forced:  # a second Ctrl-C ends the workers too
                for w in workers:
                    w.force_stop()
            return
        if restart is None:
            return
        await trio.sleep(restart_after_s)
        while True:
            successor = restart()
            try:
                summary.update(await successor.run())
                return
            except ControlPlaneConflict:
                if successor.adopted is None:
                    raise
                if successor.adopted.status.terminal:  # it had finished all but the summary
                    return
            except ControlPlaneError:  # it could not even reach the run: the operator tries again
                pass
            await trio.sleep(successor.scenario.heartbeat_s)

    payloads: dict[str, dict[str, Any]] = {}

    async def work(w: Worker) -> None:
        with trio.move_on_at(crashes.get(w.worker_id, math.inf)):
            # as a launcher does: the run first, then its workers (set however ``run`` ends)
            await orchestrator.wait_prepared()
            w.launched_at = w.clock.now()
            await trio.sleep(start_delays.get(w.worker_id, 0.0))
            try:
                payloads[w.worker_id] = await w.run()
            except WorkerRefused:  # the run ended before this worker joined: it has nothing to say
                pass

    async with trio.open_nursery() as nursery:
        for w in workers:
            nursery.start_soon(work, w)
        nursery.start_soon(orchestrate)
    return Ended(summary, payloads, orchestrator.own_results())
