"""Engine overhead: ops/s of the full engine on a no-op target ÷ ops/s of a bare Trio loop
doing the same await and the same HDR recording (counted by bucket, folded once a second), side
by side in one process.

    .venv/bin/python benchmarks/engine_overhead.py [--seconds 3] [--reps 3] [--connections 1 100 1000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Awaitable, Callable

import trio

from startline.backends.memory.ops import noop
from startline.engine.connection import loop_clock
from startline.engine.metrics import bucket_index, fold_counts, new_histogram
from startline.engine.scenario import Scenario
from startline.inprocess import run_in_process_async


async def bare_loop(
    connections: int, seconds: float, operation: Callable[[], Awaitable[None]] = noop, per_connection: int = -1
) -> float:
    """The floor: N tasks that await the same no-op operation and record its latency as the
    engine does — counted by HDR bucket index in a dict of the task's own, folded into one HDR
    histogram once a second — reading the run's clock as the engine does (``loop_clock``).
    (``operation``: another to await, for ``connection_memory.py``; ``per_connection``: each
    task's budget of operations, for ``engine_instructions.py`` on a clock that does not move.)"""
    hist = new_histogram()
    count = 0
    now, _ = loop_clock()  # the engine's way of reading the run's clock
    end = now() + seconds

    async def one() -> None:
        nonlocal count
        counts: dict[int, int] = {}
        fold_at = now() + 1.0
        done = 0
        while now() < end and done != per_connection:
            t0 = now()
            await operation()
            t1 = now()
            if t1 >= fold_at:
                fold_counts(hist, counts)
                fold_at += 1.0
            us = int((t1 - t0) * 1e6 + 0.5)
            key = (1 if us < 1 else us) if us < 2048 else bucket_index(us)
            counts[key] = counts.get(key, 0) + 1
            count += 1
            done += 1
        fold_counts(hist, counts)

    async with trio.open_nursery() as n:
        for _ in range(connections):
            n.start_soon(one)
    return count / seconds


MAX_START_LAG_MS = 20.0


TWO_OPERATIONS = (
    {"name": "a", "weight": 3, "call": "startline.backends.memory.ops:noop"},
    {"name": "b", "weight": 1, "call": "startline.backends.memory.ops:noop"},
)


async def engine(connections: int, seconds: float, operations: tuple[dict, ...] = TWO_OPERATIONS) -> float:
    """The full engine: orchestrator, one worker, mix choice, phase attribution, HDR recording."""
    sc = Scenario.from_dict(
        {
            "name": "overhead",
            "workers": 1,
            "connections_per_worker": connections,
            "warmup_s": 0.0,
            "measurement_s": seconds,
            "operations": list(operations),
            # polled every 50 ms with a 300 ms lead: the start lands at the beginning of the window
            "start": {"strategy": "scheduled", "lead_ms": 300, "poll_interval_ms": 50},
        }
    )
    result = await run_in_process_async(sc)
    lag = result.summary["start"]["lag_ms"]["max"]
    # a late start shortens the window: start-path cost would pass for hot-path cost. The last of
    # N connections begins one round of the N first operations after the instant (1,000 of them:
    # 24–29 ms on a slow day): allowed up to 1 % of the window.
    allowed = max(MAX_START_LAG_MS, 10.0 * seconds)
    if lag > allowed:
        raise LateStart(f"start lag {lag:.1f} ms > {allowed:g} ms: this run measures the start, not the hot path")
    return result.summary["phases"]["MEASUREMENT"]["ops"] / seconds


class LateStart(Exception):
    """The engine's run began too late to measure the hot path (the machine was busy at its start)."""


def engine_run(
    connections: int, seconds: float, tries: int = 3, main: Callable[..., Awaitable[float]] = engine
) -> float:
    """``main`` (``engine`` or one like it), run again (said on stderr) when its start was late,
    up to ``tries`` times."""
    attempt = 1
    while True:
        try:
            return trio.run(main, connections, seconds)
        except LateStart as exc:
            if attempt == tries:
                raise SystemExit(f"{exc} ({tries} times)") from None
            print(f"{exc}: run again", file=sys.stderr, flush=True)
            attempt += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--connections", type=int, nargs="+", default=[1, 100, 1000])
    args = ap.parse_args()
    rows = []
    for n in args.connections:
        eng, bare = [], []
        for _ in range(args.reps):  # interleaved, so machine noise hits both alike
            bare.append(trio.run(bare_loop, n, args.seconds))
            eng.append(engine_run(n, args.seconds))
        e, b = statistics.median(eng), statistics.median(bare)
        rows.append({"connections": n, "engine_ops_s": round(e), "bare_ops_s": round(b), "ratio": round(e / b, 3)})
        print(f"{n:>6} connections: engine {e:>10,.0f} ops/s  bare {b:>10,.0f} ops/s  ratio {e / b:.3f}", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
