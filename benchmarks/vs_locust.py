"""No-op throughput on one core: startline's engine against Locust, each in its own process pinned
to the same CPU, interleaved.

    .venv/bin/python benchmarks/vs_locust.py [--seconds 10] [--reps 3] [--users 100] [--cpu 0]

Locust runs from its own virtual environment (``.bench/locust``, made on first use with
``pip install locust==LOCUST_VERSION``: its gevent stack never meets startline's). Its users
have no wait time and fire one request event per task (Locust's own recording path: its
statistics); 100 users, one process, headless. Its rate is the requests counted between the
first and the last second of its stats history (the spawn and the shutdown left out).

startline runs the engine of ``benchmarks/engine_overhead.py``: orchestrator and one worker in
one process, 100 connections, two operation kinds, each a no-op that yields to the scheduler,
recorded into HDR per kind. Its rate is its MEASUREMENT operations per second.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCUST_VERSION = "2.47.0"
LOCUST_ENV = ROOT / ".bench" / "locust"

LOCUSTFILE = textwrap.dedent(
    """
    import time

    from locust import User, constant, task


    class NoOp(User):
        wait_time = constant(0)  # as a closed loop without think time: yield, then the next task

        @task
        def noop(self):
            t0 = time.perf_counter()
            self.environment.events.request.fire(
                request_type="noop",
                name="noop",
                response_time=(time.perf_counter() - t0) * 1000.0,
                response_length=0,
                exception=None,
                context={},
            )
    """
)


def locust_python() -> Path:
    """Locust's interpreter, its environment made the first time."""
    python = LOCUST_ENV / "bin" / "python"
    if not python.exists():
        print(f"making {LOCUST_ENV} (locust=={LOCUST_VERSION}) ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LOCUST_ENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"locust=={LOCUST_VERSION}"], check=True, stdout=sys.stderr
        )
    return python


def pinned(cpu: int) -> dict[str, object]:
    """Run a child on one CPU only."""
    return {"preexec_fn": lambda: os.sched_setaffinity(0, {cpu})}


def locust_rate(python: Path, users: int, seconds: float, cpu: int) -> float:
    with tempfile.TemporaryDirectory(prefix="vs-locust-") as tmp:
        locustfile = Path(tmp) / "locustfile.py"
        locustfile.write_text(LOCUSTFILE)
        prefix = Path(tmp) / "run"
        cmd = [str(python), "-m", "locust", "-f", str(locustfile), "--headless", "-u", str(users), "-r", str(users)]
        cmd += ["-t", f"{seconds:g}s", "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING"]
        subprocess.run(cmd, check=True, capture_output=True, **pinned(cpu))  # type: ignore[arg-type]
        with open(f"{prefix}_stats_history.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["Name"] == "Aggregated" and int(r["User Count"]) == users]
    first, last = rows[0], rows[-1]
    span = int(last["Timestamp"]) - int(first["Timestamp"])
    if span < 2:
        raise SystemExit(f"Locust's stats history spans {span} s at {users} users: run longer (--seconds)")
    return (int(last["Total Request Count"]) - int(first["Total Request Count"])) / span


def startline_rate(users: int, seconds: float, cpu: int) -> float:
    code = (
        "import sys, trio; sys.path.insert(0, 'benchmarks'); from engine_overhead import engine; "
        f"print(trio.run(engine, {users}, {seconds}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT, **pinned(cpu)
    )  # type: ignore[call-overload]
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--users", type=int, default=100, help="Locust users = startline connections")
    ap.add_argument("--cpu", type=int, default=0, help="the one CPU both run on")
    args = ap.parse_args()
    python = locust_python()
    ratios, rows = [], []
    for rep in range(args.reps):  # interleaved, so machine noise hits both alike
        loc = locust_rate(python, args.users, args.seconds, args.cpu)
        sl = startline_rate(args.users, args.seconds, args.cpu)
        ratios.append(sl / loc)
        rows.append({"locust_rps": round(loc), "startline_ops_s": round(sl), "ratio": round(sl / loc, 3)})
        print(f"rep {rep + 1}: Locust {loc:,.0f} req/s, startline {sl:,.0f} ops/s, ratio {sl / loc:.2f}", flush=True)
    print(
        f"startline / Locust on one core, {args.users} users: min {min(ratios):.2f}  "
        f"median {statistics.median(ratios):.2f}  max {max(ratios):.2f}"
    )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
