"""What reading the PostgreSQL server's own statistics costs a run (issue 26): the same
``startline run`` on the local server (the ``pgserver`` wheel's), with ``server_stats = true``
and ``false``, interleaved, repeated; MEASUREMENT throughput and p99 side by side, their ratio,
and the readings' own round trips.

    .venv/bin/python benchmarks/server_stats_cost.py [--reps 5] [--seconds 5] [--clients 8]
                                                     [--interval 1.0]

The work: pgbench's select-only (``SELECT abalance FROM pgbench_accounts WHERE aid = :aid``, scale
1) from C connections over two worker processes, a SQLite control plane, snapshot interval S
(the readings are one per interval). The scratch server runs with ``fsync = off``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from startline.backends.postgres import server  # noqa: E402

SCENARIO = """
name = "server-stats-cost"
workers = 2
connections_per_worker = {per}
warmup_s = 1
measurement_s = {seconds}
snapshot_interval_s = {interval}
server_stats = {on}
control = "sqlite:///{out}/control.db"
target = "{url}"

[[operations]]
name = "select"
sql = "SELECT abalance FROM pgbench_accounts WHERE aid = :aid"
params.aid = {{ type = "int", min = 1, max = 100000 }}
"""


def run(url: str, on: bool, args: argparse.Namespace, tmp: Path, n: int) -> dict[str, float]:
    out = tmp / f"out-{n}-{on}"
    config = tmp / f"s-{n}-{on}.toml"
    config.write_text(
        SCENARIO.format(
            per=args.clients // 2,
            seconds=args.seconds,
            interval=args.interval,
            on="true" if on else "false",
            out=out,
            url=url,
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "startline.cli", "run", str(config), "--out", str(out), "--quiet", "--no-report"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"startline run exited {done.returncode}: {done.stderr[-2000:]}")
    s = json.loads((out / "summary.json").read_text())
    m = s["phases"]["MEASUREMENT"]
    sampling = (s.get("server") or {}).get("sampling") or {}
    assert ("server" in s) is on, "server_stats did not decide whether the server was read"
    return {
        "qps": m["qps"],
        "p99_ms": m["latency_ms"]["p99"],
        "readings": sampling.get("readings", 0),
        "trip_p50_ms": (sampling.get("round_trip_ms") or {}).get("p50", 0.0),
    }


def spread(values: list[float]) -> str:
    return f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--interval", type=float, default=1.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        local = server.start(tmp / "data")
        try:
            subprocess.run(
                [str(server._bin() / "pgbench"), "-i", "-s", "1", "-q", local.url],
                check=True,
                capture_output=True,
            )
            with_, without = [], []
            for n in range(args.reps):  # interleaved, the order alternating
                for on in (n % 2 == 0, n % 2 == 1):
                    (with_ if on else without).append(run(local.url, on, args, tmp, n))
                    r = (with_ if on else without)[-1]
                    print(f"rep {n} server_stats={on}: {r['qps']:.0f} ops/s, p99 {r['p99_ms']:.2f} ms", flush=True)
        finally:
            server.stop(tmp / "data")
    ratios = [a["qps"] / b["qps"] for a, b in zip(with_, without, strict=True)]
    p99 = [a["p99_ms"] / b["p99_ms"] for a, b in zip(with_, without, strict=True)]
    print(f"\n{args.clients} connections, 2 workers, {args.seconds:g} s MEASUREMENT, interval {args.interval:g} s")
    print("figure                          min / median / max")
    print(f"throughput with / without       {spread(ratios)}")
    print(f"p99 with / without              {spread(p99)}")
    print(f"qps with                        {spread([r['qps'] for r in with_])}")
    print(f"qps without                     {spread([r['qps'] for r in without])}")
    print(f"readings per run                {spread([r['readings'] for r in with_])}")
    print(f"reading round trip p50 ms       {spread([r['trip_p50_ms'] for r in with_])}")


if __name__ == "__main__":
    main()
