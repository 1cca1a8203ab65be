"""The engine's cost per operation in instructions, not seconds: a figure the host's noise does not
move, for before/after comparisons of the hot loop on a shared machine (where ``engine_overhead``'s
ratios scatter by ±10 % from one run to the next).

Each count runs the full engine (orchestrator, one worker, N connections, the no-op target; two
operations 3 : 1, or one) on Trio's ``MockClock``: a no-op never advances virtual time, so nothing
periodic (snapshots, heartbeats, polls) runs between the operations, and two runs differ by
a few instructions an operation (Trio shuffles the tasks that wake together). Under
``valgrind --tool=cachegrind`` (``--cache-sim=no``), once with 20 and once with 148 operations
per connection: (instructions of the second − of the first) ÷ (128 × N) is the cost of one
operation, start-up and summary cancelled out. (128: twice the operations a connection draws
its mix ahead, ``connection.PICKS``, so that the second run draws its lists as often as a
long run does, two more; with 140, a list of 256 drawn once in both runs would not count at
all.) Instructions are
not time (a cache miss costs more than an add), and on ``MockClock`` each clock reading is a
Python call where the real clock's is ``perf_counter``; the figure is for comparing one loop
with another, and ``engine_overhead.py`` stays the measure of speed.

``--caches`` adds cachegrind's cache simulation, with a last level of 1 MiB (one core's L2 on
this host): per operation, the data reads and writes that missed the first level (32 KiB) and
that missed the last. At 1,000 connections a connection's state no longer stays in a core's L2
from one of its operations to the next, so the lines an operation misses there are nearly the
distinct lines of its connection's own objects it touches — what grows with connections, where
the instructions do not. The bare loop (``engine_overhead.bare_loop``, with a budget of
operations per task) is counted beside the engine.

    .venv/bin/python benchmarks/engine_instructions.py [--connections 1000] [--caches] [--tree /tmp/before ...]

``--tree`` adds another checkout (``git worktree add /tmp/before REV``), run through
``other_tree.py`` with its own package. Needs ``valgrind`` (``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve()
FEW, MANY = 20, 148
TWO_OPERATIONS = (
    {"name": "a", "weight": 3, "call": "startline.backends.memory.ops:noop"},
    {"name": "b", "weight": 1, "call": "startline.backends.memory.ops:noop"},
)
MIXES = {"two operations": TWO_OPERATIONS, "one operation": TWO_OPERATIONS[:1]}
BARE = "the bare loop"
LAST_LEVEL = "--LL=1048576,16,64"
"""The simulated last level: 1 MiB, 16-way, 64-byte lines (this host's L2 per core)."""


def child(mix: str, connections: int, per_connection: int) -> None:
    """Run the engine (or the bare loop) once on ``MockClock`` (under valgrind, in a process of
    its own)."""
    import trio
    import trio.testing

    if mix == BARE:
        sys.path.insert(0, str(HERE.parent))
        from engine_overhead import bare_loop

        counted = functools.partial(bare_loop, per_connection=per_connection)
        ops = trio.run(counted, connections, 1.0, clock=trio.testing.MockClock(autojump_threshold=0))
        if ops != connections * per_connection:
            raise SystemExit(f"the bare loop ran {ops:g} operations, not {connections * per_connection}")
        return

    from startline.engine.scenario import Scenario
    from startline.inprocess import run_in_process_async

    sc = Scenario.from_dict(
        {
            "name": "instructions",
            "workers": 1,
            "connections_per_worker": connections,
            "warmup_s": 0.0,
            "measurement_s": 60.0,
            "operations_per_connection": per_connection,
            "operations": list(MIXES[mix]),
            "start": {"strategy": "scheduled", "lead_ms": 300, "poll_interval_ms": 50},
        }
    )
    result = trio.run(lambda: run_in_process_async(sc), clock=trio.testing.MockClock(autojump_threshold=0))
    ops = result.summary["phases"]["MEASUREMENT"]["ops"]
    if ops != connections * per_connection:
        raise SystemExit(f"the engine ran {ops} operations, not {connections * per_connection}")


COUNTS = {"instructions": r"I\s+refs", "first-level misses": r"D1\s+misses", "last-level misses": r"LL\s+misses"}
"""cachegrind's totals, by the names this script prints them under."""


def counts(tree: Path | None, mix: str, connections: int, per_connection: int, caches: bool) -> list[int]:
    """cachegrind's totals (``COUNTS``; with ``caches`` only the instructions) of one child run."""
    script = [str(HERE), "--child", mix, str(connections), str(per_connection)]
    if tree is not None:  # that checkout's package, through other_tree.py (this script from here)
        script = [str(HERE.parent / "other_tree.py"), str(tree), *script]
    sim = ["--cache-sim=yes", LAST_LEVEL] if caches else ["--cache-sim=no"]
    cmd = ["valgrind", "--tool=cachegrind", *sim, "--cachegrind-out-file=/dev/null"]
    done = subprocess.run([*cmd, sys.executable, *script], capture_output=True, text=True, check=False)
    found = [re.search(pattern + r":\s+([\d,]+)", done.stderr) for pattern in COUNTS.values()]
    found = found if caches else found[:1]
    if done.returncode != 0 or None in found:
        raise SystemExit(f"the run under valgrind failed:\n{done.stderr[-2000:]}")
    return [int(m.group(1).replace(",", "")) for m in found if m is not None]


def per_operation(tree: Path | None, mix: str, connections: int, caches: bool = False) -> list[float]:
    """Each count of one operation: (of ``MANY`` per connection − of ``FEW``) ÷ (the difference × N)."""
    few, many = (counts(tree, mix, connections, k, caches) for k in (FEW, MANY))
    return [(b - a) / ((MANY - FEW) * connections) for a, b in zip(few, many, strict=True)]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        mix, connections, per_connection = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        return child(mix, connections, per_connection)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--caches", action="store_true", help="simulate the caches too (1 MiB last level)")
    ap.add_argument("--tree", type=Path, action="append", default=[], help="another checkout to count too")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind): it counts the instructions")
    trees: list[Path | None] = [*args.tree, None]
    names = list(COUNTS) if args.caches else ["instructions"]
    print(f"{args.connections} connections, per operation (MockClock, cachegrind):", " | ".join(names))
    rows = [(mix, tree) for mix in MIXES for tree in trees] + [(BARE, None)]
    for mix, tree in rows:
        name = "this tree" if tree is None else str(tree)
        figures = per_operation(tree, mix, args.connections, args.caches)
        shown = f"{figures[0]:>9,.0f}" + "".join(f" | {f:>7.1f}" for f in figures[1:])
        print(f"  {mix:>15}, {name:<16} {shown}", flush=True)
    return None


if __name__ == "__main__":
    main()
