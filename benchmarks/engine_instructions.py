"""The engine's cost per operation in instructions, not seconds: a figure the host's noise does not
move, for before/after comparisons of the hot loop on a shared machine (where ``engine_overhead``'s
ratios scatter by ±10 % from one run to the next).

Each count runs the full engine (orchestrator, one worker, N connections, the no-op target; two
operations 3 : 1, or one) on Trio's ``MockClock``: a no-op never advances virtual time, so nothing
periodic (snapshots, heartbeats, polls) runs between the operations, and two runs differ by
a few instructions an operation (Trio shuffles the tasks that wake together). Under
``valgrind --tool=cachegrind`` (``--cache-sim=no``), once with 20 and once with 140 operations
per connection: (instructions of the second − of the first) ÷ (120 × N) is the cost of one
operation, start-up and summary cancelled out. Instructions are
not time (a cache miss costs more than an add), and on ``MockClock`` each clock reading is a
Python call where the real clock's is ``perf_counter``; the figure is for comparing one loop
with another, and ``engine_overhead.py`` stays the measure of speed.

    .venv/bin/python benchmarks/engine_instructions.py [--connections 1000] [--tree /tmp/before ...]

``--tree`` adds another checkout (``git worktree add /tmp/before REV``), run through
``other_tree.py`` with its own package. Needs ``valgrind`` (``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve()
FEW, MANY = 20, 140
TWO_OPERATIONS = (
    {"name": "a", "weight": 3, "call": "startline.backends.memory.ops:noop"},
    {"name": "b", "weight": 1, "call": "startline.backends.memory.ops:noop"},
)
MIXES = {"two operations": TWO_OPERATIONS, "one operation": TWO_OPERATIONS[:1]}


def child(mix: str, connections: int, per_connection: int) -> None:
    """Run the engine once on ``MockClock`` (under valgrind, in a process of its own)."""
    import trio
    import trio.testing

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


def instructions(tree: Path | None, mix: str, connections: int, per_connection: int) -> int:
    """Instructions (cachegrind's ``I refs``) of one child run."""
    script = [str(HERE), "--child", mix, str(connections), str(per_connection)]
    if tree is not None:  # that checkout's package, through other_tree.py (this script from here)
        script = [str(HERE.parent / "other_tree.py"), str(tree), *script]
    cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
    done = subprocess.run([*cmd, sys.executable, *script], capture_output=True, text=True, check=False)
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"the run under valgrind failed:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_operation(tree: Path | None, mix: str, connections: int) -> float:
    few, many = (instructions(tree, mix, connections, k) for k in (FEW, MANY))
    return (many - few) / ((MANY - FEW) * connections)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        mix, connections, per_connection = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        return child(mix, connections, per_connection)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--tree", type=Path, action="append", default=[], help="another checkout to count too")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind): it counts the instructions")
    trees: list[Path | None] = [*args.tree, None]
    print(f"{args.connections} connections, instructions per operation (MockClock, cachegrind):")
    for mix in MIXES:
        for tree in trees:
            name = "this tree" if tree is None else str(tree)
            print(f"  {mix:>15}, {name:<16} {per_operation(tree, mix, args.connections):>9,.0f}", flush=True)
    return None


if __name__ == "__main__":
    main()
