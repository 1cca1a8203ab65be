"""Build ``summary.json`` (the results contract in DESIGN.md) from what workers reported."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from hdrh.histogram import HdrHistogram

from startline.engine import thresholds
from startline.engine.cpu import client_block
from startline.engine.metrics import (
    add_into,
    decode,
    latency_block,
    merge_failures,
    merge_phase_blocks,
    new_histogram,
    unique_snapshots,
)
from startline.engine.model import Phase
from startline.engine.scenario import Scenario
from startline.engine.schedule import PhaseWindows, distribution
from startline.engine.secrets import settings_masked
from startline.engine.verdict import evaluate, verdict

TIMELINE_MARKS = ("ready", "detect", "heartbeat", "insert", "scale", "first_query", "spent")


def initial_first_queries(payload: Mapping[str, Any], firsts: Mapping[str, float] | None = None) -> list[float]:
    """``first_query`` of the worker's initial connections (control-plane clock), or of ``firsts``
    (slot → instant on another clock) for the same connections."""
    n = int(payload.get("initial_connections", 0))
    return [t for s, t in (payload.get("first_query", {}) if firsts is None else firsts).items() if int(s) < n]


def start_block(start_time: float | None, payloads: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Lag of every initial connection (first_query − START_TIME) and the skew across them, each
    with its error bar. A lag is as uncertain as its worker's clock map. The skew: the true first
    and last connections may belong to any two workers (a measured skew of 0 bounds nothing), so
    its error bar is the sum of the two largest workers' uncertainties (0 with one worker: one
    clock map). ``witnesses``: the same start seen by other clocks, where the run has them."""
    starting = [(p, initial_first_queries(p)) for p in payloads]
    starting = [(p, ts) for p, ts in starting if ts]  # the workers whose initial connections started
    firsts = [t for _, ts in starting for t in ts]
    if start_time is None or not firsts:
        return {"lag_ms": None, "skew_ms": None, "connections": 0, "witnesses": {}}
    uncertainty = sorted((float(p.get("clock_uncertainty_ms") or 0.0) for p, _ in starting), reverse=True)
    host = host_witness(start_time, payloads)
    target = target_witness(start_time, payloads)
    return {
        "lag_ms": distribution([(t - start_time) * 1000.0 for t in firsts]),
        "lag_uncertainty_ms": uncertainty[0],
        "skew_ms": (max(firsts) - min(firsts)) * 1000.0,
        "skew_uncertainty_ms": sum(uncertainty[:2]) if len(uncertainty) > 1 else 0.0,
        "connections": len(firsts),
        "by_worker": {
            p.get("worker_id", "?"): sorted(round((t - start_time) * 1000.0, 3) for t in ts) for p, ts in starting
        },
        "witnesses": ({"host": host} if host else {}) | ({"target": target} if target else {}),
    }


def host_witness(start_time: float, payloads: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The start on the host's own clock, when every worker ran on one host (live runs): each
    initial connection's first operation read from ``time.time()``. Its skew is ground truth for
    a local run; its lag too when the control plane's clock is the host's (SQLite)."""
    seen = [p.get("host") for p in payloads if initial_first_queries(p)]
    if not seen or any(not h for h in seen) or len({h["name"] for h in seen}) != 1:
        return None
    times = [t for p in payloads for t in initial_first_queries(p, (p.get("host") or {}).get("first_query", {}))]
    if not times:
        return None
    block: dict[str, Any] = {"skew_ms": (max(times) - min(times)) * 1000.0, "connections": len(times)}
    if all(h["control_clock"] for h in seen):
        lags = [(t - start_time) * 1000.0 for t in times]
        block["lag_ms"] = distribution(lags)
    return block


def target_witness(start_time: float, payloads: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The start on the target's own clock (PostgreSQL: ``statement_timestamp()`` of each
    connection's first operation, sent with it): skew always — one clock; lag when START_TIME is
    on that clock too (the same server as the control plane, or a server on the control plane's
    host)."""
    seen = [p.get("target") for p in payloads if initial_first_queries(p)]
    if not seen or any(not w for w in seen):
        return None
    times = [t for p in payloads for t in initial_first_queries(p, (p.get("target") or {}).get("first_query", {}))]
    if len(times) < sum(len(initial_first_queries(p)) for p in payloads):
        return None  # a connection whose first operation failed: the witness would be partial
    block: dict[str, Any] = {"skew_ms": (max(times) - min(times)) * 1000.0, "connections": len(times)}
    if all(w["control_clock"] for w in seen):
        block["lag_ms"] = distribution([(t - start_time) * 1000.0 for t in times])
    return block


def control_plane_block(payloads: Sequence[Mapping[str, Any]], orchestrator_queries: int) -> dict[str, Any]:
    """Queries in all, and per worker per second while waiting (READY → release of the
    connections) and while running (release → STOP): all workers' queries over all their seconds."""
    total = orchestrator_queries
    sums = {"waiting": [0, 0.0], "running": [0, 0.0]}
    for p in payloads:
        cp = p.get("control_plane", {})
        q = cp.get("queries", {})
        total += sum(q.values())
        for stage, acc in sums.items():
            acc[0] += q.get(stage, 0)
            acc[1] += cp.get(f"{stage}_s", 0.0)

    def rate(stage: str) -> float | None:
        n, seconds = sums[stage]
        return round(n / seconds, 4) if seconds > 0 else None

    return {"queries": total, "per_worker_per_s_waiting": rate("waiting"), "per_worker_per_s_running": rate("running")}


def worker_entry(payload: Mapping[str, Any], status: str, events: Mapping[str, float] | None = None) -> dict[str, Any]:
    """One worker in summary.json; ``events`` are the orchestrator's marks in its timeline
    (``judged_dead``: when it was judged DEAD; ``finished``: when its final results landed)."""
    metrics = payload.get("metrics", {})
    ops = sum(metrics.get("ops", {}).values())
    errors = sum(n for cats in metrics.get("errors", {}).values() for n in cats.values())
    timeline = payload.get("timeline", {})
    return {
        "worker_id": payload["worker_id"],
        "status": status,
        "failure": payload.get("failure"),
        "clock_offset_ms": payload.get("clock_offset_ms"),
        "clock_uncertainty_ms": payload.get("clock_uncertainty_ms"),
        "timeline": {m: timeline.get(m) for m in TIMELINE_MARKS} | dict(events or {}),
        "ops": ops,
        "errors": errors,
        "health": (payload.get("control_plane") or {}).get("health"),
        "cpu": payload.get("cpu"),
    }


def _workers(
    payloads: Sequence[Mapping[str, Any]],
    statuses: Mapping[str, str],
    events: Mapping[str, Mapping[str, float]],
) -> list[dict[str, Any]]:
    """Every worker, those that never reported (DEAD before their last flush) included."""
    by_id = {p["worker_id"]: p for p in payloads}
    ids = sorted(set(by_id) | set(statuses))
    return [
        worker_entry(
            by_id.get(w, {"worker_id": w}), statuses.get(w, by_id.get(w, {}).get("status", "?")), events.get(w)
        )
        for w in ids
    ]


def merge_timeseries(snapshots: Sequence[tuple[str, Mapping[str, Any]]], interval_s: float) -> list[dict[str, Any]]:
    """The run's time series from every worker's snapshots: ops, errors and connections running
    per interval from START_TIME, summed over workers; every interval up to the last one
    reported, zeros included (a stall shows); a retried append (same worker, same ``n``) counts
    once."""
    series: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    for snap in unique_snapshots(snapshots):
        for item in snap.get("intervals", []):
            row = series[item["interval"]]
            row[0] += item["ops"]
            row[1] += item["errors"]
            row[2] += item.get("connections", 0)
    last = max(series, default=-1)
    return [
        {"t_s": i * interval_s, "ops": n, "errors": e, "connections": c}
        for i in range(last + 1)
        for n, e, c in [series.get(i, (0, 0, 0))]
    ]


def _measured(
    scenario: Scenario,
    metrics: Sequence[Mapping[str, Any]],
    phases: Mapping[str, Any],
    start: Mapping[str, Any],
    intervals: Mapping[int, Mapping[str, HdrHistogram]],
    merged: Mapping[int, HdrHistogram],
) -> thresholds.Measured:
    """What the thresholds read: MEASUREMENT's histograms and figures, the start, and MEASUREMENT's
    windows from the interval histograms by kind (intervals count from START_TIME)."""
    measurement = str(Phase.MEASUREMENT)
    latency, service = thresholds.histograms_of(metrics, measurement)
    iv, measured = scenario.snapshot_interval_s, scenario.measurement_intervals

    def windows(window_s: float, kind: str | None) -> list[HdrHistogram]:
        of = merged if kind is None else {i: h[kind] for i, h in intervals.items() if kind in h}
        return thresholds.judged_spans(of, measured.start, measured.stop - 1, max(1, round(window_s / iv)))

    return thresholds.Measured(phases.get(measurement, {}), start, latency, service, windows)


SCHEMA_VERSION = 1
"""summary.json's layout (docs/architecture.md#summaryjson): raised when a key changes meaning or
goes away; new keys do not raise it."""


def interval_kinds(snapshots: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[int, dict[str, HdrHistogram]]:
    """Each interval's response-time histogram per kind over every worker (shipped with the
    snapshots, ``kinds``); a retried append counts once."""
    out: dict[int, dict[str, HdrHistogram]] = {}
    for snap in unique_snapshots(snapshots):
        for item in snap.get("intervals", []):
            for kind, enc in item.get("kinds", {}).items():
                add_into(out.setdefault(item["interval"], {}).setdefault(kind, new_histogram()), decode(enc))
    return out


def interval_latency(kinds: Mapping[int, Mapping[str, HdrHistogram]]) -> dict[int, HdrHistogram]:
    """Each interval's response-time histogram over every kind (``interval_kinds`` merged)."""
    out: dict[int, HdrHistogram] = {}
    for i, by_kind in kinds.items():
        merged = out[i] = new_histogram()
        for h in by_kind.values():
            add_into(merged, h)
    return out


def kind_errors(snapshots: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[int, dict[str, int]]:
    """interval → kind → errors over every worker; a retried append counts once."""
    out: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for snap in unique_snapshots(snapshots):
        for item in snap.get("intervals", []):
            for kind, n in item.get("kind_errors", {}).items():
                out[item["interval"]][kind] += n
    return out


def kind_retries(snapshots: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[int, dict[str, list[int]]]:
    """interval → kind → [operations retried, retries] over every worker (``max_tries``)."""
    out: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for snap in unique_snapshots(snapshots):
        for item in snap.get("intervals", []):
            for kind, (n, r) in item.get("kind_retries", {}).items():
                row = out[item["interval"]][kind]
                row[0] += n
                row[1] += r
    return out


def with_latency(
    timeseries: Sequence[Mapping[str, Any]],
    kinds: Mapping[int, Mapping[str, HdrHistogram]],
    merged: Mapping[int, HdrHistogram],
    errors: Mapping[int, Mapping[str, int]],
    interval_s: float,
    retries: Mapping[int, Mapping[str, Sequence[int]]] | None = None,
) -> list[dict[str, Any]]:
    """The time series with each interval's latency over all kinds (``merged``:
    ``interval_latency`` of ``kinds``) and ``by_kind`` (ops, errors, qps, latency) for every kind
    the run has — zeros where a kind had no operation — when the workers shipped per-interval
    histograms; a kind tried again under ``max_tries`` has ``retried`` and ``retries`` too."""
    if not kinds and not errors:
        return [dict(row) for row in timeseries]
    names = sorted({k for by_kind in kinds.values() for k in by_kind} | {k for e in errors.values() for k in e})
    empty = new_histogram()
    retries = retries or {}
    retrying = {k for by_kind in retries.values() for k in by_kind}
    out = []
    for i, row in enumerate(timeseries):
        by_kind = kinds.get(i, {})
        out.append(
            dict(row)
            | {
                "latency_ms": latency_block(merged.get(i, empty)),
                "by_kind": {
                    k: {
                        "ops": (h := by_kind.get(k, empty)).get_total_count(),
                        "errors": errors.get(i, {}).get(k, 0),
                        "qps": round(h.get_total_count() / interval_s, 3),
                        "latency_ms": latency_block(h),
                    }
                    | (
                        dict(zip(("retried", "retries"), retries.get(i, {}).get(k, (0, 0)), strict=True))
                        if k in retrying
                        else {}
                    )
                    for k in names
                },
            }
        )
    return out


def _phased(rows: list[dict[str, Any]], scenario: Scenario) -> list[dict[str, Any]]:
    """Each interval with the phase its middle falls in (intervals count from START_TIME)."""
    w, half = PhaseWindows.from_scenario(scenario, 0.0), scenario.snapshot_interval_s / 2
    return [{"t_s": r["t_s"], "phase": str(w.phase_at(r["t_s"] + half))} | r for r in rows]


def build_summary(
    *,
    run_id: str,
    status: str,
    reason: str | None,
    detail: str | None,
    scenario: Scenario,
    start_time: float | None,
    stopped_at: float | None,
    payloads: Sequence[Mapping[str, Any]],
    worker_statuses: Mapping[str, str],
    orchestrator_queries: int,
    worker_events: Mapping[str, Mapping[str, float]] | None = None,
    timeseries: Sequence[Mapping[str, Any]] = (),
    load: Mapping[str, Any] | None = None,
    intervals: Mapping[int, Mapping[str, HdrHistogram]] | None = None,
    kind_errors: Mapping[int, Mapping[str, int]] | None = None,
    crossed: Mapping[tuple[str, str], thresholds.Result] | None = None,
    kind_retries: Mapping[int, Mapping[str, Sequence[int]]] | None = None,
) -> dict[str, Any]:
    """summary.json. ``intervals``: each interval's response-time histograms by kind
    (``interval_kinds``), which the time series and windowed thresholds read, with ``kind_errors``;
    ``crossed``: the thresholds that stopped the run."""
    durations: dict[str, float] = {}
    if start_time is not None:
        w = PhaseWindows.from_scenario(scenario, start_time)
        end = stopped_at if stopped_at is not None else w.end
        spent = [p.get("timeline", {}).get("spent") for p in payloads]
        if spent and None not in spent:  # every worker issued all its operations: it ran until then
            end = min(end, max(spent))

        def clip(a: float, b: float) -> float:
            return max(0.0, min(b, end) - a)

        durations = {str(Phase.WARMUP): clip(w.start, w.measure), str(Phase.MEASUREMENT): clip(w.measure, w.cooldown)}
        if scenario.cooldown_s > 0:
            durations[str(Phase.COOLDOWN)] = clip(w.cooldown, w.end)
    metrics = [p.get("metrics", {}) for p in payloads]
    phases = merge_phase_blocks(metrics, durations)
    load = dict(load or {"mode": str(scenario.load.mode), "steps": [], "result": None})
    workers = _workers(payloads, worker_statuses, worker_events or {})
    client = client_block(workers)
    if client and client["saturated"] and load.get("result"):
        # a load mode's answer reached while the client was the limit is the client's, maybe
        load["result"] = dict(load["result"]) | {"client_saturated": True}
    failures = merge_failures(metrics)
    checks = evaluate(scenario.checks, phases, load, failures)
    start = start_block(start_time, payloads)
    intervals = intervals or {}
    merged = interval_latency(intervals)  # every kind: what windowed thresholds and the time series read
    now = [t for t in scenario.threshold_list if t.metric not in thresholds.LATER]
    judged = (  # what the thresholds read is merged only when there are thresholds to read it
        thresholds.evaluate(now, _measured(scenario, metrics, phases, start, intervals, merged), crossed) if now else ()
    )
    later = [t for t in scenario.threshold_list if t.metric in thresholds.LATER]
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "status": status,
        "verdict": verdict(status, [*checks, *judged]),
        "reason": reason,
        "detail": detail,
        "checks": [c.to_dict() for c in checks],
        "thresholds": [t.to_dict() for t in judged],
        **({"thresholds_pending": [{"metric": t.key, "threshold": t.expression} for t in later]} if later else {}),
        "scenario": scenario.name,
        "start_strategy": str(scenario.start.strategy),
        "start_time": start_time,
        "stopped_at": stopped_at,
        "start": start,
        "control_plane": control_plane_block(payloads, orchestrator_queries),
        "workers": workers,
        "client": client,
        "phases": phases,
        "load": load,
        "failures": failures,
        "config": {"scenario": settings_masked(scenario.to_dict())},
        "snapshot_interval_s": scenario.snapshot_interval_s,
        "timeseries": _phased(
            with_latency(
                timeseries, intervals, merged, kind_errors or {}, scenario.snapshot_interval_s, kind_retries or {}
            ),
            scenario,
        ),
    }
