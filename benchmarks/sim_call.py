"""One simulated control-plane round trip through each layer a participant calls it through
(the memory store; + the simulated backend; + counting; + retries and deadline), against the
two bare ``trio.sleep`` calls it models, on a MockClock.

    .venv/bin/python benchmarks/sim_call.py [--calls 5000]
"""

from __future__ import annotations

import argparse
import random
import time

import trio
import trio.testing

from startline.backends.memory import MemoryControlPlane, MemoryStore
from startline.backends.memory.clock import TrioWallClock
from startline.engine.counting import CountingControlPlane
from startline.engine.resilience import ResilientControlPlane
from startline.simulate.backend import SimControlPlane
from startline.simulate.sweep import load_profile


async def measure(calls: int) -> None:
    profile = load_profile("snowflake-hybrid")
    store = MemoryStore(TrioWallClock(0.0))
    sim = SimControlPlane(store, profile, 1, "w000")
    counting = CountingControlPlane(sim, timed=False)
    layers = {
        "memory store": MemoryControlPlane(store, checkpoints=False),
        "+ simulated": sim,
        "+ counting": counting,
        "+ resilient": ResilientControlPlane(counting),
    }
    rng = random.Random(1)
    t = time.perf_counter()
    for _ in range(calls):
        await trio.sleep(rng.uniform(0.005, 0.01))
        await trio.sleep(rng.uniform(0.005, 0.01))
    print(f"{'two bare sleeps':<16} {(time.perf_counter() - t) / calls * 1e6:6.1f} µs")
    for name, cp in layers.items():
        t = time.perf_counter()
        for _ in range(calls):
            await cp.read_run("r")
        print(f"{name:<16} {(time.perf_counter() - t) / calls * 1e6:6.1f} µs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=5000)
    args = ap.parse_args()
    trio.run(measure, args.calls, clock=trio.testing.MockClock(autojump_threshold=0))


if __name__ == "__main__":
    main()
