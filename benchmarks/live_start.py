"""Live start precision and control-plane cost on this machine: SQLite (or PostgreSQL) control
plane and target, W worker processes × C connections, N runs per strategy, side by side.

    .venv/bin/python benchmarks/live_start.py [--runs 20] [--workers 8] [--connections 4] [--out out/bench-live]
    .venv/bin/python benchmarks/live_start.py --postgres out/pg-bench [--only push poll-50ms scheduled]

``--postgres DIR`` starts (or reuses) a local PostgreSQL server with its data in DIR (pgserver's
binaries) and gives every run a fresh database on it, control plane and target.

Per strategy: lag p50/p99 over every initial connection of every run, skew p50/p99 over
runs, and control-plane queries per worker per second while waiting and while running.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from startline.engine.schedule import percentile

STRATEGIES = {
    "scheduled": {"strategy": "scheduled"},  # defaults: poll every 2 s, lead 3 s
    "poll-50ms-parallel-prespawn": {
        "strategy": "poll",
        "poll_interval_ms": 50,
        "bookkeeping": "parallel",
        "prespawn": True,
    },
    "inline-poll": {"strategy": "inline-poll"},
    "push": {"strategy": "push"},  # a control plane that notifies (PostgreSQL); elsewhere it polls
    "push-parallel-prespawn": {"strategy": "push", "bookkeeping": "parallel", "prespawn": True},
    "poll-50ms": {"strategy": "poll", "poll_interval_ms": 50},
}
DEFAULT = ("scheduled", "poll-50ms-parallel-prespawn", "inline-poll")
"""The strategies run on SQLite unless --only says otherwise (push needs a notifying control plane)."""
ON_POSTGRES = ("push", "push-parallel-prespawn", "poll-50ms-parallel-prespawn", "scheduled")

SQLITE_SETUP = """['''DROP TABLE IF EXISTS kv; CREATE TABLE kv (k INTEGER PRIMARY KEY, v INTEGER);
  WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
  INSERT INTO kv SELECT i, 0 FROM n;''']"""
POSTGRES_SETUP = """["DROP TABLE IF EXISTS kv", "CREATE TABLE kv (k INTEGER PRIMARY KEY, v INTEGER)",
  "INSERT INTO kv SELECT g, 0 FROM generate_series(1, 1000) g"]"""


def scenario_toml(start: dict, workers: int, connections: int, url: str | None = None, measurement_s: float = 3) -> str:
    """The benchmark's scenario: on SQLite files in the run's directory, or on ``url`` (PostgreSQL)."""
    start_lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in start.items())
    control = url or "sqlite:///{out}/control.db"
    target = url or "sqlite:///{out}/data.db"
    return f"""
name = "bench-live"
workers = {workers}
connections_per_worker = {connections}
warmup_s = 0
measurement_s = {measurement_s:g}
control = "{control}"
target = "{target}"
setup = {POSTGRES_SETUP if url else SQLITE_SETUP}

[start]
{start_lines}

[[operations]]
name = "read"
sql = "SELECT v FROM kv WHERE k = :k"
params.k = {{ type = "int", min = 1, max = 1000 }}
"""


def run_live(out: Path, scenario: str, what: str) -> bool:
    """``startline run`` of ``scenario`` into a fresh ``out`` (a fresh control plane per run);
    False, said on stderr, when it did not exit 0."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cfg = out / "scenario.toml"
    cfg.write_text(scenario)
    proc = subprocess.run(
        [sys.executable, "-m", "startline.cli", "run", str(cfg), "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        print(f"{what}: exit {proc.returncode}: {proc.stderr[-500:]}", file=sys.stderr)
    return proc.returncode == 0


def fresh_database(server_url: str, name: str) -> str:
    """A new, empty database on the server (its URL): every run starts on an empty control plane."""
    import psycopg

    name = name.replace("-", "_")
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + "/" + name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--out", default="out/bench-live")
    ap.add_argument("--only", nargs="*", default=None, help="Strategies to run (default: all).")
    ap.add_argument("--postgres", default=None, metavar="DIR", help="Run on a local PostgreSQL server (data in DIR).")
    args = ap.parse_args()
    root = Path(args.out)
    server_url = None
    if args.postgres:
        from startline.backends.postgres import server

        server_url = server.start(Path(args.postgres)).url
    chosen = args.only or (ON_POSTGRES if server_url else DEFAULT)
    results: dict[str, dict] = {name: {"lags": [], "skews": [], "waiting": [], "running": []} for name in chosen}
    for run in range(args.runs):
        for name in chosen:  # interleaved: machine noise hits every strategy alike
            url = None if server_url is None else fresh_database(server_url, f"bench_{name}_{run}")
            out = root / name / f"run{run:02d}"
            scenario = scenario_toml(STRATEGIES[name], args.workers, args.connections, url)
            if not run_live(out, scenario, f"{name} run {run}"):
                continue
            summary = json.loads((out / "summary.json").read_text())
            for lags in summary["start"]["by_worker"].values():
                results[name]["lags"].extend(lags)
            r = results[name]
            r["skews"].append(summary["start"]["skew_ms"])
            r["waiting"].append(summary["control_plane"]["per_worker_per_s_waiting"])
            r["running"].append(summary["control_plane"]["per_worker_per_s_running"])
        print(f"run {run + 1}/{args.runs} done", file=sys.stderr, flush=True)
    rows = []
    for name, r in results.items():
        if not r["skews"]:
            continue
        rows.append(
            {
                "strategy": name,
                "runs": len(r["skews"]),
                "connections": len(r["lags"]),
                "lag_p50_ms": round(percentile(r["lags"], 50), 2),
                "lag_p99_ms": round(percentile(r["lags"], 99), 2),
                "skew_p50_ms": round(percentile(r["skews"], 50), 2),
                "skew_p99_ms": round(percentile(r["skews"], 99), 2),
                "cp_per_worker_s_waiting": round(statistics.mean(r["waiting"]), 2),
                "cp_per_worker_s_running": round(statistics.mean(r["running"]), 2),
            }
        )
    print("| strategy | runs | lag p50 ms | lag p99 ms | skew p50 ms | skew p99 ms | cp q/worker/s waiting | running |")
    print("|---|---|---|---|---|---|---|---|")
    for x in rows:
        print(
            f"| {x['strategy']} | {x['runs']} | {x['lag_p50_ms']} | {x['lag_p99_ms']} | {x['skew_p50_ms']} | "
            f"{x['skew_p99_ms']} | {x['cp_per_worker_s_waiting']} | {x['cp_per_worker_s_running']} |"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
