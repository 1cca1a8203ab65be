"""The running run as OpenMetrics text (``/metrics``), written by prometheus_client from the same
observer the page and the terminal read:

- ``startline_operations_total`` and ``startline_errors_total`` (labels ``run_id``, ``phase``,
  ``kind``; errors also ``category``): the workers' results so far, summed — what the summary is
  built from, so at the end they equal its counts; they only grow (each worker's results are
  cumulative);
- ``startline_latency_seconds`` per ``phase`` and ``kind``: a histogram whose buckets (``BUCKETS_MS``)
  are counted from the run's HDR histograms (exact at HDR's 3 significant digits); its ``_sum``
  is the mean × count (HDR keeps no exact sum);
- ``startline_workers`` by ``status``, ``startline_connections`` (open, and ``planned`` by the
  control log), ``startline_start_skew_ms``, ``startline_start_lag_ms`` (``stat`` p50, p99, max),
  once the start is known; ``startline_load_target_qps`` and ``startline_load_level`` (``load_state``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from startline.engine.metrics import latency_block
from startline.live.observe import Observer

CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
BUCKETS_MS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)


def buckets(h: Any) -> list[tuple[str, float]]:
    """Cumulative counts at ``BUCKETS_MS`` (and +Inf) from an HDR histogram of microseconds: the
    values in HDR's buckets up to each bound's — one pass over its counts array, in C."""
    total = h.get_total_count()
    out: list[tuple[str, float]] = []
    running, at = 0, 0
    if total:
        counts = h.counts
        at = h._counts_index_for(h.get_min_value())
        hi = h._counts_index_for(h.get_max_value()) + 1
    for bound in BUCKETS_MS:
        if total:
            upto = min(h._counts_index_for(int(bound * 1000)) + 1, hi)
            if upto > at:
                running += sum(counts[at:upto])
                at = upto
        out.append((str(bound / 1000.0), float(running)))
    out.append(("+Inf", float(total)))
    return out


class Collector:
    def __init__(self, observer: Observer | None) -> None:
        self.observer = observer

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        obs = self.observer
        if obs is None:
            return
        run_id = obs.orchestrator.run_id
        totals = obs.totals()
        ops = CounterMetricFamily("startline_operations", "Operations done", labels=["run_id", "phase", "kind"])
        for (phase, kind), n in sorted(totals.ops.items()):
            ops.add_metric([run_id, phase, kind], n)
        yield ops
        errors = CounterMetricFamily(
            "startline_errors", "Operations that failed", labels=["run_id", "phase", "kind", "category"]
        )
        for (phase, kind, category), n in sorted(totals.errors.items()):
            errors.add_metric([run_id, phase, kind, category], n)
        yield errors
        latency = HistogramMetricFamily(
            "startline_latency_seconds", "Operation latency", labels=["run_id", "phase", "kind"]
        )
        for (phase, kind), h in sorted(totals.latency.items()):
            count = h.get_total_count()
            mean_s = latency_block(h)["mean"] / 1e3  # (HDR's own mean walks every bucket in Python: 0.5 s)
            latency.add_metric([run_id, phase, kind], buckets(h), mean_s * count)
        yield latency
        f = obs.figures()
        workers = GaugeMetricFamily("startline_workers", "Workers by status", labels=["run_id", "status"])
        for status, n in sorted(f.workers.items()):
            workers.add_metric([run_id, status], n)
        yield workers
        connections = GaugeMetricFamily("startline_connections", "Connections", labels=["run_id", "which"])
        for which, n in (("open", f.open_connections), ("planned", f.target_connections)):
            if n is not None:
                connections.add_metric([run_id, which], n)
        yield connections
        start = f.start or {}
        if start.get("skew_ms") is not None:
            skew = GaugeMetricFamily(
                "startline_start_skew_ms", "How far apart the connections' first operations were", labels=["run_id"]
            )
            skew.add_metric([run_id], start["skew_ms"])
            yield skew
        yield from load_state(run_id, obs.orchestrator.load_block())
        lag = start.get("lag_ms") or {}
        if lag:
            g = GaugeMetricFamily(
                "startline_start_lag_ms", "First operations after START_TIME", labels=["run_id", "stat"]
            )
            for stat in ("p50", "p99", "max"):
                if lag.get(stat) is not None:
                    g.add_metric([run_id, stat], lag[stat])
            yield g


def load_state(run_id: str, load: dict[str, Any]) -> Iterator[Any]:
    """A load mode's state: ``startline_load_target_qps`` (qps mode's target, rate mode's rate)
    and ``startline_load_level`` (qps mode's connections now, find-max's level being tried)."""
    from prometheus_client.core import GaugeMetricFamily

    mode, result, steps = load.get("mode"), load.get("result") or {}, load.get("steps") or []
    target = result.get("target_qps") if mode == "qps" else result.get("rate") if mode == "rate" else None
    if mode == "qps":
        level = steps[-1].get("to") if steps else None
    elif mode == "find_max":
        level = steps[-1].get("connections", steps[-1].get("rate")) if steps else None
    else:
        level = None
    for name, doc, value in (
        ("startline_load_target_qps", "The load mode's target rate", target),
        ("startline_load_level", "The load mode's level now (connections, or a rate)", level),
    ):
        if value is not None:
            g = GaugeMetricFamily(name, doc, labels=["run_id", "mode"])
            g.add_metric([run_id, str(mode)], float(value))
            yield g


def exposition(observer: Observer | None) -> bytes:
    from prometheus_client import CollectorRegistry
    from prometheus_client.openmetrics.exposition import generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(observer))
    return generate_latest(registry)
