"""What grows with connections, step by step: each connection task's steps timed by a Trio
instrument (the engine of ``engine_overhead.py`` against its bare loop), and the bare loop with
one of the engine's per-connection pieces added at a time (ops/s ÷ the plain bare loop's),
at each connection count.

    .venv/bin/python benchmarks/engine_steps.py [--connections 100 1000] [--reps 5] [--seconds 2]

A piece whose cost grows with connections (its objects falling out of the CPU's caches) shows
a lower ratio at 1,000 than at 100.
"""

from __future__ import annotations

import argparse
import bisect
import math
import random
import statistics
import sys
import time
from pathlib import Path

import attrs
import trio

sys.path.insert(0, str(Path(__file__).parent))

import engine_overhead

from startline.backends.memory.ops import noop
from startline.engine.connection import loop_clock
from startline.engine.metrics import bucket_index, fold_counts, new_histogram

PIECES = {
    "draw": "a per-connection Random's draw and a bisect choose one of two operations",
    "plan": "the chosen operation's tuple, from a per-connection list, unpacked",
    "tally": "a per-connection object's deadline read and counter written",
    "frame": "35 more locals in the connection's frame",
    "wrap": "one more frame above the connection's loop",
}


class StepTimes(trio.abc.Instrument):
    """Each step of a task whose root coroutine's name ends with ``suffix``, timed."""

    def __init__(self, suffix: str) -> None:
        self.suffix, self.steps, self._t0 = suffix, [], 0.0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._t0 = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.coro.cr_code.co_qualname.endswith(self.suffix):
            self.steps.append(time.perf_counter() - self._t0)


def steps(what: str, connections: int, seconds: float) -> dict[str, float]:
    """Step-time percentiles (µs) of the connection tasks of one run of ``what`` (engine, bare)."""
    inst = StepTimes("Connections._closed_loop" if what == "engine" else ".one")

    async def main() -> None:
        trio.lowlevel.add_instrument(inst)
        if what == "engine":
            await engine_overhead.engine(connections, seconds)
        else:
            await engine_overhead.bare_loop(connections, seconds)

    trio.run(main)
    d = sorted(inst.steps)
    return {f"p{p}": d[int(p / 100 * (len(d) - 1))] * 1e6 for p in (10, 50, 90)}


@attrs.define(eq=False)
class _Tally:
    held: int = 0
    due: float = -math.inf


async def bare_with(connections: int, seconds: float, pieces: frozenset[str]) -> float:
    """``engine_overhead.bare_loop`` with ``pieces`` (of ``PIECES``) added to each connection."""
    hist, count = new_histogram(), 0
    now, _ = loop_clock()
    end = now() + seconds
    draw, plan_, tally_ = "draw" in pieces, "plan" in pieces, "tally" in pieces

    async def one(slot: int) -> None:
        nonlocal count
        counts: list[dict[int, int]] = [{}, {}]
        uniform = random.Random(slot).random
        bounds = (0.75 + slot * 1e-9, math.inf)
        plan = [(object(), noop, False), (object(), noop, False)]
        tally = _Tally(due=now() + 1e-3)
        later = end + slot * 1e-12
        if "frame" in pieces:  # (locals the loop never reads: they only widen its frame)
            x00 = x01 = x02 = x03 = x04 = x05 = x06 = x07 = x08 = x09 = x10 = x11 = slot  # noqa: F841
            x12 = x13 = x14 = x15 = x16 = x17 = x18 = x19 = x20 = x21 = x22 = x23 = slot  # noqa: F841
            x24 = x25 = x26 = x27 = x28 = x29 = x30 = x31 = x32 = x33 = x34 = slot  # noqa: F841
        fold_at = now() + 1.0
        while now() < end:
            i = bisect.bisect_right(bounds, uniform()) if draw else 0
            if plan_:
                _op, _call, _drawn = plan[i]
            t0 = now()
            if tally_ and t0 >= tally.due:
                tally.due = later
            await noop()
            t1 = now()
            if t1 >= fold_at:
                for c in counts:
                    fold_counts(hist, c)
                fold_at += 1.0
            us = int((t1 - t0) * 1e6 + 0.5)
            key = (1 if us < 1 else us) if us < 2048 else bucket_index(us)
            held = counts[i]
            held[key] = held.get(key, 0) + 1
            if tally_:
                tally.held += 1
            count += 1

    async def wrapped(slot: int) -> None:
        await one(slot)

    async def task(slot: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope():  # each connection in its own scope, as the engine's pool does
            task_status.started()
            await (wrapped(slot) if "wrap" in pieces else one(slot))

    async with trio.open_nursery() as n:
        for slot in range(connections):
            await n.start(task, slot)
    return count / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    for n in args.connections:
        for what in ("bare", "engine"):
            s = steps(what, n, args.seconds)
            print(f"{n:>5} connections, {what:>6}: step µs p10 {s['p10']:.2f}  p50 {s['p50']:.2f}  p90 {s['p90']:.2f}")
    # each piece alone, then together: a working set that crosses a cache's size shows only whole
    variants = [frozenset(), *(frozenset({p}) for p in PIECES), frozenset({"draw", "plan", "tally"}), frozenset(PIECES)]
    for n in args.connections:
        ops: dict[frozenset[str], list[float]] = {v: [] for v in variants}
        for _ in range(args.reps):  # interleaved
            for v in variants:
                ops[v].append(trio.run(bare_with, n, args.seconds, v))
        base = statistics.median(ops[frozenset()])
        ratios = ", ".join(f"{'+'.join(sorted(v))}: {statistics.median(r) / base:.3f}" for v, r in ops.items() if v)
        print(f"{n:>5} connections, bare loop {base:,.0f} ops/s; with {ratios}", flush=True)


if __name__ == "__main__":
    main()
