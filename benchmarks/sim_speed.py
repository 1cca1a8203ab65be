"""Simulation speed: simulated events per wall second of the full engine on the simulated
backend ÷ that of a bare loop of ``trio.sleep`` calls under the same MockClock, one process.

    .venv/bin/python benchmarks/sim_speed.py [--seeds 40] [--workers 10] [--strategy inline-poll]

An event is one virtual-time wait of the simulated backend: two per control-plane call (there
and back), one per operation, one per wait of a worker's simulated runtime (a connection task's
start, a start-path sleep, a pool's setup; not counted before 2026-11-30). The engine's own
waits (poll intervals, heartbeats) are not counted. The bare loop makes the same number of
waits with similar latencies.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import trio
import trio.testing

import startline.simulate.backend as backend
from startline.engine.scenario import Scenario
from startline.simulate.runner import simulate_once
from startline.simulate.sweep import START_PATH_SCENARIO, load_profile


def bare(tasks: int, sleeps: int, seed: int) -> None:
    """``sleeps`` waits spread over ``tasks`` tasks, each a uniform 50-150 ms, on a MockClock."""
    per = sleeps // tasks

    async def one(i: int) -> None:
        rng = random.Random(seed * 100_003 + i)
        for _ in range(per):
            await trio.sleep(rng.uniform(0.05, 0.15))

    async def main() -> None:
        async with trio.open_nursery() as n:
            for i in range(tasks):
                n.start_soon(one, i)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=40)
    ap.add_argument("--workers", type=int, default=10)
    ap.add_argument("--strategy", default="inline-poll")
    args = ap.parse_args()
    sc = Scenario.from_dict({**START_PATH_SCENARIO, "workers": args.workers, "start": {"strategy": args.strategy}})
    profile = load_profile("snowflake-hybrid")
    engine_rates, bare_rates = [], []
    for seed in range(args.seeds):  # interleaved, so machine noise hits both alike
        backend.SLEEPS[0] = 0
        t0 = time.perf_counter()
        simulate_once(sc, profile, seed)
        engine_s = time.perf_counter() - t0
        events = backend.SLEEPS[0]
        t0 = time.perf_counter()
        bare(args.workers * (sc.connections_per_worker + 2), events, seed)
        bare_s = time.perf_counter() - t0
        engine_rates.append(events / engine_s)
        bare_rates.append(events / bare_s)
    e, b = sum(engine_rates) / len(engine_rates), sum(bare_rates) / len(bare_rates)
    print(
        f"engine {e:,.0f} events/s, bare {b:,.0f} events/s, ratio {e / b:.3f} "
        f"({args.seeds} seeds, {args.workers} workers, {args.strategy})"
    )
    print(json.dumps({"engine_events_s": round(e), "bare_events_s": round(b), "ratio": round(e / b, 3)}))


if __name__ == "__main__":
    main()
