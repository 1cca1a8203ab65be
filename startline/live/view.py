"""The live view of ``startline run`` on a terminal: one panel, refreshed every second (rich's
``Live``) — phase and time left, workers by status, connections, the last complete interval's
throughput, latency and errors, running totals, the start once known, the load control's step,
recent control events and a line for each worker that went STALE, DEAD or came back.

``panel`` draws one reading (``observe.LiveFigures``); the task ``show`` draws an
``observe.Observer``'s every second (the dashboard reads the same observer: one source).
"""

from __future__ import annotations

from typing import Any

import trio
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from startline.live.observe import LiveFigures, LiveTally, Observer, target_connections, worker_changes

__all__ = ["LiveFigures", "LiveTally", "panel", "show", "target_connections", "worker_changes"]

REFRESH_S = 1.0


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


async def show(observer: Observer, console: Console) -> None:
    """Draw the panel every second until cancelled (the observer reads the control plane at most
    once a second, however many views look)."""
    with Live(console=console, refresh_per_second=4, transient=False) as live:
        while True:
            await observer.read()
            live.update(panel(observer.figures()))
            await trio.sleep(REFRESH_S)
