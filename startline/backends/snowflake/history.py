"""What Snowflake itself recorded of a run (``startline enrich``): the run's statements found in
``SNOWFLAKE.ACCOUNT_USAGE.QUERY_HISTORY`` by the ``QUERY_TAG`` every session sets
(``{"phase", "run_id", "worker_id"}``), each matched to the operation kind that sent it, and
server-side timings per kind and phase beside the client's; the warehouse's load
(``WAREHOUSE_LOAD_HISTORY``) on the run's timeline; its credits (``WAREHOUSE_METERING_HISTORY``)
and, with a price per credit, the cost per thousand operations.

Matching is counted, never guessed: a statement is attributed to a kind only when its text is
one of that kind's statements (its ``:name`` parameters bound by the server as ``?``, or written
as literals); a statement of the run that matches no kind is *unmatched*, one that matches
several *ambiguous*, the sessions' own statements (``ALTER SESSION``, ``BEGIN``, ``COMMIT``,
``ROLLBACK``) *session* statements — each counted, none attributed. The pure parts (``Record``,
``patterns``, ``attribute``, ``history_block``, ``load_series``, ``credits_in``) take rows as
the views hold them; the SQL is below them."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import trio

from startline.backends.snowflake.conn import SnowflakeExecutor, SnowflakeSettings, connection_kwargs, identifier
from startline.backends.sqlcontrol import fetch
from startline.backends.sqlparams import positional
from startline.engine.ports import HistoryRequest
from startline.engine.scenario import OperationSpec
from startline.engine.schedule import percentile
from startline.engine.serverstats import ServerReading, place

TIMINGS = (
    ("server_ms", "TOTAL_ELAPSED_TIME"),
    ("execution_ms", "EXECUTION_TIME"),
    ("compilation_ms", "COMPILATION_TIME"),
    ("queued_provisioning_ms", "QUEUED_PROVISIONING_TIME"),
    ("queued_overload_ms", "QUEUED_OVERLOAD_TIME"),
    ("transaction_blocked_ms", "TRANSACTION_BLOCKED_TIME"),
)
"""The summary's name of each server-side timing (milliseconds) and the view's column."""

SESSION_STATEMENT = re.compile(r"^\s*(ALTER\s+SESSION|BEGIN|START\s+TRANSACTION|COMMIT|ROLLBACK)\b", re.I)
LITERAL = r"(?:\?|'(?:[^']|'')*'|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|NULL|TRUE|FALSE)"
"""What a bound parameter looks like in a statement's text: the server's ``?``, or a literal."""


@attrs.frozen
class Record:
    """One row of QUERY_HISTORY, as enrich reads it."""

    query_text: str
    query_tag: str | None
    start_s: float
    """START_TIME, epoch seconds."""
    warehouse: str | None
    status: str
    timings: Mapping[str, int]
    """``TIMINGS``' summary names → milliseconds (a missing value as 0)."""
    bytes_scanned: int = 0
    query_id: str = ""


def patterns(operations: Sequence[OperationSpec]) -> list[tuple[str, re.Pattern[str]]]:
    """Each SQL statement an operation sends, as (kind, pattern of its text): the statement with
    each ``:name`` as ``?`` or a literal, whitespace free to differ, case of keywords kept."""
    out = []
    for op in operations:
        statements = [op.sql] if op.sql is not None else [step.sql for step in op.transaction or ()]
        for sql in statements:
            text, _names = positional(sql)
            parts = [r"\s+".join(re.escape(token) for token in part.split()) for part in text.split("?")]
            out.append((op.name, re.compile(r"\s*" + rf"\s*{LITERAL}\s*".join(parts) + r"\s*;?\s*", re.S)))
    return out


def statements_per_operation(operations: Sequence[OperationSpec]) -> dict[str, int]:
    """How many statements one operation of each kind sends (a ``call`` operation: unknown, 0)."""
    return {op.name: 1 if op.sql is not None else len(op.transaction or ()) for op in operations}


def tag_of(record: Record | Aggregate) -> dict[str, str] | None:
    """The session's QUERY_TAG as startline sets it (None: another tag, or none)."""
    try:
        tag = json.loads(record.query_tag or "")
    except ValueError:
        return None
    return tag if isinstance(tag, dict) and {"run_id", "phase"} <= set(tag) else None


@attrs.frozen
class Aggregate:
    """One row of AGGREGATE_QUERY_HISTORY (one statement's executions in a one-minute interval),
    as enrich reads it."""

    query_text: str
    """A sample of the statement's text."""
    query_tag: str | None
    start_s: float
    """INTERVAL_START_TIME, epoch seconds."""
    warehouse: str | None
    calls: int
    errors: int
    """Executions that failed (the ERRORS array's counts)."""
    timings: Mapping[str, Mapping[str, float]]
    """``TIMINGS``' summary names → the view's statistics object (sum, avg, min, median, p90,
    p99, p99.9, max over the interval's executions)."""


def attribute(
    record: Record | Aggregate, run_id: str, kinds: Sequence[tuple[str, re.Pattern[str]]]
) -> tuple[str, str] | str | None:
    """(phase, kind) of one of the run's statements; ``"session"``, ``"unmatched"`` or
    ``"ambiguous"`` when it is the run's but no one kind's; None when it is not the run's."""
    tag = tag_of(record)
    if tag is None or tag.get("run_id") != run_id:
        return None
    if SESSION_STATEMENT.match(record.query_text):
        return "session"
    found = {kind for kind, pattern in kinds if pattern.fullmatch(record.query_text)}
    if len(found) == 1:
        return (str(tag["phase"]), found.pop())
    return "ambiguous" if found else "unmatched"


def distribution(values: list[int]) -> dict[str, float]:
    """p50, p95, p99, max and mean (nearest rank), in ms."""
    values.sort()
    return {
        "p50": float(percentile(values, 50)),
        "p95": float(percentile(values, 95)),
        "p99": float(percentile(values, 99)),
        "max": float(values[-1]),
        "mean": round(sum(values) / len(values), 3),
    }


def timings(found: Sequence[Record]) -> dict[str, dict[str, float]]:
    """Each of ``TIMINGS``' distribution over ``found`` (not empty)."""
    return {name: distribution([r.timings.get(name, 0) for r in found]) for name, _column in TIMINGS}


def statement_intervals(
    found: Iterable[Record], start_time: float, interval_s: float, offset_s: float = 0.0
) -> list[dict[str, Any]]:
    """The run's attributed statements by the snapshot interval each began in (``t_s`` from
    START_TIME, as the time series counts them; Snowflake's clock ``offset_s`` ahead of the
    run's): how many, and their timings."""
    by_t: dict[float, list[Record]] = defaultdict(list)
    for r in found:
        by_t[round((r.start_s - offset_s - start_time) // interval_s * interval_s, 6)].append(r)
    return [{"t_s": t, "records": len(rs), **timings(rs)} for t, rs in sorted(by_t.items())]


def _attributed(
    rows: Iterable[Any], run_id: str, operations: Sequence[OperationSpec], weight: Callable[[Any], int]
) -> tuple[dict[tuple[str, str], list[Any]], dict[str, int], set[str]]:
    """The run's rows by (phase, kind), the weight (statements) of those no one kind's by reason,
    and the warehouses the run's rows ran on."""
    kinds = patterns(operations)
    grouped: dict[tuple[str, str], list[Any]] = defaultdict(list)
    left = {"session": 0, "unmatched": 0, "ambiguous": 0}
    warehouses: set[str] = set()
    for row in rows:
        where = attribute(row, run_id, kinds)
        if where is None:
            continue
        if row.warehouse:
            warehouses.add(row.warehouse)
        if isinstance(where, str):
            left[where] += weight(row)
        else:
            grouped[where].append(row)
    return grouped, left, warehouses


def _client(
    phases: Mapping[str, Any], phase: str, kind: str, per_op: Mapping[str, int]
) -> tuple[Mapping[str, Any], int]:
    """The client's figures of a kind in a phase, and the statements it sent (operations, failed
    ones too, × ``per_op``: the statements an operation of each kind sends)."""
    client = ((phases.get(phase) or {}).get("by_kind") or {}).get(kind) or {}
    return client, (client.get("ops", 0) + client.get("errors", 0)) * per_op.get(kind, 0)


def history_block(
    records: Iterable[Record],
    run_id: str,
    operations: Sequence[OperationSpec],
    phases: Mapping[str, Any],
    start_time: float | None = None,
    interval_s: float = 1.0,
    offset_s: float = 0.0,
) -> dict[str, Any]:
    """Per phase and kind: the server's records, the share of the client's statements they
    cover (client operations × statements an operation sends), each timing's distribution, bytes
    scanned, statements that failed; the client's latency beside them; the run's statements
    not attributed, by reason; and (given the run's ``start_time``) the attributed statements per
    snapshot interval, Snowflake's clock taken ``offset_s`` ahead of the run's. ``phases``: the
    summary's ``phases`` (the client's counts)."""
    grouped, left, warehouses = _attributed(records, run_id, operations, lambda _r: 1)
    per_op = statements_per_operation(operations)
    by_phase: dict[str, dict[str, Any]] = {}
    for (phase, kind), found in sorted(grouped.items()):
        client, sent = _client(phases, phase, kind, per_op)
        row: dict[str, Any] = {
            "records": len(found),
            "client_statements": sent,
            "matched_share": round(len(found) / sent, 4) if sent else None,
            "failed": sum(r.status.upper() != "SUCCESS" for r in found),
            "bytes_scanned": sum(r.bytes_scanned for r in found),
        }
        row.update(timings(found))
        lat = client.get("latency_ms") or {}
        row["latency_ms"] = {p: lat[p] for p in ("p50", "p95", "p99", "max") if p in lat}
        by_phase.setdefault(phase, {})[kind] = row
    block: dict[str, Any] = {"by_phase": by_phase, "not_attributed": left, "warehouses": sorted(warehouses)}
    if start_time is not None:
        block["statement_intervals"] = statement_intervals(
            [r for rs in grouped.values() for r in rs], start_time, interval_s, offset_s
        )
    return block


def aggregated_block(
    aggregates: Iterable[Aggregate], run_id: str, operations: Sequence[OperationSpec], phases: Mapping[str, Any]
) -> dict[str, Any]:
    """AGGREGATE_QUERY_HISTORY's side (every statement Snowflake ran is there — hybrid tables'
    short ones often only there — in one-minute rows): per phase and kind, the executions
    (``calls``) and the share of the client's statements they cover, those that failed, and of each
    timing what one-minute statistics add up to exactly — the mean (sums over calls) and the
    maximum — and the largest one-minute p99 (not a p99 of the run: the view keeps no more).
    The run's rows that are no one kind's are counted by reason, in calls."""
    grouped, left, warehouses = _attributed(aggregates, run_id, operations, lambda r: r.calls)
    per_op = statements_per_operation(operations)
    by_phase: dict[str, dict[str, Any]] = {}
    for (phase, kind), rows in sorted(grouped.items()):
        _client_figures, sent = _client(phases, phase, kind, per_op)
        calls = sum(r.calls for r in rows)
        out: dict[str, Any] = {
            "calls": calls,
            "intervals": len(rows),
            "client_statements": sent,
            "matched_share": round(calls / sent, 4) if sent else None,
            "failed": sum(r.errors for r in rows),
        }
        for name, _column in TIMINGS:
            stats = [r.timings.get(name) or {} for r in rows]
            total = sum(float(x.get("sum", 0.0)) for x in stats)
            out[name] = {
                "mean": round(total / calls, 3) if calls else None,
                "max": max((float(x.get("max", 0.0)) for x in stats), default=None),
                "p99_max": max((float(x.get("p99", 0.0)) for x in stats), default=None),
            }
        by_phase.setdefault(phase, {})[kind] = out
    return {"by_phase": by_phase, "not_attributed": left, "warehouses": sorted(warehouses)}


def load_series(rows: Iterable[Mapping[str, Any]], start_time: float, offset_s: float = 0.0) -> list[dict[str, Any]]:
    """WAREHOUSE_LOAD_HISTORY rows (``START_S``/``END_S`` epoch seconds on Snowflake's clock,
    ``offset_s`` ahead of the run's) on the run's timeline: seconds from START_TIME, and the
    average queries running, queued (load, provisioning) and blocked in each."""
    out = [
        {
            "warehouse": r["WAREHOUSE_NAME"],
            "from_s": round(r["START_S"] - offset_s - start_time, 3),
            "to_s": round(r["END_S"] - offset_s - start_time, 3),
            "avg_running": float(r["AVG_RUNNING"] or 0),
            "avg_queued_load": float(r["AVG_QUEUED_LOAD"] or 0),
            "avg_queued_provisioning": float(r["AVG_QUEUED_PROVISIONING"] or 0),
            "avg_blocked": float(r["AVG_BLOCKED"] or 0),
        }
        for r in rows
    ]
    return sorted(out, key=lambda r: (r["from_s"], r["warehouse"]))


def credits_in(rows: Iterable[Mapping[str, Any]], start: float, end: float) -> float:
    """The warehouses' credits (WAREHOUSE_METERING_HISTORY's hourly ``CREDITS_USED``) in the run's
    window [start, end], each hour's credits in proportion to its overlap with the window —
    the warehouse's whole use then, the run's and anyone else's."""
    total = 0.0
    for r in rows:
        lo, hi = r["START_S"], r["END_S"]
        overlap = max(0.0, min(hi, end) - max(lo, start))
        if hi > lo and overlap > 0:
            total += float(r["CREDITS_USED"] or 0) * overlap / (hi - lo)
    return round(total, 6)


def _priced(credits: float, per_credit: float | None, operations: int) -> tuple[float | None, float | None]:
    amount = None if per_credit is None else round(credits * per_credit, 6)
    return amount, None if amount is None or not operations else round(amount * 1000 / operations, 6)


def cost_block(credits: float, per_credit: float | None, currency: str, operations: int) -> dict[str, Any]:
    """``cost``: the credits, their price (``[cost] per_credit``), and per thousand operations."""
    amount, per_1k = _priced(credits, per_credit, operations)
    return {
        "credits": credits,
        "currency": currency,
        "currency_amount": amount,
        "per_1k_ops": per_1k,
        "basis": "WAREHOUSE_METERING_HISTORY, each hour's credits in proportion to its overlap with the run",
    }


def attributed_block(
    rows: Iterable[Mapping[str, Any]],
    records: Iterable[Record],
    run_id: str,
    operations: Sequence[OperationSpec],
    per_credit: float | None,
    ops: int,
) -> dict[str, Any]:
    """``cost.attributed``: the compute credits QUERY_ATTRIBUTION_HISTORY attributes to the run's
    statements (``QUERY_TAG``, ``QUERY_ID``, ``CREDITS_ATTRIBUTED_COMPUTE``,
    ``CREDITS_USED_QUERY_ACCELERATION`` rows), per phase and kind through the QUERY_HISTORY record
    of the same QUERY_ID (``records``; a statement without one counts under its phase as
    ``unknown``), priced. Not the warehouse's bill: idle time is in no query's credits, and
    statements of about 100 ms or less are in none."""
    kinds = patterns(operations)
    kind_of = {r.query_id: attribute(r, run_id, kinds) for r in records if r.query_id}
    by_phase: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    total, queries = 0.0, 0
    for row in rows:
        tag = tag_of(Record("", row["QUERY_TAG"], 0.0, None, "", {}))
        if tag is None or tag.get("run_id") != run_id:
            continue
        credits = float(row["CREDITS_ATTRIBUTED_COMPUTE"] or 0) + float(row["CREDITS_USED_QUERY_ACCELERATION"] or 0)
        where = kind_of.get(row["QUERY_ID"])
        kind = where[1] if isinstance(where, tuple) else (where or "unknown")
        by_phase[str(tag["phase"])][kind] += credits
        total += credits
        queries += 1
    amount, per_1k = _priced(round(total, 9), per_credit, ops)
    return {
        "credits": round(total, 9),
        "queries": queries,
        "currency_amount": amount,
        "per_1k_ops": per_1k,
        "by_phase": {p: {k: round(c, 9) for k, c in sorted(ks.items())} for p, ks in sorted(by_phase.items())},
        "basis": "QUERY_ATTRIBUTION_HISTORY: compute credits of the run's statements; no idle time, "
        "no statement of about 100 ms or less",
    }


# ---- the SQL (ACCOUNT_USAGE views; the role needs IMPORTED PRIVILEGES on database SNOWFLAKE) ----

ACCOUNT_USAGE = "SNOWFLAKE.ACCOUNT_USAGE"

QUERY_HISTORY_SQL = (
    "SELECT QUERY_ID, QUERY_TEXT, QUERY_TAG, START_TIME, WAREHOUSE_NAME, EXECUTION_STATUS, BYTES_SCANNED, "
    + ", ".join(column for _name, column in TIMINGS)
    + f" FROM {ACCOUNT_USAGE}.QUERY_HISTORY WHERE QUERY_TAG LIKE ? AND START_TIME >= ? AND START_TIME <= ?"
)
AGGREGATE_SQL = (
    "SELECT QUERY_TEXT, QUERY_TAG, INTERVAL_START_TIME, WAREHOUSE_NAME, CALLS, ERRORS, "
    + ", ".join(column for _name, column in TIMINGS)
    + f" FROM {ACCOUNT_USAGE}.AGGREGATE_QUERY_HISTORY"
    " WHERE QUERY_TAG LIKE ? AND INTERVAL_START_TIME >= ? AND INTERVAL_START_TIME <= ?"
)
LOAD_SQL = (
    "SELECT START_TIME, END_TIME, WAREHOUSE_NAME, AVG_RUNNING, AVG_QUEUED_LOAD, AVG_QUEUED_PROVISIONING, "
    f"AVG_BLOCKED FROM {ACCOUNT_USAGE}.WAREHOUSE_LOAD_HISTORY WHERE END_TIME >= ? AND START_TIME <= ?"
)
ATTRIBUTION_SQL = (
    "SELECT QUERY_ID, QUERY_TAG, CREDITS_ATTRIBUTED_COMPUTE, CREDITS_USED_QUERY_ACCELERATION "
    f"FROM {ACCOUNT_USAGE}.QUERY_ATTRIBUTION_HISTORY WHERE QUERY_TAG LIKE ? AND START_TIME >= ? AND START_TIME <= ?"
)
METERING_SQL = (
    f"SELECT START_TIME, END_TIME, WAREHOUSE_NAME, CREDITS_USED FROM {ACCOUNT_USAGE}.WAREHOUSE_METERING_HISTORY "
    "WHERE END_TIME >= ? AND START_TIME <= ?"
)


def record_of(row: Mapping[str, Any]) -> Record:
    """A QUERY_HISTORY row (``fetch``'s upper-case keys, START_TIME a datetime) as a ``Record``."""
    return Record(
        query_text=row["QUERY_TEXT"] or "",
        query_tag=row["QUERY_TAG"],
        start_s=row["START_TIME"].timestamp(),
        warehouse=row["WAREHOUSE_NAME"],
        status=row["EXECUTION_STATUS"] or "",
        timings={name: int(row[column] or 0) for name, column in TIMINGS},
        bytes_scanned=int(row["BYTES_SCANNED"] or 0),
        query_id=row.get("QUERY_ID") or "",
    )


def _json(value: Any) -> Any:
    """A VARIANT, OBJECT or ARRAY value as the connector hands it over (JSON text) or parsed."""
    return json.loads(value) if isinstance(value, str) else value


def aggregate_of(row: Mapping[str, Any]) -> Aggregate:
    """An AGGREGATE_QUERY_HISTORY row (``fetch``'s keys) as an ``Aggregate``."""
    errors = _json(row["ERRORS"]) or []
    return Aggregate(
        query_text=row["QUERY_TEXT"] or "",
        query_tag=row["QUERY_TAG"],
        start_s=row["INTERVAL_START_TIME"].timestamp(),
        warehouse=row["WAREHOUSE_NAME"],
        calls=int(row["CALLS"] or 0),
        errors=sum(int(e.get("count", 0)) for e in errors if isinstance(e, Mapping)),
        timings={name: _json(row[column]) or {} for name, column in TIMINGS},
    )


# ---- right after the run: INFORMATION_SCHEMA's table function (no latency; the last 7 days) ----

FUNCTION = "INFORMATION_SCHEMA.QUERY_HISTORY_BY_WAREHOUSE"
RESULT_LIMIT = 10_000
"""The most rows one call of a QUERY_HISTORY table function returns (its documented maximum):
those that ended last. The function's limit applies before any WHERE, so the run's statements
are read window by window, each ending where the last one's earliest row ended."""
MAX_PAGES = 100
"""Windows read at most (a million statements); a longer history is said to be incomplete."""


def snowflake_timestamp(epoch: float) -> str:
    """An instant as TO_TIMESTAMP_LTZ reads it (``2017-12-04 12:00:00.000 +0000``)."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " +0000"


def function_sql(database: str, warehouse: str, lo: float, hi: float | None, limit: int = RESULT_LIMIT) -> str:
    """One window of the warehouse's statements that ended in [``lo``, ``hi``] (epoch seconds on
    Snowflake's clock; ``hi`` None: up to now, finished statements only). ``database`` and
    ``warehouse`` are validated identifiers (``conn.identifier``)."""
    end = "CURRENT_TIMESTAMP()" if hi is None else f"TO_TIMESTAMP_LTZ('{snowflake_timestamp(hi)}')"
    return (
        "SELECT QUERY_ID, QUERY_TEXT, QUERY_TAG, START_TIME, END_TIME, WAREHOUSE_NAME, EXECUTION_STATUS, "
        "BYTES_SCANNED, "
        + ", ".join(column for _name, column in TIMINGS)
        + f" FROM TABLE({database}.{FUNCTION}(WAREHOUSE_NAME => '{warehouse}', "
        f"END_TIME_RANGE_START => TO_TIMESTAMP_LTZ('{snowflake_timestamp(lo)}'), END_TIME_RANGE_END => {end}, "
        f"RESULT_LIMIT => {limit}))"
    )


async def read_windows(
    fetch_window: Callable[[float | None], Awaitable[list[Mapping[str, Any]]]],
    limit: int = RESULT_LIMIT,
    max_pages: int = MAX_PAGES,
) -> tuple[list[Mapping[str, Any]], dict[str, Any]]:
    """Every row of a QUERY_HISTORY table function over a window, ``limit`` at a time:
    ``fetch_window(hi)`` reads the rows that ended by ``hi`` (None: now), the last ``limit`` of
    them; the next window ends 1 ms after the earliest row read (inclusive ends overlap; rows seen
    twice are kept once, by QUERY_ID). Incomplete when ``max_pages`` windows were read, or
    ``limit`` statements ended within one millisecond (said, never guessed)."""
    seen: dict[str, Mapping[str, Any]] = {}
    hi: float | None = None
    pages, complete = 0, False
    while pages < max_pages:
        rows = await fetch_window(hi)
        pages += 1
        for row in rows:
            seen.setdefault(row["QUERY_ID"], row)
        if len(rows) < limit:
            complete = True
            break
        earliest = min(row["END_TIME"].timestamp() for row in rows) + 0.001
        if hi is not None and earliest >= hi:
            break
        hi = earliest
    return list(seen.values()), {"windows": pages, "rows": len(seen), "complete": complete}


CLOCK_SQL = "SELECT DATE_PART(EPOCH_MICROSECOND, CURRENT_TIMESTAMP()) / 1000000.0 AS NOW"
CLOCK_READINGS = 5
"""Round trips asking Snowflake's time: the shortest places its clock on the run's (NTP's way)."""
WINDOW_MARGIN_S = 60.0
"""The run's statements are looked for from this long before START_TIME (clocks apart)."""


async def recent_history(settings: SnowflakeSettings, request: HistoryRequest) -> dict[str, Any] | None:
    """The summary's ``server`` block right after a run: Snowflake's clock placed on the run's,
    the warehouse's statements since just before the start read from ``FUNCTION`` (window by
    window), the run's attributed to their kinds (``history_block``). None when no warehouse is
    named (the URL's ``warehouse``, connections.toml's, or the session's current one)."""
    ex = SnowflakeExecutor(settings)
    try:
        readings = []
        for k in range(CLOCK_READINGS):
            sent = trio.current_time()
            (row,) = await ex.run(lambda c: fetch(c, CLOCK_SQL))
            readings.append(ServerReading(k, sent, trio.current_time(), float(row["NOW"]), {}))
        placement = place(readings, request.to_control, request.same_clock, request.clock_uncertainty_s)
        warehouse = settings.context.get("warehouse") or connection_kwargs(settings.connection_name).get("warehouse")
        if not warehouse:
            found = await ex.run(lambda c: fetch(c, "SELECT CURRENT_WAREHOUSE() AS W"))
            warehouse = found[0]["W"] if found else None
        if not warehouse:
            return None
        database = identifier(settings.database, "database")
        identifier(warehouse, "warehouse")  # (validated: it is written into the statement)
        lo = request.start_time + placement.offset_s - WINDOW_MARGIN_S

        async def window(hi: float | None) -> list[Mapping[str, Any]]:
            return await ex.run(lambda c: fetch(c, function_sql(database, warehouse, lo, hi)))

        rows, read = await read_windows(window)
    finally:
        await ex.close()
    mine = f'"run_id": "{request.run_id}"'
    records = [record_of(r) for r in rows if mine in (r["QUERY_TAG"] or "")]
    block = history_block(
        records,
        request.run_id,
        request.operations,
        request.phases,
        request.start_time,
        request.interval_s,
        placement.offset_s,
    )
    return {
        "source": FUNCTION,
        "clock": placement.to_dict(),
        "read": read,
        "pending": [
            "read right after the run: a statement Snowflake had not listed yet is missing from it; "
            "`startline enrich` reads ACCOUNT_USAGE (its statements, the warehouse's load, credits)"
        ],
        **block,
    }
