"""The host's floor for a start against startline's scheduled start, side by side (issue 25).

    .venv/bin/python benchmarks/start_floor.py [--runs 10] [--shapes 4x4 8x4] [--postgres DIR]
                                               [--out out/bench-floor] [--without-yield] [--own-sessions]

The floor: N bare processes (no startline, no Trio) of K threads, each thread with its own
connection to the scenario's target (a SQLite file, or ``--postgres``: a local PostgreSQL server
from the ``pgserver`` wheel), connected before the instant, sleeping to one wall-clock instant
(1 s after every process said it is connected; given on stdin; ``time.sleep`` to 2 ms before
it, then spinning) and issuing
``SELECT 1``. A connection's lag is the host clock read just before it issues, minus the
instant; a run's skew is the spread of those readings over its N × K connections. startline:
``startline run`` of ``benchmarks/live_start.py``'s scenario with the ``scheduled`` strategy on
the same N × K, its lags (``start.by_worker``) and skew (``start.skew_ms``). The two alternate
run by run (machine noise hits both alike), ``--runs`` each per shape. The floor's processes
share the benchmark's session; startline spawns each worker in a session of its own (Linux's
autogroup: a CPU share of its own) — ``--own-sessions`` adds the floor so too.

Reported per shape: lag p50/p99 over every connection of every run, skew p50/p99 over runs,
for the floor and startline, and startline / floor. ``--without-yield`` adds a third, also
interleaved: startline with ``start.yield_after_release = false`` (the worker keeps its core
after its first operations, as before 2026-12-03).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from startline.engine.schedule import percentile  # noqa: E402

SPIN_S = 0.002
LEAD_S = 1.0
"""The instant is this far after every floor process said it is connected (as startline's
workers are READY, connected, before a start is scheduled; ``lead_ms`` there is 3000)."""


def child(target: str, connections: int) -> None:
    """One floor process: ``connections`` threads, each connected; says ``ready`` on stdout, reads
    the instant (host clock, epoch seconds) on stdin, sleeps to it and issues ``SELECT 1``.
    Prints the issue instants as JSON."""
    if target.startswith("postgresql://"):
        import psycopg

        def connect():
            return psycopg.connect(target, autocommit=True)
    else:
        import sqlite3

        def connect():
            return sqlite3.connect(target, check_same_thread=False)

    conns = [connect() for _ in range(connections)]
    issued = [0.0] * connections
    print("ready", flush=True)
    at = float(sys.stdin.readline())

    def one(i: int) -> None:
        conn = conns[i]
        pause = at - SPIN_S - time.time()
        if pause > 0:
            time.sleep(pause)
        while time.time() < at:
            pass
        issued[i] = time.time()
        conn.execute("SELECT 1").fetchall()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in conns:
        c.close()
    print(json.dumps(issued))


def floor_run(target: str, workers: int, connections: int, own_sessions: bool = False) -> tuple[list[float], float]:
    """One floor run: every connection's lag (ms) and the run's skew (ms). ``own_sessions``: each
    process leads a session of its own (as startline's spawned workers do)."""
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", target, str(connections)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=own_sessions,
        )
        for _ in range(workers)
    ]
    for p in procs:  # every process connected before the instant is set
        assert p.stdout is not None
        if p.stdout.readline().strip() != "ready":
            raise SystemExit("a floor process did not connect")
    at = time.time() + LEAD_S
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(f"{at!r}\n")
        p.stdin.flush()
    issued: list[float] = []
    for p in procs:
        out, _ = p.communicate(timeout=60)  # (a floor process that hangs is not waited on forever)
        if p.returncode != 0:
            raise SystemExit(f"a floor process exited {p.returncode}")
        issued.extend(json.loads(out))
    if min(issued) < at:
        raise SystemExit("a floor process issued before the instant")
    late = [1000 * (t - at) for t in issued]
    if max(late) > 1000 * LEAD_S:
        print(f"note: a floor process was {max(late):.0f} ms late", file=sys.stderr)
    return late, max(late) - min(late)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--shapes", nargs="*", default=["4x4", "8x4"], help="WORKERSxCONNECTIONS")
    ap.add_argument("--postgres", default=None, metavar="DIR", help="A local PostgreSQL server (data in DIR).")
    ap.add_argument("--out", default="out/bench-floor")
    ap.add_argument("--without-yield", action="store_true", help="Also startline with yield_after_release = false.")
    ap.add_argument(
        "--own-sessions", action="store_true", help="Also the floor with each process in a session of its own."
    )
    args = ap.parse_args()
    from live_start import STRATEGIES, fresh_database, run_live, scenario_toml

    root = Path(args.out)
    server_url = None
    if args.postgres:
        from startline.backends.postgres import server

        server_url = server.start(Path(args.postgres)).url
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes]
    variants = {"startline": STRATEGIES["scheduled"]}
    if args.without_yield:
        variants["startline, no yield"] = {**STRATEGIES["scheduled"], "yield_after_release": False}
    floors = ["floor", "floor, own sessions"] if args.own_sessions else ["floor"]
    got = {s: {k: ([], []) for k in [*variants, *floors]} for s in shapes}
    for run in range(args.runs):
        for w, c in shapes:
            for v, (variant, start) in enumerate(variants.items()):
                out = root / f"{w}x{c}" / (f"run{run:02d}" + ("" if v == 0 else f"-v{v}"))
                url = None if server_url is None else fresh_database(server_url, f"floor_{w}x{c}_{run}_{v}")
                if not run_live(out, scenario_toml(start, w, c, url), f"{variant} {w}x{c} run {run}"):
                    continue
                summary = json.loads((out / "summary.json").read_text())
                lags, skews = got[(w, c)][variant]
                for by in summary["start"]["by_worker"].values():
                    lags.extend(by)
                skews.append(summary["start"]["skew_ms"])
            # the floor on the same target, right after (the table startline's setup made)
            target = url or str(out / "data.db")
            for floor in floors:
                late, skew = floor_run(target, w, c, own_sessions=floor != "floor")
                got[(w, c)][floor][0].extend(late)
                got[(w, c)][floor][1].append(skew)
        print(f"run {run + 1}/{args.runs} done", file=sys.stderr, flush=True)
    where = "PostgreSQL" if server_url else "SQLite"
    print(f"{where}, {args.runs} runs per shape, interleaved (lag over every connection, skew over runs; ms)")
    print("| N × K | what | lag p50 | lag p99 | skew p50 | skew p99 |")
    print("|---|---|---|---|---|---|")
    rows = []
    for (w, c), by in got.items():
        figs = {}
        for what, (lags, skews) in by.items():
            if not skews:
                continue
            figs[what] = [percentile(lags, 50), percentile(lags, 99), percentile(skews, 50), percentile(skews, 99)]
            print(f"| {w} × {c} | {what} | " + " | ".join(f"{x:.2f}" for x in figs[what]) + " |")
        if "floor" not in figs:
            continue
        ratios = {}
        for variant in variants:
            for floor in floors:
                if variant in figs and floor in figs:
                    ratio = [s / f if f > 0 else float("inf") for s, f in zip(figs[variant], figs[floor], strict=True)]
                    print(f"| {w} × {c} | {variant} / {floor} | " + " | ".join(f"{x:.2f}×" for x in ratio) + " |")
                    ratios[variant if floor == "floor" else f"{variant} / {floor}"] = ratio
        rows.append({"shape": f"{w}x{c}", "target": where, **figs, "ratio": ratios})
    print(json.dumps(rows))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]))
    else:
        main()
