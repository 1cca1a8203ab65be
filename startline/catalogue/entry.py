"""One kept run as the catalogue holds it: who it was and its key figures, read from its summary.
Pure: a summary in, a frozen ``Entry`` out."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

FIGURES = ("qps", "error_rate", "p50_ms", "p95_ms", "p99_ms", "skew_ms", "lag_p99_ms", "cost_per_1k_ops")
"""The key figures an entry keeps (the catalogue's columns, ``runs list``'s and ``trend``'s)."""


@attrs.frozen
class Entry:
    run_id: str
    name: str
    scenario_hash: str
    """The first 16 hex digits of the SHA-256 of the scenario as run (canonical JSON): runs of
    the same scenario share it."""
    started_at: float | None
    """START_TIME, epoch seconds (None: the run never started)."""
    status: str
    verdict: str | None
    directory: str
    """The run's directory, absolute."""
    figures: Mapping[str, float | None] = attrs.field(factory=dict, converter=dict)
    """``FIGURES`` (MEASUREMENT; None when the run has no such figure)."""

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def scenario_hash(summary: Mapping[str, Any]) -> str:
    scenario = (summary.get("config") or {}).get("scenario") or {}
    text = json.dumps(scenario, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def entry_of(summary: Mapping[str, Any], directory: Path) -> Entry:
    """The catalogue's entry for a run's summary.json, kept in ``directory``."""
    m = (summary.get("phases") or {}).get("MEASUREMENT") or {}
    lat = m.get("latency_ms") or {}
    ops, errors = m.get("ops", 0) or 0, m.get("errors", 0) or 0
    start = summary.get("start") or {}
    figures = {
        "qps": m.get("qps"),
        "error_rate": errors / (ops + errors) if ops + errors else None,
        "p50_ms": lat.get("p50"),
        "p95_ms": lat.get("p95"),
        "p99_ms": lat.get("p99"),
        "skew_ms": start.get("skew_ms"),
        "lag_p99_ms": (start.get("lag_ms") or {}).get("p99"),
        "cost_per_1k_ops": (summary.get("cost") or {}).get("per_1k_ops"),
    }
    return Entry(
        run_id=str(summary["run_id"]),
        name=str(summary.get("scenario") or (summary.get("config") or {}).get("scenario", {}).get("name") or "?"),
        scenario_hash=scenario_hash(summary),
        started_at=summary.get("start_time"),
        status=str(summary.get("status")),
        verdict=summary.get("verdict"),
        directory=str(directory.resolve()),
        figures={k: None if v is None else float(v) for k, v in figures.items()},
    )
