"""report.html: one self-contained file per run, rebuilt from summary.json alone.

Charts are matplotlib figures inlined as SVG (text kept as text: ``svg.fonttype = none``). Why
matplotlib: it is the well-kept plotting library the sweep's plots already use (the ``plot``
extra), it draws offline, and static SVG needs no script — a JavaScript charting library would
have to be inlined whole (Plotly's bundle alone is ~3.5 MB) for the file to open without a
network. A quickstart report is ~0.3 MB. Ids and metadata are fixed (``svg.hashsalt``, no
date), so the same summary gives the same bytes.
"""

from __future__ import annotations

import html
import io
import json
import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from startline.engine.files import write_atomic
from startline.engine.serverstats import COUNTERS, hit_ratio
from startline.views.rows import PHASE_COLUMNS, START_COLUMNS, headline, phase_rows, shape, start_rows

PLOT_EXTRA = "report.html needs matplotlib: pip install 'startline[plot]'"
"""The one line shown where a report was asked for and matplotlib is missing."""

PHASE_COLOURS = {"WARMUP": "#fdf0d5", "MEASUREMENT": "#e3f2e1", "COOLDOWN": "#e4ecf7"}
KIND_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_report(out: Path, summary: Mapping[str, Any]) -> Path:
    """OUT/report.html from ``summary`` (written whole or not at all)."""
    return write_atomic(Path(out) / "report.html", render(summary))


def render(summary: Mapping[str, Any]) -> str:
    """The report's HTML: verdict and thresholds, the start, throughput and errors over time,
    latency over time per kind, the latency distribution, control-plane cost, workers, the
    scenario. Every chart is inline SVG; nothing is fetched."""
    charts = _Charts(summary)
    load = summary.get("load") or {}
    sections = [
        _section("Headline", _headline(summary)),
        _section("Verdict", _verdict(summary)),
        _section("The start", charts.start() + _start_table(summary)),
        _section("Throughput and errors", charts.throughput()),
        _section("The database server", _server_charts(summary, charts) + _server_tables(summary))
        if summary.get("server")
        else "",
        _section("Latency over time", charts.latency_over_time()),
        _section("Latency distribution (MEASUREMENT)", charts.distribution() + _phase_table(summary)),
        _section("Load control", (charts.find_max() if load.get("mode") == "find_max" else "") + _load_table(summary))
        if load.get("steps")
        else "",
        _section("Errors", _failures(summary)) if summary.get("failures") else "",
        _section("Control plane", _control_plane(summary)),
        _section("Workers", charts.workers() + f'<div class="wide">{_workers_table(summary)}</div>'),
        _section("Scenario", _scenario(summary)),
    ]
    title = f"{summary.get('scenario', 'run')} — {summary.get('run_id', '')}"
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1>\n" + "\n".join(s for s in sections if s) + "\n</body></html>\n"
    )


STYLE = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}td,th{border:1px solid #ddd;padding:3px 8px}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.passed{color:#1a7f37;font-weight:bold}.failed{color:#c62828;font-weight:bold}
figure{margin:8px 0}.none{color:#777;font-style:italic}
.wide{overflow-x:auto;max-width:100%}td{overflow-wrap:anywhere}td.n{white-space:nowrap;overflow-wrap:normal}
table.headline td{font-size:1.1em;padding:4px 12px}
svg{max-width:100%;height:auto}pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:.8em}
""".strip()


def _section(title: str, body: str) -> str:
    anchor = title.split(" (")[0].lower().replace(" ", "-")
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>\n{body}\n</section>'


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_td(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _td(v: Any) -> str:
    if v is None:
        return "<td>-</td>"
    if isinstance(v, bool):
        return f'<td class="{"passed" if v else "failed"}">{"ok" if v else "FAILED"}</td>'
    if isinstance(v, int):
        return f'<td class="n">{v:,}</td>'
    if isinstance(v, float):
        return f'<td class="n">{_fixed(v)}</td>'
    return f"<td>{html.escape(str(v))}</td>"


def _text(label: str) -> str:
    """A user's name (a run's directory) as a chart label: text, not mathtext between ``$``s."""
    return label.replace("$", r"\$")


def _fixed(v: float) -> str:
    """Two decimals, never "-0.00" (a figure that rounds to zero is zero)."""
    return f"{v if abs(v) >= 0.005 else 0.0:,.2f}"


def _headline(s: Mapping[str, Any]) -> str:
    """The figures a reader wants first (``rows.headline``), before any chart."""
    cells = []
    for figure, value, unit in headline(s):
        if figure == "verdict":
            shown = f'<span class="{html.escape(str(value))}">{html.escape(str(value))}</span>'
        elif isinstance(value, float):
            shown = f"{_fixed(value)} {html.escape(unit)}"
        else:
            shown = "-" if value is None else f"{html.escape(str(value))} {html.escape(unit)}".strip()
        cells.append(f"<tr><th>{html.escape(figure)}</th><td>{shown}</td></tr>")
    return f'<table class="headline">{"".join(cells)}</table>'


def _verdict(s: Mapping[str, Any]) -> str:
    verdict = s.get("verdict") or "-"
    reason = f" ({s['reason']}" + (f": {s['detail']}" if s.get("detail") else "") + ")" if s.get("reason") else ""
    phases = {p: b.get("duration_s", 0.0) for p, b in s.get("phases", {}).items() if b.get("duration_s")}
    ran = f"{shape(s)}; ran " + ", ".join(f"{p} {d:,.1f} s" for p, d in phases.items())
    rows = [(c["name"], c["ok"], c.get("value"), c.get("detail")) for c in s.get("checks", ())]
    rows += [
        (f"{t['metric']}: {t['threshold']}", t["ok"], t.get("value"), t.get("detail")) for t in s.get("thresholds", ())
    ]
    rows += [
        (f"{t['metric']}: {t['threshold']}", "pending", None, "judged by `startline enrich` once the cost is known")
        for t in s.get("thresholds_pending", ())
    ]
    return (
        f'<p>verdict: <span class="{html.escape(verdict)}">{html.escape(verdict)}</span> — status '
        f"{html.escape(str(s.get('status')))}{html.escape(reason)}, start strategy "
        f"{html.escape(str(s.get('start_strategy')))}</p><p>{html.escape(ran)}</p>"
        + _table(("check / threshold", "result", "value", "detail"), rows)
    )


def _start_table(s: Mapping[str, Any]) -> str:
    return _table(START_COLUMNS, start_rows(s))


def _phase_table(s: Mapping[str, Any]) -> str:
    return _table(PHASE_COLUMNS, phase_rows(s))


def _load_table(s: Mapping[str, Any]) -> str:
    from startline.engine.files import STEPS_HEADER

    load = s["load"]
    keys = [k for k in STEPS_HEADER if any(k in st for st in load["steps"])]
    result = load.get("result") or {}
    shown = ", ".join(f"{k} {v}" for k, v in result.items() if not isinstance(v, dict))
    return f"<p>mode {html.escape(str(load.get('mode')))}: {html.escape(shown)}</p>" + _table(
        keys, ([st.get(k) for k in keys] for st in load["steps"])
    )


def _server_charts(s: Mapping[str, Any], charts: _Charts) -> str:
    """The server's charts its block has figures for: counters over time (PostgreSQL), its own
    timing of the run's statements (Snowflake, after ``enrich``)."""
    server = s.get("server") or {}
    return (charts.server() if server.get("intervals") else "") + (
        charts.server_timings() if server.get("statement_intervals") else ""
    )


PUBLISHED_WINDOW_S = 2.0
"""The report's server rates are over windows this wide at least (two of PostgreSQL's publishing
periods: ``PGSTAT_MIN_INTERVAL``, one second)."""


def _published_windows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive ``server.intervals`` merged into windows of at least ``PUBLISHED_WINDOW_S`` (the
    last one may be shorter): ``from_s``, ``to_s`` and the counters added (None when one was)."""
    windows: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for r in rows:
        if current is None:
            current = {"from_s": r["from_s"], "to_s": r["to_s"], **{k: r[k] for k in COUNTERS}}
        else:
            current["to_s"] = r["to_s"]
            for k in COUNTERS:
                current[k] = None if current[k] is None or r[k] is None else current[k] + r[k]
        if current["to_s"] - current["from_s"] >= PUBLISHED_WINDOW_S:
            windows.append(current)
            current = None
    if current is not None:
        windows.append(current)
    return windows


PHASE_ORDER = ("WARMUP", "MEASUREMENT", "COOLDOWN", "DONE")


def _in_phase_order(by_phase: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """A block's phases as the run went through them (any other after, by name)."""
    rank = {p: n for n, p in enumerate(PHASE_ORDER)}
    return sorted(by_phase.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0]))


def _significant(v: float | None) -> str | None:
    """A small amount (credits, a price per 1,000 operations) with its significant digits, not two
    decimals that would round it to zero."""
    return None if v is None else f"{v:.4g}"


def _attributed_rows(attributed: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    """The cost table's rows for the credits attributed to the run's statements, per phase and kind."""
    if not attributed:
        return []
    rows: list[tuple[str, Any]] = [
        ("credits attributed to the run's statements", _significant(attributed.get("credits"))),
        ("… their amount per 1,000 operations", _significant(attributed.get("per_1k_ops"))),
    ]
    for phase, kinds in _in_phase_order(attributed.get("by_phase") or {}):
        rows += [(f"… {phase}, {kind}", _significant(credits)) for kind, credits in kinds.items()]
    return [*rows, ("… basis", attributed.get("basis"))]


def _server_tables(s: Mapping[str, Any]) -> str:
    """The server's own totals over the run, what reading them cost, and (with
    pg_stat_statements) the statements that took the most server time per phase."""
    server = s.get("server") or {}
    parts = []
    totals = server.get("totals")
    if totals:
        sampling = server.get("sampling") or {}
        trip = sampling.get("round_trip_ms") or {}
        clock = server.get("clock") or {}
        rows = [(k, totals.get(k)) for k in (*COUNTERS, "hit_ratio")]
        rows += [
            ("readings (one transaction each, counted above)", sampling.get("readings")),
            ("readings failed", sampling.get("failed_readings")),
            ("reading round trip p50 / max ms", f"{trip.get('p50')} / {trip.get('max')}"),
            (
                "server clock on the run's",
                "the same clock"
                if clock.get("same_clock")
                else f"{clock.get('offset_ms')} ms ahead, ± {clock.get('uncertainty_ms')} ms",
            ),
        ]
        parts.append(_table((f"{server.get('source', 'server')}: the whole run", "value"), rows))
    statements_from = str(server.get("statements_from") or server.get("source", "server"))
    if server.get("by_phase") and server.get("clock") and not totals:
        clock = server["clock"]
        parts.append(
            f"<p>{html.escape(statements_from)}'s times placed on the run's clock: "
            + (
                "the same clock"
                if clock.get("same_clock")
                else f"Snowflake's {clock.get('offset_ms')} ms ahead, ± {clock.get('uncertainty_ms')} ms"
            )
            + "</p>"
        )
    for phase, kinds in _in_phase_order(server.get("by_phase") or {}):
        parts.append(
            f"<p>{html.escape(statements_from)}, {html.escape(phase)}: each kind's statements "
            "as the server timed them (ms), beside the client's latency (server_ms is the server's whole elapsed "
            "time: compilation, queueing and execution)</p>"
            + '<div class="wide">'
            + _table(
                (
                    "kind",
                    "records",
                    "share of the client's",
                    "server_ms p50",
                    "server_ms p99",
                    "execution p50",
                    "compilation p50",
                    "queued overload p99",
                    "blocked p99",
                    "client latency p50",
                    "client latency p99",
                    "failed",
                ),
                (
                    (
                        kind,
                        r["records"],
                        r["matched_share"],
                        r["server_ms"]["p50"],
                        r["server_ms"]["p99"],
                        r["execution_ms"]["p50"],
                        r["compilation_ms"]["p50"],
                        r["queued_overload_ms"]["p99"],
                        r["transaction_blocked_ms"]["p99"],
                        (r.get("latency_ms") or {}).get("p50"),
                        (r.get("latency_ms") or {}).get("p99"),
                        r["failed"],
                    )
                    for kind, r in kinds.items()
                ),
            )
            + "</div>"
        )
    for phase, kinds in _in_phase_order((server.get("aggregated") or {}).get("by_phase") or {}):
        parts.append(
            f"<p>AGGREGATE_QUERY_HISTORY, {html.escape(phase)}: each kind's executions in one-minute rows (ms; "
            "the mean and the maximum are exact, p99 is the largest one-minute p99)</p>"
            + _table(
                (
                    "kind",
                    "calls",
                    "share of the client's",
                    "server_ms mean",
                    "server_ms max",
                    "largest minute's p99",
                    "failed",
                ),
                (
                    (
                        kind,
                        r["calls"],
                        r["matched_share"],
                        r["server_ms"]["mean"],
                        r["server_ms"]["max"],
                        r["server_ms"]["p99_max"],
                        r["failed"],
                    )
                    for kind, r in kinds.items()
                ),
            )
        )
    if server.get("not_attributed"):
        left = server["not_attributed"]
        parts.append(
            "<p>the run's statements attributed to no kind: "
            + html.escape(", ".join(f"{n:,} {why}" for why, n in left.items()))
            + (
                f"; warehouses: {html.escape(', '.join(server.get('warehouses') or ()))}"
                if server.get("warehouses")
                else ""
            )
            + "</p>"
        )
    if server.get("warehouse_load"):
        parts.append(
            _table(
                (
                    "warehouse",
                    "from s",
                    "to s",
                    "avg running",
                    "avg queued (load)",
                    "avg queued (provisioning)",
                    "avg blocked",
                ),
                (
                    (
                        w["warehouse"],
                        w["from_s"],
                        w["to_s"],
                        w["avg_running"],
                        w["avg_queued_load"],
                        w["avg_queued_provisioning"],
                        w["avg_blocked"],
                    )
                    for w in server["warehouse_load"]
                ),
            )
        )
    for line in server.get("pending") or ():
        parts.append(f'<p class="none">not yet available: {html.escape(line)}</p>')
    cost = s.get("cost")
    if cost:
        parts.append(
            _table(
                ("cost", "value"),
                [
                    ("credits", _significant(cost.get("credits"))),
                    (f"amount ({cost.get('currency')})", _significant(cost.get("currency_amount"))),
                    ("per 1,000 operations", _significant(cost.get("per_1k_ops"))),
                    ("basis", cost.get("basis")),
                    *_attributed_rows(cost.get("attributed")),
                ],
            )
        )
    for phase, statements in (server.get("statements") or {}).items():
        parts.append(
            f"<p>pg_stat_statements, {html.escape(phase)}: the statements with the most server time</p>"
            + '<div class="wide">'
            + _table(
                ("query", "calls", "rows", "total ms", "mean ms"),
                ((st["query"], st["calls"], st["rows"], st["total_ms"], st["mean_ms"]) for st in statements[:10]),
            )
            + "</div>"
        )
    return "".join(parts)


def _failures(s: Mapping[str, Any]) -> str:
    rows = [
        (f["operation"], f["category"], f["count"], f["workers"], f["messages"][0]["message"] if f["messages"] else "")
        for f in s["failures"]
    ]
    return _table(("operation", "category", "count", "workers", "first message"), rows)


def _scenario(s: Mapping[str, Any]) -> str:
    settings = (s.get("config") or {}).get("scenario") or {}
    shown = ", ".join(
        f"{k} = {settings[k]}"
        for k in ("workers", "connections_per_worker", "warmup_s", "measurement_s", "cooldown_s")
        if k in settings
    )
    return (
        f"<p>{html.escape(shown)}</p><details><summary>the scenario as run (JSON)</summary>"
        f"<pre>{html.escape(json.dumps(settings, indent=2))}</pre></details>"
    )


def _control_plane(s: Mapping[str, Any]) -> str:
    cp = s.get("control_plane") or {}
    return _table(
        ("queries", "per worker per s, waiting", "per worker per s, running"),
        [(cp.get("queries"), cp.get("per_worker_per_s_waiting"), cp.get("per_worker_per_s_running"))],
    )


HEALTH = ("calls", "failures", "retries", "longest_outage_s")
"""Each worker's control-plane health, as its results report it."""
TIMELINE = ("ready", "detect", "first_query", "spent", "judged_dead", "finished")


def _workers_table(s: Mapping[str, Any]) -> str:
    t0 = s.get("start_time")
    rows = []
    for w in s.get("workers", ()):
        tl = w.get("timeline") or {}
        marks = [None if tl.get(m) is None or t0 is None else round((tl[m] - t0) * 1000.0, 1) for m in TIMELINE]
        rows.append(
            (
                w["worker_id"],
                w["status"],
                w["ops"],
                w["errors"],
                w.get("clock_offset_ms"),
                w.get("clock_uncertainty_ms"),
                *marks,
                *(((w.get("health") or {}).get(k)) for k in HEALTH),
            )
        )
    header = (
        "worker",
        "status",
        "ops",
        "errors",
        "clock offset ms",
        "± ms",
        *(f"{m} (ms from START)" for m in TIMELINE),
        *(f"control plane {k.replace('_', ' ')}" for k in HEALTH),
    )
    return _table(header, rows)


class _Charts:
    """The report's figures, each an inline SVG in a ``<figure id=chart-NAME>``."""

    def __init__(self, summary: Mapping[str, Any]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot

        self.plt = pyplot
        self.s = summary
        self.series = list(summary.get("timeseries") or ())
        self.iv = float(summary.get("snapshot_interval_s") or 1.0)
        self.rc = {"svg.fonttype": "none", "svg.hashsalt": "startline", "font.size": 9}

    def _figure(self, name: str, draw: Callable[[Any], str], height: float = 3.0) -> str:
        """Draw on a new figure; ``draw`` returns the caption (empty: nothing to show)."""
        with self.plt.rc_context(self.rc):
            fig = self.plt.figure(figsize=(10, height))
            try:
                caption = draw(fig)
                if not caption:
                    return f'<p id="chart-{name}" class="none">nothing to draw here: no such figures in this run</p>'
                fig.tight_layout()
                buf = io.StringIO()
                fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
            finally:
                self.plt.close(fig)
        svg = buf.getvalue()
        svg = svg[svg.index("<svg") :]
        return f'<figure id="chart-{name}">{svg}<figcaption>{html.escape(caption)}</figcaption></figure>'

    def _shade(self, ax: Any) -> None:
        """The phases shaded, each labelled once."""
        spans: dict[str, list[float]] = {}
        for r in self.series:
            p = r.get("phase")
            if p in PHASE_COLOURS:
                lo, hi = spans.setdefault(p, [r["t_s"], r["t_s"] + self.iv])
                spans[p] = [min(lo, r["t_s"]), max(hi, r["t_s"] + self.iv)]
        for p, (lo, hi) in spans.items():
            ax.axvspan(lo, hi, color=PHASE_COLOURS[p], zorder=0, label=p)

    def _events(self, ax: Any) -> None:
        """Control events: load steps, scale steps, STOP."""
        load = self.s.get("load") or {}
        for k, st in enumerate(load.get("steps") or ()):
            ax.axvline(st["at_s"], color="#888", lw=0.8, ls=":", label="load step" if k == 0 else None)
        scenario = (self.s.get("config") or {}).get("scenario") or {}
        for k, step in enumerate(scenario.get("schedule") or ()):
            ax.axvline(step.get("at_s", 0), color="#6a1b9a", lw=0.9, ls="--", label="scale" if k == 0 else None)
        t0, stop = self.s.get("start_time"), self.s.get("stopped_at")
        if t0 is not None and stop is not None and stop >= t0:
            ax.axvline(stop - t0, color="#c62828", lw=1.2, label="STOP")

    def throughput(self) -> str:
        def draw(fig: Any) -> str:
            if not self.series:
                return ""
            ax = fig.add_subplot(1, 1, 1)
            self._shade(ax)
            t = [r["t_s"] + self.iv / 2 for r in self.series]
            ax.plot(t, [r["ops"] / self.iv for r in self.series], color="#1f77b4", label="ops/s")
            ax.set_ylabel("operations / s")
            ax.set_xlabel("seconds from START_TIME")
            errors = [r["errors"] / self.iv for r in self.series]
            if any(errors):
                ax2 = ax.twinx()
                ax2.bar(t, errors, width=self.iv * 0.8, color="#c62828", alpha=0.6, label="errors/s")
                ax2.set_ylabel("errors / s", color="#c62828")
            self._events(ax)
            ax.set_ylim(bottom=0)
            ax.legend(loc="best", fontsize=8, framealpha=0.7)
            total = sum(r["ops"] for r in self.series)
            return (
                f"{total:,} operations and {sum(r['errors'] for r in self.series):,} errors, per {self.iv:g} s interval"
            )

        return self._figure("throughput", draw)

    def server(self) -> str:
        """The server's own figures on the run's time axis, under the client's throughput:
        commits and rollbacks per second, the buffer cache hit ratio, the run's sessions waiting
        by wait event type and the locks they waited for, deadlocks marked."""
        rows = list((self.s.get("server") or {}).get("intervals") or ())

        def draw(fig: Any) -> str:
            if not rows:
                return ""
            top, mid, low = fig.subplots(3, 1, sharex=True, height_ratios=(2, 1, 1.4))
            for ax in (top, mid, low):
                self._shade(ax)
            ends = [r["to_s"] for r in rows]  # where each reading of the waits was taken
            spans = [max(r["to_s"] - r["from_s"], 1e-9) for r in rows]
            windows = _published_windows(rows)

            def rate(key: str) -> list[float]:
                return [float("nan") if w[key] is None else w[key] / (w["to_s"] - w["from_s"]) for w in windows]

            if self.series:
                t = [r["t_s"] + self.iv / 2 for r in self.series]
                top.plot(t, [r["ops"] / self.iv for r in self.series], color="#1f77b4", label="client ops/s")
            w_mids = [(w["from_s"] + w["to_s"]) / 2 for w in windows]
            top.plot(w_mids, rate("xact_commit"), color="#1a7f37", marker=".", label="server commits/s")
            top.plot(w_mids, rate("xact_rollback"), color="#c62828", marker=".", label="server rollbacks/s")
            for k, r in enumerate([r for r in rows if r["deadlocks"]]):  # the interval each was counted in
                top.axvspan(r["from_s"], r["to_s"], color="#c62828", alpha=0.15, label="deadlocks" if k == 0 else None)
            top.set_ylabel("per second")
            top.set_ylim(bottom=0)
            top.legend(loc="best", fontsize=7, framealpha=0.7)
            ratios = [hit_ratio(w["blks_hit"], w["blks_read"]) for w in windows]
            mid.plot(w_mids, [float("nan") if r is None else r for r in ratios], color="#6a1b9a", marker=".")
            mid.set_ylabel("cache hit ratio")
            mid.set_ylim(0, 1.05)
            kinds = sorted({k for r in rows for k in r["waits"]})
            bottom = [0.0] * len(rows)
            for n, kind in enumerate(kinds):
                heights = [float(r["waits"].get(kind, 0)) for r in rows]
                low.bar(
                    ends,
                    heights,
                    bottom=bottom,
                    width=min(spans) * 0.5,
                    color=KIND_COLOURS[n % len(KIND_COLOURS)],
                    label=kind,
                )
                bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
            low.plot(ends, [r["locks_waiting"] for r in rows], color="#000", lw=1, label="locks waiting")
            low.set_ylabel("sessions active")
            low.set_xlabel("seconds from START_TIME")
            low.legend(loc="best", fontsize=7, ncol=4, framealpha=0.7)
            clock = (self.s.get("server") or {}).get("clock") or {}
            where = (
                "the server's clock is the run's"
                if clock.get("same_clock")
                else f"the server's clock placed on the run's within ± {clock.get('uncertainty_ms')} ms"
            )
            return (
                "the server's own counts (top: commits and rollbacks per second beside the client's throughput, "
                f"over windows of at least {PUBLISHED_WINDOW_S:g} s — a PostgreSQL session publishes its counts "
                "at most once a second, so a shorter window shows its rhythm, not the load's), its cache hit ratio "
                f"over the same windows, and the run's active sessions by wait at each reading; {where}"
            )

        return self._figure("server", draw, height=5.6)

    def server_timings(self) -> str:
        """The server's own timing of the run's statements per interval (Snowflake's query
        history, after ``startline enrich``) beside the client's latency."""
        rows = list((self.s.get("server") or {}).get("statement_intervals") or ())
        load = list((self.s.get("server") or {}).get("warehouse_load") or ())

        def draw(fig: Any) -> str:
            if not rows:
                return ""
            ax = fig.add_subplot(2 if load else 1, 1, 1)
            self._shade(ax)
            t = [r["t_s"] + self.iv / 2 for r in rows]
            for key, pct, style, colour in (
                ("server_ms", "p50", "o-", "#1a7f37"),
                ("server_ms", "p99", "o--", "#1a7f37"),
                ("queued_overload_ms", "p99", "x:", "#c62828"),
            ):  # (marked: a short run's statements may all fall in one interval)
                ys = [_positive(r[key][pct]) for r in rows]
                ax.plot(t, ys, style, ms=4, color=colour, label=f"{key.removesuffix('_ms')} {pct}")
            client = [r for r in self.series if "latency_ms" in r]
            if client:
                ct = [r["t_s"] + self.iv / 2 for r in client]
                ax.plot(
                    ct, [_positive(r["latency_ms"].get("p50")) for r in client], color="#1f77b4", label="client p50"
                )
                ax.plot(
                    ct,
                    [_positive(r["latency_ms"].get("p99")) for r in client],
                    color="#1f77b4",
                    ls="--",
                    label="client p99",
                )
            ax.set_yscale("log")
            ax.set_ylabel("ms (log)")
            ax.set_xlabel("seconds from START_TIME")
            ax.legend(loc="best", fontsize=7, ncol=5, framealpha=0.7)
            if load:
                span = ax.get_xlim()  # the run's: the load's rows (minutes long) reach beyond it
                self._warehouse_load(fig.add_subplot(2, 1, 2, sharex=ax), load)
                ax.set_xlim(*span)
            return (
                "the server's elapsed time of the run's statements (by the interval each began in) beside the "
                "client's latency: the gap is the network, the driver and the client"
                + ("; below, the warehouse's load (WAREHOUSE_LOAD_HISTORY's averages)" if load else "")
            )

        return self._figure("server-timings", draw, height=5.5 if load else 3.0)

    def _warehouse_load(self, ax: Any, load: Sequence[Mapping[str, Any]]) -> None:
        """WAREHOUSE_LOAD_HISTORY's rows as steps over the seconds each covers, per warehouse."""
        self._shade(ax)
        warehouses = sorted({w["warehouse"] for w in load})
        for key, colour, label in (
            ("avg_running", "#1a7f37", "running"),
            ("avg_queued_load", "#c62828", "queued (load)"),
            ("avg_queued_provisioning", "#ef6c00", "queued (provisioning)"),
            ("avg_blocked", "#6a1b9a", "blocked"),
        ):
            for n, warehouse in enumerate(warehouses):
                xs: list[float] = []
                ys: list[float] = []
                for w in (w for w in load if w["warehouse"] == warehouse):
                    xs += [w["from_s"], w["to_s"], float("nan")]
                    ys += [w[key], w[key], float("nan")]
                name = label if len(warehouses) == 1 else f"{warehouse} {label}"
                ax.plot(xs, ys, color=colour, ls=("-", "--", ":")[n % 3], label=name)
        ax.set_ylabel("queries (average)")
        ax.set_xlabel("seconds from START_TIME")
        ax.legend(loc="best", fontsize=7, ncol=4, framealpha=0.7)

    def latency_over_time(self) -> str:
        def draw(fig: Any) -> str:
            rows = [r for r in self.series if "latency_ms" in r]
            if not rows:
                return ""
            ax = fig.add_subplot(1, 1, 1)
            self._shade(ax)
            t = [r["t_s"] + self.iv / 2 for r in rows]
            kinds = sorted({k for r in rows for k in r.get("by_kind", {})})
            drawn = False
            for n, kind in enumerate(kinds):
                colour = KIND_COLOURS[n % len(KIND_COLOURS)]
                for pct, style in (("p50", "-"), ("p99", "--")):
                    ys = [_positive(r["by_kind"].get(kind, {}).get("latency_ms", {}).get(pct)) for r in rows]
                    ax.plot(t, ys, ls=style, color=colour, lw=1, label=f"{kind} {pct}")
                    drawn = drawn or any(y == y for y in ys)  # not NaN: some interval had an operation
            if not drawn:
                return ""  # not one successful operation in any interval
            self._events(ax)
            ax.set_yscale("log")
            ax.set_ylabel("latency ms (log)")
            ax.set_xlabel("seconds from START_TIME")
            ax.legend(loc="best", fontsize=7, ncol=4, framealpha=0.7)
            return "p50 (solid) and p99 (dashed) per kind and interval, merged exactly over the workers"

        return self._figure("latency", draw, height=3.4)

    def distribution(self) -> str:
        points = (("p50", 50.0), ("p90", 90.0), ("p95", 95.0), ("p99", 99.0), ("p999", 99.9), ("max", 99.99))

        def draw(fig: Any) -> str:
            phase = (self.s.get("phases") or {}).get("MEASUREMENT") or {}
            kinds = phase.get("by_kind") or {}
            if not phase.get("ops"):
                return ""
            ax = fig.add_subplot(1, 1, 1)
            x = [1 / (1 - p / 100.0) for _, p in points]
            for n, (kind, k) in enumerate([("all", phase), *sorted(kinds.items())]):
                ys = [_positive(k["latency_ms"][key]) for key, _ in points]
                colour = "#000" if kind == "all" else KIND_COLOURS[(n - 1) % len(KIND_COLOURS)]
                ax.plot(x, ys, marker="o", ms=3, color=colour, lw=1.6 if kind == "all" else 1, label=kind)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(x, [key for key, _ in points])
            ax.set_ylabel("latency ms (log)")
            ax.legend(fontsize=8)
            return "percentiles of MEASUREMENT's latency (the last point is the maximum)"

        return self._figure("distribution", draw)

    def find_max(self) -> str:
        """Find-max's answer as a curve: throughput at each level it tried, stable or not, the
        best stable one marked (the number alone at the bottom of a table said too little)."""
        load = self.s.get("load") or {}

        def draw(fig: Any) -> str:
            steps = load.get("steps") or []
            if not steps:
                return ""
            over = "rate" if "rate" in steps[0] else "connections"
            ax = fig.add_subplot(1, 1, 1)
            for stable, colour, label in ((True, "#1f77b4", "stable"), (False, "#c62828", "unstable")):
                pts = [(st[over], st.get("qps") or 0.0) for st in steps if bool(st.get("stable")) is stable]
                if pts:
                    ax.plot(*zip(*pts, strict=True), "o", color=colour, label=f"{label} step")
            ax.plot([st[over] for st in steps], [st.get("qps") or 0.0 for st in steps], color="#999", lw=0.8)
            result = load.get("result") or {}
            best = result.get("concurrency", result.get("rate"))
            if best is not None and result.get("qps") is not None:
                ax.plot(
                    [best], [result["qps"]], "*", ms=14, color="#1a7f37", label=f"answer: {best} ({result['qps']} qps)"
                )
            ax.set_xlabel("connections" if over == "connections" else "offered rate (ops/s)")
            ax.set_ylabel("throughput (ops/s)")
            ax.legend(loc="best", fontsize=8)
            return f"find-max: throughput at each {over} level tried, in the order tried (the line)"

        return self._figure("find-max", draw)

    def start(self) -> str:
        def draw(fig: Any) -> str:
            by_worker = (self.s.get("start") or {}).get("by_worker") or {}
            if not by_worker:
                return ""
            ax, hist = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
            names = sorted(by_worker)
            for y, w in enumerate(names):
                lags = by_worker[w]
                ax.hlines(y, min(lags), max(lags), color="#90a4ae", lw=4)
                ax.plot(lags, [y] * len(lags), "|", color="#1f77b4", ms=10)
            ax.axvline(0, color="#c62828", lw=1, label="START_TIME")
            ax.set_yticks(range(len(names)), names)
            ax.invert_yaxis()
            ax.set_xlabel("first operation, ms from START_TIME")
            ax.legend(fontsize=8)
            every = [v for w in names for v in by_worker[w]]
            hist.hist(every, bins=min(30, max(5, len(every) // 2)), color="#1f77b4")
            hist.set_xlabel("lag ms")
            hist.set_ylabel("connections")
            st = self.s["start"]
            unc = st.get("skew_uncertainty_ms")
            return (
                f"each connection's first operation per worker (left) and the lag of all {len(every)} (right); "
                f"skew {_fixed(st.get('skew_ms') or 0.0)} ms" + (f" ± {_fixed(unc)}" if unc is not None else "")
            )

        return self._figure(
            "start", draw, height=max(2.4, 0.3 * len((self.s.get("start") or {}).get("by_worker") or {}) + 1.2)
        )

    def workers(self) -> str:
        def draw(fig: Any) -> str:
            t0 = self.s.get("start_time")
            workers = self.s.get("workers") or ()
            if t0 is None or not workers:
                return ""
            ax = fig.add_subplot(1, 1, 1)
            markers = {
                "ready": "o",
                "detect": "s",
                "first_query": "|",
                "spent": "x",
                "judged_dead": "X",
                "finished": "D",
            }
            seen: set[str] = set()
            for y, w in enumerate(workers):
                tl = w.get("timeline") or {}
                xs = [tl[m] - t0 for m in TIMELINE if tl.get(m) is not None]
                if xs:
                    ax.hlines(y, min(xs), max(xs), color="#cfd8dc", lw=3)
                for m in TIMELINE:
                    if tl.get(m) is not None:
                        ax.plot(tl[m] - t0, y, markers[m], color="#37474f", ms=5, label=None if m in seen else m)
                        seen.add(m)
            ax.axvline(0, color="#c62828", lw=1)
            ax.set_yticks(range(len(workers)), [f"{w['worker_id']} ({w['status']})" for w in workers])
            ax.invert_yaxis()
            ax.set_xlabel("seconds from START_TIME")
            ax.legend(fontsize=7, ncol=6, loc="best", framealpha=0.7)
            return "each worker's timeline: ready, start detected, first operation, finished (the orchestrator's marks)"

        return self._figure("workers", draw, height=max(2.0, 0.3 * len(self.s.get("workers") or ()) + 1.0))


def _positive(v: float | None) -> float:
    """A latency on a log axis: a missing or zero reading is a gap, not a dive to zero."""
    return v if v is not None and v > 0 else math.nan


RUN_COLOURS = ("#000000", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


def write_comparison(path: Path, runs: Sequence[tuple[str, Mapping[str, Any]]], comparisons: Sequence[Any]) -> Path:
    """The comparison as one self-contained HTML file: the key figures with their bands (one
    table per candidate, as ``compare`` prints them) and the runs' series overlaid."""
    return write_atomic(Path(path), render_comparison(runs, comparisons))


def render_comparison(runs: Sequence[tuple[str, Mapping[str, Any]]], comparisons: Sequence[Any]) -> str:
    tables = []
    for c in comparisons:
        rows = [
            (
                r.figure,
                r.base,
                r.candidate,
                None if r.change is None else f"{r.change:+,.1f} {'pt' if r.unit == 'points' else '%'}",
                r.verdict or "",
            )
            for r in c.rows
        ]
        tables.append(
            f"<h3>{html.escape(c.base)} → {html.escape(c.candidate)}: "
            f'<span class="{"passed" if c.verdict == "ok" else "failed"}">{html.escape(c.verdict)}</span></h3>'
            + _table(("figure", "base", "candidate", "change", "band"), rows)
        )
    overlay = _Overlay(runs)
    sections = [
        _section("Key figures", "\n".join(tables)),
        _section("Throughput", overlay.chart("throughput", lambda r: r["ops"], "operations / s", per_second=True)),
        _section(
            "p99 latency", overlay.chart("p99", lambda r: r.get("latency_ms", {}).get("p99"), "p99 ms (log)", log=True)
        ),
        _section("Start", overlay.start()),
    ]
    names = ", ".join(label for label, _ in runs)
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>compare: {html.escape(names)}</title><style>{STYLE}</style></head><body>\n"
        f"<h1>compare: {html.escape(names)}</h1>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def write_group_comparison(path: Path, comparison: Any) -> Path:
    """A comparison of groups of runs (``views/groups.py``) as one self-contained HTML file: each
    figure's medians, change and interval, and the banded figures' runs drawn side by side."""
    return write_atomic(Path(path), render_group_comparison(comparison))


GROUP_CHARTS = ("qps", "latency p95 ms", "latency p99 ms", "error rate", "cost per 1k ops")


def render_group_comparison(c: Any) -> str:
    rows = [
        (
            r.figure,
            r.base_median,
            r.candidate_median,
            len(r.base),
            len(r.candidate),
            None if r.change is None else f"{r.change:+,.1f} {'pt' if r.unit == 'points' else '%'}",
            None if r.low is None else f"[{r.low:+,.1f}, {r.high:+,.1f}]",
            r.verdict or "",
        )
        for r in c.rows
    ]
    table = _table(
        (
            "figure",
            "base median",
            "candidate median",
            "base runs",
            "candidate runs",
            "change",
            f"{c.level:.0%} interval",
            "band",
        ),
        rows,
    )
    charts = _Spread({}).figures([r for r in c.rows if r.figure in GROUP_CHARTS and (r.base or r.candidate)])
    verdict = f'<span class="{"passed" if c.verdict == "ok" else "failed"}">{html.escape(c.verdict)}</span>'
    names = f"{len(c.base)} runs → {len(c.candidate)} runs"
    sections = [
        _section("Key figures", f"<p>verdict: {verdict}</p>" + table),
        _section("Each run", charts),
        _section(
            "Runs",
            _table(("side", "run"), [("base", b) for b in c.base] + [("candidate", x) for x in c.candidate]),
        ),
    ]
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>compare: {html.escape(names)}</title><style>{STYLE}</style></head><body>\n"
        f"<h1>compare: {html.escape(names)}</h1>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def write_trend(path: Path, name: str, runs: Sequence[Mapping[str, Any]], marked: Sequence[str]) -> Path:
    """A scenario's kept runs over time as one self-contained HTML file: each key figure by run
    (oldest first), the runs of a baseline (``marked``) ringed, and the runs in a table."""
    return write_atomic(Path(path), render_trend(name, runs, marked))


TREND_FIGURES = (
    ("qps", "qps"),
    ("p99_ms", "p99 ms"),
    ("p95_ms", "p95 ms"),
    ("error_rate", "error rate"),
    ("skew_ms", "start skew ms"),
    ("cost_per_1k_ops", "cost per 1k ops"),
)


def render_trend(name: str, runs: Sequence[Mapping[str, Any]], marked: Sequence[str]) -> str:
    def when(epoch: float | None) -> str:
        return "-" if epoch is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(epoch))

    rows = [
        (
            r["run_id"],
            when(r.get("started_at")),
            r.get("status"),
            r.get("verdict"),
            *(r["figures"].get(k) for k, _ in TREND_FIGURES),
            "baseline" if r["run_id"] in marked else "",
        )
        for r in runs
    ]
    table = _table(("run", "started (UTC)", "status", "verdict", *(label for _, label in TREND_FIGURES), ""), rows)
    sections = [
        _section("Key figures over the kept runs", _Trend({}).figures(runs, set(marked))),
        _section("Runs", '<div class="wide">' + table + "</div>"),
    ]
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>trend: {html.escape(name)}</title><style>{STYLE}</style></head><body>\n"
        f"<h1>trend: {html.escape(name)} ({len(runs)} kept runs)</h1>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


class _Trend(_Charts):
    """Each key figure by kept run, oldest first; a baseline's runs ringed; failed runs crossed."""

    def figures(self, runs: Sequence[Mapping[str, Any]], marked: set[str]) -> str:
        shown = [(k, label) for k, label in TREND_FIGURES if any(r["figures"].get(k) is not None for r in runs)]

        def draw(fig: Any) -> str:
            if not runs or not shown:
                return ""
            for n, (key, label) in enumerate(shown):
                ax = fig.add_subplot(len(shown), 1, n + 1)
                xs = list(range(len(runs)))
                ys = [r["figures"].get(key) for r in runs]
                ax.plot(xs, [math.nan if y is None else y for y in ys], "-", color="#1f77b4", lw=1)
                for x, r, y in zip(xs, runs, ys, strict=True):
                    if y is None:
                        continue
                    ok = r.get("status") == "COMPLETED"
                    ax.plot([x], [y], "o" if ok else "x", color="#1f77b4" if ok else "#c62828", ms=4)
                    if r["run_id"] in marked:
                        ax.plot([x], [y], "o", ms=10, mfc="none", mec="#2e7d32", mew=1.5)
                ax.set_ylabel(label, fontsize=8)
                ax.set_xticks(xs if len(xs) <= 20 else xs[:: max(1, len(xs) // 20)])
            ax.set_xlabel("kept run, oldest first (the table below names them)")
            return "each kept run's figure; ringed: a baseline's runs; crossed: a run that did not complete"

        return self._figure("trend", draw, height=1.6 * max(1, len(shown)) + 0.6)


def write_matrix(
    path: Path, name: str, keys: Sequence[str], rows: Sequence[Mapping[str, Any]], figures: Sequence[str]
) -> Path:
    """A matrix's cells (``live/matrix.py``) as one self-contained HTML file: each key figure's
    median per cell with its runs' range, and the cells table."""
    columns = ["cell", *keys, "runs", "completed", *(f"{f}_median" for f in figures)]
    table = _table(columns, [[r.get(c) for c in columns] for r in rows])
    sections = [
        _section("Cells", _MatrixCharts({}).figures(rows, keys, figures)),
        _section("Table", '<div class="wide">' + table + "</div><p>all figures, with each cell's range: cells.csv</p>"),
    ]
    return write_atomic(
        Path(path),
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>matrix: {html.escape(name)}</title><style>{STYLE}</style></head><body>\n"
        f"<h1>matrix: {html.escape(name)} ({len(rows)} cells)</h1>\n" + "\n".join(sections) + "\n</body></html>\n",
    )


class _MatrixCharts(_Charts):
    """Each figure's median per cell, a bar from the cell's least to its greatest run."""

    def figures(self, rows: Sequence[Mapping[str, Any]], keys: Sequence[str], figures: Sequence[str]) -> str:
        shown = [f for f in figures if any(r.get(f"{f}_median") is not None for r in rows)]

        def draw(fig: Any) -> str:
            if not shown:
                return ""
            labels = ["\n".join(str(r[k]) for k in keys) for r in rows]
            for n, figure in enumerate(shown):
                ax = fig.add_subplot(len(shown), 1, n + 1)
                for x, r in enumerate(rows):
                    median = r.get(f"{figure}_median")
                    if median is None:
                        continue
                    lo, hi = r[f"{figure}_min"], r[f"{figure}_max"]
                    ax.errorbar([x], [median], yerr=[[median - lo], [hi - median]], fmt="o", color="#1f77b4", capsize=3)
                ax.set_ylabel(figure, fontsize=8)
                ax.set_xticks(range(len(rows)), labels if n == len(shown) - 1 else [""] * len(rows), fontsize=7)
            return f"each cell's median (point) and its runs' range (bar); cells by {', '.join(keys)}"

        return self._figure("matrix", draw, height=1.7 * max(1, len(shown)) + 0.8)


class _Spread(_Charts):
    """Each figure's runs as points, a side each, their medians as bars."""

    def figures(self, rows: Sequence[Any]) -> str:
        def draw(fig: Any) -> str:
            if not rows:
                return ""
            for n, r in enumerate(rows):
                ax = fig.add_subplot(1, len(rows), n + 1)
                for x, values, colour in ((0, r.base, "#555555"), (1, r.candidate, "#1f77b4")):
                    jitter = [x + (k - (len(values) - 1) / 2) * 0.04 for k in range(len(values))]
                    ax.plot(jitter, values, "o", color=colour, ms=5, alpha=0.8)
                    if values:
                        median = statistics.median(values)
                        ax.plot([x - 0.25, x + 0.25], [median, median], color=colour, lw=2)
                ax.set_xticks([0, 1], ["base", "candidate"])
                ax.set_xlim(-0.5, 1.5)
                ax.set_title(f"{r.figure}" + (f": {r.verdict}" if r.verdict else ""), fontsize=8)
            return "each run's figure (points) and each side's median (bar)"

        return self._figure("groups", draw, height=3.2)


class _Overlay(_Charts):
    """The same charts with one line per run (the base in black)."""

    def __init__(self, runs: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        super().__init__(runs[0][1])
        self.runs = runs

    def chart(
        self,
        name: str,
        value: Callable[[Mapping[str, Any]], Any],
        label: str,
        per_second: bool = False,
        log: bool = False,
    ) -> str:
        def draw(fig: Any) -> str:
            ax = fig.add_subplot(1, 1, 1)
            drawn = 0
            for n, (run, s) in enumerate(self.runs):
                iv = float(s.get("snapshot_interval_s") or 1.0)
                rows = [r for r in s.get("timeseries") or () if value(r) is not None]
                if not rows:
                    continue
                ys = [value(r) / iv if per_second else _positive(value(r)) for r in rows]
                if all(y != y for y in ys):  # all NaN: nothing on a log axis
                    continue
                ax.plot(
                    [r["t_s"] + iv / 2 for r in rows],
                    ys,
                    color=RUN_COLOURS[n % len(RUN_COLOURS)],
                    lw=1.2,
                    label=_text(run),
                )
                drawn += 1
            if not drawn:
                return ""
            if log:
                ax.set_yscale("log")
            ax.set_ylabel(label)
            ax.set_xlabel("seconds from START_TIME")
            ax.legend(fontsize=8)
            return f"{label} per interval, each run from its own START_TIME"

        return self._figure(name, draw)

    def start(self) -> str:
        def draw(fig: Any) -> str:
            ax = fig.add_subplot(1, 1, 1)
            drawn = 0
            for n, (run, s) in enumerate(self.runs):
                lags = sorted(v for vs in ((s.get("start") or {}).get("by_worker") or {}).values() for v in vs)
                if lags:
                    ax.step(
                        lags,
                        [(k + 1) / len(lags) for k in range(len(lags))],
                        where="post",
                        color=RUN_COLOURS[n % len(RUN_COLOURS)],
                        label=_text(run),
                    )
                    drawn += 1
            if not drawn:
                return ""
            ax.set_xlabel("first operation, ms from START_TIME")
            ax.set_ylabel("share of connections started")
            ax.legend(fontsize=8)
            return "each run's connections by how late they started (cumulative)"

        return self._figure("start", draw)
