"""Thresholds, k6-shaped: pass/fail criteria on a run's metrics, written in the scenario.

    [thresholds]
    "latency_ms" = ["p(99) < 50"]
    "latency_ms{kind=point_lookup}" = ["p(95) < 20", { threshold = "p(99) < 40" }]
    "error_rate" = ["rate < 0.01"]
    "qps" = ["value > 1000"]
    "start.skew_ms" = ["value < 5"]
    "latency_ms{window=10s}" = ["p(95) < 100"]   # in every 10 s window of MEASUREMENT
    "cost.per_1k_ops" = ["value < 0.05"]         # judged by `startline enrich` (a Snowflake run)

A key is a metric with optional tags (``kind``: one operation kind; ``window``: every window of
that many seconds of MEASUREMENT must pass); each item is an expression ``STAT OP NUMBER``, or
a table ``{threshold = ..., abort_on_fail, delay_abort_eval_s}``. Parsing refuses what it does
not know (a ``ThresholdError`` naming ``thresholds."KEY"``, which the scenario turns into its
``ConfigError``); evaluation is a pure function of what the run measured (``Measured``).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
from hdrh.histogram import HdrHistogram

from startline.engine.metrics import add_into, decode, new_histogram

METRICS: Mapping[str, tuple[str, ...]] = {
    "latency_ms": ("p", "avg", "min", "max", "med"),
    "service_ms": ("p", "avg", "min", "max", "med"),
    "error_rate": ("rate",),
    "qps": ("value",),
    "ops": ("count",),
    "errors": ("count",),
    "skipped": ("count",),
    "late": ("count",),
    "start.skew_ms": ("value",),
    "start.lag_ms": ("p", "min", "max", "med"),
    "cost.per_1k_ops": ("value",),
}
"""Each metric and the statistics a threshold may take of it (``p`` is ``p(N)``)."""
LATER = frozenset({"cost.per_1k_ops"})
"""Metrics known only after the run (``startline enrich`` reads them from the target's own
records, hours later): the run lists their thresholds as pending and judges nothing by them;
``enrich`` judges them."""
BY_KIND = frozenset({"latency_ms", "service_ms", "qps", "ops"})
"""Metrics a ``{kind=...}`` tag narrows to one operation kind."""
WINDOWED = frozenset({"latency_ms"})
"""Metrics a ``{window=...}`` tag can split into windows of MEASUREMENT."""

LIVE = ("latency_ms", "error_rate", "qps")
"""Metrics the orchestrator can judge while the run goes (from the workers' interval snapshots):
the only ones an ``abort_on_fail`` threshold may take."""

OPS: Mapping[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_KEY = re.compile(r"^(?P<metric>[a-z][a-z0-9_.]*)(?:\{(?P<tags>[^{}]*)\})?$")
_EXPR = re.compile(
    r"^\s*(?P<stat>p\(\s*(?P<pct>\d+(?:\.\d+)?)\s*\)|avg|min|max|med|rate|value|count)\s*"
    r"(?P<op><=|>=|==|!=|<|>)\s*(?P<limit>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*$"
)
_WINDOW = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<unit>ms|s|m)$")


class ThresholdError(ValueError):
    """A threshold that cannot be read: ``field`` names it (``thresholds."KEY"``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@attrs.frozen
class Threshold:
    """One criterion: ``stat`` of ``metric`` (narrowed by ``kind``, per ``window_s`` window) ``op`` ``limit``."""

    key: str
    """The key as written (``latency_ms{kind=point_lookup}``)."""
    expression: str
    """The expression as written (``p(95) < 20``)."""
    metric: str
    stat: str
    """``p`` (with ``percentile``), ``avg``, ``min``, ``max``, ``med``, ``rate``, ``value`` or ``count``."""
    op: str
    limit: float
    kind: str | None = None
    window_s: float | None = None
    percentile: float | None = None
    abort_on_fail: bool = False
    delay_abort_eval_s: float = 0.0

    def holds(self, value: float) -> bool:
        return OPS[self.op](value, self.limit)


def parse(table: Any) -> tuple[Threshold, ...]:
    """``[thresholds]`` as TOML gives it, each threshold checked."""
    if not isinstance(table, Mapping):
        raise ThresholdError("thresholds", f"must be a table of metric = [expressions] (got {table!r})")
    out: list[Threshold] = []
    for key, items in table.items():
        field = f'thresholds."{key}"'
        metric, kind, window_s = _key(key, field)
        if isinstance(items, str | Mapping):
            items = [items]
        if not isinstance(items, list) or not items:
            raise ThresholdError(field, f"must be a list of expressions (got {items!r})")
        for item in items:
            out.append(_item(key, metric, kind, window_s, item, field))
    return tuple(out)


def _key(key: str, field: str) -> tuple[str, str | None, float | None]:
    m = _KEY.match(key)
    if m is None or m["metric"] not in METRICS:
        raise ThresholdError(field, f"unknown metric (known: {', '.join(METRICS)}; tags in {{kind=..., window=...}})")
    metric, kind, window_s = m["metric"], None, None
    for tag in filter(None, (t.strip() for t in (m["tags"] or "").split(","))):
        name, _, value = (part.strip() for part in tag.partition("="))
        if name == "kind" and value and metric in BY_KIND:
            kind = value
        elif name == "window" and metric in WINDOWED:
            w = _WINDOW.match(value)
            if w is None or float(w["n"]) <= 0:
                raise ThresholdError(field, f"window must be a duration such as 10s, 500ms or 1m (got {value!r})")
            window_s = float(w["n"]) * {"ms": 0.001, "s": 1.0, "m": 60.0}[w["unit"]]
        else:
            where = {"kind": BY_KIND, "window": WINDOWED}.get(name)
            allowed = f"on {', '.join(sorted(where))} only" if where else "known tags: kind, window"
            raise ThresholdError(field, f"tag {tag!r} is not taken here ({allowed})")
    return metric, kind, window_s


def _item(key: str, metric: str, kind: str | None, window_s: float | None, item: Any, field: str) -> Threshold:
    abort, delay = False, 0.0
    if isinstance(item, Mapping):
        unknown = set(item) - {"threshold", "abort_on_fail", "delay_abort_eval_s"}
        if unknown or "threshold" not in item:
            raise ThresholdError(field, "a table takes threshold (required), abort_on_fail, delay_abort_eval_s")
        abort, delay = item.get("abort_on_fail", False), item.get("delay_abort_eval_s", 0.0)
        if not isinstance(abort, bool):
            raise ThresholdError(field, f"abort_on_fail must be true or false (got {abort!r})")
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay < math.inf:
            raise ThresholdError(field, f"delay_abort_eval_s must be a number of seconds >= 0 (got {delay!r})")
        item = item["threshold"]
    if not isinstance(item, str):
        raise ThresholdError(field, f"an expression is a string such as 'p(99) < 50' (got {item!r})")
    m = _EXPR.match(item)
    if m is None:
        raise ThresholdError(field, f"cannot read {item!r}: STAT OP NUMBER, such as 'p(99) < 50' or 'rate < 0.01'")
    stat = "p" if m["pct"] is not None else m["stat"]
    if stat not in METRICS[metric]:
        known = ", ".join("p(N)" if s == "p" else s for s in METRICS[metric])
        raise ThresholdError(field, f"{metric} takes {known} (got {m['stat']!r})")
    if abort and (metric not in LIVE or (kind is not None and metric != "latency_ms") or window_s is not None):
        raise ThresholdError(
            field,
            f"abort_on_fail takes {', '.join(LIVE)} (latency_ms by kind too), not windowed (the figures judged live)",
        )
    pct = None if m["pct"] is None else float(m["pct"])
    if pct is not None and not 0 < pct <= 100:
        raise ThresholdError(field, f"a percentile is in (0, 100] (got {pct:g})")
    if metric == "start.lag_ms" and pct not in (None, 50.0, 99.0):
        raise ThresholdError(field, f"start.lag_ms takes p(50), p(99), min, max or med (got p({pct:g}))")
    return Threshold(
        key, item.strip(), metric, stat, m["op"], float(m["limit"]), kind, window_s, pct, abort, float(delay)
    )


@attrs.frozen
class Measured:
    """What a run measured, as the thresholds read it (all of MEASUREMENT unless said)."""

    phase: Mapping[str, Any]
    """summary.json's MEASUREMENT block (empty: nothing was measured)."""
    start: Mapping[str, Any]
    """summary.json's ``start`` block."""
    latency: Mapping[str | None, HdrHistogram]
    """Response time by kind (``None``: every kind)."""
    service: Mapping[str | None, HdrHistogram]
    windows: Callable[[float, str | None], Sequence[HdrHistogram]] = lambda _s, _k: ()
    """The response-time histograms of MEASUREMENT's consecutive windows of that many seconds, of
    one kind (``None``: every kind)."""
    cost: Mapping[str, Any] = attrs.field(factory=dict)
    """summary.json's ``cost`` block (``startline enrich``; empty: not known)."""


@attrs.frozen
class Result:
    """One threshold as summary.json shows it."""

    metric: str
    threshold: str
    ok: bool
    value: float | None
    """The measured value (windowed: the worst window's; ``None``: nothing to judge — a failure)."""
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def evaluate(
    thresholds: Sequence[Threshold], measured: Measured, crossed: Mapping[tuple[str, str], Result] | None = None
) -> tuple[Result, ...]:
    """Each threshold judged on ``measured``; one ``crossed`` during the run (by key and
    expression: it stopped the run) is that failure, whatever the end shows."""
    crossed = crossed or {}
    return tuple(crossed.get((t.key, t.expression)) or _evaluate(t, measured) for t in thresholds)


def crossing(t: Threshold, measured: Measured, elapsed_s: float) -> Result | None:
    """An ``abort_on_fail`` threshold judged live after ``elapsed_s`` of MEASUREMENT: the failure
    that stops the run, or None (it holds, its delay has not passed, or nothing to judge yet)."""
    if elapsed_s < t.delay_abort_eval_s:
        return None
    r = _evaluate(t, measured)
    if r.ok or r.value is None:
        return None
    return attrs.evolve(r, detail=f"{r.detail}, after {elapsed_s:g} s of MEASUREMENT: the run stopped (abort_on_fail)")


def _evaluate(t: Threshold, m: Measured) -> Result:
    if t.window_s is not None:
        windows = m.windows(t.window_s, t.kind)
        values = [_of_histogram(t, h) for h in windows if h.get_total_count()]
        if not values:
            return Result(t.key, t.expression, False, None, "no operation in MEASUREMENT to judge")
        failing = [v for v in values if not t.holds(v)]
        worst = max(values) if t.op in ("<", "<=") else min(values) if t.op in (">", ">=") else values[0]
        worst = failing[0] if failing and t.op in ("==", "!=") else worst
        return Result(
            t.key,
            t.expression,
            not failing,
            worst,
            f"{len(values) - len(failing)} of {len(values)} windows of {t.window_s:g} s pass",
        )
    value = _value(t, m)
    if value is None:
        return Result(t.key, t.expression, False, None, _missing(t))
    return Result(t.key, t.expression, t.holds(value), value, f"{_name(t)} = {value:g} (must be {t.op} {t.limit:g})")


def _value(t: Threshold, m: Measured) -> float | None:
    metric, phase = t.metric, m.phase
    if metric in ("latency_ms", "service_ms"):
        h = (m.latency if metric == "latency_ms" else m.service).get(t.kind)
        return None if h is None or not h.get_total_count() else _of_histogram(t, h)
    if metric in ("qps", "ops") and t.kind is not None:
        by_kind = (phase.get("by_kind") or {}).get(t.kind)
        return None if by_kind is None else float(by_kind[metric])
    if metric == "error_rate":
        ops, errors = phase.get("ops", 0), phase.get("errors", 0)
        return errors / (ops + errors) if ops + errors else None
    if metric in ("qps", "ops", "errors", "skipped", "late"):
        return None if not phase else float(phase.get(metric, 0))
    if metric == "start.skew_ms":
        return m.start.get("skew_ms")
    if metric == "cost.per_1k_ops":
        return m.cost.get("per_1k_ops")
    lags = m.start.get("lag_ms")  # start.lag_ms
    if not lags:
        return None
    key = {"min": "min", "max": "max", "med": "p50"}.get(t.stat) or ("p50" if t.percentile == 50.0 else "p99")
    return lags.get(key)


def _of_histogram(t: Threshold, h: HdrHistogram) -> float:
    match t.stat:
        case "p":
            return h.get_value_at_percentile(t.percentile) / 1000.0
        case "med":
            return h.get_value_at_percentile(50.0) / 1000.0
        case "min":
            return h.get_min_value() / 1000.0
        case "max":
            return h.get_max_value() / 1000.0
        case _:  # avg
            return h.get_mean_value() / 1000.0


def _name(t: Threshold) -> str:
    stat = f"p({t.percentile:g})" if t.stat == "p" else t.stat
    return f"{stat} of {t.key}"


def _missing(t: Threshold) -> str:
    if t.metric == "cost.per_1k_ops":
        return "no priced cost: the run's credits are not known yet, or [cost] per_credit is not set"
    if t.kind is not None:
        return f"no operation of kind {t.kind!r} in MEASUREMENT"
    return f"nothing measured for {t.key}"


def histograms_of(metrics: Sequence[Mapping[str, Any]], phase: str) -> tuple[dict[str | None, HdrHistogram], ...]:
    """The workers' response-time and service-time histograms of ``phase``, merged exactly, by
    kind and (key ``None``) over every kind. A closed loop's service time is its response time."""
    latency: dict[str | None, HdrHistogram] = {None: new_histogram()}
    service: dict[str | None, HdrHistogram] = {None: new_histogram()}
    for table, out in (("histograms", latency), ("service", service)):
        for m in metrics:
            for kind, enc in (m.get(table) or {}).get(phase, {}).items():
                h = decode(enc)
                if kind in out:
                    add_into(out[kind], h)
                else:
                    out[kind] = add_into(new_histogram(), h)
                add_into(out[None], h)
    if not service[None].get_total_count():
        service = latency
    return latency, service


def judged_spans(intervals: Mapping[int, HdrHistogram], first: int, last: int, per_window: int) -> list[HdrHistogram]:
    """The spans a windowed threshold is judged on: consecutive runs of ``per_window`` intervals over
    intervals ``first``..``last`` (the last may be shorter), each the exact merge of its intervals'
    histograms. (Not the phase windows of ``engine.schedule``, nor the merged intervals the load
    control reads.)"""
    out = []
    for lo in range(first, last + 1, per_window):
        h = new_histogram()
        for i in range(lo, min(lo + per_window, last + 1)):
            if i in intervals:
                add_into(h, intervals[i])
        out.append(h)
    return out
