"""What the database itself counted, interval by interval, on the run's clock: readings of a
target's server statistics (``ServerReading``, taken by a ``ports.ServerSampler``) turned into the
summary's ``server`` block — per-interval deltas of the server's counters, the sessions waiting at
each reading, and where the server's clock sits on the run's. Pure: no I/O, no clock of its own."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from startline.engine.schedule import percentile

COUNTERS = (
    "xact_commit",
    "xact_rollback",
    "blks_hit",
    "blks_read",
    "tup_returned",
    "tup_fetched",
    "tup_inserted",
    "tup_updated",
    "tup_deleted",
    "deadlocks",
    "temp_bytes",
)
"""The server's cumulative counters a reading carries (PostgreSQL's ``pg_stat_database`` names)."""

WAIT_COLUMNS = ("cpu", "lock", "lwlock", "io", "ipc", "client", "other")
"""intervals.csv's wait columns (``wait_<name>``): the run's active sessions at a reading by what
they waited on — PostgreSQL's ``wait_event_type`` lower-cased, ``cpu`` for none (running), the
rarer types (Activity, BufferPin, Extension, Timeout, InjectionPoint) as ``other``."""

SERVER_COLUMNS = (*COUNTERS, "hit_ratio", "locks_waiting", *(f"wait_{w}" for w in WAIT_COLUMNS))
"""intervals.csv's server columns (on the ``all`` row of each interval) for a server's counters
(``server.intervals``)."""

STATEMENT_COLUMNS = (
    "server_records",
    "server_ms_p50",
    "server_ms_p99",
    "execution_ms_p50",
    "queued_overload_ms_p99",
    "transaction_blocked_ms_p99",
)
"""intervals.csv's server columns for a server's own timings of the run's statements, by the
interval each began in (``server.statement_intervals``: Snowflake's query history)."""


@attrs.frozen
class ServerReading:
    """One reading of the server's statistics."""

    index: int
    """The interval boundary it was taken for: 0 before the start, k at START_TIME + k × interval
    (the last one, after the run, one past the last boundary read)."""
    sent: float
    """This process's trio clock when the reading was asked for."""
    received: float
    """… and when its answer was in."""
    server_s: float
    """The server's own clock (epoch seconds) when it read."""
    counters: Mapping[str, int]
    """``COUNTERS``, cumulative since the server's statistics were last reset."""
    waits: Mapping[str, int] = attrs.field(factory=dict)
    """The run's active sessions by wait event type (``CPU``: waiting on nothing)."""
    locks_waiting: int = 0
    """Locks the run's sessions were waiting for."""

    @property
    def round_trip_s(self) -> float:
        return self.received - self.sent


@attrs.frozen
class Placement:
    """The server's clock on the run's (the control plane's): control = server − ``offset_s``,
    within ± ``uncertainty_s``."""

    offset_s: float
    uncertainty_s: float
    same_clock: bool

    def to_control(self, server_s: float) -> float:
        return server_s - self.offset_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "same_clock": self.same_clock,
            "offset_ms": round(self.offset_s * 1e3, 3),
            "uncertainty_ms": round(self.uncertainty_s * 1e3, 3),
        }


def place(
    readings: Sequence[ServerReading], to_control: Callable[[float], float], same_clock: bool, map_uncertainty_s: float
) -> Placement:
    """Where the server's clock sits: the same clock as the control plane's (the control plane
    is that server) — no offset; otherwise the reading with the shortest round trip, its midpoint
    on this process's clock mapped to the control plane's (``to_control``, the clock map the start
    uses, itself within ± ``map_uncertainty_s``): NTP's estimate, as ``clocksync`` makes it."""
    if same_clock:
        return Placement(0.0, 0.0, True)
    best = min(readings, key=lambda r: (r.round_trip_s, r.index))
    mid = to_control((best.sent + best.received) / 2)
    return Placement(best.server_s - mid, best.round_trip_s / 2 + map_uncertainty_s, False)


def wait_column(wait_event_type: str) -> str:
    """The intervals.csv column a wait event type counts in (``WAIT_COLUMNS``)."""
    name = wait_event_type.lower()
    return name if name in WAIT_COLUMNS else "other"


def deltas(a: ServerReading, b: ServerReading) -> dict[str, int | None]:
    """What the server counted between two readings; ``None`` for a counter that went back (its
    statistics were reset between them: the delta is unknown, not negative)."""
    out: dict[str, int | None] = {}
    for k in COUNTERS:
        d = b.counters[k] - a.counters[k]
        out[k] = d if d >= 0 else None
    return out


def hit_ratio(hit: int | None, read: int | None) -> float | None:
    """Share of block requests found in the server's buffer cache (None: none requested)."""
    if hit is None or read is None or hit + read == 0:
        return None
    return round(hit / (hit + read), 6)


def server_intervals(
    readings: Sequence[ServerReading], placement: Placement, start_time: float, interval_s: float
) -> list[dict[str, Any]]:
    """One row per pair of consecutive readings: ``t_s`` the interval it stands for (that of the
    reading it starts from; the one before the start stands for interval 0), ``from_s``/``to_s``
    where the two readings really fell on the run's clock (seconds from START_TIME), the deltas,
    the hit ratio, and the sessions waiting and locks waited for at its end."""
    rows = []
    for a, b in itertools.pairwise(readings):
        d = deltas(a, b)
        rows.append(
            {
                "t_s": round(max(a.index, 0) * interval_s, 6),
                "from_s": round(placement.to_control(a.server_s) - start_time, 4),
                "to_s": round(placement.to_control(b.server_s) - start_time, 4),
                **d,
                "hit_ratio": hit_ratio(d["blks_hit"], d["blks_read"]),
                "locks_waiting": b.locks_waiting,
                "waits": dict(sorted(b.waits.items())),
            }
        )
    return rows


def server_block(
    source: str,
    readings: Sequence[ServerReading],
    placement: Placement,
    start_time: float,
    interval_s: float,
    failed_readings: int = 0,
) -> dict[str, Any]:
    """The summary's ``server`` block from a run's readings (at least two), in reading order.

    ``totals``: what the server counted from the first reading to the last (None for a counter
    reset meanwhile); ``sampling``: what the readings cost — each is one query and one
    transaction on the target (counted in ``xact_commit``), their round trips."""
    trips = sorted(r.round_trip_s * 1e3 for r in readings)
    total = deltas(readings[0], readings[-1])
    return {
        "source": source,
        "clock": placement.to_dict(),
        "intervals": server_intervals(readings, placement, start_time, interval_s),
        "totals": {**total, "hit_ratio": hit_ratio(total["blks_hit"], total["blks_read"])},
        "sampling": {
            "readings": len(readings),
            "failed_readings": failed_readings,
            "transactions": len(readings),
            "round_trip_ms": {
                "p50": round(percentile(trips, 50), 3),
                "max": round(trips[-1], 3),
                "total": round(sum(trips), 3),
            },
        },
    }


def csv_columns(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """A ``server.intervals`` row as intervals.csv's ``SERVER_COLUMNS``."""
    waits = {w: 0 for w in WAIT_COLUMNS}
    for kind, n in (row.get("waits") or {}).items():
        waits[wait_column(kind)] += n
    cells = [row.get(k) for k in (*COUNTERS, "hit_ratio", "locks_waiting")]
    return (*("" if v is None else v for v in cells), *(waits[w] for w in WAIT_COLUMNS))


def statement_columns(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """A ``server.statement_intervals`` row as intervals.csv's ``STATEMENT_COLUMNS``."""
    return (
        row["records"],
        row["server_ms"]["p50"],
        row["server_ms"]["p99"],
        row["execution_ms"]["p50"],
        row["queued_overload_ms"]["p99"],
        row["transaction_blocked_ms"]["p99"],
    )


def csv_layouts(server: Mapping[str, Any]) -> list[tuple[tuple[str, ...], dict[float, tuple[Any, ...]]]]:
    """What the ``server`` block adds to intervals.csv: for each kind of server intervals it holds,
    its columns and, by ``t_s``, each interval's cells."""
    layouts = []
    for key, columns, cells in (
        ("intervals", SERVER_COLUMNS, csv_columns),
        ("statement_intervals", STATEMENT_COLUMNS, statement_columns),
    ):
        rows = server.get(key)
        if rows:
            layouts.append((columns, {r["t_s"]: cells(r) for r in rows}))
    return layouts
