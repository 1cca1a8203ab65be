"""Print a summary for people: start precision, control-plane cost, throughput and latency."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from startline.engine.files import STEPS_HEADER
from startline.views.rows import PHASE_COLUMNS, headline, phase_rows, shape


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x if abs(x) >= 0.005 else 0.0:,.2f}"  # never "-0.00"


def headline_line(summary: dict[str, Any]) -> str:
    """The headline figures on one line (``rows.headline``)."""
    parts = []
    for figure, value, unit in headline(summary)[1:]:  # (the verdict closes the summary)
        shown = _ms(value) if isinstance(value, float) else "-" if value is None else str(value)
        parts.append(f"{figure} {shown}{' ' + unit if unit and value is not None else ''}")
    return "; ".join(parts)


def print_summary(
    summary: dict[str, Any], console: Console | None = None, path: str | None = None, report: str | None = None
) -> None:
    console = console or Console()
    start = summary["start"]
    cp = summary["control_plane"]
    console.print(
        f"[bold]{summary['scenario']}[/] run [cyan]{summary['run_id']}[/]: [bold]{summary['status']}[/]"
        + (
            f" ({summary['reason']}" + (f": {summary['detail']}" if summary.get("detail") else "") + ")"
            if summary.get("reason")
            else ""
        )
        + f", start strategy [cyan]{summary['start_strategy']}[/]"
    )
    console.print(escape(headline_line(summary)), highlight=False)
    console.print(_shape(summary))
    lag = start.get("lag_ms") or {}
    t = Table(title="Start (ms from START_TIME)", show_header=True, header_style="bold")
    for col in ("connections", "lag min", "lag p50", "lag p99", "lag max", "skew", "± skew"):
        t.add_column(col, justify="right", no_wrap=True)
    t.add_row(
        str(start["connections"]),
        _ms(lag.get("min")),
        _ms(lag.get("p50")),
        _ms(lag.get("p99")),
        _ms(lag.get("max")),
        _ms(start.get("skew_ms")),
        _ms(start.get("skew_uncertainty_ms")),
    )
    console.print(t)
    if start.get("lag_uncertainty_ms") is not None:
        console.print(f"each lag ± {start['lag_uncertainty_ms']:,.2f} ms (the workers' clock maps)")
    host = (start.get("witnesses") or {}).get("host")
    if host:
        hl = host.get("lag_ms")
        console.print(
            f"witness, the host's own clock (every worker on one host): skew {_ms(host['skew_ms'])} ms"
            + (f", lag p50 {_ms(hl['p50'])} ms, max {_ms(hl['max'])} ms" if hl else "")
        )
    console.print(
        f"control plane: {cp['queries']} queries; per worker per second "
        f"waiting {_ms(cp['per_worker_per_s_waiting'])}, running {_ms(cp['per_worker_per_s_running'])}"
    )
    p = Table(title="Phases", show_header=True, header_style="bold")
    for col in PHASE_COLUMNS:
        p.add_column(col, justify="right" if col not in ("phase", "kind") else "left")
    for phase, kind, ops, errors, qps, *lat in phase_rows(summary):
        p.add_row(
            phase,
            kind,
            f"{ops:,}",
            "" if errors is None else f"{errors:,}",
            "-" if qps is None else f"{qps:,.1f}",
            *map(_ms, lat),
        )
    console.print(p)
    _print_open_loop(summary["phases"], console)
    _print_load(summary.get("load") or {}, console)
    bad = [w for w in summary["workers"] if w["status"] != "COMPLETED"]
    for w in bad:
        console.print(f"[yellow]worker {escape(w['worker_id'])}: {w['status']}[/] {escape(w.get('failure') or '')}")
    client = summary.get("client") or {}
    if client.get("saturated"):
        console.print(
            f"[bold yellow]client saturated[/]: {escape(', '.join(client['saturated']))} used more than "
            f"{100 * client['threshold']:.0f} % of a core in an interval — these figures may be the client's "
            "limit, not the database's: run more worker processes (or hosts)"
        )
    _print_failures(summary.get("failures", ()), console)
    for c in summary.get("checks", ()):
        mark = "[green]ok[/]" if c["ok"] else "[bold red]FAILED[/]"
        console.print(f"check {c['name']}: {mark} — {escape(c['detail'])}")
    for t in summary.get("thresholds", ()):
        mark = "[green]ok[/]" if t["ok"] else "[bold red]FAILED[/]"
        console.print(f"threshold {escape(t['metric'])}: {escape(t['threshold'])} {mark} — {escape(t['detail'])}")
    for t in summary.get("thresholds_pending", ()):
        console.print(
            f"threshold {escape(t['metric'])}: {escape(t['threshold'])} pending — judged by `startline enrich`"
        )
    verdict = summary.get("verdict")
    if verdict:
        style = "bold green" if verdict == "passed" else "bold red"
        console.print(f"verdict: [{style}]{verdict}[/]")
    if path:
        console.print(f"summary: {path}")
    if report:
        console.print(f"report: {report}")


FAILURES_SHOWN = 5


def _shape(summary: dict[str, Any]) -> str:
    """Workers × connections and how long each phase ran."""
    spans = {phase: b.get("duration_s", 0.0) for phase, b in summary["phases"].items() if b.get("duration_s")}
    ran = ", ".join(f"{phase} {s:,.1f} s" for phase, s in spans.items())
    return f"{shape(summary)}; ran {sum(spans.values()):,.1f} s" + (f" ({ran})" if ran else "")


def _print_failures(failures: Any, console: Console) -> None:
    """The most frequent errors, with what they said (all of them in failures.csv)."""
    if not failures:
        return
    t = Table(title="Errors", show_header=True, header_style="bold")
    for col in ("operation", "category", "count", "first message"):
        t.add_column(col, justify="right" if col == "count" else "left", overflow="fold")
    for f in failures[:FAILURES_SHOWN]:
        first = f["messages"][0]["message"] if f["messages"] else ""
        t.add_row(escape(f["operation"]), escape(f["category"]), f"{f['count']:,}", escape(first))
    console.print(t)
    if len(failures) > FAILURES_SHOWN:
        console.print(f"… and {len(failures) - FAILURES_SHOWN} more (operation, category) in failures.csv")


def _print_open_loop(phases: dict[str, Any], console: Console) -> None:
    """An open loop's schedule: offered, skipped, late; response vs service time; schedule lag."""
    rows = [(phase, b) for phase, b in phases.items() if "schedule_lag_ms" in b]
    if not rows:
        return
    t = Table(title="Open loop (response time from the intended start)", show_header=True, header_style="bold")
    cols = ("phase", "offered", "completed", "skipped", "late", "response p99 ms", "service p99 ms", "lag p99 ms")
    for col in cols:
        t.add_column(col, justify="left" if col == "phase" else "right")
    for phase, b in rows:
        t.add_row(
            phase,
            f"{b['offered']:,}",
            f"{b['completed']:,}",
            f"{b['skipped']:,}",
            f"{b['late']:,}",
            _ms(b["latency_ms"]["p99"]),
            _ms(b["service_ms"]["p99"]),
            _ms(b["schedule_lag_ms"]["p99"]),
        )
    console.print(t)


def _print_load(load: dict[str, Any], console: Console) -> None:
    """The load control's steps (find-max's, the QPS controller's readings) and its result."""
    steps, result = load.get("steps") or [], load.get("result")
    if steps:
        keys = [k for k in STEPS_HEADER if any(k in st for st in steps)]
        t = Table(title=f"Load: {load.get('mode')}", show_header=True, header_style="bold")
        for k in keys:
            t.add_column(k.replace("_", " "), justify="right")
        for st in steps:
            t.add_row(*(_cell(st.get(k)) for k in keys))
        console.print(t)
    if result and load.get("mode") != "concurrency":
        shown = ", ".join(f"{k} {_cell(v)}" for k, v in result.items() if not isinstance(v, dict))
        console.print(f"load {load.get('mode')}: {escape(shown)}")


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "[red]no[/]"
    if isinstance(v, float):
        return f"{v:,.2f}"
    return escape(str(v))
