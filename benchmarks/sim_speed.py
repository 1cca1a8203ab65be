"""Simulation speed: simulated events per wall second of the full engine on the simulated
backend ÷ that of a bare loop of ``trio.sleep`` calls under the same MockClock, one process.

    .venv/bin/python benchmarks/sim_speed.py [--seeds 40] [--workers 10] [--strategy inline-poll]

An event is one virtual-time wait of the simulated backend: two per control-plane call (there
and back), one per operation, one per wait of a worker's simulated runtime (a connection task's
start, a start-path sleep, a pool's setup; not counted before 2026-11-30). The engine's own
waits (poll intervals, heartbeats) are not counted. The bare loop makes the same number of
waits with similar latencies.

A second figure counts every virtual-time wait of the run, the engine's own included (each
cancel scope whose deadline the clock reached: every poll interval, every timeout that fired;
and each sleep on the simulator's own clock), counted in an extra, untimed run of the same seed
(same seed, same run).

The bare loop sleeps with ``trio.sleep`` (a cancel scope per sleep), as it always has: the
goal is stated against it. Since 2026-12-03 the simulator sleeps on its own timers
(``startline/simulate/clock.py``); a third figure, always measured, is the same bare loop
sleeping that way, to say how much of what is left is the engine.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import time

import trio
import trio.testing

import startline.simulate.backend as backend
from startline.engine.scenario import Scenario
from startline.simulate.clock import SimClock
from startline.simulate.clock import sleep as sim_sleep
from startline.simulate.runner import simulate_once
from startline.simulate.sweep import START_PATH_SCENARIO, load_profile


def bare(tasks: int, sleeps: int, seed: int, simclock: bool = False) -> None:
    """Exactly ``sleeps`` waits spread over ``tasks`` tasks, each a uniform 50-150 ms, on a
    MockClock with ``trio.sleep`` (or on the simulator's clock with its own sleep)."""
    nap = sim_sleep if simclock else trio.sleep

    async def one(i: int) -> None:
        rng = random.Random(seed * 100_003 + i)
        for _ in range(sleeps // tasks + (i < sleeps % tasks)):  # (the remainder too: it made fewer before)
            await nap(rng.uniform(0.05, 0.15))

    async def main() -> None:
        async with trio.open_nursery() as n:
            for i in range(tasks):
                n.start_soon(one, i)

    trio.run(main, clock=SimClock().for_trio() if simclock else trio.testing.MockClock(autojump_threshold=0))


def all_waits(sc: Scenario, profile: object, seed: int) -> int:
    """Every deadline the clock reached in one simulated run (an untimed run: the count scans
    Trio's deadline heap, which would distort the timing)."""
    import trio._core._run as run_module

    expire, sim_sleep_until, count = run_module.Deadlines.expire, SimClock.sleep_until, [0]

    def counting(self: object, now: float) -> bool:
        heap = self._heap  # type: ignore[attr-defined]
        count[0] += sum(1 for d, _, scope in heap if d <= now and d == scope._registered_deadline)
        return expire(self, now)

    def sleeping(self: SimClock, instant: float) -> object:
        count[0] += 1
        return sim_sleep_until(self, instant)

    run_module.Deadlines.expire = counting  # type: ignore[method-assign]
    SimClock.sleep_until = sleeping  # type: ignore[method-assign]
    try:
        simulate_once(sc, profile, seed)  # type: ignore[arg-type]
    finally:
        run_module.Deadlines.expire = expire  # type: ignore[method-assign]
        SimClock.sleep_until = sim_sleep_until  # type: ignore[method-assign]
    return count[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=40)
    ap.add_argument("--workers", type=int, default=10)
    ap.add_argument("--strategy", default="inline-poll")
    args = ap.parse_args()
    sc = Scenario.from_dict({**START_PATH_SCENARIO, "workers": args.workers, "start": {"strategy": args.strategy}})
    profile = load_profile("snowflake-hybrid")
    engine_rates, bare_rates, all_rates, simclock_rates = [], [], [], []
    for seed in range(args.seeds):  # interleaved, so machine noise hits both alike
        backend.SLEEPS[0] = 0
        gc.collect()  # each timed part starts without the garbage of the one before
        t0 = time.perf_counter()
        simulate_once(sc, profile, seed)
        engine_s = time.perf_counter() - t0
        events = backend.SLEEPS[0]
        gc.collect()
        t0 = time.perf_counter()
        bare(args.workers * (sc.connections_per_worker + 2), events, seed)
        bare_s = time.perf_counter() - t0
        gc.collect()
        t0 = time.perf_counter()
        bare(args.workers * (sc.connections_per_worker + 2), events, seed, simclock=True)
        simclock_s = time.perf_counter() - t0
        engine_rates.append(events / engine_s)
        bare_rates.append(events / bare_s)
        simclock_rates.append(events / simclock_s)
        all_rates.append(all_waits(sc, profile, seed) / engine_s)
    e, b = sum(engine_rates) / len(engine_rates), sum(bare_rates) / len(bare_rates)
    a = sum(all_rates) / len(all_rates)
    c = sum(simclock_rates) / len(simclock_rates)
    print(
        f"engine {e:,.0f} events/s, bare {b:,.0f} events/s, ratio {e / b:.3f}; counting every wait "
        f"{a:,.0f} waits/s, ratio {a / b:.3f}; bare loop on the simulator's clock {c:,.0f} events/s, "
        f"engine / that {e / c:.3f} ({args.seeds} seeds, {args.workers} workers, {args.strategy})"
    )
    print(
        json.dumps(
            {
                "engine_events_s": round(e),
                "bare_events_s": round(b),
                "ratio": round(e / b, 3),
                "engine_all_waits_s": round(a),
                "ratio_all_waits": round(a / b, 3),
                "bare_simclock_events_s": round(c),
                "ratio_to_bare_simclock": round(e / c, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
