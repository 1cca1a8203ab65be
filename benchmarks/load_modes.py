"""The load modes, measured (issue "Load modes"; figures in benchmarks/RESULTS.md).

    .venv/bin/python benchmarks/load_modes.py open-loop [--seconds 5] [--reps 3] [--rates 1000 10000 30000 60000]
    .venv/bin/python benchmarks/load_modes.py co [--reps 3]
    .venv/bin/python benchmarks/load_modes.py control [--seeds 1000] [--jobs 2]

open-loop: the memory target (a no-op call), one process, real time. For each rate, an open-loop
run and, side by side (interleaved), a closed loop with the same connections: achieved/offered,
schedule lag p50/p99 and the closed loop's throughput.

co: the coordinated-omission demonstration — a target that stalls for 1 s once, at 500 ops/s with
max_in_flight = 1: the closed loop's p99 beside the open loop's (response time from the intended
start), live (one process, real time) and on virtual time.

control: on virtual time against a target of known capacity (servers 4..40, service uniform
±20 % around 20..60 ms), seeds 0..N-1: find-max's distance to the true knee (in steps), and the
QPS controller's settling (control intervals until the reading is within 5 % and stays), its
overshoot, and how its runs ended.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import trio

from startline.engine.scenario import Scenario
from startline.inprocess import run_in_process_async
from startline.simulate.models import Profile
from startline.simulate.runner import simulate_once


def _spread(xs: list[float]) -> str:
    return f"{min(xs):,.3f} / {statistics.median(xs):,.3f} / {max(xs):,.3f}"


# ---- open-loop precision -------------------------------------------------------------------------


def _scenario(load: dict[str, Any], connections: int, seconds: float, call: Any) -> Scenario:
    return Scenario.from_dict(
        {
            "name": "bench",
            "workers": 1,
            "connections_per_worker": connections,
            "measurement_s": seconds,
            "operations": [{"name": "op", "call": call}],
            "load": load,
            "start": {"strategy": "scheduled", "lead_ms": 300, "poll_interval_ms": 50},
        }
    )


def _measure(sc: Scenario) -> dict[str, Any]:
    return trio.run(run_in_process_async, sc).summary["phases"]["MEASUREMENT"]


def open_loop(args: argparse.Namespace) -> None:
    noop = "startline.backends.memory.ops:noop"
    keys = ("ratio", "lag50", "lag99", "closed")
    rows: dict[float, dict[str, list[float]]] = {r: {k: [] for k in keys} for r in args.rates}
    n = args.connections
    for rep in range(args.reps):
        for rate in args.rates:  # interleaved: open loop and closed loop, rate after rate
            m = _measure(_scenario({"mode": "rate", "rate": rate, "max_in_flight": n}, n, args.seconds, noop))
            rows[rate]["ratio"].append(m["ops"] / m["offered"] if m["offered"] else 0.0)
            rows[rate]["lag50"].append(m["schedule_lag_ms"]["p50"])
            rows[rate]["lag99"].append(m["schedule_lag_ms"]["p99"])
            rows[rate]["closed"].append(_measure(_scenario(CLOSED, n, args.seconds, noop))["qps"])
            print(f"rep {rep} rate {rate:g}: achieved/offered {rows[rate]['ratio'][-1]:.4f}", file=sys.stderr)
    print(f"open loop, memory target, {n} connections, {args.seconds:g} s, {args.reps} reps (min / median / max)")
    print("| rate ops/s | achieved / offered | lag p50 ms | lag p99 ms | closed loop qps, same connections |")
    print("|---:|---:|---:|---:|---:|")
    for rate, r in rows.items():
        print(f"| {rate:,.0f} | " + " | ".join(_spread(r[k]) for k in keys) + " |")


# ---- coordinated omission ------------------------------------------------------------------------------

STALLED = [0]
CLOSED: dict[str, Any] = {"mode": "concurrency"}
OPEN_500: dict[str, Any] = {"mode": "rate", "rate": 500, "max_in_flight": 1}


async def stalls_once(n: int = 1000) -> None:
    """1 ms per call, except call ``n``: one second (the target pauses)."""
    STALLED[0] += 1
    await trio.sleep(1.0 if STALLED[0] == n else 0.001)


def co(args: argparse.Namespace) -> None:
    call = stalls_once  # a library user's callable: it runs in this process
    figures: dict[str, list[float]] = {"closed": [], "open": [], "open_service": []}
    for _ in range(args.reps):
        for mode, load in (("closed", CLOSED), ("open", OPEN_500)):
            STALLED[0] = 0
            m = _measure(_scenario(load, 1, 10.0, call))
            figures[mode].append(m["latency_ms"]["p99"])
            if mode == "open":
                figures["open_service"].append(m["service_ms"]["p99"])
    sim_profile = Profile.from_dict({"target": 1.0, "target_stalls": [[5.0, 6.0]]})
    sim_open = simulate_once(_scenario(OPEN_500, 1, 10.0, call), sim_profile, 1)["measurement"]
    sim_closed = simulate_once(_scenario(CLOSED, 1, 10.0, call), sim_profile, 1)["measurement"]
    print(f"a 1 s stall, 1 connection, 10 s of MEASUREMENT; live: {args.reps} reps (min / median / max)")
    print("| | closed loop p99 ms | open loop p99 ms (response) | open loop service p99 ms |")
    print("|---|---:|---:|---:|")
    live = " | ".join(_spread(figures[k]) for k in ("closed", "open", "open_service"))
    print(f"| live, 500 ops/s offered | {live} |")
    sim = [sim_closed["latency_p99_ms"], sim_open["latency_p99_ms"], sim_open["service_p99_ms"]]
    print("| virtual time | " + " | ".join(f"{x:,.3f}" for x in sim) + " |")


# ---- the controllers over many seeds ------------------------------------------------------------------


def _capacity(seed: int) -> tuple[Profile, int, float]:
    import random

    rng = random.Random(seed)
    servers, mean = rng.randint(4, 40), rng.uniform(20, 60)
    service = {"type": "uniform", "lo_ms": 0.8 * mean, "hi_ms": 1.2 * mean}
    return Profile.from_dict({"capacity": {"servers": servers, "service": service}}), servers, mean


def _sim_scenario(name: str, load: dict[str, Any], seconds: float) -> Scenario:
    return Scenario.from_dict(
        {
            "name": name,
            "workers": 2,
            "connections_per_worker": 1,
            "measurement_s": seconds,
            "operations": [{"name": "op", "call": "unused:sim"}],
            "load": load,
        }
    )


def _one_find_max(seed: int) -> dict[str, Any]:
    profile, servers, _ = _capacity(seed)
    assert profile.capacity is not None
    load = {"mode": "find_max", "find_max": {"start": 2, "step": 4, "step_s": 4, "settle_s": 1}}
    result = simulate_once(_sim_scenario("fm", load, 200), profile, seed)["load"]["result"]
    ratio = result["qps"] / profile.capacity.max_qps
    return {"servers": servers, "found": result["concurrency"], "steps": result["steps"], "qps_ratio": ratio}


def _one_qps(seed: int) -> dict[str, Any]:
    import random

    profile, servers, mean = _capacity(seed)
    wanted = random.Random(seed + 1).randint(2, servers)
    target = round(wanted * 1000.0 / mean, 1)  # reachable: `wanted` connections make it
    load = {"mode": "qps", "target_qps": target, "control_interval_s": 2}
    steps = simulate_once(_sim_scenario("qps", load, 60), profile, seed)["load"]["steps"]
    within = [abs(s["qps"] - target) <= 0.05 * target for s in steps]
    settle = next((i + 1 for i in range(len(within)) if all(within[i:])), None)
    over = max(((s["qps"] - target) / target for s in steps), default=0.0)
    moves = [s["to"] - s["connections"] for s in steps if s["to"] != s["connections"]]
    reversals = sum(1 for a, b in itertools.pairwise(moves) if a * b < 0)
    return {"settle_intervals": settle, "overshoot": max(0.0, over), "reversals": reversals}


def control(args: argparse.Namespace) -> None:
    seeds = range(args.seeds)
    with ProcessPoolExecutor(args.jobs) as pool:
        fm = list(pool.map(_one_find_max, seeds, chunksize=10))
        qp = list(pool.map(_one_qps, seeds, chunksize=10))
    dist = [abs(r["found"] - r["servers"]) / 4 for r in fm]
    within = sum(d <= 1 for d in dist)
    ratio = [r["qps_ratio"] for r in fm]
    print(
        f"find-max, {len(fm)} seeds (step 4): |found - knee| / step p50 {statistics.median(dist):.2f}, "
        f"max {max(dist):.2f}; within one step {within}/{len(fm)}; "
        f"steps p50 {statistics.median(r['steps'] for r in fm)}; "
        f"best qps / true max qps p50 {statistics.median(ratio):.3f}, min {min(ratio):.3f}"
    )
    settle = sorted(r["settle_intervals"] for r in qp if r["settle_intervals"] is not None)
    over = [r["overshoot"] for r in qp]
    print(
        f"qps control, {len(qp)} seeds (interval 2 s): settled within 5 % and stayed {len(settle)}/{len(qp)}; "
        f"intervals to settle p50 {statistics.median(settle)}, p99 {settle[int(0.99 * (len(settle) - 1))]}, "
        f"max {settle[-1]}; overshoot p50 {statistics.median(over):.3f}, max {max(over):.3f}; "
        f"direction reversals max {max(r['reversals'] for r in qp)}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"find_max": fm, "qps": qp}, f)


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="what", required=True)
    o = sub.add_parser("open-loop")
    o.add_argument("--seconds", type=float, default=5.0)
    o.add_argument("--reps", type=int, default=3)
    o.add_argument("--connections", type=int, default=100)
    o.add_argument("--rates", type=float, nargs="+", default=[1000, 10000, 30000, 60000])
    c = sub.add_parser("co")
    c.add_argument("--reps", type=int, default=3)
    k = sub.add_parser("control")
    k.add_argument("--seeds", type=int, default=1000)
    k.add_argument("--jobs", type=int, default=2)
    k.add_argument("--json", default=None, help="Write every seed's figures here.")
    args = p.parse_args()
    {"open-loop": open_loop, "co": co, "control": control}[args.what](args)


if __name__ == "__main__":
    main()
