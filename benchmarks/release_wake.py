"""What a worker's release pays before its connections' first statements (issue 25), two parts:

    .venv/bin/python benchmarks/release_wake.py [--sleeps 200] [--reps 5] [--rounds 20]

1. How late ``time.sleep`` wakes (3 ms sleeps, the release's last step) with Linux's default
   timer slack and inside ``release.precise_timers`` (a nanosecond), in alternating batches.
2. A worker's four SQLite connections, each running its first statement after a 0.5 s idle
   (as at a release), one after another: the time each took, with the statement warmed by
   ``EXPLAIN`` (the warm before 2026-12-03) and by ``LoopConnection.prepare`` (its own text
   compiled into the connection's cache), each round a fresh process-local set of connections,
   the two kinds alternating.

Prints min/median/max over the batches (part 1, µs: median and p90 of each batch) and over the
rounds (part 2, µs per connection in turn).
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from startline.backends.sqlite.loop import NEVER_FITS  # noqa: E402
from startline.engine.release import precise_timers  # noqa: E402
from startline.engine.schedule import percentile  # noqa: E402

SQL = "SELECT v FROM kv WHERE k = :k"


def wake_lateness(sleeps: int) -> tuple[float, float]:
    """Median and p90 (µs) of how late ``sleeps`` 3 ms sleeps woke."""
    late = []
    for _ in range(sleeps):
        due = time.perf_counter() + 0.003
        time.sleep(due - time.perf_counter())
        late.append((time.perf_counter() - due) * 1e6)
    return percentile(late, 50), percentile(late, 90)


def first_statements(path: Path, warm: str) -> list[float]:
    """Four connections' first statements after an idle, one after another (µs each)."""
    conns = [sqlite3.connect(path, isolation_level=None) for _ in range(4)]
    for c in conns:
        if warm == "explain":
            c.execute(f"EXPLAIN {SQL}", {"k": None}).fetchall()
        else:
            try:
                c.execute(SQL, NEVER_FITS)
            except sqlite3.ProgrammingError:
                pass
    time.sleep(0.5)
    took = []
    for i, c in enumerate(conns):
        t0 = time.perf_counter()
        c.execute(SQL, {"k": i + 1}).fetchall()
        took.append((time.perf_counter() - t0) * 1e6)
    for c in conns:
        c.close()
    return took


def spread(xs: list[float]) -> str:
    return f"{min(xs):.0f} / {statistics.median(xs):.0f} / {max(xs):.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sleeps", type=int, default=200)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    got: dict[str, list[tuple[float, float]]] = {"default slack": [], "precise_timers": []}
    for _ in range(args.reps):
        got["default slack"].append(wake_lateness(args.sleeps))
        with precise_timers():
            got["precise_timers"].append(wake_lateness(args.sleeps))
    print(f"time.sleep(3 ms) woke late, µs, min / median / max over {args.reps} batches of {args.sleeps}:")
    for what, batches in got.items():
        print(f"  {what:15s} median {spread([m for m, _ in batches])}   p90 {spread([p for _, p in batches])}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.db"
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE kv (k INTEGER PRIMARY KEY, v INTEGER)")
            db.executemany("INSERT INTO kv VALUES (?, ?)", [(k, k) for k in range(1, 1001)])
        took: dict[str, list[list[float]]] = {"explain": [], "prepare": []}
        for _ in range(args.rounds):
            for warm in took:
                took[warm].append(first_statements(path, warm))
    print(f"first statements of 4 connections in turn, µs, min / median / max over {args.rounds} rounds:")
    for warm, rounds in took.items():
        cols = "   ".join(f"#{i + 1} {spread([r[i] for r in rounds])}" for i in range(4))
        print(f"  warmed by {warm:8s} {cols}")


if __name__ == "__main__":
    main()
