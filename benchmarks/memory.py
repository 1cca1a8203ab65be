"""Memory against run length: the resident set of the orchestrator and of each worker process of
one live run (SQLite, W workers × C connections), sampled at two instants of MEASUREMENT.

    .venv/bin/python benchmarks/memory.py [--minutes 10] [--early 1] [--workers 2] [--connections 2]

Prints RSS (MB) at --early minutes and at the end, and the growth between them; the goal is
at most 10 % for every process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil

SCENARIO = """
name = "memory"
workers = {workers}
connections_per_worker = {connections}
warmup_s = 0
measurement_s = {seconds}
control = "sqlite:///{{out}}/control.db"
target = "sqlite:///{{out}}/data.db"
setup = ["CREATE TABLE IF NOT EXISTS kv (k INTEGER PRIMARY KEY, v INTEGER)",
         "INSERT OR IGNORE INTO kv SELECT value, 0 FROM json_each('[1,2,3,4,5,6,7,8,9,10]')"]

[start]
strategy = "scheduled"

[[operations]]
name = "read"
weight = 3
sql = "SELECT v FROM kv WHERE k = :k"
params.k = {{ type = "int", min = 1, max = 10 }}

[[operations]]
name = "write"
weight = 1
sql = "UPDATE kv SET v = v + 1 WHERE k = :k"
params.k = {{ type = "int", min = 1, max = 10 }}
"""


def rss(proc: psutil.Process) -> dict[str, float]:
    """MB resident of the orchestrator and of each worker (its children running `worker`)."""
    out = {"orchestrator": proc.memory_info().rss / 1e6}
    for child in proc.children(recursive=True):
        try:
            cmd = child.cmdline()
            if "worker" in cmd:
                out[cmd[cmd.index("--worker-id") + 1]] = child.memory_info().rss / 1e6
        except (psutil.NoSuchProcess, ValueError):
            pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--early", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--connections", type=int, default=2)
    ap.add_argument("--out", default="out/bench-memory")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seconds = args.minutes * 60
    cfg = out / "scenario.toml"
    cfg.write_text(SCENARIO.format(workers=args.workers, connections=args.connections, seconds=seconds))
    cmd = [sys.executable, "-m", "startline.cli", "run", str(cfg), "--out", str(out), "--overwrite", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    began = time.monotonic() + 3.0  # the scheduled start's lead
    p = psutil.Process(proc.pid)
    time.sleep(max(0.0, began + args.early * 60 - time.monotonic()))
    early = rss(p)
    time.sleep(max(0.0, began + seconds - 5 - time.monotonic()))
    late = rss(p)
    proc.wait(timeout=600)
    rows = {
        k: {
            "early_mb": round(early[k], 1),
            "late_mb": round(late.get(k, 0), 1),
            "growth_pct": round((late.get(k, 0) / early[k] - 1) * 100, 1),
        }
        for k in early
    }
    for k, r in rows.items():
        print(
            f"{k:>12}: {r['early_mb']:7.1f} MB at {args.early:g} min, {r['late_mb']:7.1f} MB at "
            f"{args.minutes - 5 / 60:.2f} min: {r['growth_pct']:+.1f} %"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
