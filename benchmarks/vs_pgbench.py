"""pgbench against startline on the same local PostgreSQL (the ``pgserver`` wheel's server and
its ``pgbench``), select-only and TPC-B-like, interleaved, repeated (issues 23 and 24).

    .venv/bin/python benchmarks/vs_pgbench.py [--clients 1,8,32] [--modes simple,prepared,tpcb,tpcb-rr]
                                              [--seconds 10] [--reps 3]

For each client count, mode and repetition, one after the other: pgbench (after ``pgbench -i -s
1``) and ``startline run`` of the same work with C connections over ``min(C, 2)`` worker
processes, MEASUREMENT S seconds, a SQLite control plane. ``simple`` and ``prepared``:
``pgbench -S -n -M MODE -c C -j C -T S`` against ``SELECT abalance FROM pgbench_accounts WHERE aid
= :aid`` (``aid`` uniform over the 100,000 accounts; ``prepare = true`` for ``prepared``).
``tpcb``: pgbench's default script (``-n -M simple``) against the same five statements as a
``transaction`` operation (``TPCB``); after both, the four tables' sums are checked equal.
``tpcb-rr``: the same under ``default_transaction_isolation = 'repeatable read'`` (set on the
database for both), pgbench with ``--max-tries=10`` and startline with ``max_tries = 10``: at
scale 1 every transaction updates the one branch row, so concurrent ones fail to serialize and
are tried again; both tools' counts of retried transactions and retries side by side.

Reported: throughput (pgbench's tps without connection time; startline's MEASUREMENT qps) and
their ratio; latency (pgbench's average and its maximum, from its per-second aggregate log;
startline's p50, p99 and max); client CPU per operation — pgbench's (its process, from
``RUSAGE_CHILDREN``), startline's two ways: the workers' own CPU in MEASUREMENT over its
operations (start-up, warm-up and the report excluded: what an operation costs), and every
process of the run over every operation it ran (start-up and report included). pgbench runs in
a session of its own, as startline's worker processes do (Linux's autogroup gives each session
its own share of the CPU; each PostgreSQL backend leads its own). The scratch
server runs with ``fsync = off`` (startline.backends.postgres.server): figures of the client
path, not durability.
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

{operation}"""

SELECT = """
[[operations]]
name = "select"
sql = "SELECT abalance FROM pgbench_accounts WHERE aid = :aid"
params.aid = { type = "int", min = 1, max = 100000 }
prepare = PREPARE
"""

TPCB = """
[[operations]]
name = "tpcb"
transaction = [
  { sql = "UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid" },
  { sql = "SELECT abalance FROM pgbench_accounts WHERE aid = :aid" },
  { sql = "UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid" },
  { sql = "UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid" },
  { sql = '''INSERT INTO pgbench_history (tid, bid, aid, delta, mtime)
             VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP)''' },
]
params.aid = { type = "int", min = 1, max = 100000 }
params.bid = { type = "int", min = 1, max = 1 }
params.tid = { type = "int", min = 1, max = 10 }
params.delta = { type = "int", min = -5000, max = 5000 }
"""
"""pgbench's built-in tpcb-like script at scale 1, as a transaction operation."""


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def connection_args(bin_dir: Path, url: str) -> list[str]:
    u = urlsplit(url)
    return [
        str(bin_dir / "pgbench"),
        "-h",
        u.hostname or "127.0.0.1",
        "-p",
        str(u.port),
        "-U",
        u.username or "postgres",
    ]


def pgbench(bin_dir: Path, url: str, clients: int, mode: str, seconds: int, tmp: Path) -> dict[str, float]:
    """``mode``: ``simple`` or ``prepared`` (select-only), or ``tpcb`` (its built-in TPC-B-like
    script), or ``tpcb-rr`` (that, tried up to 10 times)."""
    logs = tmp / f"pgbench-{clients}-{mode}"
    logs.mkdir(exist_ok=True)
    for old in logs.iterdir():
        old.unlink()
    before = children_cpu()
    out = subprocess.run(
        [
            *connection_args(bin_dir, url),
            *(("-M", "simple") if mode.startswith("tpcb") else ("-S", "-M", mode)),
            *(("--max-tries=10",) if mode == "tpcb-rr" else ()),
            *("-n", "-c", str(clients), "-j", str(clients), "-T", str(seconds)),
            *("--log", "--aggregate-interval=1", f"--log-prefix={logs}/log"),
            urlsplit(url).path.lstrip("/"),
        ],
        capture_output=True,
        text=True,
        check=True,
        start_new_session=True,  # in a session of its own, as startline's worker processes are
    ).stdout
    cpu = children_cpu() - before
    tps = float(re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)[1])
    latency = float(re.search(r"latency average = ([\d.]+) ms", out)[1])
    done = int(re.search(r"number of transactions actually processed: (\d+)", out)[1])
    # aggregate log lines: interval_start count sum sum2 min max (latencies in µs), one file per thread
    worst = max(int(line.split()[5]) for f in logs.iterdir() for line in f.read_text().splitlines() if line.strip())
    figures = {"tps": tps, "latency_ms": latency, "max_ms": worst / 1000, "cpu_us_per_op": 1e6 * cpu / max(1, done)}
    if mode == "tpcb-rr":  # "number of transactions retried: N (x%)", "total number of retries: M", failed
        retried = int(re.search(r"number of transactions retried: (\d+)", out)[1])
        failed = int(re.search(r"number of failed transactions: (\d+)", out)[1])
        figures |= {
            "retried_pct": 100 * retried / max(1, done + failed),
            "retries_per_retried": int(re.search(r"total number of retries: (\d+)", out)[1]) / max(1, retried),
            "failed_pct": 100 * failed / max(1, done + failed),
        }
    return figures


def startline(url: str, clients: int, mode: str, seconds: int, tmp: Path) -> dict[str, float]:
    workers = min(clients, 2)
    config = tmp / f"vs-{clients}-{mode}.toml"
    config.write_text(
        SCENARIO.format(
            workers=workers,
            per=clients // workers,
            seconds=seconds,
            url=url,
            operation=TPCB + ("max_tries = 10\n" if mode == "tpcb-rr" else "")
            if mode.startswith("tpcb")
            else SELECT.replace("PREPARE", "true" if mode == "prepared" else "false"),
        )
    )
    out = tmp / f"out-{clients}-{mode}"
    before = children_cpu()
    done_run = subprocess.run(
        [sys.executable, "-m", "startline.cli", "run", str(config), "--out", str(out), "--overwrite", "--quiet"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if done_run.returncode not in (0, 1):  # 1: completed, a check failed (tpcb-rr: conflicts past 10 tries)
        raise RuntimeError(f"startline run exited {done_run.returncode}: {done_run.stderr[-2000:]}")
    cpu = children_cpu() - before
    s = json.loads((out / "summary.json").read_text())
    m = s["phases"]["MEASUREMENT"]
    done = sum(b["ops"] for b in s["phases"].values())
    measuring = sum(w["cpu"]["by_phase"].get("MEASUREMENT", 0.0) for w in s["workers"])
    lat = m["latency_ms"]
    tried = m["ops"] + m["errors"]
    return {
        "retried_pct": 100 * m.get("retried", 0) / max(1, tried),
        "retries_per_retried": m.get("retries", 0) / max(1, m.get("retried", 0)),
        "failed_pct": 100 * m["errors"] / max(1, tried),
        "tps": m["qps"],
        "p50_ms": lat["p50"],
        "p99_ms": lat["p99"],
        "max_ms": lat["max"],
        "cpu_us_per_op": 1e6 * measuring / max(1, m["ops"]),
        "cpu_all_us_per_op": 1e6 * cpu / max(1, done),
        "saturated": len(s["client"]["saturated"]),
    }


def consistent(url: str) -> str:
    """TPC-B's invariant: every balance table and the history sum to the same amount."""
    import psycopg

    with psycopg.connect(url) as c:
        sums = c.execute(
            "SELECT (SELECT sum(abalance) FROM pgbench_accounts), (SELECT sum(bbalance) FROM pgbench_branches), "
            "(SELECT sum(tbalance) FROM pgbench_tellers), (SELECT sum(delta) FROM pgbench_history)"
        ).fetchone()
    return f"{'yes' if len(set(sums)) == 1 else 'NO'} (accounts, branches, tellers, history: {sums})"


def isolation(url: str, level: str | None) -> None:
    """The database's default isolation for new sessions (``None``: the server's default)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        if level is None:
            c.execute("ALTER DATABASE postgres RESET default_transaction_isolation")
        else:
            c.execute(f"ALTER DATABASE postgres SET default_transaction_isolation = '{level}'")


def spread(xs: list[float]) -> str:
    return f"{min(xs):,.2f} / {statistics.median(xs):,.2f} / {max(xs):,.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--modes", default="simple,prepared,tpcb")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vs-pgbench-") as t:
        tmp = Path(t)
        local = server.start(tmp / "data")
        try:
            bin_dir = server._bin()
            subprocess.run(
                [*connection_args(bin_dir, local.url), "-i", "-s", "1", "-q", "postgres"],
                capture_output=True,
                check=True,
            )
            for clients in (int(c) for c in a.clients.split(",")):
                for mode in a.modes.split(","):
                    pg: list[dict[str, float]] = []
                    sl: list[dict[str, float]] = []
                    isolation(local.url, "repeatable read" if mode == "tpcb-rr" else None)
                    for _ in range(a.reps):  # interleaved: one of each, then again
                        pg.append(pgbench(bin_dir, local.url, clients, mode, a.seconds, tmp))
                        sl.append(startline(local.url, clients, mode, a.seconds, tmp))
                    isolation(local.url, None)
                    report(clients, mode, a, pg, sl)
                    if mode.startswith("tpcb"):
                        print(f"consistent after both: {consistent(local.url)}\n", flush=True)
        finally:
            server.stop(tmp / "data")


def report(
    clients: int, mode: str, a: argparse.Namespace, pg: list[dict[str, float]], sl: list[dict[str, float]]
) -> None:
    def ratio(key: str, other: str | None = None) -> list[float]:
        return [s[key] / p[other or key] for s, p in zip(sl, pg, strict=True)]

    print(f"## {clients} clients, -M {mode}, {a.seconds} s, {a.reps} repetitions (min / median / max)")
    print(f"pgbench tps                          {spread([p['tps'] for p in pg])}")
    print(f"startline ops/s                      {spread([s['tps'] for s in sl])}")
    print(f"startline ÷ pgbench                  {spread(ratio('tps'))}")
    print(f"pgbench latency avg ms               {spread([p['latency_ms'] for p in pg])}")
    print(f"pgbench latency max ms               {spread([p['max_ms'] for p in pg])}")
    for key in ("p50", "p99", "max"):
        print(f"startline {key} ms{' ' * (27 - len(key))}{spread([s[key + '_ms'] for s in sl])}")
    print(f"startline p50 ÷ pgbench avg          {spread(ratio('p50_ms', 'latency_ms'))}")
    print(f"startline max ÷ pgbench max          {spread(ratio('max_ms'))}")
    print(f"pgbench CPU µs/op                    {spread([p['cpu_us_per_op'] for p in pg])}")
    print(f"startline CPU µs/op (workers, MEAS.) {spread([s['cpu_us_per_op'] for s in sl])}")
    print(f"startline CPU µs/op (all, start-up)  {spread([s['cpu_all_us_per_op'] for s in sl])}")
    print(f"CPU per op, startline ÷ pgbench      {spread(ratio('cpu_us_per_op'))}")
    print(f"runs with a saturated worker         {sum(1 for s in sl if s['saturated'])} of {len(sl)}")
    if mode == "tpcb-rr":
        for key, what in (
            ("retried_pct", "% retried"),
            ("retries_per_retried", "retries/retried"),
            ("failed_pct", "% failed"),
        ):
            print(f"pgbench {what:<29}{spread([p[key] for p in pg])}")
            print(f"startline {what:<27}{spread([s[key] for s in sl])}")
    print(flush=True)


if __name__ == "__main__":
    main()
