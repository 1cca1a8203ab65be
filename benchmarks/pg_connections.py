"""Many PostgreSQL connections in one worker process (issue 23): 1,000 target sessions on one
Trio loop, and the memory each costs.

    .venv/bin/python benchmarks/pg_connections.py [--connections 10,100,1000] [--seconds 10] [--reps 2]

A local server (the ``pgserver`` wheel's PostgreSQL 16, ``max_connections = 1100``, after
``pgbench -i -s 1``), one worker process with C connections running ``SELECT abalance FROM
pgbench_accounts WHERE aid = :aid`` in a closed loop, a SQLite control plane. Reported per C:
the connections the start saw open, MEASUREMENT throughput and latency, the worker's CPU per
operation (its own, in MEASUREMENT), and its resident memory (the largest ``VmRSS`` read from
``/proc`` every 0.2 s while it ran); memory per connection is the slope between the smallest
and the largest C.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.vs_pgbench import connection_args  # noqa: E402
from startline.backends.postgres import server  # noqa: E402

SCENARIO = """
name = "connections"
workers = 1
connections_per_worker = {connections}
warmup_s = 2
measurement_s = {seconds}
control = "sqlite:///{{out}}/control.db"
target = "{url}"

[[operations]]
name = "select"
sql = "SELECT abalance FROM pgbench_accounts WHERE aid = :aid"
params.aid = {{ type = "int", min = 1, max = 100000 }}
"""


def worker_rss_kb(marker: str) -> int:
    """The resident memory of the worker process whose command line holds ``marker`` (0: none)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            if b"startline.cli\x00worker\x00" not in cmdline or marker.encode() not in cmdline:
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            continue
    return 0


def one(url: str, connections: int, seconds: int, tmp: Path, rep: int) -> dict[str, float]:
    config = tmp / f"c{connections}.toml"
    config.write_text(SCENARIO.format(connections=connections, seconds=seconds, url=url))
    out = tmp / f"out-{connections}-{rep}"
    peak = [0]
    running = [True]

    def watch() -> None:
        while running[0]:
            peak[0] = max(peak[0], worker_rss_kb(str(out)))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "startline.cli", "run", str(config), "--out", str(out), "--overwrite", "--quiet"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
    finally:
        running[0] = False
        watcher.join()
    if proc.returncode not in (0, 1):
        raise RuntimeError(proc.stderr[-2000:])
    s = json.loads((out / "summary.json").read_text())
    m = s["phases"]["MEASUREMENT"]
    cpu = sum(w["cpu"]["by_phase"].get("MEASUREMENT", 0.0) for w in s["workers"])
    return {
        "open": s["start"]["connections"],
        "qps": m["qps"],
        "p50_ms": m["latency_ms"]["p50"],
        "p99_ms": m["latency_ms"]["p99"],
        "errors": m["errors"],
        "cpu_us_per_op": 1e6 * cpu / max(1, m["ops"]),
        "rss_mb": peak[0] / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", default="10,100,1000")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    counts = [int(c) for c in a.connections.split(",")]
    with tempfile.TemporaryDirectory(prefix="pg-connections-") as t:
        tmp = Path(t)
        local = server.start(tmp / "data", settings={"max_connections": str(max(counts) + 100)})
        try:
            subprocess.run(
                [*connection_args(server._bin(), local.url), "-i", "-s", "1", "-q", "postgres"],
                capture_output=True,
                check=True,
            )
            rows: dict[int, list[dict[str, float]]] = {c: [] for c in counts}
            for rep in range(a.reps):  # interleaved: each count once, then again
                for c in counts:
                    rows[c].append(one(local.url, c, a.seconds, tmp, rep))
        finally:
            server.stop(tmp / "data")
    print("| connections | open at start | ops/s | p50 ms | p99 ms | errors | worker CPU µs/op | worker RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for c in counts:
        r = rows[c]
        med = {k: statistics.median(x[k] for x in r) for k in ("qps", "p50_ms", "p99_ms", "cpu_us_per_op", "rss_mb")}
        print(
            f"| {c:,} | {min(x['open'] for x in r):,.0f} | {med['qps']:,.0f} | {med['p50_ms']:.2f} "
            f"| {med['p99_ms']:.2f} | {max(x['errors'] for x in r):,.0f} | {med['cpu_us_per_op']:.1f} "
            f"| {med['rss_mb']:.1f} |"
        )
    lo, hi = min(counts), max(counts)
    per = (statistics.median(x["rss_mb"] for x in rows[hi]) - statistics.median(x["rss_mb"] for x in rows[lo])) / (
        hi - lo
    )
    print(f"\nworker memory per connection (slope {lo} → {hi}): {per * 1024:.0f} KB (medians of {a.reps} runs)")


if __name__ == "__main__":
    main()
