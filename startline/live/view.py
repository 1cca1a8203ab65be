"""The live view of ``startline run`` on a terminal: one panel, refreshed every second (rich's
``Live``) — phase and time left, workers by status, connections, the last complete interval's
throughput, latency and errors, running totals, the start once known, the load control's step,
recent control events and a line for each worker that went STALE, DEAD or came back.

``LiveTally`` folds the workers' snapshots in as they arrive (each once); ``LiveFigures`` is a
frozen reading of the run; ``panel`` draws one. The task ``show`` ties them to an orchestrator.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import trio
from hdrh.histogram import HdrHistogram
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from startline.engine.events import WorkerView
from startline.engine.loadcontrol import initial_total
from startline.engine.metrics import add_into, decode, latency_block, new_histogram
from startline.engine.model import ControlEvent, Scope, WorkerStatus
from startline.engine.ports import ControlPlaneError
from startline.engine.summary import start_block

REFRESH_S = 1.0
EVENTS_SHOWN = 4
CHANGES_SHOWN = 6


@attrs.define(eq=False)
class LiveTally:
    """Running totals and per-interval figures from the workers' snapshots, each taken once
    (a retried append, same worker and ``n``, counts once)."""

    interval_s: float
    ops: int = 0
    errors: int = 0
    _seen: set[tuple[str, Any]] = attrs.field(init=False, factory=set)
    _rows: dict[int, list[int]] = attrs.field(init=False, factory=dict)
    """interval → [ops, errors, connections] over the workers."""
    _latency: dict[int, HdrHistogram] = attrs.field(init=False, factory=dict)
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
                for enc in item.get("kinds", {}).values():
                    add_into(self._latency.setdefault(i, new_histogram()), decode(enc))
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

    def _forget(self) -> None:
        """Keep a few intervals behind the oldest worker's: memory stays flat in run length."""
        floor = min(self._upto.values(), default=0) - 4
        for table in (self._rows, self._latency):
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


def panel(f: LiveFigures) -> Panel:
    """The live panel for one reading."""
    lines: list[Any] = [Text(f.progress, style="bold")]
    by_status = ", ".join(f"{n} {s}" for s, n in sorted(f.workers.items()))
    conns = "-" if f.open_connections is None else f"{f.open_connections:,}"
    target = "" if f.target_connections is None else f" of {f.target_connections:,} planned"
    lines.append(Text(f"workers: {by_status or 'none yet'}; connections open {conns}{target}"))
    t = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    for col in ("", "ops/s", "errors", "p50 ms", "p99 ms", "max ms"):
        t.add_column(col, justify="right")
    if f.last is not None:
        lat = f.last.get("latency_ms") or {}
        t0 = f.last["interval"] * f.last["interval_s"]
        t.add_row(
            f"{t0:g}–{t0 + f.last['interval_s']:g} s",
            f"{f.last['qps']:,.0f}",
            f"{f.last['errors']:,}",
            *(_ms(lat.get(k)) for k in ("p50", "p99", "max")),
        )
    else:
        every = f": workers ship them every {f.every_s:g} s, flush_interval_s" if f.every_s else ""
        t.add_row(f"(no interval from every worker yet{every})", "", "", "", "", "")
    lines.append(t)
    lines.append(Text(f"totals: {f.ops:,} operations, {f.errors:,} errors"))
    if f.start:
        lag = f.start.get("lag_ms") or {}
        lines.append(
            Text(
                f"start: {f.start.get('connections', 0)} connections, lag p50 {_ms(lag.get('p50'))} ms, "
                f"max {_ms(lag.get('max'))} ms, skew {_ms(f.start.get('skew_ms'))} ms"
            )
        )
    for e in f.events:
        lines.append(Text(f"event: {e}", style="cyan"))
    for c in f.changes:
        lines.append(Text(c, style="yellow" if "recovered" not in c else "green"))
    return Panel(Group(*lines), title=f.title, title_align="left")


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.2f}"


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


async def show(orchestrator: Any, console: Console, title: str) -> None:
    """Draw the panel every second until cancelled; the figures from the control plane are read
    as the workers flush them (every ``flush_interval_s``, each interval once)."""
    sc = orchestrator.scenario
    tally = LiveTally(sc.snapshot_interval_s)
    began = trio.current_time()
    statuses: dict[str, WorkerStatus] = {}
    changes: list[str] = []
    start: Mapping[str, Any] | None = None
    next_read = 0.0
    with Live(console=console, refresh_per_second=4, transient=False) as live:
        while True:
            stats = orchestrator.statistics()
            now = trio.current_time()
            changes.extend(worker_changes(statuses, stats.worker_statuses, now - began))
            statuses = dict(stats.worker_statuses)
            live_workers = [w for w, s in statuses.items() if s not in (WorkerStatus.DEAD, WorkerStatus.FAILED)]
            groups = {w: stats.worker_groups.get(w, "default") for w in live_workers}
            if stats.start_time is not None and now >= next_read:
                next_read = now + min(sc.flush_interval_s, 5.0)
                with trio.move_on_after(2 * REFRESH_S):  # an unreachable control plane freezes the figures only
                    try:
                        tally.add(await orchestrator.read_snapshots())
                        if start is None or start["connections"] < initial_total(sc):  # until all started
                            block = start_block(stats.start_time, await orchestrator.read_payloads())
                            start = block if block.get("lag_ms") else None
                    except ControlPlaneError:
                        pass
            k = tally.complete(live_workers)
            last = tally.interval(k) if k is not None else None
            shown = stats.events[-EVENTS_SHOWN:]
            live.update(
                panel(
                    LiveFigures(
                        title=title,
                        progress=orchestrator.progress(),
                        workers=_count(statuses.values()),
                        target_connections=target_connections(stats.events, groups),
                        open_connections=None if last is None else last["connections"],
                        last=last,
                        ops=tally.ops,
                        errors=tally.errors,
                        start=start,
                        events=[describe(e, stats.start_time) for e in shown],
                        changes=changes[-CHANGES_SHOWN:],
                        every_s=orchestrator.scenario.ship_interval_s,
                    )
                )
            )
            await trio.sleep(REFRESH_S)


def _count(statuses: Iterable[WorkerStatus]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in statuses:
        out[str(s)] = out.get(str(s), 0) + 1
    return out
