"""TPC-C-like on the ``pgserver`` PostgreSQL and on a SQLite file (issue 24): tpmC, each
transaction's latency, retries and the consistency conditions checked by the run itself.

    .venv/bin/python benchmarks/tpcc.py [--warehouses 1] [--workers 2] [--connections 4]
                                        [--seconds 10] [--reps 3] [--targets postgresql,sqlite]

Each repetition loads the tables again (``startline init tpcc --drop``), then ``startline run
--workload tpcc`` for SECONDS of MEASUREMENT (1 s warm-up); targets interleaved. Not a TPC-C
result: no think times, no terminals (docs/workloads.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from startline.backends.postgres import server  # noqa: E402

CLI = [sys.executable, "-m", "startline.cli"]


def once(url: str, a: argparse.Namespace, out: Path) -> dict:
    option = ["--option", f"warehouses={a.warehouses}"]
    began = time.monotonic()
    subprocess.run([*CLI, "init", "tpcc", "--target", url, "--drop", *option], check=True, capture_output=True)
    loaded = time.monotonic() - began
    proc = subprocess.run(
        [
            *(*CLI, "run", "--workload", "tpcc", "--target", url, "--out", str(out), "--overwrite"),
            *("--no-report", "--quiet", *option, "--workers", str(a.workers)),
            *("--connections-per-worker", str(a.connections), "--warmup-s", "1", "--measurement-s", str(a.seconds)),
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode not in (0, 1):
        raise RuntimeError(proc.stderr[-2000:])
    s = json.loads((out / "summary.json").read_text())
    m = s["phases"]["MEASUREMENT"]
    kinds = m["by_kind"]
    return {
        "load_s": loaded,
        "tpmC": s["workload"]["tpmC"],
        "ops": m["qps"],
        "new_order_p50": kinds["new_order"]["latency_ms"]["p50"],
        "new_order_p99": kinds["new_order"]["latency_ms"]["p99"],
        "payment_p99": kinds["payment"]["latency_ms"]["p99"],
        "retried_pct": 100 * m.get("retried", 0) / max(1, m["ops"] + m["errors"]),
        "errors": m["errors"],
        "consistent": all(c["ok"] for c in s["workload"]["checks"]),
        "saturated": len(s["client"]["saturated"]),
    }


def spread(xs: list[float]) -> str:
    return f"{min(xs):,.2f} / {statistics.median(xs):,.2f} / {max(xs):,.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--warehouses", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--targets", default="postgresql,sqlite")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tpcc-") as t:
        tmp = Path(t)
        local = server.start(tmp / "data")
        try:
            urls = {"postgresql": local.url, "sqlite": f"sqlite:///{tmp}/tpcc.db"}
            targets = a.targets.split(",")
            runs: dict[str, list[dict]] = {name: [] for name in targets}
            for rep in range(a.reps):
                for name in targets:
                    runs[name].append(once(urls[name], a, tmp / f"out-{name}-{rep}"))
        finally:
            server.stop(tmp / "data")
    print(
        f"## TPC-C-like, {a.warehouses} warehouse(s), {a.workers} workers × {a.connections} connections, "
        f"{a.seconds} s, {a.reps} repetitions (min / median / max)"
    )
    for name, rs in runs.items():
        print(f"### {name}")
        for key in ("tpmC", "ops", "new_order_p50", "new_order_p99", "payment_p99", "retried_pct", "load_s"):
            print(f"{key:<20} {spread([r[key] for r in rs])}")
        print(f"errors               {[r['errors'] for r in rs]}")
        print(f"consistent           {[r['consistent'] for r in rs]}")
        print(f"saturated runs       {sum(1 for r in rs if r['saturated'])} of {len(rs)}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
