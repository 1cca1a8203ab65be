"""What watching a run costs it (issue 28): the same ``startline run`` with and without
``--dashboard``, interleaved, repeated; with it, a watcher as a browser is one — the page's event
stream read as it comes, and /metrics scraped once a second, as Prometheus would at its most
eager. MEASUREMENT throughput side by side, and the ratio of each pair.

    .venv/bin/python benchmarks/dashboard_cost.py [--reps 5] [--seconds 6] [--mode in-process|sqlite]

``in-process``: 4 workers × 4 connections as tasks of the run's own process (the dashboard shares
their event loop: the worst case); ``sqlite``: 2 worker processes × 4 connections on SQLite files,
the dashboard in the orchestrator's process.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "startline.cli"]

IN_PROCESS = """
name = "dashboard-cost"
workers = 4
connections_per_worker = 4
warmup_s = 1
measurement_s = {seconds}
flush_interval_s = 1

[start]
lead_ms = 500

[[operations]]
name = "nap"
call = "startline.backends.memory.ops:sleep_ms"
params.ms = {{ type = "int", min = 0, max = 1 }}
"""

SQLITE = """
name = "dashboard-cost"
workers = 2
connections_per_worker = 4
warmup_s = 1
measurement_s = {seconds}
flush_interval_s = 1
control = "sqlite:///{{out}}/control.db"
target = "sqlite:///{{out}}/data.db"
setup = ["CREATE TABLE IF NOT EXISTS kv (k INTEGER PRIMARY KEY, v INTEGER)", "INSERT OR IGNORE INTO kv VALUES (1, 1)"]

[[operations]]
name = "read"
sql = "SELECT v FROM kv WHERE k = 1"
"""


WATCH = "both"


def watch(url: str, stop: threading.Event) -> None:
    """A browser's load: the event stream read as it comes, /metrics scraped every second
    (``--watch``: either alone, or nothing)."""
    base = url.rsplit("/", 1)[0]
    if WATCH == "none":
        return

    def stream() -> None:
        try:
            with urllib.request.urlopen(base + "/events", timeout=60) as r:
                while not stop.is_set() and r.readline():
                    pass
        except OSError:
            pass

    if WATCH in ("both", "events"):
        threading.Thread(target=stream, daemon=True).start()
    while WATCH in ("both", "metrics") and not stop.is_set():
        try:
            urllib.request.urlopen(base + "/metrics", timeout=5).read()
        except OSError:
            pass
        stop.wait(1.0)


def one(config: Path, out: Path, dashboard: bool) -> float:
    args = [*CLI, "run", str(config), "--out", str(out), "--overwrite", "--no-report", "--progress-every", "0"]
    if dashboard:
        args += ["--dashboard", "127.0.0.1:0"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stop = threading.Event()
    if dashboard:
        assert proc.stderr is not None
        for line in proc.stderr:
            found = re.match(r"dashboard: (\S+)", line)
            if found:
                threading.Thread(target=watch, args=(found.group(1), stop), daemon=True).start()
                break
    proc.communicate()
    stop.set()
    assert proc.returncode == 0, f"run failed ({proc.returncode})"
    return float(json.loads((out / "summary.json").read_text())["phases"]["MEASUREMENT"]["qps"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--mode", choices=("in-process", "sqlite"), default="in-process")
    parser.add_argument("--watch", choices=("both", "events", "metrics", "none"), default="both")
    a = parser.parse_args()
    global WATCH
    WATCH = a.watch
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "s.toml"
        config.write_text((IN_PROCESS if a.mode == "in-process" else SQLITE).format(seconds=a.seconds))
        ratios, without, with_ = [], [], []
        for rep in range(a.reps):  # interleaved, the order alternating
            order = (False, True) if rep % 2 == 0 else (True, False)
            got = {on: one(config, Path(tmp) / f"r{rep}-{on}", on) for on in order}
            without.append(got[False])
            with_.append(got[True])
            ratios.append(got[True] / got[False])
            print(f"rep {rep}: without {got[False]:,.0f} ops/s, with {got[True]:,.0f} ops/s, ratio {ratios[-1]:.3f}")
            time.sleep(1)
    for name, xs in (("without", without), ("with", with_)):
        print(f"{name}: min {min(xs):,.0f} median {statistics.median(xs):,.0f} max {max(xs):,.0f} ops/s")
    print(f"ratio with/without: min {min(ratios):.3f} median {statistics.median(ratios):.3f} max {max(ratios):.3f}")


if __name__ == "__main__":
    main()
