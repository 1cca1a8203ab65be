"""Latency histograms per (operation kind, phase), error counts, interval counts,
and their exact merge across connections and workers.

Histograms are HDR (``hdrhistogram``) in microseconds, 3 significant digits,
constant memory whatever the run length. They travel as HDR's own encoding.
"""

from __future__ import annotations

import ctypes
import itertools
import math
import sys
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
from hdrh.histogram import HdrHistogram

from startline.engine.model import Phase

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour
SIGNIFICANT_DIGITS = 3


UNFINISHED = "unfinished"
RETRIED = frozenset({"conflict"})
"""Error categories an operation with ``max_tries`` is tried again on: each target names its
serialization failures and deadlocks ``conflict``."""
"""The error category of an operation still running when its connection was cancelled (the drain
timed out, or a forced stop): its latency is unknown — at least as long as it had run — so the
run's latency figures cannot speak for it (the ``unfinished`` check fails the run)."""

MESSAGES_KEPT = 5
"""Distinct error messages kept per (operation, category); later ones are counted, not kept."""
MESSAGE_CHARS = 500
"""An error message is cut to this many characters."""


@attrs.define(eq=False)
class Failure:
    """The errors of one (operation, category): how many, first and last seen (trio time), and the
    first ``MESSAGES_KEPT`` distinct messages with their counts."""

    count: int = 0
    first: float = math.inf
    last: float = -math.inf
    messages: dict[str, int] = attrs.Factory(dict)

    def add(self, message: str, at: float) -> None:
        self.count += 1
        self.first, self.last = min(self.first, at), max(self.last, at)
        if message in self.messages or len(self.messages) < MESSAGES_KEPT:
            self.messages[message] = self.messages.get(message, 0) + 1


def error_message(exc: BaseException) -> str:
    """What an operation's error says, on one line and cut to ``MESSAGE_CHARS``."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = text if text.startswith(type(exc).__name__) else f"{type(exc).__name__}: {text}"
    return text[:MESSAGE_CHARS]


def new_histogram() -> HdrHistogram:
    return acyclic(HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS))


def acyclic(h: HdrHistogram) -> HdrHistogram:
    """``h`` without hdrh's reference cycle (histogram → encoder → histogram), so its 190 KB of
    counts are freed when the last reference goes, not at the next cyclic garbage collection.
    With the cycle, every new histogram got fresh pages from the kernel (107 µs to create one;
    8 µs without it) and a process's memory grew between collections."""
    h.encoder.histogram = weakref.proxy(h)
    return h


def bucket_index(us: int) -> int:
    """The index of ``us``'s bucket in the counts of a ``new_histogram()`` (HDR's own
    ``_counts_index_for`` for 1 µs – 1 h at 3 digits: exact below 2,048 µs, then 1,024 buckets
    per power of two), computed in three operations instead of eight calls."""
    if us < 2048:
        return 1 if us < 1 else us
    if us > HIGHEST_US:
        us = HIGHEST_US
    shift = us.bit_length() - 11
    return ((shift + 1) << 10) + (us >> shift) - 1024


def fold_counts(h: HdrHistogram, counts: dict[int, int]) -> int:
    """Add ``counts`` (bucket index → how many) into ``h``, as recording each value would, and
    empty ``counts``: what a connection counted locally during an interval, folded once.
    Returns how many values that was."""
    if not counts:
        return 0
    cells = h.counts
    total = 0
    for index, n in counts.items():
        cells[index] += n
        total += n
    h.total_count += total
    # HDR reports min and max through their buckets' lowest and highest equivalent values:
    # a bucket's lowest value stands for whichever value fell in it
    h.min_value = min(h.min_value, h.get_value_from_index(min(counts)))
    h.max_value = max(h.max_value, h.get_value_from_index(max(counts)))
    counts.clear()
    return total


def to_us(seconds: float) -> int:
    """A latency in whole microseconds, clamped into the histogram's range."""
    return min(HIGHEST_US, max(LOWEST_US, round(seconds * 1e6)))


@attrs.define(eq=False)
class Recorder:
    """One worker's measurements; connections record into it (one Trio thread, no locks)."""

    interval_s: float = 1.0
    histograms: dict[tuple[str, Phase], HdrHistogram] = attrs.Factory(dict)
    errors: dict[tuple[Phase, str], int] = attrs.Factory(lambda: defaultdict(int))
    kind_errors: dict[tuple[Phase, str, str], int] = attrs.Factory(lambda: defaultdict(int))
    """(phase, operation, category) → errors: the payload's ``kind_errors`` (the dashboard's
    ``startline_errors_total`` labels)."""
    intervals: dict[int, list[int]] = attrs.Factory(lambda: defaultdict(lambda: [0, 0]))
    failures: dict[tuple[str, str], Failure] = attrs.Factory(dict)
    """(operation, category) → what its errors said."""
    interval_latency: bool = False
    """Record each operation into its interval's histogram of (kind, phase), shipped with the
    snapshots (``kinds``: kind → encoded HDR) and folded into ``histograms`` as the interval is
    taken: per-interval percentiles per kind, merged exactly across workers (what intervals.csv,
    the report, the QPS controller, find-max and windowed thresholds read) at one recording per
    operation."""
    interval_histograms: dict[int, dict[tuple[str, Phase], HdrHistogram]] = attrs.Factory(dict)
    """interval → (kind, phase) → the interval's histogram, until the interval is taken."""
    _spare: list[HdrHistogram] = attrs.Factory(list)
    """Interval histograms already taken, emptied, for the next intervals: a run allocates a
    few, not one per interval and kind (the allocator's heap grew with run length)."""
    first_errors: dict[str, str] = attrs.Factory(dict)
    """kind → what its first error said, until shipped with the next snapshot (once per kind)."""
    _said: set[str] = attrs.Factory(set)
    interval_errors: dict[tuple[int, str], int] = attrs.Factory(lambda: defaultdict(int))
    """(interval, kind) → errors, until the interval is taken (with ``interval_latency``)."""
    service: dict[tuple[str, Phase], HdrHistogram] = attrs.Factory(dict)
    """Open loop: service time (actual start → end) per (kind, phase); ``histograms`` hold the
    response time (intended start → end)."""
    lag: dict[Phase, HdrHistogram] = attrs.Factory(dict)
    """Open loop: schedule lag (intended → actual start) per phase."""
    load_counts: dict[Phase, list[int]] = attrs.Factory(dict)
    """phase → [offered, skipped, late]; offered and skipped in an open loop only."""
    retries: dict[tuple[str, Phase], list[int]] = attrs.Factory(dict)
    """(kind, phase) → [operations retried, retries] (``max_tries``)."""
    interval_retries: dict[tuple[int, str], list[int]] = attrs.Factory(dict)
    """(interval, kind) → [operations retried, retries], until the interval is taken."""
    interval_load: dict[int, list[int]] = attrs.Factory(dict)
    """Open loop: interval → [offered, skipped]."""
    _connections: dict[int, list[int]] = attrs.Factory(dict)
    """interval → [most connections running in it, connections running at its last change]."""
    _running: int = 0
    """Connections running at the start of the next interval not yet taken."""
    _taken: int = 0
    """Intervals before this one have been taken (``take_intervals``)."""

    def histogram(self, kind: str, phase: Phase) -> HdrHistogram:
        """The histogram for (kind, phase), created on first use; connections keep a reference."""
        return made(self.histograms, (kind, phase))

    def recording(self, interval: int, kind: str, phase: Phase) -> HdrHistogram:
        """Where an operation of (kind, phase) that ended in ``interval`` is recorded: that
        interval's histogram when intervals keep latency (folded into the run's as it is taken),
        else the run's."""
        if not self.interval_latency:
            return self.histogram(kind, phase)
        table = self.interval_histograms.get(interval)
        if table is None:
            table = self.interval_histograms[interval] = {}
        hist = table.get((kind, phase))
        if hist is None:
            hist = table[(kind, phase)] = self._spare.pop() if self._spare else new_histogram()
        return hist

    def service_histogram(self, kind: str, phase: Phase) -> HdrHistogram:
        return made(self.service, (kind, phase))

    def lag_histogram(self, phase: Phase) -> HdrHistogram:
        return made(self.lag, phase)

    def count(self, phase: Phase, what: int, interval: int | None = None, n: int = 1) -> None:
        """``n`` more offered (0), skipped (1) or late (2) operations in ``phase``; offered and
        skipped also in ``interval``."""
        counts = self.load_counts.get(phase)
        if counts is None:
            counts = self.load_counts[phase] = [0, 0, 0]
        counts[what] += n
        if interval is not None:
            row = self.interval_load.get(interval)
            if row is None:
                row = self.interval_load[interval] = [0, 0]
            row[what] += n

    def retry(self, kind: str, phase: Phase, retries: int, interval: int = -1) -> None:
        """One operation of ``kind``, ended in ``interval``, was tried ``retries`` more times."""
        _tried(self.retries, (kind, phase), retries)
        if interval >= 0:
            _tried(self.interval_retries, (interval, kind), retries)

    def add_error(
        self, phase: Phase, category: str, operation: str = "", message: str = "", at: float = 0.0, interval: int = -1
    ) -> None:
        self.errors[(phase, category)] += 1
        self.kind_errors[(phase, operation, category)] += 1
        if self.interval_latency and interval >= 0:
            self.interval_errors[(interval, operation)] += 1
        if operation not in self._said:
            self._said.add(operation)
            self.first_errors[operation] = message
        failure = self.failures.get((operation, category))
        if failure is None:
            failure = self.failures[(operation, category)] = Failure()
        failure.add(message, at)

    def add_interval(self, interval: int, ops: int, errors: int) -> None:
        counts = self.intervals[interval]
        counts[0] += ops
        counts[1] += errors

    def operations(self) -> int:
        """Successful operations recorded, all kinds and phases (intervals not taken included)."""
        pending = sum(h.get_total_count() for t in self.interval_histograms.values() for h in t.values())
        return pending + sum(h.get_total_count() for h in self.histograms.values())

    def error_total(self) -> int:
        return sum(self.errors.values())

    def note_connections(self, interval: int, n: int) -> None:
        """``n`` connections run from now on (now is in ``interval``)."""
        seen = self._connections.get(interval)
        if seen is None:
            self._connections[interval] = [max(n, self._last_before(interval)), n]
        else:
            seen[0], seen[1] = max(seen[0], n), n

    def _last_before(self, interval: int) -> int:
        earlier = [i for i in self._connections if i < interval]
        return self._connections[max(earlier)][1] if earlier else self._running

    def take_intervals(self, before: float, final: bool = False) -> list[dict[str, int]]:
        """Remove and return every closed interval older than ``before`` not taken yet — those
        without an operation included (zeros), each with the most connections running in it —
        and the counts that came late for intervals taken before (ops and errors only).
        ``final``: also every interval that holds counts, whatever ``before`` says."""
        late = [
            {"interval": i, "ops": self.intervals[i][0], "errors": self.intervals.pop(i)[1]}
            for i in sorted(i for i in self.intervals if i < self._taken)
        ]
        upto = before if math.isfinite(before) else max([*self.intervals, *self._connections, self._taken - 1]) + 1
        if final:
            upto = max(upto, max(self.intervals, default=-1) + 1)
        taken = []
        for i in range(self._taken, int(upto)):
            ops, errors = self.intervals.pop(i, (0, 0))
            most, last = self._connections.pop(i, (self._running, self._running))
            self._running = last
            taken.append({"interval": i, "ops": ops, "errors": errors, "connections": most})
        self._taken = max(self._taken, int(upto))
        for row in late + taken:
            self._add_interval_extras(row)
        if self.first_errors and taken:
            taken[-1]["first_errors"], self.first_errors = self.first_errors, {}
        return late + taken

    def _add_interval_extras(self, row: dict[str, Any]) -> None:
        """An interval's response-time histogram and open-loop counts, when kept."""
        i = row["interval"]
        load = self.interval_load.pop(i, None)
        if load is not None:
            row["offered"], row["skipped"] = load
        table = self.interval_histograms.pop(i, None)
        if table is None and not self.interval_latency:
            return
        by_kind: dict[str, HdrHistogram] = {}
        for (kind, phase), h in sorted((table or {}).items()):
            if h.get_total_count():
                add_into(self.histogram(kind, phase), h)
                by_kind[kind] = add_into(by_kind[kind], h) if kind in by_kind else h
        row["kinds"] = {kind: h.encode().decode("ascii") for kind, h in by_kind.items()}
        self._spare.extend(cleared(h) for h in (table or {}).values())
        errors = {k: self.interval_errors.pop((n, k)) for n, k in sorted(self.interval_errors) if n == i}
        if errors:
            row["kind_errors"] = errors
        retried = {k: self.interval_retries.pop((n, k)) for n, k in sorted(self.interval_retries) if n == i}
        if retried:
            row["kind_retries"] = retried

    def to_payload(self, to_control: Callable[[float], float] = float) -> dict[str, Any]:
        """The metrics part of a worker's results; ``to_control`` maps trio time to the control
        plane's clock (for when errors were first and last seen)."""
        recorded = self._recorded()
        hists: dict[str, dict[str, str]] = defaultdict(dict)
        for (kind, phase), h in sorted(recorded.items()):
            hists[str(phase)][kind] = h.encode().decode("ascii")
        ops: dict[str, int] = defaultdict(int)
        kind_ops: dict[str, dict[str, int]] = defaultdict(dict)
        for (kind, phase), h in sorted(recorded.items()):
            ops[str(phase)] += h.get_total_count()
            kind_ops[str(phase)][kind] = h.get_total_count()
        errs: dict[str, dict[str, int]] = defaultdict(dict)
        for (phase, cat), n in sorted(self.errors.items()):
            errs[str(phase)][cat] = n
        failures = [
            {
                "operation": op,
                "category": cat,
                "count": f.count,
                "first_seen": to_control(f.first),
                "last_seen": to_control(f.last),
                "messages": [{"message": m, "count": n} for m, n in f.messages.items()],
            }
            for (op, cat), f in sorted(self.failures.items())
        ]
        by_kind: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
        for (phase, kind, cat), n in sorted(self.kind_errors.items()):
            by_kind[str(phase)][kind][cat] = n
        out = {
            "histograms": dict(hists),
            "errors": dict(errs),
            "kind_errors": {phase: dict(kinds) for phase, kinds in by_kind.items()},
            "kind_ops": dict(kind_ops),
            "ops": dict(sorted(ops.items())),
            "failures": failures,
        }
        if self.service:
            service: dict[str, dict[str, str]] = defaultdict(dict)
            for (kind, phase), h in sorted(self.service.items()):
                service[str(phase)][kind] = h.encode().decode("ascii")
            out["service"] = dict(service)
        if self.lag:
            out["lag"] = {str(phase): h.encode().decode("ascii") for phase, h in sorted(self.lag.items())}
        if self.retries:
            retried: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)
            for (kind, phase), (n, r) in sorted(self.retries.items()):
                retried[str(phase)][kind] = {"retried": n, "retries": r}
            out["retries"] = dict(retried)
        if self.load_counts:
            out["load_counts"] = {
                str(phase): dict(zip(("offered", "skipped", "late"), c, strict=True))
                for phase, c in sorted(self.load_counts.items())
            }
        return out

    def _recorded(self) -> dict[tuple[str, Phase], HdrHistogram]:
        """The run's histograms with the intervals not taken yet added in (copies where they
        differ): results flushed mid-run hold every operation recorded so far."""
        pending = [(key, h) for t in self.interval_histograms.values() for key, h in t.items() if h.get_total_count()]
        if not pending:
            return self.histograms
        out = dict(self.histograms)
        copied: set[tuple[str, Phase]] = set()
        for key, h in pending:
            if key not in copied:
                copied.add(key)
                out[key] = add_into(new_histogram(), out[key]) if key in out else new_histogram()
            add_into(out[key], h)
        return out


def _tried(table: dict[Any, list[int]], key: Any, retries: int) -> None:
    row = table.get(key)
    if row is None:
        row = table[key] = [0, 0]
    row[0] += 1
    row[1] += retries


def cleared(h: HdrHistogram) -> HdrHistogram:
    """``h`` emptied in place, as ``reset()`` does but with one memset (its Python loop over the
    23,552 counts takes 1.6 ms; a new histogram, 0.1 ms and 190 KB more for the allocator)."""
    ctypes.memset(ctypes.addressof(h.counts), 0, ctypes.sizeof(h.counts))
    h.total_count, h.min_value, h.max_value = 0, sys.maxsize, 0
    h.start_time_stamp_msec, h.end_time_stamp_msec = sys.maxsize, 0
    return h


def made(table: dict[Any, HdrHistogram], key: Any) -> HdrHistogram:
    """``table[key]``, a new histogram the first time."""
    hist = table.get(key)
    if hist is None:
        hist = table[key] = new_histogram()
    return hist


def merge_failures(payloads: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The workers' ``failures`` merged per (operation, category): counts add, first/last seen are
    the extremes, the first ``MESSAGES_KEPT`` distinct messages (most frequent first) are kept.
    Most frequent (operation, category) first."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for metrics in payloads:
        for f in metrics.get("failures", ()):
            key = (f["operation"], f["category"])
            m = merged.setdefault(
                key,
                {
                    "operation": key[0],
                    "category": key[1],
                    "count": 0,
                    "first_seen": math.inf,
                    "last_seen": -math.inf,
                    "workers": 0,
                    "messages": defaultdict(int),
                },
            )
            m["count"] += f["count"]
            m["workers"] += 1
            m["first_seen"] = min(m["first_seen"], f["first_seen"])
            m["last_seen"] = max(m["last_seen"], f["last_seen"])
            for msg in f["messages"]:
                m["messages"][msg["message"]] += msg["count"]
    out = []
    for m in sorted(merged.values(), key=lambda m: (-m["count"], m["operation"], m["category"])):
        top = sorted(m["messages"].items(), key=lambda kv: (-kv[1], kv[0]))[:MESSAGES_KEPT]
        out.append(m | {"messages": [{"message": t, "count": n} for t, n in top]})
    return out


def decode(encoded: str) -> HdrHistogram:
    """A histogram from HDR's encoding as it travels (ASCII text)."""
    return acyclic(HdrHistogram.decode(encoded.encode("ascii")))


def merge_histograms(encoded: Iterable[str]) -> HdrHistogram:
    """The exact union of encoded histograms (same ranges, so counts add bucket by bucket)."""
    merged = None
    for e in encoded:
        h = decode(e)
        merged = h if merged is None else add_into(merged, h)  # the first decoded is the merge's base
    return new_histogram() if merged is None else merged


def unique_snapshots(snapshots: Iterable[tuple[str, Mapping[str, Any]]]) -> list[Mapping[str, Any]]:
    """The workers' snapshots, each once: a retried append (same worker, same ``n``) counts once."""
    return list({(worker, snap.get("n", i)): snap for i, (worker, snap) in enumerate(snapshots)}.values())


def add_into(target: HdrHistogram, h: HdrHistogram) -> HdrHistogram:
    """``target.add(h)``, except that an empty ``h`` changes nothing (hdrh's ``add`` of an empty
    histogram sets the minimum to 0: a threshold on ``min`` caught it)."""
    if h.get_total_count():
        target.add(h)
    return target


PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p95", 95.0), ("p99", 99.0), ("p999", 99.9))


def latency_block(h: HdrHistogram) -> dict[str, float]:
    """p50 … p999, max and mean of a histogram, in milliseconds.

    One pass over the non-empty buckets between the lowest and highest recorded value, found in
    C (``itertools.compress``; HDR's own per-percentile and mean iterators walk every bucket in
    Python, which dominated short simulated runs); same rank rule as HDR.
    """
    total = h.get_total_count()
    if total == 0:
        return {k: 0.0 for k in ("p50", "p90", "p95", "p99", "p999", "max", "mean")}
    targets = [(key, h.get_target_count_at_percentile(p)) for key, p in PERCENTILES]
    out: dict[str, float] = {}
    seen = weighted = 0
    t = 0
    lo, hi = h._counts_index_for(h.get_min_value()), h._counts_index_for(h.get_max_value()) + 1
    counts = h.counts
    for index in itertools.compress(range(lo, hi), counts[lo:hi]):
        count = counts[index]
        value = h.get_value_from_index(index)
        seen += count
        weighted += count * h._hdr_median_equiv_value(value)
        while t < len(targets) and seen >= targets[t][1]:
            out[targets[t][0]] = h.get_highest_equivalent_value(value) / 1000.0
            t += 1
        if seen >= total:
            break
    out["max"] = h.get_max_value() / 1000.0
    out["mean"] = round(weighted / total / 1000.0, 3)
    return out


def merge_phase_blocks(
    payloads: Iterable[Mapping[str, Any]], durations: Mapping[str, float]
) -> dict[str, dict[str, Any]]:
    """``phases`` of summary.json: per phase ops, errors, qps and latency, overall and by kind."""
    by_phase: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    service: dict[str, list[str]] = defaultdict(list)
    lag: dict[str, list[str]] = defaultdict(list)
    errors: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    retries: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    open_loop = False
    for payload in payloads:
        for phase, kinds in payload.get("retries", {}).items():
            for kind, r in kinds.items():
                retries[phase][kind][0] += r["retried"]
                retries[phase][kind][1] += r["retries"]
        for phase, kinds in payload.get("histograms", {}).items():
            for kind, enc in kinds.items():
                by_phase[phase][kind].append(enc)
        for phase, cats in payload.get("errors", {}).items():
            for cat, n in cats.items():
                errors[phase][cat] += n
        for phase, kinds in payload.get("service", {}).items():
            service[phase].extend(kinds.values())
        for phase, enc in payload.get("lag", {}).items():
            lag[phase].append(enc)
        for phase, c in payload.get("load_counts", {}).items():
            for key, n in c.items():
                counts[phase][key] += n
        open_loop = open_loop or "service" in payload or "lag" in payload
    out: dict[str, dict[str, Any]] = {}
    for phase in (Phase.WARMUP, Phase.MEASUREMENT, Phase.COOLDOWN, Phase.DONE):
        kinds = by_phase.get(str(phase), {})
        if not kinds and not errors.get(str(phase)) and str(phase) not in durations:
            continue
        duration = durations.get(str(phase), 0.0)
        total = new_histogram()
        by_kind = {}
        for kind in sorted(kinds):
            h = merge_histograms(kinds[kind])
            add_into(total, h)
            by_kind[kind] = {
                "ops": h.get_total_count(),
                "qps": _rate(h.get_total_count(), duration),
                "latency_ms": latency_block(h),
            }
            tried = retries.get(str(phase), {}).get(kind)
            if tried is not None:  # (only a kind that was tried again: max_tries)
                by_kind[kind]["retried"], by_kind[kind]["retries"] = tried
        ops = total.get_total_count()
        n_errors = sum(errors[str(phase)].values())
        c = counts.get(str(phase), {})
        latency = latency_block(total)
        out[str(phase)] = {
            "ops": ops,
            "errors": n_errors,
            "errors_by_category": dict(sorted(errors[str(phase)].items())),
            "duration_s": duration,
            "qps": _rate(ops, duration),
            "latency_ms": latency,
            # response time = latency_ms (from the intended start in an open loop); service time
            # from the actual start (the same in a closed loop)
            "service_ms": latency_block(merge_histograms(service[str(phase)])) if open_loop else latency,
            "offered": c.get("offered", 0) if open_loop else ops + n_errors,
            "completed": ops + n_errors,
            "skipped": c.get("skipped", 0),
            "late": c.get("late", 0),
            "retried": sum(r[0] for r in retries.get(str(phase), {}).values()),
            "retries": sum(r[1] for r in retries.get(str(phase), {}).values()),
            "by_kind": by_kind,
        }
        if open_loop:
            out[str(phase)]["schedule_lag_ms"] = latency_block(merge_histograms(lag[str(phase)]))
    return out


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 3) if seconds > 0 and math.isfinite(seconds) else 0.0
