"""Where a PostgreSQL operation's client CPU goes (issue 23): the same single-row read over one
connection, each layer of startline's path added in turn, CPU per operation of the process.

    .venv/bin/python benchmarks/pg_client_path.py [--ops 20000] [--reps 5]

Layers, interleaved (each once per repetition), on the ``pgserver`` wheel's PostgreSQL:

- ``pgbench``: ``pgbench -S -n -c 1 -j 1`` for as many transactions (C, one process);
- ``blocking``: Python over libpq (``psycopg.pq``), blocking: send the query, read its result —
  the floor of any Python client;
- ``trio``: the same through Trio: a non-blocking send, ``wait_readable`` on the socket, read —
  what one scheduling round per operation adds;
- ``session``: ``NativeConnection.query`` (binding, the busy flag, results and error checks);
- ``prepared``: ``NativeConnection.query_prepared`` (Bind/Execute of a statement parsed once);
- ``engine``: a whole in-process run (one worker, one connection, memory control plane): the
  worker's CPU in MEASUREMENT over its operations (the closed loop, parameters, the tally).
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.vs_pgbench import children_cpu, connection_args  # noqa: E402
from startline.backends.postgres import PostgresTarget, server  # noqa: E402
from startline.backends.postgres.native import NativeConnection  # noqa: E402
from startline.engine.scenario import Scenario  # noqa: E402
from startline.inprocess import run_in_process_async  # noqa: E402

SQL = "SELECT abalance FROM pgbench_accounts WHERE aid = %s"


def timed(fn) -> float:  # CPU µs per operation of what ``fn`` runs, ``fn`` returning its operations
    c0 = time.process_time()
    n = fn()
    return 1e6 * (time.process_time() - c0) / n


def blocking(url: str, n: int) -> int:
    with psycopg.connect(url, autocommit=True) as c:
        pg = c.pgconn
        for _ in range(n):
            pg.send_query((SQL % random.randint(1, 100000)).encode())
            while pg.get_result() is not None:
                pass
    return n


async def on_trio(url: str, n: int) -> int:
    with psycopg.connect(url, autocommit=True) as c:
        pg = c.pgconn
        pg.nonblocking = 1
        fd = pg.socket
        for _ in range(n):
            pg.send_query((SQL % random.randint(1, 100000)).encode())
            while pg.flush():
                await trio.lowlevel.wait_writable(fd)
            while True:
                while pg.is_busy():
                    await trio.lowlevel.wait_readable(fd)
                    pg.consume_input()
                if pg.get_result() is None:
                    break
    return n


async def session(url: str, n: int, prepared: bool) -> int:
    conn = NativeConnection(url, "startline path")
    await conn.query("SELECT 1")
    try:
        for _ in range(n):
            if prepared:
                await conn.query_prepared(SQL.replace("%s", "$1"), (random.randint(1, 100000),))
            else:
                await conn.query(SQL, (random.randint(1, 100000),))
    finally:
        await conn.close()
    return n


def engine(url: str, seconds: float) -> float:
    sc = Scenario.from_dict(
        {
            "name": "path",
            "workers": 1,
            "connections_per_worker": 1,
            "warmup_s": 0.5,
            "measurement_s": seconds,
            "operations": [
                {
                    "name": "select",
                    "sql": SQL.replace("%s", ":aid"),
                    "params": {"aid": {"type": "int", "min": 1, "max": 100000}},
                }
            ],
        }
    )
    r = trio.run(lambda: run_in_process_async(sc, target=PostgresTarget(url)))
    w = r.summary["workers"][0]
    return 1e6 * w["cpu"]["by_phase"]["MEASUREMENT"] / r.summary["phases"]["MEASUREMENT"]["ops"]


def pgbench(url: str, n: int) -> float:
    u = urlsplit(url)
    before = children_cpu()
    subprocess.run(
        [*connection_args(server._bin(), url), "-S", "-n", "-c", "1", "-j", "1", "-t", str(n), u.path.lstrip("/")],
        capture_output=True,
        check=True,
    )
    return 1e6 * (children_cpu() - before) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=20000)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    layers = {
        "pgbench": lambda url: pgbench(url, a.ops),
        "blocking": lambda url: timed(lambda: blocking(url, a.ops)),
        "trio": lambda url: timed(lambda: trio.run(on_trio, url, a.ops)),
        "session": lambda url: timed(lambda: trio.run(session, url, a.ops, False)),
        "prepared": lambda url: timed(lambda: trio.run(session, url, a.ops, True)),
        "engine": lambda url: engine(url, 3.0),
    }
    got: dict[str, list[float]] = {k: [] for k in layers}
    with tempfile.TemporaryDirectory(prefix="pg-path-") as t:
        local = server.start(Path(t) / "data")
        try:
            subprocess.run(
                [*connection_args(server._bin(), local.url), "-i", "-s", "1", "-q", "postgres"],
                capture_output=True,
                check=True,
            )
            for _ in range(a.reps):
                for name, layer in layers.items():
                    got[name].append(layer(local.url))
        finally:
            server.stop(Path(t) / "data")
    print(f"| layer | CPU µs/op min | median | max |  ({a.reps} repetitions, {a.ops:,} operations each)")
    print("|---|---|---|---|")
    for name, xs in got.items():
        print(f"| {name} | {min(xs):.1f} | {statistics.median(xs):.1f} | {max(xs):.1f} |")


if __name__ == "__main__":
    main()
