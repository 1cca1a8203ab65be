"""pgbench against startline on the same local PostgreSQL (the ``pgserver`` wheel's server and
its ``pgbench``), select-only, interleaved, repeated (issue 23).

    .venv/bin/python benchmarks/vs_pgbench.py [--clients 1,8] [--seconds 10] [--reps 3]

For each client count and repetition, one after the other: ``pgbench -S -n -c C -j C -T S``
(after ``pgbench -i -s 1``) and ``startline run`` of the same statement (``SELECT abalance FROM
pgbench_accounts WHERE aid = :aid``, ``aid`` uniform over the 100,000 accounts) with C
connections over ``min(C, 2)`` worker processes, MEASUREMENT S seconds, a SQLite control plane.
Reported: throughput (pgbench's tps without connection time; startline's MEASUREMENT qps) and
their ratio; latency (pgbench's average; startline's p50, p99 and max); client CPU per operation
(user + sys of every process of each tool, from ``RUSAGE_CHILDREN``, divided by every operation it
ran — startline's includes its start-up and report, said as such). The scratch server runs with
``fsync = off`` (startline.backends.postgres.server): figures of the client path, not durability.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from startline.backends.postgres import server  # noqa: E402

SCENARIO = """
name = "vs-pgbench"
workers = {workers}
connections_per_worker = {per}
warmup_s = 2
measurement_s = {seconds}
control = "sqlite:///{{out}}/control.db"
target = "{url}"

[[operations]]
name = "select"
sql = "SELECT abalance FROM pgbench_accounts WHERE aid = :aid"
params.aid = {{ type = "int", min = 1, max = 100000 }}
"""


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def pgbench(bin_dir: Path, url: str, clients: int, seconds: int) -> dict[str, float]:
    u = urlsplit(url)
    args = [
        str(bin_dir / "pgbench"),
        "-h",
        u.hostname or "127.0.0.1",
        "-p",
        str(u.port),
        "-U",
        u.username or "postgres",
    ]
    before = children_cpu()
    out = subprocess.run(
        [*args, "-S", "-n", "-c", str(clients), "-j", str(clients), "-T", str(seconds), u.path.lstrip("/")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu = children_cpu() - before
    tps = float(re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)[1])
    latency = float(re.search(r"latency average = ([\d.]+) ms", out)[1])
    done = int(re.search(r"number of transactions actually processed: (\d+)", out)[1])
    return {"tps": tps, "latency_ms": latency, "cpu_us_per_op": 1e6 * cpu / max(1, done)}


def startline(url: str, clients: int, seconds: int, tmp: Path) -> dict[str, float]:
    workers = min(clients, 2)
    config = tmp / f"vs-{clients}.toml"
    config.write_text(SCENARIO.format(workers=workers, per=clients // workers, seconds=seconds, url=url))
    out = tmp / f"out-{clients}"
    before = children_cpu()
    subprocess.run(
        [sys.executable, "-m", "startline.cli", "run", str(config), "--out", str(out), "--overwrite", "--quiet"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    cpu = children_cpu() - before
    s = json.loads((out / "summary.json").read_text())
    m = s["phases"]["MEASUREMENT"]
    done = sum(b["ops"] for b in s["phases"].values())
    lat = m["latency_ms"]
    return {
        "tps": m["qps"],
        "p50_ms": lat["p50"],
        "p99_ms": lat["p99"],
        "max_ms": lat["max"],
        "cpu_us_per_op": 1e6 * cpu / max(1, done),
    }


def spread(xs: list[float]) -> str:
    return f"{min(xs):,.2f} / {statistics.median(xs):,.2f} / {max(xs):,.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", default="1,8")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vs-pgbench-") as t:
        tmp = Path(t)
        local = server.start(tmp / "data")
        try:
            bin_dir = server._bin()
            u = urlsplit(local.url)
            subprocess.run(
                [
                    str(bin_dir / "pgbench"),
                    "-h",
                    u.hostname,
                    "-p",
                    str(u.port),
                    "-U",
                    "postgres",
                    "-i",
                    "-s",
                    "1",
                    "-q",
                    "postgres",
                ],
                capture_output=True,
                check=True,
            )
            for clients in (int(c) for c in a.clients.split(",")):
                pg: list[dict[str, float]] = []
                sl: list[dict[str, float]] = []
                for _ in range(a.reps):  # interleaved: one of each, then again
                    pg.append(pgbench(bin_dir, local.url, clients, a.seconds))
                    sl.append(startline(local.url, clients, a.seconds, tmp))
                ratio = [s["tps"] / p["tps"] for s, p in zip(sl, pg, strict=True)]
                cpu = [s["cpu_us_per_op"] / p["cpu_us_per_op"] for s, p in zip(sl, pg, strict=True)]
                print(f"## {clients} clients, {a.seconds} s, {a.reps} repetitions (min / median / max)")
                print(f"pgbench tps                 {spread([p['tps'] for p in pg])}")
                print(f"startline ops/s             {spread([s['tps'] for s in sl])}")
                print(f"startline ÷ pgbench         {spread(ratio)}")
                print(f"pgbench latency avg ms      {spread([p['latency_ms'] for p in pg])}")
                print(f"startline p50 ms            {spread([s['p50_ms'] for s in sl])}")
                print(f"startline p99 ms            {spread([s['p99_ms'] for s in sl])}")
                print(f"startline max ms            {spread([s['max_ms'] for s in sl])}")
                print(f"pgbench CPU µs/op           {spread([p['cpu_us_per_op'] for p in pg])}")
                print(f"startline CPU µs/op (all)   {spread([s['cpu_us_per_op'] for s in sl])}")
                print(f"CPU per op, startline ÷ pgbench {spread(cpu)}")
                print()
        finally:
            server.stop(tmp / "data")


if __name__ == "__main__":
    main()
