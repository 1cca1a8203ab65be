"""How well the simulator predicts live runs: N live runs per strategy on SQLite (W worker
processes × C connections), interleaved; a profile calibrated from every other run of each
strategy (`startline calibrate`); that strategy's scenario simulated with it; predicted / live
for the runs in between — in both folds (calibrated from the even runs, predicting the odd ones,
and the other way round).

    .venv/bin/python benchmarks/fidelity.py [--runs 20] [--max-runs 40] [--groups 15] [--workers 4] [--connections 2]
        [--measurement-s 3] [--only poll ...] [--out DIR] [--reuse] [--jobs 1] [--beyond-ms MS] [--ends]
        [--pooled-control] [--in-sample]

Before judging, the live runs of each strategy are split in their two halves (even, odd): a
figure whose halves differ by more than 5 % of their mean is under-sampled, not missed
(``startline.simulate.fidelity``), and more runs are taken, interleaved, until every figure's
halves agree or ``--max-runs`` is reached. Each ratio is reported beside its halves' agreement.

Figures, pooled over the predicted runs: detection (each worker's detect mark −
START_TIME) p50/p99, lag (each initial connection's first operation − START_TIME) p50/p99,
skew (one per run) p50/p99, control-plane queries per worker per second while waiting, and with
``--beyond-ms`` the share of lags later than that (a p99 that falls between two modes of the lags —
most connections prompt, a worker in a hundred late — jumps with the mode it lands in; the share
is the late mode's mass itself, a count whose sampling error is a count's).
Predicted: the same figures over a group of as many simulated runs, median over the groups.
Goal (issue 12): every ratio within 0.85–1.15. ``--in-sample`` adds each strategy's profile fitted
from every run predicting those same runs: what the model carries of the runs it was fitted from,
apart from how far one half differs from the other.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import attrs
from live_start import run_live, scenario_toml

from startline.engine.scenario import Scenario
from startline.engine.schedule import percentile
from startline.simulate.calibrate import Observed, control_latencies, empirical, fit
from startline.simulate.fidelity import Judged, disagreement, halves_agree, judge
from startline.simulate.models import Profile
from startline.simulate.runner import simulate_once

STRATEGIES = {
    "poll": {"strategy": "poll"},  # every 50 ms, bookkeeping in parallel, pre-spawned
    "seed-legacy (inline-poll)": {"strategy": "inline-poll"},
    "scheduled": {"strategy": "scheduled"},  # poll every 2 s, lead 3 s
}
SIM_MEASUREMENT_FLOOR_S = 0.1
"""The shortest measurement a simulated run is given: every figure here is settled once each
initial connection has begun, so a simulated run needs only outlast the latest of them."""
FIGURES = ("detection p50", "detection p99", "lag p50", "lag p99", "skew p50", "skew p99", "cp q/worker/s waiting")


@functools.cache  # a finished run's files do not change; the halves, the folds and the
# simulated measurement all read every run
def live_figures(run_dir: Path) -> dict[str, list[float]]:
    """One live run's raw figures: each worker's detection, each initial connection's lag, the skew
    (shared between callers: not to be changed)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    start = summary["start_time"]
    out: dict[str, list[float]] = {"detection": [], "lag": [], "skew": [], "cp": []}
    for f in sorted(run_dir.glob("worker-*.json")):
        p = json.loads(f.read_text())
        n = p["initial_connections"]
        if (detect := p["timeline"].get("detect")) is not None:
            out["detection"].append((detect - start) * 1000.0)
        out["lag"] += [(t - start) * 1000.0 for s, t in p["first_query"].items() if int(s) < n]
    out["skew"].append(summary["start"]["skew_ms"])
    out["cp"].append(summary["control_plane"]["per_worker_per_s_waiting"])
    return out


def simulated_measurement_s(run_dirs: list[Path]) -> float:
    """How long a simulated run's measurement need be: twice the latest first operation of the
    live runs (at least ``SIM_MEASUREMENT_FLOOR_S``). The start's figures are the same for any
    measurement its connections all begin within (the draws are keyed by call, not by time), and
    simulating the load that follows is most of a simulated run's cost."""
    latest_ms = max(max(live_figures(d)["lag"], default=0.0) for d in run_dirs)
    return max(SIM_MEASUREMENT_FLOOR_S, 2.0 * latest_ms / 1000.0)


def simulated_figures(scenario: Scenario, profile: Profile, seeds: range) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"detection": [], "lag": [], "skew": [], "cp": []}
    for seed in seeds:
        r = simulate_once(scenario, profile, seed)
        if any(len(w["true_lag_ms"]) < scenario.connections_per_worker for w in r["workers"]):
            raise SystemExit(
                f"simulated run {seed}: a connection had not begun by the end of its "
                f"{scenario.measurement_s} s measurement; the figures need a longer one"
            )
        # from START_TIME, as live (detection_ms is from the RUNNING write: START_TIME - lead when scheduled)
        shift = (r["commit_time"] - r["start_time"]) * 1000.0
        out["detection"] += [w["detection_ms"] + shift for w in r["workers"] if w["detection_ms"] is not None]
        out["lag"] += [lag for w in r["workers"] for lag in w["true_lag_ms"]]
        out["skew"].append(r["true"]["skew_ms"])
        out["cp"].append(r["measured"]["control_plane"]["per_worker_per_s_waiting"])
    return out


def ends(run_dirs: list[Path] | None = None, results: list[dict[str, Any]] | None = None) -> dict[str, float]:
    """Where a start's spread comes from: per run, the earliest and the latest worker's detection
    and first operation (ms after START_TIME), the median over runs — of live run directories or
    of simulated results."""
    per_run: list[tuple[list[float], list[float]]] = []
    for d in run_dirs or []:
        start = json.loads((d / "summary.json").read_text())["start_time"]
        ps = [json.loads(f.read_text()) for f in sorted(d.glob("worker-*.json"))]
        per_run.append(
            (
                [(p["timeline"]["detect"] - start) * 1000.0 for p in ps],
                [(min(p["first_query"].values()) - start) * 1000.0 for p in ps],
            )
        )
    for r in results or []:
        shift = (r["commit_time"] - r["start_time"]) * 1000.0
        per_run.append(
            ([w["detection_ms"] + shift for w in r["workers"]], [min(w["true_lag_ms"]) for w in r["workers"]])
        )
    return {
        "first detection": statistics.median(min(d) for d, _ in per_run),
        "last detection": statistics.median(max(d) for d, _ in per_run),
        "first operation": statistics.median(min(f) for _, f in per_run),
        "last operation": statistics.median(max(f) for _, f in per_run),
    }


def beyond_figure(ms: float) -> str:
    return f"lags beyond {ms:g} ms, %"


def share_beyond(values: list[float], ms: float) -> float:
    return sum(v > ms for v in values) / len(values) if values else 0.0


def summarise(raw: dict[str, list[float]], beyond_ms: float | None = None) -> dict[str, float]:
    """The figures of ``raw``; with ``beyond_ms``, also the share (%) of lags later than that."""
    tail = {} if beyond_ms is None else {beyond_figure(beyond_ms): 100.0 * share_beyond(raw["lag"], beyond_ms)}
    return tail | {
        "detection p50": percentile(raw["detection"], 50),
        "detection p99": percentile(raw["detection"], 99),
        "lag p50": percentile(raw["lag"], 50),
        "lag p99": percentile(raw["lag"], 99),
        "skew p50": percentile(raw["skew"], 50),
        "skew p99": percentile(raw["skew"], 99),
        "cp q/worker/s waiting": sum(raw["cp"]) / len(raw["cp"]),
    }


def merge(items: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    return {k: [x for item in items for x in item[k]] for k in ("detection", "lag", "skew", "cp")}


def take_runs(root: Path, dirs: dict[str, list[Path]], upto: int, args: argparse.Namespace) -> None:
    """Live runs, interleaved across strategies, until each strategy has ``upto`` (or fails)."""
    for run in range(min(len(d) for d in dirs.values()), upto):
        for name in dirs:  # interleaved: machine noise hits every strategy alike
            start = STRATEGIES[name]
            out = root / name.split()[0] / f"run{run:02d}"
            fresh = not (args.reuse and (out / "summary.json").exists())
            toml = scenario_toml(start, args.workers, args.connections, measurement_s=args.measurement_s)
            if fresh and not run_live(out, toml, f"{name} run {run}"):
                continue
            dirs[name].append(out)
        print(f"live run {run + 1}/{upto} of each strategy done", file=sys.stderr, flush=True)


def halves(runs: list[Path], beyond_ms: float | None = None) -> tuple[dict[str, float], dict[str, float]]:
    even, odd = (summarise(merge([live_figures(d) for d in part]), beyond_ms) for part in (runs[0::2], runs[1::2]))
    return even, odd


def calibrated(run_dirs: list[Path], pooled_control: bool) -> Profile:
    """The profile ``calibrate`` fits to ``run_dirs``; ``pooled_control``: every round trip of a
    class in ``control``, no ``control_loaded``."""
    runs = [Observed.read(d) for d in run_dirs]
    fitted = fit(runs, "fidelity")
    if pooled_control:
        fitted.pop("control_loaded", None)
        fitted["control"] = {c: empirical(h) for c, h in control_latencies(runs).items()}
    return Profile.from_dict(fitted, "fidelity")


def simulated_scenario(runs: list[Path]) -> Scenario:
    """The live runs' scenario with the measurement a simulated run needs (``simulated_measurement_s``)."""
    scenario = Scenario.from_toml(str(runs[0] / "scenario.toml"))
    return attrs.evolve(scenario, measurement_s=simulated_measurement_s(runs))


def predicted_groups(
    scenario: Scenario, profile: Profile, k: int, groups: int, jobs: int, beyond_ms: float | None
) -> list[dict[str, float]]:
    """The figures of ``groups`` groups of ``k`` simulated runs, each group its own seeds."""
    seeds = [range(g * k, (g + 1) * k) for g in range(groups)]
    calls = ([scenario] * len(seeds), [profile] * len(seeds), seeds)
    if jobs > 1:  # each group its own seeds: the same figures in any process
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            simulated = list(pool.map(simulated_figures, *calls))
    else:  # no pool to start, nothing to pickle across
        simulated = list(map(simulated_figures, *calls))
    return [summarise(f, beyond_ms) for f in simulated]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="Live runs per strategy to begin with.")
    ap.add_argument("--max-runs", type=int, default=40, help="At most this many, sampling more while halves disagree.")
    ap.add_argument("--groups", type=int, default=15, help="Groups of simulated runs, each as many as the live ones.")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--connections", type=int, default=2)
    ap.add_argument(
        "--measurement-s",
        type=float,
        default=3.0,
        help="Each live run's measurement (the start's figures end before it; fewer seconds, more runs an hour).",
    )
    ap.add_argument("--out", default="out/bench-fidelity")
    ap.add_argument("--reuse", action="store_true", help="Use the live runs already in --out.")
    ap.add_argument("--jobs", type=int, default=1, help="Local processes simulating the groups.")
    ap.add_argument("--only", nargs="+", choices=[n.split()[0] for n in STRATEGIES], help="These strategies only.")
    ap.add_argument(
        "--beyond-ms",
        type=float,
        help="Also the share of lags later than this many ms (a tail's mass; judged as the other figures).",
    )
    ap.add_argument(
        "--ends",
        action="store_true",
        help="Also the earliest and latest worker's detection and first operation, live and predicted.",
    )
    ap.add_argument(
        "--in-sample",
        action="store_true",
        help="Also each strategy's profile fitted from every run, predicting those runs: does the model carry "
        "what it was fitted from (median and range over the groups)?",
    )
    ap.add_argument(
        "--pooled-control",
        action="store_true",
        help="Fit each control-plane call class from one pool, idle and loaded (the model before control_loaded).",
    )
    args = ap.parse_args()
    figures = FIGURES + (() if args.beyond_ms is None else (beyond_figure(args.beyond_ms),))
    root = Path(args.out)
    names = [n for n in STRATEGIES if args.only is None or n.split()[0] in args.only]
    dirs: dict[str, list[Path]] = {name: [] for name in names}
    take_runs(root, dirs, args.runs, args)
    while (n := min(len(d) for d in dirs.values())) < args.max_runs:
        apart = [
            (name, f, disagreement(e[f], o[f]))
            for name, runs in dirs.items()
            for e, o in [halves(runs, args.beyond_ms)]
            for f in figures
            if not halves_agree(e[f], o[f])
        ]
        if not apart:
            break
        print(f"{len(apart)} figures' halves disagree (e.g. {apart[0]}): sampling more", file=sys.stderr, flush=True)
        take_runs(root, dirs, min(args.max_runs, n + 4), args)
    table: list[dict[str, Any]] = []
    for name, runs in dirs.items():
        scenario = simulated_scenario(runs)
        even, odd = halves(runs, args.beyond_ms)
        for fold, (calibrating, predicted) in {
            "even→odd": (runs[0::2], runs[1::2]),
            "odd→even": (runs[1::2], runs[0::2]),
        }.items():
            profile = calibrated(calibrating, args.pooled_control)
            # The start path ends at the first operations: a short measurement predicts it as well
            # and spares simulating the load that follows (``simulated_measurement_s``).
            live = summarise(merge([live_figures(d) for d in predicted]), args.beyond_ms)
            # Predict what that many live runs show: each figure over a group of as many simulated
            # runs, the median over the groups (a p99 of six runs is not the p99 of sixty).
            k = len(predicted)
            print(
                f"{name} {fold}: {args.groups} groups of {k} simulated runs ({scenario.measurement_s:.2f} s measured)",
                file=sys.stderr,
                flush=True,
            )
            groups = predicted_groups(scenario, profile, k, args.groups, args.jobs, args.beyond_ms)
            sim = {f: statistics.median(g[f] for g in groups) for f in figures}
            for figure in figures:
                table.append(
                    {
                        "strategy": name,
                        "fold": fold,
                        "figure": figure,
                        "live": live[figure],
                        "predicted": sim[figure],
                        "ratio": sim[figure] / live[figure] if live[figure] else float("nan"),
                        "halves": disagreement(even[figure], odd[figure]),
                        "judged": judge(live[figure], sim[figure], (even[figure], odd[figure])),
                    }
                )
        print(f"{name}: {len(runs)} live runs, both folds", file=sys.stderr, flush=True)
    print("| strategy | fold | figure | live | predicted | predicted / live | halves apart | judged |")
    print("|---|---|---|---|---|---|---|---|")
    for row in table:
        print(
            f"| {row['strategy']} | {row['fold']} | {row['figure']} | {row['live']:.2f} | {row['predicted']:.2f} | "
            f"{row['ratio']:.2f} | {100 * row['halves']:.1f} % | {row['judged']} |"
        )
    counts = {j: sum(r["judged"] is j for r in table) for j in Judged}
    print(", ".join(f"{n} {j}" for j, n in counts.items()))
    if args.in_sample:
        print("\n| strategy | figure, in sample | live | predicted (median) | predicted / live | groups' range |")
        print("|---|---|---|---|---|---|")
        for name, runs in dirs.items():
            profile = calibrated(runs, args.pooled_control)
            live = summarise(merge([live_figures(d) for d in runs]), args.beyond_ms)
            groups = predicted_groups(
                simulated_scenario(runs), profile, len(runs), args.groups, args.jobs, args.beyond_ms
            )
            for figure in figures:
                got = [g[figure] for g in groups]
                sim = statistics.median(got)
                ratio = sim / live[figure] if live[figure] else float("nan")
                spread = f"{min(got):.2f}–{max(got):.2f}"
                print(f"| {name} | {figure} | {live[figure]:.2f} | {sim:.2f} | {ratio:.2f} | {spread} |")
    if args.ends:  # a profile from every run of the strategy, as many simulated runs as live ones, ×4
        print("\n| strategy | figure (median over runs, ms after START_TIME) | live | predicted |")
        print("|---|---|---|---|")
        for name, runs in dirs.items():
            scenario = simulated_scenario(runs)
            profile = calibrated(runs, args.pooled_control)
            live = ends(run_dirs=runs)
            sim = ends(results=[simulate_once(scenario, profile, seed) for seed in range(4 * len(runs))])
            for figure in live:
                print(f"| {name} | {figure} | {live[figure]:.2f} | {sim[figure]:.2f} |")


if __name__ == "__main__":
    main()
