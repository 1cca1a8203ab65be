"""The one place that chooses what rows a result table shows: the terminal summary, report.html
and the simulator's tables take their rows from here and only format them (they once chose their
own and disagreed: the terminal showed operation kinds for MEASUREMENT only, the HTML for every
phase; now both show them under every phase that lasted — WARMUP, MEASUREMENT, COOLDOWN — and
DONE, the operations that ended after the planned end, keeps its one row)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PHASE_COLUMNS = ("phase", "kind", "ops", "errors", "qps", "p50 ms", "p95 ms", "p99 ms", "max ms")
START_COLUMNS = ("clock", "lag p50 ms", "lag p99 ms", "lag max ms", "skew ms", "± skew ms")
SPREAD_COLUMNS = ("figure", "p50", "p99", "max")
"""A simulated figure's spread over the seeds."""

Row = tuple[Any, ...]


def phase_rows(summary: Mapping[str, Any]) -> list[Row]:
    """Each phase with anything in it (an empty one, as a run without warmup has, is left out): its
    "all" row, then, for a phase that lasted, one row per operation kind in it (errors are counted
    per phase, not per kind: None; a kind tried again under ``max_tries`` says how often)."""
    rows: list[Row] = []
    for phase, b in (summary.get("phases") or {}).items():
        if not b.get("ops") and not b.get("errors"):
            continue
        lat = b["latency_ms"]
        # DONE lasted no time: the operations that ended after the planned end, without a rate
        qps = b["qps"] if b.get("duration_s") else None
        label = phase if phase != "DONE" else "DONE (ended after the planned end)"
        rows.append((label, "all", b["ops"], b["errors"], qps, lat["p50"], lat["p95"], lat["p99"], lat["max"]))
        for kind, k in (b.get("by_kind") or {}).items() if b.get("duration_s") else ():
            kl = k["latency_ms"]
            label = f"{kind} ({k['retried']:,} retried, {k['retries']:,} retries)" if k.get("retried") else kind
            rows.append(("", label, k["ops"], None, k["qps"], kl["p50"], kl["p95"], kl["p99"], kl["max"]))
    return rows


def start_rows(summary: Mapping[str, Any]) -> list[Row]:
    """The start as the control plane's clock measured it, then each witness clock's view of it."""
    st = summary.get("start") or {}
    lag = st.get("lag_ms") or {}
    rows: list[Row] = [
        (
            "measured (control-plane clock)",
            lag.get("p50"),
            lag.get("p99"),
            lag.get("max"),
            st.get("skew_ms"),
            st.get("skew_uncertainty_ms"),
        )
    ]
    for name, w in sorted((st.get("witnesses") or {}).items()):
        wl = w.get("lag_ms") or {}
        rows.append((f"witness: {name}", wl.get("p50"), wl.get("p99"), wl.get("max"), w.get("skew_ms"), None))
    return rows


def simulated_start_rows(summary: Mapping[str, Any]) -> list[tuple[str, Mapping[str, float] | None]]:
    """``startline simulate``'s start figures over the seeds: ground truth, then what the workers
    measured and how far off it was."""
    st, cp = summary["start"], summary["control_plane"]
    return [
        ("detection delay max ms", st["detection_ms"]["max"]),
        ("lag p50 ms", st["lag_ms"]["p50"]),
        ("lag max ms", st["lag_ms"]["max"]),
        ("skew ms", st["skew_ms"]),
        ("skew ms, as the workers measured it", st["measured_skew_ms"]),
        ("  measured − true", st["skew_error_ms"]),
        ("  ± its error bar (skew_uncertainty_ms)", st["skew_uncertainty_ms"]),
        ("lag max ms, as the workers measured it", st["measured_lag_ms"]["max"]),
        ("  measured − true", st["lag_max_error_ms"]),
        ("control-plane q/worker/s waiting", cp["per_worker_per_s_waiting"]),
        ("control-plane q/worker/s running", cp["per_worker_per_s_running"]),
    ]


SIMULATED_LOAD = {
    "qps": "MEASUREMENT qps",
    "latency_p99_ms": "response p99 ms",
    "service_p99_ms": "service p99 ms",
    "skipped": "skipped",
    "found_concurrency": "find-max concurrency",
    "found_rate": "find-max rate",
    "found_qps": "find-max qps",
    "settled_connections": "qps-control connections",
}


def simulated_load_rows(load: Mapping[str, Any]) -> list[tuple[str, Mapping[str, float]]]:
    """``startline simulate``'s load figures over the seeds: those the load mode has."""
    return [(name, load[key]) for key, name in SIMULATED_LOAD.items() if load.get(key)]


def connections_used(summary: Mapping[str, Any]) -> tuple[int, int]:
    """Connections at the start, and the most running in any interval (a rate, qps or find-max
    run grows and shrinks them: the start's count alone said "2 workers × 1 connections" of a run
    that used 32)."""
    start = int((summary.get("start") or {}).get("connections") or 0)
    most = max((int(r.get("connections") or 0) for r in summary.get("timeseries") or ()), default=0)
    return start, max(start, most)


def shape(summary: Mapping[str, Any]) -> str:
    """Workers and connections in words: "2 workers, 4 connections" or "2 workers, 2 connections
    at the start, up to 32"."""
    workers = len(summary.get("workers") or ())
    start, most = connections_used(summary)

    def n(k: int, what: str) -> str:
        return f"{k:,} {what}" + ("" if k == 1 else "s")

    grown = f" at the start, up to {most:,}" if most > start else ""
    return f"{n(workers, 'worker')}, {n(start, 'connection')}{grown}"


def workload_rows(block: Mapping[str, Any] | None) -> list[tuple[str, Any, str]]:
    """A built-in workload's own figure (TPC-C's tpmC) and its consistency conditions."""
    if not block:
        return []
    rows: list[tuple[str, Any, str]] = [
        (k, v, "") for k, v in block.items() if isinstance(v, int | float) and not isinstance(v, bool)
    ]
    checks = block.get("checks")
    if checks:
        held = sum(c["ok"] for c in checks)
        broken = [c["name"] for c in checks if not c["ok"]]
        rows.append(
            (
                f"{block['name']} consistency",
                f"{held} of {len(checks)} hold" + (f" — {', '.join(broken)} broken" if broken else ""),
                "",
            )
        )
    elif block.get("checks_error"):
        rows.append((f"{block['name']} consistency", f"not checked: {block['checks_error']}", ""))
    return rows


def headline(summary: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
    """What a reader wants first, as (figure, value, unit): the verdict, MEASUREMENT's throughput,
    error rate and latency, the start's skew and lag, the connections, and a load mode's answer."""
    m = (summary.get("phases") or {}).get("MEASUREMENT") or {}
    lat = m.get("latency_ms") or {}
    ops, errors = int(m.get("ops") or 0), int(m.get("errors") or 0)
    st = summary.get("start") or {}
    rows: list[tuple[str, Any, str]] = [
        ("verdict", summary.get("verdict") or "-", ""),
        ("throughput", m.get("qps"), "ops/s"),
        ("error rate", round(100 * errors / (ops + errors), 3) if ops + errors else None, "%"),
        ("latency p50", lat.get("p50"), "ms"),
        ("latency p99", lat.get("p99"), "ms"),
        ("start skew", st.get("skew_ms"), "ms"),
        ("start lag p99", (st.get("lag_ms") or {}).get("p99"), "ms"),
        ("workers, connections", shape(summary), ""),
    ]
    if m.get("retried"):  # operations with max_tries, tried again after a conflict
        done = ops + errors
        share = f" ({100 * m['retried'] / done:.1f} %)" if done else ""
        rows.append(("retried", f"{m['retried']:,} operations{share}, {m['retries']:,} retries", ""))
    rows += workload_rows(summary.get("workload"))
    client = summary.get("client")
    if client:
        busiest = f"{100 * client['share_max']:.0f} % of a core in its busiest interval"
        said = f"{', '.join(client['saturated'])} SATURATED — " if client["saturated"] else ""
        rows.append(("client CPU", said + busiest, ""))
    load = summary.get("load") or {}
    result = load.get("result") or {}
    if load.get("mode") == "find_max" and result:
        level = result.get("concurrency", result.get("rate"))
        unit = "connections" if "concurrency" in result else "ops/s offered"
        rows.append(("find-max answer", f"{level} {unit}: {result.get('qps')} qps ({result.get('reason')})", ""))
    elif load.get("mode") == "qps" and result:
        rows.append(("qps control", f"{result.get('qps')} of {result.get('target_qps')} ({result.get('reason')})", ""))
    return rows
