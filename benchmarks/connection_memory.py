"""What a connection holds: Python's allocations (``tracemalloc``) per connection of the engine,
against the bare loop's tasks, mid-run.

Each run holds N connections whose operation sleeps 100 ms, on Trio's ``MockClock``, and is
measured 5 s (virtual) into its MEASUREMENT; (bytes at 1,000 connections − bytes at 100) ÷ 900
is one connection's share, the process's own start-up cancelled out. The engine's figure is for
three workloads: two operations (3 : 1) without parameters, one operation without, two with an
``int`` parameter.

    .venv/bin/python benchmarks/connection_memory.py

At 1,000 connections, what each connection touches per operation no longer fits in a core's
L2; what it holds beside that spreads the rest over more pages. Tracemalloc counts Python's
allocations (objects, their frames), not the interpreter's own.
"""

from __future__ import annotations

import sys
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).parent))

import engine_overhead

from startline.engine.scenario import Scenario
from startline.inprocess import run_in_process_async

SMALL, LARGE = 100, 1000
MEASURED_AT_S = 5.0
TICK = "connection_memory:tick"  # this module, imported or run (main() names it so)
ONE = {"name": "a", "call": TICK}
WORKLOADS: dict[str, list[dict[str, Any]]] = {
    "two operations": [{**ONE, "weight": 3}, {**ONE, "name": "b", "weight": 1}],
    "one operation": [ONE],
    "two operations, a parameter each": [
        {**ONE, "weight": 3, "call": f"{TICK}_with", "params": {"k": {"type": "int", "min": 1, "max": 1000}}},
        {**ONE, "name": "b", "weight": 1, "call": f"{TICK}_with", "params": {"k": {"type": "int", "min": 1, "max": 9}}},
    ],
}


async def tick() -> None:
    await trio.sleep(0.1)


async def tick_with(k: int) -> None:
    await trio.sleep(0.1)


async def _measured(run: Callable[[], Awaitable[Any]]) -> int:
    """Python's allocated bytes ``MEASURED_AT_S`` into ``run``."""
    got: list[int] = []

    async def watch() -> None:
        await trio.sleep(MEASURED_AT_S)
        got.append(tracemalloc.get_traced_memory()[0])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await run()
    return got[0]


async def engine(connections: int, operations: list[dict[str, Any]]) -> int:
    sc = Scenario.from_dict(
        {
            "name": "memory",
            "workers": 1,
            "connections_per_worker": connections,
            "warmup_s": 0.0,
            "measurement_s": 2 * MEASURED_AT_S,
            "operations": operations,
            "start": {"strategy": "scheduled", "lead_ms": 300, "poll_interval_ms": 50},
        }
    )
    return await _measured(lambda: run_in_process_async(sc))


async def bare(connections: int, _operations: list[dict[str, Any]]) -> int:
    """``engine_overhead.bare_loop``'s tasks, awaiting the same 100 ms operation."""
    return await _measured(lambda: engine_overhead.bare_loop(connections, 2 * MEASURED_AT_S, tick))


def per_connection(main: Callable[[int, list[dict[str, Any]]], Awaitable[int]], ops: list[dict[str, Any]]) -> float:
    held = {}
    for n in (SMALL, LARGE):
        tracemalloc.start()
        held[n] = trio.run(main, n, ops, clock=trio.testing.MockClock(autojump_threshold=0))
        tracemalloc.stop()
    return (held[LARGE] - held[SMALL]) / (LARGE - SMALL)


def main() -> None:
    sys.modules.setdefault("connection_memory", sys.modules[__name__])  # the operations' module
    print("bytes per connection, mid-run (tracemalloc):")
    print(f"  {'bare loop':>34}: {per_connection(bare, []):>7,.0f}", flush=True)
    for name, ops in WORKLOADS.items():
        print(f"  {'engine, ' + name:>34}: {per_connection(engine, ops):>7,.0f}", flush=True)


if __name__ == "__main__":
    main()
