"""Wall time per simulated run of the seed design's start path (10 workers, inline-poll), 20 seeds:
what a sweep's cell costs per seed, comparable across commits (run an older tree's copy with
benchmarks/other_tree.py), whatever the event count says.

    .venv/bin/python benchmarks/sim_wall.py
"""

from __future__ import annotations

import gc
import json
import time

from startline.engine.scenario import Scenario
from startline.simulate.runner import simulate_once
from startline.simulate.sweep import START_PATH_SCENARIO, load_profile


def main() -> None:
    sc = Scenario.from_dict({**START_PATH_SCENARIO, "workers": 10, "start": {"strategy": "inline-poll"}})
    profile = load_profile("snowflake-hybrid")
    simulate_once(sc, profile, 999)  # a warm-up run
    took = []
    for seed in range(20):
        gc.collect()
        t = time.perf_counter()
        simulate_once(sc, profile, seed)
        took.append(time.perf_counter() - t)
    print(json.dumps({"ms_per_run": round(sum(took) / len(took) * 1000, 1)}))


if __name__ == "__main__":
    main()
