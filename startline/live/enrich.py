"""``startline enrich RUN_DIR``: what Snowflake itself recorded of a finished run, read from its
ACCOUNT_USAGE views (which arrive late: run it again later and it fills in what was missing) into
the summary's ``server`` block and ``cost``, OUT/query_history.json and the report — never
touching what the run measured. The same run directory and views give the same bytes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from startline.engine import thresholds
from startline.engine.files import write_json, write_summary
from startline.engine.scenario import ConfigError, Scenario
from startline.engine.verdict import verdict
from startline.urls import Url

WINDOW_MARGIN_S = 600.0
"""The views are read this far around the run (clocks apart, statements before the start)."""

LATENCY = {
    "QUERY_HISTORY": "up to 45 minutes",
    "QUERY_ATTRIBUTION_HISTORY": "up to 8 hours",
    "AGGREGATE_QUERY_HISTORY": "up to 3 hours",
    "WAREHOUSE_LOAD_HISTORY": "up to 3 hours",
    "WAREHOUSE_METERING_HISTORY": "up to 3 hours (its cloud-services credits, part of CREDITS_USED: up to 6)",
}
"""How late each ACCOUNT_USAGE view may be (Snowflake's documentation: the Account Usage page's
table of views)."""

PRIVILEGE = (
    "the role needs IMPORTED PRIVILEGES on database SNOWFLAKE (or its database roles GOVERNANCE_VIEWER "
    "for the query histories, USAGE_VIEWER for the warehouse views)"
)
RUN_END_KEYS = ("by_phase", "not_attributed", "statement_intervals")
"""What the run's own reading of the query history (at its end) put in ``server``: kept while
ACCOUNT_USAGE.QUERY_HISTORY holds none of the run's statements yet."""


class EnrichError(Exception):
    """A view the role cannot read, or a target enrich cannot read from: one line, naming it."""


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(sep=" ", timespec="milliseconds")


def _epoch_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r | {"START_S": r["START_TIME"].timestamp(), "END_S": r["END_TIME"].timestamp()} for r in rows]


def judged_later(summary: dict[str, Any], scenario: Scenario) -> dict[str, Any]:
    """The summary with its thresholds on what only enrich knows (``thresholds.LATER``: the cost)
    judged once that is known — moved from ``thresholds_pending`` to ``thresholds``, the verdict
    judged again from every check and threshold — and left pending while it is not."""
    later = [t for t in scenario.threshold_list if t.metric in thresholds.LATER]
    if not later or (summary.get("cost") or {}).get("per_1k_ops") is None:
        return summary
    measured = thresholds.Measured({}, {}, {}, {}, cost=summary["cost"])
    results = [r.to_dict() for r in thresholds.evaluate(later, measured)]
    keys = {(t.key, t.expression) for t in later}
    kept = [t for t in summary.get("thresholds") or () if (t["metric"], t["threshold"]) not in keys]
    out = {k: v for k, v in summary.items() if k != "thresholds_pending"} | {"thresholds": [*kept, *results]}
    every = [c["ok"] for c in out.get("checks") or ()] + [t["ok"] for t in out["thresholds"]]
    out["verdict"] = verdict(out["status"], [_Judged(ok) for ok in every])
    return out


@attrs.frozen
class _Judged:
    ok: bool


async def enrich(out: Path, summary: dict[str, Any], target: Url, say: Callable[[str], None]) -> dict[str, Any]:
    """The summary with Snowflake's own figures (written, with OUT/query_history.json)."""
    from startline.backends.snowflake.conn import ConnectionFailed, SnowflakeExecutor, SnowflakeSettings, safe_message
    from startline.backends.snowflake.history import (
        AGGREGATE_SQL,
        ATTRIBUTION_SQL,
        FUNCTION,
        LOAD_SQL,
        METERING_SQL,
        QUERY_HISTORY_SQL,
        aggregate_of,
        aggregated_block,
        attributed_block,
        cost_block,
        credits_in,
        history_block,
        load_series,
        record_of,
    )
    from startline.backends.sqlcontrol import fetch

    scenario = Scenario.from_dict(dict(summary["config"]["scenario"]))
    run_id, start = summary["run_id"], summary.get("start_time")
    if start is None:
        raise ConfigError("RUN_DIR", "the run never started: Snowflake has nothing of it to tell")
    end = summary.get("stopped_at") or start + scenario.warmup_s + scenario.measurement_s + scenario.cooldown_s
    lo, hi = _iso(start - WINDOW_MARGIN_S), _iso(end + scenario.drain_timeout_s + WINDOW_MARGIN_S)
    settings = SnowflakeSettings.from_url(target, default_schema="PUBLIC", in_context=True)
    ex = SnowflakeExecutor(settings)
    before = summary.get("server") or {}
    clock = before.get("clock")  # (Snowflake's clock on the run's, as the run measured it at its end)
    offset_s = clock["offset_ms"] / 1000 if clock else 0.0

    async def read(view: str, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        try:
            return await ex.run(lambda c: fetch(c, sql, params))
        except ConnectionFailed as exc:
            raise EnrichError(str(exc)) from None
        except Exception as exc:
            raise EnrichError(
                f"SNOWFLAKE.ACCOUNT_USAGE.{view} could not be read ({safe_message(exc)}): {PRIVILEGE}"
            ) from None

    try:
        records = [
            record_of(r) for r in await read("QUERY_HISTORY", QUERY_HISTORY_SQL, (f'%"run_id": "{run_id}"%', lo, hi))
        ]
        history = history_block(
            records,
            run_id,
            scenario.operations,
            summary.get("phases") or {},
            start,
            scenario.snapshot_interval_s,
            offset_s,
        )
        aggregates = [
            aggregate_of(r)
            for r in await read("AGGREGATE_QUERY_HISTORY", AGGREGATE_SQL, (f'%"run_id": "{run_id}"%', lo, hi))
        ]
        aggregated = aggregated_block(aggregates, run_id, scenario.operations, summary.get("phases") or {})
        warehouses = set(history["warehouses"]) | set(aggregated.pop("warehouses"))
        load = _epoch_rows(await read("WAREHOUSE_LOAD_HISTORY", LOAD_SQL, (lo, hi)))
        metering = _epoch_rows(await read("WAREHOUSE_METERING_HISTORY", METERING_SQL, (lo, hi)))
        unread = None
        try:  # (optional: an account without it, or a role without USAGE_VIEWER, still gets the rest)
            attribution = await read("QUERY_ATTRIBUTION_HISTORY", ATTRIBUTION_SQL, (f'%"run_id": "{run_id}"%', lo, hi))
        except EnrichError as exc:
            attribution, unread = [], str(exc)
    finally:
        await ex.close()
    load = [r for r in load if r["WAREHOUSE_NAME"] in warehouses]
    metering = [r for r in metering if r["WAREHOUSE_NAME"] in warehouses]
    metered_to = max((r["END_S"] for r in metering), default=None)
    pending = []
    if warehouses and (metered_to is None or metered_to < end):
        pending.append("WAREHOUSE_METERING_HISTORY does not reach the run's end yet: its credits are not counted")
    if not records and not aggregates:
        pending.append("neither QUERY_HISTORY nor AGGREGATE_QUERY_HISTORY holds any of the run's statements yet")
    statements_from = "ACCOUNT_USAGE.QUERY_HISTORY"
    if not records and before.get("statements_from", before.get("source")) == FUNCTION:
        history |= {k: before[k] for k in RUN_END_KEYS if k in before}  # what the run read at its end, kept
        warehouses |= set(before.get("warehouses") or ())
        statements_from = FUNCTION
    if records and not attribution and unread is None:
        pending.append("QUERY_ATTRIBUTION_HISTORY holds none of the run's statements yet: no per-statement credits")
    ops = sum(p.get("ops", 0) + p.get("errors", 0) for p in (summary.get("phases") or {}).values())
    server = {
        "source": "SNOWFLAKE.ACCOUNT_USAGE",
        "statements_from": statements_from,
        "views_latency": LATENCY,
        "pending": pending,
        **({"clock": clock} if clock else {}),
        **history,
        "warehouses": sorted(warehouses),
        "aggregated": aggregated,
        "warehouse_load": load_series(load, start, offset_s),
    }
    enriched = {**summary, "server": server}
    if warehouses and metered_to is not None and metered_to - offset_s >= end:
        cost = scenario.cost
        enriched["cost"] = cost_block(
            credits_in(metering, start + offset_s, end + offset_s), cost.per_credit, cost.currency, ops
        )
        if attribution:
            enriched["cost"]["attributed"] = attributed_block(
                attribution, records, run_id, scenario.operations, cost.per_credit, ops
            )
    if unread is not None:
        server["unread"] = {"QUERY_ATTRIBUTION_HISTORY": unread}
    enriched = judged_later(enriched, scenario)
    write_json(out / "query_history.json", server)
    write_summary(out, enriched)
    if unread is not None:
        say(f"per-statement credits not read: {unread}")
    for line in pending:
        say(f"not yet available: {line} (the views arrive late: run `startline enrich` again later)")
    return enriched
