"""Result files written whole or not at all: a temporary file beside the target, flushed to disk
(fsync), then renamed over it. A full disk or a crash leaves the previous file (or none), never
a half-written one."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from startline.engine import serverstats
from startline.engine.scenario import ConfigError


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` atomically (same directory, fsync,
    rename); on any error the temporary file is removed and the error raised."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and exc.filename is None:  # say which file could not be written
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    try:  # the rename itself survives a crash once the directory is synced
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def write_json(path: Path, data: Any) -> Path:
    return write_atomic(path, json.dumps(data, indent=2) + "\n")


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return write_atomic(path, buf.getvalue())


FAILURES_HEADER = ("operation", "category", "count", "workers", "first_seen", "last_seen", "message", "message_count")


def failure_rows(failures: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    """failures.csv: one row per kept message of each (operation, category)."""
    rows = []
    for f in failures:
        for m in f["messages"] or [{"message": "", "count": 0}]:
            rows.append(
                (
                    f["operation"],
                    f["category"],
                    f["count"],
                    f["workers"],
                    f["first_seen"],
                    f["last_seen"],
                    m["message"],
                    m["count"],
                )
            )
    return rows


STEPS_HEADER = (
    "at_s",
    "connections",
    "rate",
    "qps",
    "p95_ms",
    "p99_ms",
    "error_rate",
    "stable",
    "reason",
    "error_pct",
    "to",
    "action",
)
"""steps.csv: the load control's steps (find-max's steps, the QPS controller's readings)."""


def step_rows(steps: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    return [tuple("" if s.get(k) is None else s.get(k) for k in STEPS_HEADER) for s in steps]


INTERVALS_HEADER = (
    "t_s",
    "phase",
    "kind",
    "ops",
    "errors",
    "qps",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "mean_ms",
    "connections",
    "retried",
    "retries",
)
"""intervals.csv: one row per snapshot interval × kind (``all`` first, then each kind); ``retried``
and ``retries`` for a kind tried again under ``max_tries`` (empty otherwise); a run with the
server's own figures (the ``server`` block) adds their columns (``serverstats.csv_layouts``)."""


def interval_rows(
    timeseries: Sequence[Mapping[str, Any]], interval_s: float, server: Mapping[str, Any] | None = None
) -> list[tuple[Any, ...]]:
    """intervals.csv from summary.json's ``timeseries``: every interval, zeros included; the
    latency columns are empty when the run kept no per-interval histograms. With ``server``
    (summary.json's ``server`` block), each ``all`` row ends with its interval's server columns
    (``serverstats.csv_layouts``: empty for an interval the server said nothing of; an interval
    the server spoke of beyond the time series gets a row of its own)."""
    layouts = serverstats.csv_layouts(server or {})
    if layouts:
        blank = tuple("" for columns, _cells in layouts for _c in columns)
        last = max((r["t_s"] for r in timeseries), default=-1.0)
        beyond = sorted({t for _columns, cells in layouts for t in cells if t > last})
        extra = [{"t_s": t, "ops": 0, "connections": ""} for t in beyond]
        return [
            row
            + (
                tuple(c for columns, cells in layouts for c in cells.get(row[0], ("",) * len(columns)))
                if row[2] == "all"
                else blank
            )
            for row in interval_rows([*timeseries, *extra], interval_s)
        ]
    rows = []
    for r in timeseries:
        parts = [("all", r, r.get("connections", ""))]
        parts += [(kind, k, "") for kind, k in r.get("by_kind", {}).items()]
        for kind, figures, connections in parts:
            lat = figures.get("latency_ms") or {}
            qps = figures.get("qps", round(figures["ops"] / interval_s, 3))
            pct = [lat.get(p, "") for p in ("p50", "p90", "p95", "p99", "max", "mean")]
            errors = figures.get("errors", 0)
            tried = (figures.get("retried", ""), figures.get("retries", ""))
            rows.append((r["t_s"], r.get("phase", ""), kind, figures["ops"], errors, qps, *pct, connections, *tried))
    return rows


def write_summary(out: Path, summary: dict[str, Any], own: Mapping[str, Any] | None = None) -> Path:
    """OUT/summary.json, OUT/intervals.csv, OUT/failures.csv, (with load steps) OUT/steps.csv and (given ``own``) the
    orchestrator's own results in OUT/orchestrator.json, each written whole or not at all."""
    out.mkdir(parents=True, exist_ok=True)
    if own is not None:
        write_json(out / "orchestrator.json", own)
    write_csv(out / "failures.csv", FAILURES_HEADER, failure_rows(summary.get("failures", ())))
    server = summary.get("server") or {}
    write_csv(
        out / "intervals.csv",
        (*INTERVALS_HEADER, *(c for columns, _cells in serverstats.csv_layouts(server) for c in columns)),
        interval_rows(summary.get("timeseries", ()), summary.get("snapshot_interval_s", 1.0), server),
    )
    steps = (summary.get("load") or {}).get("steps") or ()
    if steps:
        write_csv(out / "steps.csv", STEPS_HEADER, step_rows(steps))
    return write_json(out / "summary.json", summary)


MAX_RESULTS_BYTES = 256 * 1024 * 1024
"""A worker's results file larger than this is not one startline wrote."""


def read_worker_files(out: Path) -> list[dict[str, Any]]:
    """Every ``worker-*.json`` in OUT (regular files within ``MAX_RESULTS_BYTES``, each a results
    payload with a ``worker_id``); anything else is a ``ConfigError`` naming the file."""
    payloads = []
    for p in sorted(out.glob("worker-*.json")):
        try:
            st = p.stat()
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_RESULTS_BYTES:
                raise ConfigError("RUN_DIR", f"{p} is not a worker's results file")
            data = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ConfigError("RUN_DIR", f"cannot read {p}: {type(exc).__name__}: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("worker_id"), str) or "metrics" not in data:
            raise ConfigError("RUN_DIR", f"{p} is not a worker's results file")
        payloads.append(data)
    return payloads
