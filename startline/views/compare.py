"""``startline compare BASE CANDIDATE...``: runs' key figures side by side with their deltas, and
regression bands that mark a change warn or fail (the defaults are the seed system's: QPS −10 % /
−20 %, p95 +20 % / +40 %, p99 +25 % / +50 %, error rate +1 / +5 points). Pure functions of the
runs' summary.json; the command prints, writes JSON on request, and exits 1 on a failing band."""

from __future__ import annotations

import json
import math
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

OK, WARN, FAIL = "ok", "warn", "fail"
COMPLETED = "COMPLETED"
SCHEMA_VERSIONS = (1,)
"""The summary.json layouts this version reads (``schema_version``; a summary without one is 1)."""
MAX_SUMMARY_BYTES = 64 * 1024 * 1024
"""A summary.json larger than this is not a run's (the largest runs write a few megabytes)."""


@attrs.frozen
class Band:
    """How far ``figure`` may move the wrong way: ``warn`` and ``fail`` in per cent of the base
    (``points``: in percentage points, for rates). ``higher_is_worse``: latency and errors."""

    figure: str
    warn: float
    fail: float
    higher_is_worse: bool
    points: bool = False

    def judge(self, base: float | None, candidate: float | None) -> str | None:
        if base is None:
            return None
        if candidate is None or not math.isfinite(candidate):
            return FAIL  # the base has the figure, the candidate does not: nothing shows it held
        moved = change(base, candidate, self.points)
        if moved is None:
            return None
        worse = moved if self.higher_is_worse else -moved
        return FAIL if worse > self.fail else WARN if worse > self.warn else OK


def change(base: float | None, candidate: float | None, points: bool) -> float | None:
    """Candidate against base: percentage points for a rate, else per cent of the base."""
    if base is None or candidate is None:
        return None
    if points:
        return (candidate - base) * 100.0
    return None if base == 0 else (candidate - base) / base * 100.0


DEFAULT_BANDS = (
    Band("qps", 10, 20, higher_is_worse=False),
    Band("latency p95 ms", 20, 40, higher_is_worse=True),
    Band("latency p99 ms", 25, 50, higher_is_worse=True),
    Band("error rate", 1, 5, higher_is_worse=True, points=True),
    Band("cost per 1k ops", 10, 20, higher_is_worse=True),
)
BAND_NAMES = {
    "qps": "qps",
    "p95": "latency p95 ms",
    "p99": "latency p99 ms",
    "error_rate": "error rate",
    "cost.per_1k_ops": "cost per 1k ops",
}
"""``--band NAME=WARN:FAIL`` names."""


def figures(summary: Mapping[str, Any]) -> dict[str, float | None]:
    """A run's key figures (MEASUREMENT, and its start), by name; per kind as ``kind: figure``."""
    m = (summary.get("phases") or {}).get("MEASUREMENT") or {}
    lat = m.get("latency_ms") or {}
    ops, errors = m.get("ops", 0), m.get("errors", 0)
    start = summary.get("start") or {}
    lag = start.get("lag_ms") or {}
    out: dict[str, float | None] = {
        "qps": m.get("qps"),
        "ops": ops,
        "error rate": errors / (ops + errors) if ops + errors else None,
        "latency p50 ms": lat.get("p50"),
        "latency p95 ms": lat.get("p95"),
        "latency p99 ms": lat.get("p99"),
        "latency max ms": lat.get("max"),
        "start skew ms": start.get("skew_ms"),
        "start lag p50 ms": lag.get("p50"),
        "start lag max ms": lag.get("max"),
    }
    if summary.get("cost"):  # (a Snowflake run after `startline enrich`, priced)
        out["cost per 1k ops"] = summary["cost"].get("per_1k_ops")
    for kind, block in sorted((m.get("by_kind") or {}).items()):
        kl = block.get("latency_ms") or {}
        out[f"{kind}: qps"] = block.get("qps")
        out[f"{kind}: latency p95 ms"] = kl.get("p95")
        out[f"{kind}: latency p99 ms"] = kl.get("p99")
    return out


def band_of(figure: str, bands: Sequence[Band]) -> Band | None:
    """The band for a figure; a per-kind figure (``kind: qps``) takes the band of its figure."""
    name = figure.split(": ", 1)[-1]
    return next((b for b in bands if b.figure == name), None)


@attrs.frozen
class Row:
    figure: str
    base: float | None
    candidate: float | None
    change: float | None
    """Per cent of the base (percentage points for a rate); None when it cannot be said."""
    unit: str
    verdict: str | None
    """ok, warn, fail; None for a figure without a band."""


@attrs.frozen
class Comparison:
    base: str
    candidate: str
    status: tuple[str, str]
    rows: tuple[Row, ...]

    @property
    def verdict(self) -> str:
        """``fail`` when a band failed or the candidate did not complete (a failed run's figures
        hold nothing up); else ``warn`` when a band warned; else ``ok``."""
        judged = [r.verdict for r in self.rows if r.verdict]
        if self.status[1] != COMPLETED or FAIL in judged:
            return FAIL
        return WARN if WARN in judged else OK

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self) | {"verdict": self.verdict}


def compare(
    base: Mapping[str, Any], candidate: Mapping[str, Any], bands: Sequence[Band], names: tuple[str, str]
) -> Comparison:
    a, b = figures(base), figures(candidate)
    rows = []
    for figure in [*a, *(f for f in b if f not in a)]:
        band, points = band_of(figure, bands), figure.endswith("error rate")
        x, y = a.get(figure), b.get(figure)
        verdict = None if band is None else band.judge(x, y)
        rows.append(Row(figure, x, y, change(x, y, points), "points" if points else "%", verdict))
    return Comparison(names[0], names[1], (str(base.get("status")), str(candidate.get("status"))), tuple(rows))


class CompareError(ValueError):
    """Runs that cannot be compared, or an argument that cannot be read: ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def read_summary(path: str) -> dict[str, Any]:
    """A run's summary.json, given it or the run's directory; anything else is a ``CompareError``
    naming it, never a hang or a traceback: not a regular file (a FIFO, a device), larger than
    ``MAX_SUMMARY_BYTES``, not JSON (or nested past what Python parses), another schema version,
    or a figure that is not a number."""
    p = Path(path)
    if p.is_dir():
        p = p / "summary.json"
    try:
        st = p.stat()
        if not stat.S_ISREG(st.st_mode):
            raise CompareError(path, f"{p} is not a regular file")
        if st.st_size > MAX_SUMMARY_BYTES:
            raise CompareError(path, f"{p} is {st.st_size:,} bytes: not a summary.json (at most {MAX_SUMMARY_BYTES:,})")
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise CompareError(path, f"no summary.json at {p}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CompareError(path, f"cannot read {p}: {type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("phases", {}), dict) or "phases" not in data:
        raise CompareError(path, f"{p} is not a startline summary.json")
    version = data.get("schema_version", 1)
    if version not in SCHEMA_VERSIONS:
        raise CompareError(path, f"schema_version {version!r}: this startline reads {SCHEMA_VERSIONS}")
    try:
        bad = next((k for k, v in figures(data).items() if v is not None and not _number(v)), None)
    except (AttributeError, TypeError) as exc:
        raise CompareError(path, f"{p} is not a startline summary.json ({exc})") from None
    if bad is not None:
        raise CompareError(path, f"{bad}: not a number in {p}")
    return data


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def same_scenario(base: Mapping[str, Any], candidate: Mapping[str, Any]) -> str | None:
    """Why two runs are not comparable (one did not complete; name, start strategy, workers), or None."""
    for run, which in ((base, "base"), (candidate, "candidate")):
        if run.get("status") != COMPLETED:
            why = f" ({run.get('reason')})" if run.get("reason") else ""
            return f"the {which} run is {run.get('status')}{why}: it measured no comparable run"
    for key, what in (("scenario", "scenario"), ("start_strategy", "start strategy")):
        if base.get(key) != candidate.get(key):
            return f"{what} {base.get(key)!r} against {candidate.get(key)!r}"
    if len(base.get("workers") or ()) != len(candidate.get("workers") or ()):
        return f"{len(base.get('workers') or ())} workers against {len(candidate.get('workers') or ())}"
    return None


def parse_band(text: str) -> tuple[str, float, float]:
    """``NAME=WARN:FAIL`` (NAME: qps, p95, p99, error_rate)."""
    name, _, limits = text.partition("=")
    warn, _, fail = limits.partition(":")
    if name not in BAND_NAMES:
        raise CompareError("--band", f"{name!r} is not a band (known: {', '.join(BAND_NAMES)})")
    try:
        w, f = float(warn), float(fail)
    except ValueError:
        raise CompareError("--band", f"{text!r}: give NAME=WARN:FAIL, such as p99=25:50") from None
    if not 0 <= w <= f:
        raise CompareError("--band", f"{text!r}: 0 <= WARN <= FAIL")
    return BAND_NAMES[name], w, f


def bands_with(overrides: Sequence[str]) -> tuple[Band, ...]:
    changed = dict((name, (w, f)) for name, w, f in map(parse_band, overrides))
    return tuple(
        attrs.evolve(b, warn=changed[b.figure][0], fail=changed[b.figure][1]) if b.figure in changed else b
        for b in DEFAULT_BANDS
    )
