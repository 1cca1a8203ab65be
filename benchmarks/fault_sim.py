"""Deterministic fault simulation at scale: N seeds of whole lifecycles under random faults,
every invariant checked after each run (goal: 0 violations in 10,000 seeds); and a sweep of
one control-plane outage of growing length (the largest survived without losing a result).

    .venv/bin/python benchmarks/fault_sim.py --seeds 10000 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import logging
import time

from startline.simulate.faults import FAULT_SCENARIO, fault_report, run_fault_seeds, run_with_faults, single_outage


def outage_sweep(seeds: int) -> dict[str, object]:
    """Outage lengths 0.25 s apart, each starting mid-measurement, ``seeds`` seeds each: the
    longest for which every seed ended COMPLETED with every worker COMPLETED and no violation."""
    logging.disable(logging.CRITICAL)
    tolerance = FAULT_SCENARIO["outage_tolerance_s"]
    rows = []
    for quarter in range(1, int(tolerance * 4) + 5):
        length = quarter / 4
        runs = [run_with_faults(s, plan=single_outage(s, 4.0, length)) for s in range(seeds)]
        ok = all(r.status == "COMPLETED" and not r.violations and r.survived_outage_s > 0 for r in runs)
        rows.append({"outage_s": length, "all_survived": ok, "statuses": sorted({r.status for r in runs})})
    survived = [r["outage_s"] for r in rows if r["all_survived"]]
    return {"outage_tolerance_s": tolerance, "largest_survived_s": max(survived, default=0.0), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=10_000)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--outage-seeds", type=int, default=20)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    began = time.perf_counter()
    runs = run_fault_seeds(list(range(args.first_seed, args.first_seed + args.seeds)), args.jobs)
    report = fault_report(runs) | {"wall_s": round(time.perf_counter() - began, 1), "jobs": args.jobs}
    report["outage_sweep"] = outage_sweep(args.outage_seeds)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
