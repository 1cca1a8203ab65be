"""Pure decisions of the load modes (no I/O; the orchestrator's ``_load_control`` task acts on
them): how a run-wide level is split across workers, the planned rate of an open loop, the
figures of a window of merged intervals, the QPS controller and the find-max search.

Each decision is a frozen state and a function from (state, reading) to the next state and
what to do — as ``engine.events`` keeps a worker's view of the log.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from startline.engine.metrics import latency_block, merge_histograms, unique_snapshots
from startline.engine.model import StopReason
from startline.engine.scenario import FindMax, FindMaxOver, LoadMode, LoadOptions, Scenario

# ---- splitting a run-wide level -------------------------------------------------------------


def split(total: int, workers: Sequence[str]) -> dict[str, int]:
    """``total`` connections over ``workers`` (in their sorted order): each gets ``total // n``,
    the first ``total % n`` one more. Deterministic: the same ids give the same split."""
    ids = sorted(workers)
    if not ids:
        return {}
    base, extra = divmod(total, len(ids))
    return {w: base + (1 if i < extra else 0) for i, w in enumerate(ids)}


def rate_plan(load: LoadOptions) -> list[tuple[float, float, float]]:
    """The open loop's run-wide rate changes after the start: (at_s, rate, ramp_s) per stage,
    each ramping linearly from the rate before it (k6's ramping-arrival-rate)."""
    plan, at = [], 0.0
    for stage in load.stages:
        plan.append((at, stage.rate, stage.duration_s))
        at += stage.duration_s
    return plan


def rate_at(start_rate: float, plan: Sequence[tuple[float, float, float]], t: float) -> float:
    """The planned run-wide rate ``t`` seconds after the start."""
    rate = start_rate
    for at, target, ramp in plan:
        if t < at:
            break
        if t < at + ramp:
            return rate + (target - rate) * (t - at) / ramp
        rate = target
    return rate


def planned_offers(load: LoadOptions, from_s: float, to_s: float) -> float:
    """How many operations the open loop's plan starts between ``from_s`` and ``to_s`` after the
    start, run-wide: the area under its piecewise-linear rate (exact: the trapezoid rule between
    the plan's own breakpoints)."""
    plan = rate_plan(load)
    cuts = sorted({from_s, to_s, *(t for at, _, ramp in plan for t in (at, at + ramp) if from_s < t < to_s)})
    return sum(
        (b - a) * (rate_at(load.rate, plan, a) + rate_at(load.rate, plan, b)) / 2 for a, b in itertools.pairwise(cuts)
    )


OFFERED_TOLERANCE = 0.05
"""A rate-mode run passes ``planned_rate`` when it offered at least this much less than its plan
(or three standard deviations of a Poisson count, when that is more)."""


def offered_enough(planned: float, offered: int) -> bool:
    """Whether ``offered`` operations make the ``planned`` count: within ``OFFERED_TOLERANCE`` below
    it, or three Poisson standard deviations (a small plan's own noise)."""
    slack = max(OFFERED_TOLERANCE * planned, 3 * math.sqrt(planned))
    return offered >= planned - slack


# ---- merged intervals ---------------------------------------------------------------------------


@attrs.frozen
class MergedIntervals:
    """What every worker's snapshot intervals ``[first, last]`` add up to: counts summed,
    response-time histograms merged exactly (never percentiles of percentiles)."""

    first: int
    last: int
    seconds: float
    ops: int
    errors: int
    offered: int
    skipped: int
    latency_ms: Mapping[str, float]
    """p50 … max and mean of the merged response times."""

    @property
    def qps(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0

    @property
    def error_rate(self) -> float:
        done = self.ops + self.errors
        return self.errors / done if done else 0.0


def reported_through(snapshots: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, int]:
    """worker → the last interval its snapshots reached (zeros included)."""
    upto: dict[str, int] = {}
    for worker, snap in snapshots:
        for item in snap.get("intervals", ()):
            upto[worker] = max(upto.get(worker, -1), item["interval"])
    return upto


def merged_intervals(
    snapshots: Iterable[tuple[str, Mapping[str, Any]]], first: int, last: int, interval_s: float
) -> MergedIntervals:
    """The figures of intervals ``first..last`` (inclusive) over every worker; a retried append
    (same worker, same ``n``) counts once."""
    sums: dict[str, int] = defaultdict(int)
    encoded: list[str] = []
    for snap in unique_snapshots(snapshots):
        for item in snap.get("intervals", ()):
            if first <= item["interval"] <= last:
                for key in ("ops", "errors", "offered", "skipped"):
                    sums[key] += item.get(key, 0)
                encoded.extend(item.get("kinds", {}).values())
    n = max(0, last - first + 1)
    return MergedIntervals(
        first,
        last,
        n * interval_s,
        sums["ops"],
        sums["errors"],
        sums["offered"],
        sums["skipped"],
        latency_block(merge_histograms(encoded)),
    )


# ---- the QPS controller ---------------------------------------------------------------------------


def deadband(target: float) -> float:
    """How far from the target (ops/s) a reading still holds: max(2, 5 % of the target)."""
    return max(2.0, 0.05 * target)


def within_deadband(qps: float, target: float) -> bool:
    """Whether ``qps`` holds ``target``: no further from it than the deadband."""
    return abs(qps - target) <= deadband(target)


def gain(error: float) -> float:
    """The share of the estimated gap a step closes, by the size of the error (the original design's table)."""
    e = abs(error)
    return 0.25 if e > 0.5 else 0.20 if e > 0.3 else 0.15 if e > 0.15 else 0.10 if e > 0.05 else 0.06


@attrs.frozen
class QpsDecision:
    """One control interval: the reading, and the connections from then on (run-wide)."""

    at_s: float
    connections: int
    """Connections during the window read."""
    qps: float
    error_pct: float
    to: int
    action: str
    """``little`` (the first estimate), ``up``, ``down``, ``hold``, or ``bounds_limit_reached``."""
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    error_rate: float = 0.0


@attrs.frozen
class QpsController:
    """The original design's QPS controller, fed a window of merged intervals: a deadband of max(2, 5 %) of
    the target; up after one reading under it, down after two over; a step of
    gain × (target / (qps / connections) − connections), at most ``max_step_up`` /
    ``max_step_down``, within the bounds, and only if it is expected to come closer (whole
    connections); at the ceiling and under 98 % of the target for
    ``bounds_patience`` readings, it gives up (BOUNDS_LIMIT_REACHED). Its first reading jumps to
    Little's law: connections ≈ target × mean latency."""

    target: float
    low: int
    high: int
    max_up: int
    max_down: int
    patience: int
    connections: int
    estimated: bool = False
    over: int = 0
    at_ceiling: int = 0
    seen: tuple[tuple[int, float], ...] = ()
    """The last reading (qps) at each connection count this controller has run."""

    @classmethod
    def of(cls, load: LoadOptions, workers: int, connections: int) -> QpsController:
        low = load.min_connections or workers
        return cls(
            load.target_qps,
            low,
            max(low, load.max_connections),
            load.max_step_up,
            load.max_step_down,
            load.bounds_patience,
            min(max(connections, low), load.max_connections),
        )

    def decide(self, at_s: float, w: MergedIntervals, *, final: bool = False) -> tuple[QpsController, QpsDecision]:
        """The next state and the decision for the reading ``w``. ``final``: no reading follows
        that could read a change (the measurement ends first) — the controller reads and judges,
        but holds: a move nobody reads only disturbs the run's last interval."""
        state, decision = self._decide(at_s, w)
        if final and decision.to != decision.connections:
            kept = attrs.evolve(self, estimated=True, seen=state.seen)
            return kept, attrs.evolve(decision, to=decision.connections, action="hold")
        return state, decision

    def _decide(self, at_s: float, w: MergedIntervals) -> tuple[QpsController, QpsDecision]:
        n, target, qps = self.connections, self.target, w.qps
        error = (qps - target) / target
        band = deadband(target)

        def to(new: int, action: str, **changes: Any) -> tuple[QpsController, QpsDecision]:
            new = min(self.high, max(self.low, new))
            if new == n and action in ("up", "down"):
                action = "hold"  # against a bound: no move is made, none is said
            seen = tuple(sorted({**dict(self.seen), n: qps}.items()))
            state = attrs.evolve(self, connections=new, estimated=True, seen=seen, **changes)
            lat = w.latency_ms
            figures = (lat["p95"], lat["p99"], round(w.error_rate, 6))
            return state, QpsDecision(at_s, n, round(qps, 3), round(100 * error, 2), new, action, *figures)

        if not self.estimated and qps > 0 and abs(qps - target) > band:
            # Little's law: connections = throughput × time per operation (latency and think time),
            # and that time is n / qps now: the target needs target × n / qps connections.
            return to(max(1, round(target * n / qps)), "little")
        if n >= self.high and qps < 0.98 * target:
            if self.at_ceiling + 1 >= self.patience:
                return to(n, "bounds_limit_reached", at_ceiling=self.at_ceiling + 1)
            return to(n, "hold", at_ceiling=self.at_ceiling + 1, over=0)
        if abs(qps - target) <= band:
            return to(n, "hold", over=0, at_ceiling=0)
        wanted = target / (qps / n) - n if qps > 0 else math.inf
        if qps < target:
            step = min(self.max_up, max(1, math.ceil(gain(error) * wanted)) if math.isfinite(wanted) else self.max_up)
            if self._no_closer(n + step, w):
                return to(n, "hold", over=0, at_ceiling=0)
            return to(n + step, "up", over=0, at_ceiling=0)
        if self.over + 1 < 2:
            return to(n, "hold", over=self.over + 1, at_ceiling=0)
        step = min(self.max_down, max(1, math.ceil(-gain(error) * wanted)))
        if self._no_closer(n - step, w):
            return to(n, "hold", over=0, at_ceiling=0)
        return to(n - step, "down", over=0, at_ceiling=0)

    def forget(self) -> QpsController:
        """The controller after workers were lost: the same connections (re-split over the workers
        left), no memory of readings taken with the workers it had."""
        return attrs.evolve(self, seen=(), over=0, at_ceiling=0)

    def _no_closer(self, new: int, w: MergedIntervals) -> bool:
        """Whole connections: a step whose expected reading is no closer to the target than this
        one is not taken — the controller holds the nearest count instead of swinging around a
        target between two counts. Expected: throughput in proportion to the connections; for a
        count it ran before, what it read then, which must be closer by more than the deadband
        (throughput noise made two counts either side of the target each look the farther)."""
        new = min(self.high, max(self.low, new))
        if w.qps <= 0 or new == self.connections:
            return False
        seen = dict(self.seen)
        if new in seen:  # back to a count it ran: only if that read closer by more than the deadband
            return abs(seen[new] - self.target) >= abs(w.qps - self.target) - deadband(self.target)
        return abs(w.qps * new / self.connections - self.target) >= abs(w.qps - self.target)


def move_readable(at_s: float, next_s: float, end_s: float, follow_s: float, interval_s: float) -> bool:
    """Whether a change of connections made ``at_s`` seconds after the start is read by the next
    reading (``next_s``): that reading comes before the measurement ends (``end_s``; one due at the
    end races the run's stop), and at least one whole snapshot interval lies between the workers
    following the change (within ``follow_s``) and the reading."""
    if next_s >= end_s - 1e-9:
        return False
    first = math.floor((at_s + follow_s) / interval_s + 1e-9) + 1
    return first <= math.floor(next_s / interval_s + 1e-9) - 1


# ---- the find-max search --------------------------------------------------------------------------


@attrs.frozen
class Step:
    """One find-max step as measured (after its settle time) — a row of ``load.steps``."""

    at_s: float
    level: float
    qps: float
    p95_ms: float
    p99_ms: float
    error_rate: float
    offered: int = 0
    skipped: int = 0
    stable: bool = True
    reason: str | None = None

    def to_dict(self, over: FindMaxOver) -> dict[str, Any]:
        row: dict[str, Any] = {"at_s": round(self.at_s, 3)}
        if over is FindMaxOver.RATE:
            row["rate"] = self.level
        else:
            row["connections"] = int(self.level)
        row |= {
            "qps": round(self.qps, 3),
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "error_rate": round(self.error_rate, 6),
            "stable": self.stable,
            "reason": self.reason,
        }
        return row


@attrs.frozen
class FindMaxSearch:
    """Where the search is: the steps so far, the first step's p95 (the latency reference), the
    last stable level below and the first unstable level above, and refinements made."""

    opts: FindMax
    steps: tuple[Step, ...] = ()
    reference_p95: float | None = None
    stable_below: Step | None = None
    unstable_above: Step | None = None
    refinements: int = 0
    done: str | None = None
    """Why the search ended (``unstable``, ``refined``, ``time_budget``), once it has."""

    def judge(self, level: float, w: MergedIntervals, at_s: float) -> Step:
        """A measured step, with the first of the original design's checks it fails (errors, SLO, latency
        against the first step, throughput against the stable step below)."""
        o = self.opts
        p95, p99 = w.latency_ms["p95"], w.latency_ms["p99"]
        failed = w.errors + w.skipped
        due = w.ops + failed
        error_rate = failed / due if due else 0.0
        reason = None
        below = self.stable_below
        if error_rate > o.max_error_rate:
            reason = "errors"
        elif (o.slo.p95_ms is not None and p95 > o.slo.p95_ms) or (o.slo.p99_ms is not None and p99 > o.slo.p99_ms):
            reason = "slo"
        elif o.over is FindMaxOver.RATE and w.offered and w.ops < 0.95 * w.offered:
            reason = "throughput"  # achieved under 95 % of what was offered
        elif self.reference_p95 is not None and p95 > self.reference_p95 * (1 + o.latency_stability_pct / 100):
            reason = "latency"
        elif below is not None and level > below.level:
            # More load must buy more throughput: at least qps_stability_pct, or half the
            # level's own growth when a step is small against the level.
            need = min(o.qps_stability_pct / 100, 0.5 * (level / below.level - 1))
            if w.qps < below.qps * (1 + need):
                reason = "no_gain"
        return Step(at_s, level, w.qps, p95, p99, error_rate, w.offered, w.skipped, reason is None, reason)

    def after(self, step: Step) -> tuple[FindMaxSearch, float | None]:
        """The search once ``step`` is measured, and the next level to try (None: done)."""
        o = self.opts
        s = attrs.evolve(
            self,
            steps=(*self.steps, step),
            reference_p95=self.reference_p95 if self.reference_p95 is not None else (step.p95_ms or None),
        )
        if step.stable:
            s = attrs.evolve(s, stable_below=step)
        else:
            s = attrs.evolve(s, unstable_above=step)
        lo, hi = s.stable_below, s.unstable_above
        if hi is None:
            return s, step.level + o.step
        if lo is None:
            return attrs.evolve(s, done="unstable"), None  # the first level is already past the knee
        mid = (lo.level + hi.level) / 2
        if o.over is FindMaxOver.CONCURRENCY:
            mid = math.floor(mid)
        if s.refinements >= o.max_refinements or mid <= lo.level or mid >= hi.level:
            return attrs.evolve(s, done="refined" if s.refinements else "unstable"), None
        return attrs.evolve(s, refinements=s.refinements + 1), mid

    def result(self) -> dict[str, Any]:
        """``load.result``: the best stable step (highest throughput), and why the search ended."""
        best = max((st for st in self.steps if st.stable), key=lambda st: (st.qps, -st.level), default=None)
        out: dict[str, Any] = {
            "concurrency": None if best is None or self.opts.over is FindMaxOver.RATE else int(best.level),
            "qps": None if best is None else round(best.qps, 3),
            "reason": self.done or "time_budget",
            "steps": len(self.steps),
        }
        if self.opts.over is FindMaxOver.RATE:
            out["rate"] = None if best is None else best.level
        if self.unstable_above is not None:
            out["first_unstable"] = {"level": self.unstable_above.level, "reason": self.unstable_above.reason}
        return out


# ---- the level at the start and at the end ---------------------------------------------------------


def qps_result_reason(last: QpsDecision | None, target: float, stop: StopReason | None) -> str:
    """How the QPS control ended: ``bounds_limit_reached``; ``settled`` (holding within the deadband);
    ``nearest_whole_count`` (holding a count whose reading is within one connection's share of the
    target, where no count reaches the deadband); or ``not_settled`` (still moving when the run
    ended, or held at its last reading further off than that)."""
    if stop is StopReason.BOUNDS_LIMIT_REACHED:
        return "bounds_limit_reached"
    if last is None or last.action != "hold":
        return "not_settled"
    if within_deadband(last.qps, target):
        return "settled"
    share = last.qps / last.connections if last.connections else 0.0
    return "nearest_whole_count" if abs(last.qps - target) <= share else "not_settled"


def initial_total(scenario: Scenario) -> int:
    """Run-wide connections at the start: qps mode's ``starting_connections``, find-max's first level
    (over concurrency), or ``connections_per_worker`` on each worker."""
    load = scenario.load
    if load.mode is LoadMode.QPS and load.starting_connections:
        return max(load.starting_connections, scenario.workers)
    if load.mode is LoadMode.FIND_MAX and load.find_max.over is FindMaxOver.CONCURRENCY:
        return max(int(load.find_max.start), scenario.workers)
    return scenario.total_connections


def initial_connections(scenario: Scenario) -> int:
    """Connections per worker in the START event (the base of the split of ``initial_total``)."""
    return initial_total(scenario) // scenario.workers
