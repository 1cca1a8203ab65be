"""Where the engine's distance from the bare loop lies: around its connection loop or in it.
Four runs side by side, interleaved, at one connection count (ops/s ÷ the bare loop's):

- ``bare``: ``engine_overhead.bare_loop``;
- ``engine``: ``engine_overhead.engine`` (two operations, weights 3 : 1);
- ``one-op``: the engine with one operation (no mix draw, one count dict, one plan entry);
- ``bare-in-engine``: the engine with each connection's loop replaced by the bare loop's (the
  same orchestrator, worker, gate, tasks and windows; MEASUREMENT counted as the engine counts it).

``bare-in-engine`` ÷ ``bare`` is what the engine around the loop costs; ``engine`` ÷
``bare-in-engine`` what the loop's own lines cost.

    .venv/bin/python benchmarks/engine_split.py [--connections 1000] [--reps 7] [--seconds 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).parent))

import engine_overhead

from startline.backends.memory.ops import noop
from startline.engine import connection
from startline.engine.metrics import bucket_index, fold_counts, new_histogram


async def _bare_connection(self: connection.Connections, slot: int, session: Any, lease: Any) -> None:
    """``bare_loop``'s task as a connection's loop of the real engine, the root of its task
    holding its pool lease as the engine's loop does: it waits at the gate, marks its first
    operation, and counts an operation as MEASUREMENT counts it (began at or after the
    measurement's start, ended before the cool-down's) into ``_BARE_COUNT``. Its loop repeats
    ``bare_loop``'s lines rather than calling a shared function: a call more per operation would
    be a cost the bare loop does not pay."""
    with lease:
        windows = await self.gate.armed()
        now, offset = connection.loop_clock()
        end, measure, cooldown = windows.end - offset, windows.measure - offset, windows.cooldown - offset
        hist, counts, measured = new_histogram(), {}, 0
        if place := await self.gate.released(slot):
            await self.left_gate(place)
        self._began_first(slot, now() + offset)
        fold_at = now() + 1.0
        while (t0 := now()) < end:
            await noop()
            t1 = now()
            if t1 >= fold_at:
                fold_counts(hist, counts)
                fold_at += 1.0
            us = int((t1 - t0) * 1e6 + 0.5)
            key = (1 if us < 1 else us) if us < 2048 else bucket_index(us)
            counts[key] = counts.get(key, 0) + 1
            if measure <= t0 and t1 < cooldown:
                measured += 1
        fold_counts(hist, counts)
        _BARE_COUNT[0] += measured
        self._settled_first(slot)


_BARE_COUNT = [0]


@contextmanager
def _loop_replaced() -> Iterator[None]:
    original = connection.Connections._closed_loop
    connection.Connections._closed_loop = _bare_connection  # type: ignore[method-assign]
    try:
        yield
    finally:
        connection.Connections._closed_loop = original  # type: ignore[method-assign]


async def bare_in_engine(connections: int, seconds: float) -> float:
    _BARE_COUNT[0] = 0
    with _loop_replaced():
        await engine_overhead.engine(connections, seconds)
    return _BARE_COUNT[0] / seconds


async def one_op(connections: int, seconds: float) -> float:
    return await engine_overhead.engine(
        connections, seconds, ({"name": "a", "call": "startline.backends.memory.ops:noop"},)
    )


RUNS = {
    "bare": lambda n, s: trio.run(engine_overhead.bare_loop, n, s),
    "engine": engine_overhead.engine_run,
    "one-op": lambda n, s: engine_overhead.engine_run(n, s, main=one_op),
    "bare-in-engine": lambda n, s: engine_overhead.engine_run(n, s, main=bare_in_engine),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    ops: dict[str, list[float]] = {name: [] for name in RUNS}
    for _ in range(args.reps):  # interleaved: the machine's drift hits every run alike
        for name, run in RUNS.items():
            ops[name].append(run(args.connections, args.seconds))
    print(f"{args.connections} connections, {args.reps} interleaved rounds of {args.seconds:g} s")
    print("ratio to the bare loop of the same round, min / median / max:")
    for name, values in ops.items():
        pairs = sorted(v / b for v, b in zip(values, ops["bare"], strict=True))
        print(
            f"  {name:>15}: {statistics.median(values):>10,.0f} ops/s  "
            f"{pairs[0]:.3f} / {statistics.median(pairs):.3f} / {pairs[-1]:.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
