"""What a running run looks like from its orchestrator, read at most once a second for every view
of it — the terminal panel (``view.py``), the dashboard's page and its /metrics (``dashboard.py``):
one source, one read of the control plane however many look.

``Observer.read`` takes the orchestrator's statistics, the workers' interval snapshots (into a
``view.LiveTally``) and, every ``flush_interval_s``, their results so far; ``figures`` is the
panel's reading, ``state`` the page's (JSON), ``totals`` the metrics' (cumulative, per phase and
kind: what the summary will be built from)."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import trio
from hdrh.histogram import HdrHistogram

from startline.engine.events import WorkerView
from startline.engine.loadcontrol import initial_total
from startline.engine.metrics import add_into, decode, latency_block, new_histogram
from startline.engine.model import ControlEvent, Phase, Scope, WorkerStatus
from startline.engine.ports import ControlPlaneError
from startline.engine.scenario import Scenario
from startline.engine.schedule import PhaseWindows
from startline.engine.summary import start_block

EVENTS_SHOWN = 4
CHANGES_SHOWN = 6
READ_EVERY_S = 1.0
SERIES_KEPT = 3600
"""The page's time series keeps this many intervals (an hour at one a second)."""


@attrs.define(eq=False)
class LiveTally:
    """Running totals and per-interval figures from the workers' snapshots, each taken once
    (a retried append, same worker and ``n``, counts once)."""

    interval_s: float
    phase_of: Callable[[int], str] | None = None
    """Given, each kind's histograms are also added up per (phase of the interval, kind):
    ``cumulative`` (the dashboard's latency histogram while the run runs)."""
    ops: int = 0
    errors: int = 0
    cumulative: dict[tuple[str, str], HdrHistogram] = attrs.field(init=False, factory=dict)
    _seen: set[tuple[str, Any]] = attrs.field(init=False, factory=set)
    _rows: dict[int, list[int]] = attrs.field(init=False, factory=dict)
    """interval → [ops, errors, connections] over the workers."""
    _latency: dict[int, HdrHistogram] = attrs.field(init=False, factory=dict)
    _kinds: dict[int, dict[str, HdrHistogram]] = attrs.field(init=False, factory=dict)
    _upto: dict[str, int] = attrs.field(init=False, factory=dict)
    """worker → the last interval it reported."""

    def add(self, snapshots: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        for worker, snap in snapshots:
            key = (worker, snap.get("n"))
            if key in self._seen:
                continue
            self._seen.add(key)
            for item in snap.get("intervals", ()):
                i = item["interval"]
                row = self._rows.setdefault(i, [0, 0, 0])
                row[0] += item["ops"]
                row[1] += item["errors"]
                row[2] += item.get("connections", 0)
                self.ops += item["ops"]
                self.errors += item["errors"]
                self._upto[worker] = max(self._upto.get(worker, -1), i)
                for kind, enc in item.get("kinds", {}).items():
                    h = decode(enc)
                    add_into(self._latency.setdefault(i, new_histogram()), h)
                    add_into(self._kinds.setdefault(i, {}).setdefault(kind, new_histogram()), h)
                    if self.phase_of is not None:
                        add_into(self.cumulative.setdefault((self.phase_of(i), kind), new_histogram()), h)
        self._forget()

    def complete(self, workers: Iterable[str]) -> int | None:
        """The last interval every one of ``workers`` has reported (None: not one yet)."""
        reached = [self._upto.get(w, -1) for w in workers]
        last = min(reached, default=-1)
        return last if last >= 0 else None

    def interval(self, i: int) -> dict[str, Any]:
        ops, errors, connections = self._rows.get(i, (0, 0, 0))
        h = self._latency.get(i)
        return {
            "interval": i,
            "interval_s": self.interval_s,
            "qps": ops / self.interval_s,
            "errors": errors,
            "connections": connections,
            "latency_ms": latency_block(h) if h is not None else None,
        }

    def kind_latency(self, i: int) -> dict[str, dict[str, float]]:
        """Interval ``i``'s latency per kind (ms), as far as the workers shipped it."""
        return {kind: latency_block(h) for kind, h in sorted(self._kinds.get(i, {}).items())}

    def _forget(self) -> None:
        """Keep a few intervals behind the oldest worker's: memory stays flat in run length."""
        floor = min(self._upto.values(), default=0) - 4
        for table in (self._rows, self._latency, self._kinds):
            for i in [i for i in table if i < floor]:
                del table[i]


@attrs.frozen
class LiveFigures:
    """One reading of a running run, what ``panel`` draws."""

    title: str
    progress: str
    """Status, phase and time left (the orchestrator's ``progress``)."""
    workers: Mapping[str, int]
    """status → how many workers."""
    target_connections: int | None
    open_connections: int | None
    last: Mapping[str, Any] | None
    """The last interval every live worker has flushed (``LiveTally.interval``): up to
    ``flush_interval_s`` behind."""
    ops: int
    errors: int
    start: Mapping[str, Any] | None
    """lag_ms, skew_ms, connections once the workers' results say so."""
    events: Sequence[str]
    changes: Sequence[str]
    every_s: float = 0.0
    """How often the workers ship their intervals (the figures move at that pace)."""


WATCHED = (WorkerStatus.STALE, WorkerStatus.DEAD)


def worker_changes(before: Mapping[str, WorkerStatus], after: Mapping[str, WorkerStatus], at_s: float) -> list[str]:
    """A line for each worker that became STALE or DEAD, or left STALE for a live status."""
    out = []
    for w in sorted(after):
        old, new = before.get(w), after[w]
        if new is old:
            continue
        if new in WATCHED:
            out.append(f"[{at_s:6.1f} s] worker {w} {new}")
        elif old is WorkerStatus.STALE and not new.finished:
            out.append(f"[{at_s:6.1f} s] worker {w} recovered ({new})")
    return out


def target_connections(events: Sequence[ControlEvent], workers: Mapping[str, str]) -> int | None:
    """Connections the control log asks for now, over ``workers`` (worker → its group): each
    worker's last event that sets a count and addresses it, as its own view decides
    (``WorkerView.addresses``: run-wide, its group's, or its own)."""
    total, known = 0, False
    for w, group in workers.items():
        view, latest = WorkerView(w, group), None
        for e in events:
            if e.connections is not None and view.addresses(e):
                latest = e.connections
        if latest is not None:
            total, known = total + latest, True
    return total if known else None


def describe(e: ControlEvent, start_time: float | None) -> str:
    at = "" if e.at is None or start_time is None else f" at {e.at - start_time:+.1f} s"
    extra = f" {e.phase}" if e.phase is not None else ""
    extra += f" → {e.connections} connections" if e.connections is not None else ""
    scope = "" if e.scope is Scope.RUN else f" ({e.scope} {e.scope_id})"
    return f"{e.event_type}{extra}{scope}{at}"


def count_statuses(statuses: Iterable[WorkerStatus]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in statuses:
        out[str(s)] = out.get(str(s), 0) + 1
    return out


@attrs.frozen
class Totals:
    """The workers' results so far, summed: per (phase, kind) the operations and their latency
    histogram (µs), per (phase, kind, category) the errors."""

    ops: Mapping[tuple[str, str], int]
    errors: Mapping[tuple[str, str, str], int]
    latency: Mapping[tuple[str, str], HdrHistogram]


def totals_of(
    payloads: list[Mapping[str, Any]], latency: Mapping[tuple[str, str], HdrHistogram] | None = None
) -> Totals:
    """The workers' results summed: their counts as they are (no histogram decoded), and the
    latency histograms — ``latency`` given (the shipped intervals', while the run runs), else
    decoded from the results (exact: at the end)."""
    ops: dict[tuple[str, str], int] = defaultdict(int)
    errors: dict[tuple[str, str, str], int] = defaultdict(int)
    merged: dict[tuple[str, str], HdrHistogram] = {}
    for p in payloads:
        metrics = p.get("metrics") or {}
        for phase, kinds in (metrics.get("kind_ops") or {}).items():
            for kind, n in kinds.items():
                ops[(phase, kind)] += n
        if latency is None:
            for phase, kinds in (metrics.get("histograms") or {}).items():
                for kind, enc in kinds.items():
                    add_into(merged.setdefault((phase, kind), new_histogram()), decode(enc))
        for phase, kinds in (metrics.get("kind_errors") or {}).items():
            for kind, cats in kinds.items():
                for cat, n in cats.items():
                    errors[(phase, kind, cat)] += n
    return Totals(dict(ops), dict(errors), dict(latency) if latency is not None else merged)


@attrs.define(eq=False)
class Observer:
    orchestrator: Any
    title: str = ""
    tally: LiveTally = attrs.field(init=False)
    began: float = attrs.field(init=False, factory=trio.current_time)
    statuses: dict[str, WorkerStatus] = attrs.field(init=False, factory=dict)
    changes: list[str] = attrs.field(init=False, factory=list)
    start: Mapping[str, Any] | None = attrs.field(init=False, default=None)
    payloads: list[Mapping[str, Any]] = attrs.field(init=False, factory=list)
    series: list[dict[str, Any]] = attrs.field(init=False, factory=list)
    """One row per interval every live worker has shipped: the page's time series."""
    _stats: Any = attrs.field(init=False, default=None)
    _last: Mapping[str, Any] | None = attrs.field(init=False, default=None)
    _read_at: float = attrs.field(init=False, default=-1e9)
    _payloads_at: float = attrs.field(init=False, default=-1e9)
    _lock: trio.Lock = attrs.field(init=False, factory=trio.Lock)
    _totals: tuple[list[Mapping[str, Any]], Totals] | None = attrs.field(init=False, default=None)
    settled: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        sc = self.orchestrator.scenario
        self.tally = LiveTally(sc.snapshot_interval_s, phase_of=functools.partial(interval_phase, sc))

    async def read(self) -> None:
        """Read the run now, unless it was read less than ``READ_EVERY_S`` ago or is over."""
        async with self._lock:
            now = trio.current_time()
            if self.settled or now - self._read_at < READ_EVERY_S * 0.9:
                return  # (over: what the summary was built from is all there is)
            self._read_at = now
            sc = self.orchestrator.scenario
            stats = self._stats = self.orchestrator.statistics()
            self.changes.extend(worker_changes(self.statuses, stats.worker_statuses, now - self.began))
            self.statuses = dict(stats.worker_statuses)
            if stats.start_time is not None:
                with trio.move_on_after(2 * READ_EVERY_S):  # an unreachable control plane freezes the figures only
                    try:
                        self.tally.add(await self.orchestrator.read_snapshots())
                        if now - self._payloads_at >= min(sc.flush_interval_s, 5.0):
                            self._payloads_at = now
                            self.payloads = await self.orchestrator.read_payloads()
                            if self.start is None or self.start["connections"] < initial_total(sc):
                                block = start_block(stats.start_time, self.payloads)
                                self.start = block if block.get("lag_ms") else None
                    except ControlPlaneError:
                        pass
            k = self.tally.complete(self._live_workers())
            self._last = self.tally.interval(k) if k is not None else None
            if k is not None and (not self.series or self.series[-1]["interval"] < k):
                done = self.series[-1]["interval"] + 1 if self.series else max(0, k - 4)
                for i in range(done, k + 1):
                    self.series.append(self._row(i))
                del self.series[:-SERIES_KEPT]

    def _live_workers(self) -> list[str]:
        return [w for w, s in self.statuses.items() if s not in (WorkerStatus.DEAD, WorkerStatus.FAILED)]

    def _row(self, i: int) -> dict[str, Any]:
        sc = self.orchestrator.scenario
        row = self.tally.interval(i)
        lat = row.get("latency_ms") or {}
        return {
            "interval": i,
            "t_s": i * sc.snapshot_interval_s,
            "phase": interval_phase(sc, i),
            "qps": row["qps"],
            "errors_per_s": row["errors"] / sc.snapshot_interval_s,
            "connections": row["connections"],
            "p50_ms": lat.get("p50"),
            "p99_ms": lat.get("p99"),
            "by_kind": {
                kind: {"p50_ms": block["p50"], "p99_ms": block["p99"]}
                for kind, block in self.tally.kind_latency(i).items()
            },
        }

    def figures(self) -> LiveFigures:
        """The terminal panel's reading (after ``read``)."""
        stats = self._stats
        events = stats.events if stats is not None else ()
        groups = {w: (stats.worker_groups.get(w, "default") if stats else "default") for w in self._live_workers()}
        return LiveFigures(
            title=self.title,
            progress=self.orchestrator.progress(),
            workers=count_statuses(self.statuses.values()),
            target_connections=target_connections(events, groups),
            open_connections=None if self._last is None else self._last["connections"],
            last=self._last,
            ops=self.tally.ops,
            errors=self.tally.errors,
            start=self.start,
            events=[describe(e, stats.start_time) for e in events[-EVENTS_SHOWN:]] if stats else [],
            changes=self.changes[-CHANGES_SHOWN:],
            every_s=self.orchestrator.scenario.ship_interval_s,
        )

    def state(self, since: int = -1) -> dict[str, Any]:
        """The page's reading as JSON: the panel's figures, and the time series rows after
        interval ``since``."""
        f = self.figures()
        stats = self._stats
        return {
            "run_id": self.orchestrator.run_id,
            "scenario": self.orchestrator.scenario.name,
            "status": str(stats.status) if stats else "PREPARING",
            "progress": f.progress,
            "workers": dict(f.workers),
            "worker_lines": list(f.changes),
            "connections": {"open": f.open_connections, "planned": f.target_connections},
            "ops": f.ops,
            "errors": f.errors,
            "last": f.last,
            "start": f.start,
            "events": list(f.events),
            "series": [r for r in self.series if r["interval"] > since],
        }

    def settle(self) -> None:
        """The run is over: the totals from the results its summary was built from, exactly
        (their latency histograms decoded, once)."""
        if self.orchestrator.final_payloads:
            self.payloads = list(self.orchestrator.final_payloads)
            self._totals = (self.payloads, totals_of(self.payloads))
            self.settled = True

    def totals(self) -> Totals:
        """``totals_of`` the results last read, with the latency of the intervals shipped so far
        (nothing decoded per scrape) — until the run is over (``settle``)."""
        if self._totals is None or self._totals[0] is not self.payloads:
            self._totals = (self.payloads, totals_of(self.payloads, self.tally.cumulative))
        return self._totals[1]

    async def follow(self) -> None:
        """Read every second until cancelled (when no terminal panel does)."""
        while True:
            await self.read()
            await trio.sleep(READ_EVERY_S)


def interval_phase(scenario: Scenario, interval: int) -> str:
    """The phase snapshot interval ``interval`` began in, by the scenario's durations (one that
    began past the planned end, as the run drains: COOLDOWN, the run's tail)."""
    phase = PhaseWindows.from_scenario(scenario, 0.0).phase_at(interval * scenario.snapshot_interval_s)
    return str(Phase.COOLDOWN if phase is Phase.DONE else phase)
