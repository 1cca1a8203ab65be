"""A scheduled start's late tail, in sample: the share of lags beyond a bound in live runs
against the share the profile fitted from those very runs expects — drawn from the profile's own
distributions (each worker's release lateness by its place, ``release_queue``, plus a
``connection_step`` per connection before it along the release), so no simulated run's sampling
stands between them. For every run, and for each half (even, odd) as ``fidelity.py`` folds them.
The places are drawn each alone here, where the simulator draws a run's release once for every
place (``SimRuntime.release_until``): a share of lags is a sum over places, which how the places
are drawn together does not move.

    .venv/bin/python benchmarks/fidelity_tail.py out/bench-fidelity/scheduled [--beyond-ms 1.5] [--draws 200000]

Where ``fidelity.py`` judges this share under-sampled (the halves themselves differ), this says
whether the model carries the runs it was fitted from; only scheduled's start is so simple.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fidelity import calibrated, live_figures, merge, share_beyond

from startline.simulate.models import Profile


def expected_share(profile: Profile, workers: int, connections: int, beyond_ms: float, draws: int) -> float:
    """The share of lags beyond ``beyond_ms`` the profile draws for a run of ``workers`` ×
    ``connections`` released at a scheduled instant, over ``draws`` runs."""
    rng = random.Random(1)
    step = profile.connection_step
    late = 0
    for _ in range(draws):
        for place in range(workers):
            lag = profile.release_lateness(place / max(1, workers - 1)).sample(rng) * 1000.0
            for c in range(connections):
                if c and step is not None:
                    lag += step.sample(rng) * 1000.0
                late += lag > beyond_ms
    return late / (draws * workers * connections)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, help="A directory of live scheduled runs (fidelity.py's run00, run01, ...).")
    ap.add_argument("--beyond-ms", type=float, default=1.5)
    ap.add_argument("--draws", type=int, default=200_000, help="Runs drawn from the profile.")
    args = ap.parse_args()
    runs = sorted(
        (d for d in args.runs.iterdir() if (d / "summary.json").exists()), key=lambda d: int(d.name.removeprefix("run"))
    )
    if not runs:
        raise SystemExit(f"{args.runs}: no finished runs")
    first = json.loads(next(runs[0].glob("worker-*.json")).read_text())
    workers = len(list(runs[0].glob("worker-*.json")))
    connections = first["initial_connections"]
    print(f"| runs | live, % beyond {args.beyond_ms:g} ms | the profile fitted from them expects, % | ratio |")
    print("|---|---|---|---|")
    for name, part in (("all", runs), ("even", runs[0::2]), ("odd", runs[1::2])):
        live = share_beyond(merge([live_figures(d) for d in part])["lag"], args.beyond_ms)
        model = expected_share(calibrated(part, False), workers, connections, args.beyond_ms, args.draws)
        ratio = f"{model / live:.3f}" if live else "—"
        print(f"| {name} ({len(part)}) | {100 * live:.3f} | {100 * model:.3f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
