"""Sweeps: a grid (and/or a list of named cells) over scenario and profile fields, K seeds
per cell, cells run in parallel processes. Writes cells.csv, summary.md and PNG plots.

SWEEP.toml::

    name = "poll-interval"
    seeds = 100
    profile = "snowflake-hybrid"    # a profile name, or profile_file = "path.toml"
    [scenario]                      # overrides of the start-path scenario
    workers = 10
    [grid]                          # cartesian product of dotted fields
    "start.strategy" = ["poll", "inline-poll"]
    "start.poll_interval_ms" = [50, 100, 200]
    "profile.clock_spread_ms" = [0, 1]
    [[cells]]                       # and/or named cells
    name = "scheduled, 1 ms clocks"
    "start.strategy" = "scheduled"
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import logging
import tomllib
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import attrs

from startline.engine.files import write_atomic
from startline.engine.scenario import ConfigError, Scenario, deprecated
from startline.engine.startplan import StartPlan
from startline.simulate.models import Latency, Profile
from startline.simulate.runner import aggregate, simulate_once

START_PATH_SCENARIO: dict[str, Any] = {
    "name": "start-path",
    "workers": 10,
    "connections_per_worker": 4,
    "warmup_s": 0.0,
    "measurement_s": 1.5,
    "drain_timeout_s": 0.1,
    "operations_per_connection": 1,
    "operations": [{"name": "query", "call": "simulated:query"}],
}
"""The simulated start path: every initial connection issues its first query, and stops there.
The measurement (1.5 s) outlasts the slowest detection, so no connection is cut off first."""

log = logging.getLogger("startline.sweep")
PROFILES_DIR = Path(__file__).resolve().parent / "profiles"


DEFAULT_PROFILE = "snowflake-hybrid"
"""The seed analysis's latency figures (Snowflake hybrid tables)."""
PROFILE_ALIASES = {"seed": DEFAULT_PROFILE}
"""Old profile names, accepted (with a deprecation note) for one release."""


def load_profile(name: str | None = None, path: str | Path | None = None) -> Profile:
    if not path and name in PROFILE_ALIASES:
        deprecated(f"--profile {name}", f"--profile {PROFILE_ALIASES[name]}")
        name = PROFILE_ALIASES[name]
    file = Path(path) if path else PROFILES_DIR / f"{name or DEFAULT_PROFILE}.toml"
    if not file.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.toml")))
        raise ConfigError("profile", f"{name or path!r} not found (known: {known})")
    try:
        return Profile.from_dict(tomllib.loads(file.read_text(encoding="utf-8")), file.stem)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("profile", f"{file} is not valid TOML: {exc}") from None


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value


LATENCY_FIELDS = frozenset({"worker_start", "worker_start_shared", "worker_init", "spawn", "wake", "release_wake"})
"""Profile fields a cell sets with a latency model (a number of ms, or a table with a type)."""


@attrs.frozen
class Cell:
    name: str
    overrides: Mapping[str, Any]  # dotted field → value ("profile.x" for the profile)

    def build(self, scenario: Mapping[str, Any], profile: Profile) -> tuple[Scenario, Profile]:
        sc: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in scenario.items()}
        prof = attrs.asdict(profile, recurse=False)
        for key, value in self.overrides.items():
            if key.startswith("profile."):
                field = key.removeprefix("profile.")
                if field not in prof or field in ("control", "target", "name"):
                    raise ConfigError(key, "unknown or unsweepable profile field")
                prof[field] = Latency.parse(value, key) if field in LATENCY_FIELDS else value
            else:
                _set(sc, key, value)
        try:
            return Scenario.from_dict(sc), Profile(**prof)
        except ConfigError as exc:
            raise ConfigError(f"cell {self.name!r}: {exc.field}", exc.message) from None


@attrs.frozen
class Sweep:
    name: str
    seeds: int
    profile: Profile
    scenario: Mapping[str, Any]
    cells: tuple[Cell, ...]

    @classmethod
    def from_toml(cls, path: str | Path) -> Sweep:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("", f"sweep file not found: {p}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("", f"{p} is not valid TOML: {exc}") from None
        known = {"name", "seeds", "profile", "profile_file", "scenario", "grid", "cells"}
        for key in data:
            if key not in known:
                raise ConfigError(key, f"unknown key (known: {', '.join(sorted(known))})")
        seeds = data.get("seeds", 100)
        if not isinstance(seeds, int) or isinstance(seeds, bool) or not 1 <= seeds <= 1_000_000:
            raise ConfigError("seeds", f"must be an integer between 1 and 1000000 (got {seeds!r})")
        profile = load_profile(data.get("profile", DEFAULT_PROFILE), data.get("profile_file"))
        cells = []
        grid = data.get("grid", {})
        if grid:
            keys = list(grid)
            for key in keys:
                if not isinstance(grid[key], list) or not grid[key]:
                    raise ConfigError(f"grid.{key}", "must be a non-empty list of values")
            for combo in itertools.product(*(grid[k] for k in keys)):
                over = dict(zip(keys, combo, strict=True))
                cells.append(Cell(", ".join(f"{k.split('.')[-1]}={v}" for k, v in over.items()), over))
        for i, c in enumerate(data.get("cells", [])):
            c = dict(c)
            cells.append(Cell(str(c.pop("name", f"cell {i}")), c))
        if not cells:
            raise ConfigError("grid", "a sweep needs a [grid] or [[cells]]")
        sweep = cls(
            str(data.get("name", p.stem)),
            seeds,
            profile,
            {**START_PATH_SCENARIO, **data.get("scenario", {})},
            tuple(cells),
        )
        for cell in sweep.cells:
            cell.build(sweep.scenario, sweep.profile)  # every cell is valid before anything runs
        return sweep


def _run_chunk(scenario: Scenario, profile: Profile, seeds: list[int]) -> list[dict[str, Any]]:
    from startline.engine.determinism import SIMULATION

    with SIMULATION:  # one chunk at a time per process, whatever runs it (a Dask worker may have threads)
        return [simulate_once(scenario, profile, s) | {"seed": s} for s in seeds]


CSV_FIELDS = (
    "cell",
    "strategy",
    "poll_interval_ms",
    "bookkeeping",
    "prespawn",
    "workers",
    "lead_ms",
    "clock_spread_ms",
    "seeds",
    "detection_max_ms_p50",
    "lag_p50_ms_p50",
    "lag_p99_ms_p50",
    "lag_max_ms_p99",
    "lag_max_ms_max",
    "skew_ms_p50",
    "skew_ms_p99",
    "skew_ms_max",
    "cp_waiting_p50",
    "cp_running_p50",
)


def row_of(cell: Cell, scenario: Scenario, profile: Profile, agg: Mapping[str, Any]) -> dict[str, Any]:
    st, cp = agg["start"], agg["control_plane"]

    def g(d: Mapping[str, Any] | None, k: str) -> float | None:
        return None if d is None else d[k]

    plan = StartPlan.of(scenario.start, push_available=False)
    return {
        "cell": cell.name,
        "strategy": str(scenario.start.strategy),
        "poll_interval_ms": plan.poll_interval_s * 1e3,
        "bookkeeping": str(plan.bookkeeping),
        "prespawn": plan.prespawn,
        "workers": scenario.workers,
        "lead_ms": scenario.start.lead_ms,
        "clock_spread_ms": profile.clock_spread_ms,
        "seeds": agg["runs"],
        "detection_max_ms_p50": g(st["detection_ms"]["max"], "p50"),
        "lag_p50_ms_p50": g(st["lag_ms"]["p50"], "p50"),
        "lag_p99_ms_p50": g(st["lag_ms"]["p99"], "p50"),
        "lag_max_ms_p99": g(st["lag_ms"]["max"], "p99"),
        "lag_max_ms_max": g(st["lag_ms"]["max"], "max"),
        "skew_ms_p50": g(st["skew_ms"], "p50"),
        "skew_ms_p99": g(st["skew_ms"], "p99"),
        "skew_ms_max": g(st["skew_ms"], "max"),
        "cp_waiting_p50": g(cp["per_worker_per_s_waiting"], "p50"),
        "cp_running_p50": g(cp["per_worker_per_s_running"], "p50"),
    }


def run_sweep(
    sweep: Sweep,
    jobs: int,
    out: Path,
    progress: Callable[[int], None] | None = None,
    chunk: int = 25,
    executor: Executor | None = None,
) -> list[dict[str, Any]]:
    """Every cell over seeds 0..K-1, in ``jobs`` local processes or on ``executor`` (a Dask
    cluster's); writes cells.csv, summary.md, plots — the same bytes either way."""
    built = [c.build(sweep.scenario, sweep.profile) for c in sweep.cells]
    runs: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(built))}
    with contextlib.nullcontext(executor) if executor is not None else ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {}
        for i, (sc, prof) in enumerate(built):
            for lo in range(0, sweep.seeds, chunk):
                seeds = list(range(lo, min(sweep.seeds, lo + chunk)))
                futures[pool.submit(_run_chunk, sc, prof, seeds)] = i
        for fut in as_completed(futures):
            part = fut.result()
            runs[futures[fut]].extend(part)
            if progress:
                progress(len(part))
    rows = []
    for i, (cell, (sc, prof)) in enumerate(zip(sweep.cells, built, strict=True)):
        ordered = sorted(runs[i], key=lambda r: r["seed"])  # same bytes whatever order chunks finished in
        rows.append(row_of(cell, sc, prof, aggregate(ordered, sc, prof)))
    out.mkdir(parents=True, exist_ok=True)
    cells = io.StringIO()
    w = csv.DictWriter(cells, fieldnames=CSV_FIELDS)
    w.writeheader()
    w.writerows(rows)
    write_atomic(out / "cells.csv", cells.getvalue())
    write_atomic(out / "summary.md", summary_table(rows, sweep))
    if not plot(rows, out):
        log.warning(PLOT_EXTRA)
    return rows


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:,.1f}" if isinstance(x, float) else str(x)


def summary_table(rows: list[dict[str, Any]], sweep: Sweep) -> str:
    head = (
        "cell",
        "detection max ms (p50)",
        "lag p50 ms (p50)",
        "lag max ms (p99)",
        "skew ms p50",
        "skew ms p99",
        "skew ms max",
        "cp q/worker/s waiting",
    )
    keys = (
        "cell",
        "detection_max_ms_p50",
        "lag_p50_ms_p50",
        "lag_max_ms_p99",
        "skew_ms_p50",
        "skew_ms_p99",
        "skew_ms_max",
        "cp_waiting_p50",
    )
    lines = [
        f"Sweep {sweep.name}: {sweep.seeds} seeds per cell, profile {sweep.profile.name}; figures in ground "
        "truth, distributions over seeds.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(_fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


PLOT_EXTRA = "plots need matplotlib: pip install 'startline[plot]'"
"""The one line shown where plots were asked for and matplotlib is missing."""


def plot(rows: list[dict[str, Any]], out: Path) -> bool:
    """lag p50/p99 against poll interval per strategy; start precision against control-plane cost.
    False (and no file) when matplotlib, an optional extra, is not installed."""
    try:
        import matplotlib
    except ImportError:
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for strategy in sorted({r["strategy"] for r in rows}):
        pts = sorted(
            (r["poll_interval_ms"], r["lag_p50_ms_p50"], r["lag_max_ms_p99"])
            for r in rows
            if r["strategy"] == strategy and r["lag_p50_ms_p50"] is not None
        )
        if pts:
            xs = [p[0] for p in pts]
            line = ax.plot(xs, [p[1] for p in pts], marker="o", label=f"{strategy} lag p50")[0]
            ax.plot(
                xs,
                [p[2] for p in pts],
                marker="x",
                linestyle="--",
                color=line.get_color(),
                label=f"{strategy} lag max (p99 over seeds)",
            )
    ax.set_xlabel("poll interval (ms)")
    ax.set_ylabel("lag after START_TIME (ms)")
    ax.set_title("Start lag against poll interval")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, out / "lag_vs_poll_interval.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        if r["skew_ms_p99"] is None or r["cp_waiting_p50"] is None:
            continue
        ax.scatter(r["cp_waiting_p50"], r["skew_ms_p99"], label=r["cell"])
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0)
    ax.legend(fontsize=6)
    ax.set_xlabel("control-plane queries per worker per second while waiting")
    ax.set_ylabel("start skew p99 over seeds (ms)")
    ax.set_title("Start precision against control-plane cost")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, out / "precision_vs_cost.png")
    plt.close(fig)
    return True


def _save(fig: Any, path: Path) -> None:
    """A figure as PNG, written whole or not at all."""
    png = io.BytesIO()
    fig.savefig(png, dpi=110, format="png")
    write_atomic(path, png.getvalue())
