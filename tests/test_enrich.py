"""What Snowflake itself recorded of a run (issue 26, part 1): the run's statements matched to
their operation kinds (pure, property-tested), and `startline enrich` on the emulator. The
emulator keeps no query history, so the test makes SNOWFLAKE.ACCOUNT_USAGE's four views on it
as tables with the columns Snowflake documents —

- QUERY_HISTORY: https://docs.snowflake.com/en/sql-reference/account-usage/query_history
- AGGREGATE_QUERY_HISTORY: https://docs.snowflake.com/en/sql-reference/account-usage/aggregate_query_history
- WAREHOUSE_LOAD_HISTORY: https://docs.snowflake.com/en/sql-reference/account-usage/warehouse_load_history
- WAREHOUSE_METERING_HISTORY: https://docs.snowflake.com/en/sql-reference/account-usage/warehouse_metering_history

- QUERY_ATTRIBUTION_HISTORY: https://docs.snowflake.com/en/sql-reference/account-usage/query_attribution_history

(QUERY_HISTORY's columns as its page listed them before 2024; later additions are not read) —
and fills them with the records Snowflake would have kept of the run: one per statement the
client counted, with known timings, beside another run's, the sessions' own statements and a
statement of the run that is no operation's. The run's own reading at its end goes to
INFORMATION_SCHEMA.QUERY_HISTORY_BY_WAREHOUSE, which the emulator serves as
``tests/snowflake_emulator.py`` says (its rows from a table with the function's documented output
columns: https://docs.snowflake.com/en/sql-reference/functions/query_history)."""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import time
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from startline.backends.snowflake.history import (
    Record,
    attribute,
    attributed_block,
    credits_in,
    history_block,
    patterns,
    read_windows,
)
from startline.engine.scenario import OperationSpec
from startline.testing import run_cli
from tests.test_report import browse, external_references

READ = OperationSpec("read", sql="SELECT ID, BALANCE FROM ACCOUNTS WHERE ID = :id")
MOVE = OperationSpec(
    "move",
    transaction=[
        {"sql": "UPDATE ACCOUNTS SET BALANCE = BALANCE - :amount WHERE ID = :id"},
        {"sql": "UPDATE ACCOUNTS SET BALANCE = BALANCE + :amount WHERE ID = :other"},
    ],
)
OPS = [READ, MOVE]
TEXTS = {
    "read": ["SELECT ID, BALANCE FROM ACCOUNTS WHERE ID = ?"],
    "move": [
        "UPDATE ACCOUNTS SET BALANCE = BALANCE - ? WHERE ID = ?",
        "UPDATE ACCOUNTS SET BALANCE = BALANCE + ? WHERE ID = ?",
    ],
}


def tag(run_id: str, phase: str = "MEASUREMENT", worker: str = "w000") -> str:
    return json.dumps({"phase": phase, "run_id": run_id, "worker_id": worker}, sort_keys=True)


def record(text: str, query_tag: str | None, ms: int = 5) -> Record:
    return Record(text, query_tag, 0.0, "WH", "SUCCESS", {"server_ms": ms, "execution_ms": ms - 1})


literal = st.one_of(
    st.just("?"),
    st.integers(-(10**6), 10**6).map(str),
    st.text("ab' ", max_size=6).map(lambda s: "'" + s.replace("'", "''") + "'"),
)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["read", "move"]),
            st.integers(0, 1),
            st.sampled_from(["WARMUP", "MEASUREMENT"]),
            st.sampled_from(["r1", "r2", None]),
            st.lists(literal, min_size=2, max_size=2),
        ),
        max_size=40,
    )
)
def test_every_statement_of_the_run_is_attributed_to_the_kind_that_sent_it_and_no_other_runs_is(statements):
    kinds = patterns(OPS)
    expected: dict[tuple[str, str], int] = {}
    records = []
    for kind, step, phase, run, values in statements:
        template = TEXTS[kind][step % len(TEXTS[kind])]
        text = template.replace("?", values[0], 1).replace("?", values[1], 1)
        records.append(record(text, tag(run, phase) if run else None))
        if run == "r1":
            assert attribute(records[-1], "r1", kinds) == (phase, kind)
            expected[(phase, kind)] = expected.get((phase, kind), 0) + 1
        else:
            assert attribute(records[-1], "r1", kinds) is None
    block = history_block(records, "r1", OPS, {})
    found = {(p, k): row["records"] for p, rows in block["by_phase"].items() for k, row in rows.items()}
    assert found == expected
    assert block["not_attributed"] == {"session": 0, "unmatched": 0, "ambiguous": 0}


def test_statements_that_are_no_one_kinds_are_counted_never_guessed():
    same = [READ, OperationSpec("read_again", sql="SELECT ID, BALANCE FROM ACCOUNTS WHERE ID = :k")]
    records = [
        record("ALTER SESSION SET QUERY_TAG = ?", tag("r1")),
        record("COMMIT", tag("r1")),
        record("SELECT 42", tag("r1")),
        record("SELECT ID, BALANCE FROM ACCOUNTS WHERE ID = 7", tag("r1")),  # both kinds' text
        record("SELECT ID, BALANCE FROM ACCOUNTS WHERE ID = 7 OR 1 = 1", tag("r1")),  # not a bound value
    ]
    block = history_block(records, "r1", same, {})
    assert block["not_attributed"] == {"session": 2, "unmatched": 2, "ambiguous": 1}
    assert block["by_phase"] == {}


def test_the_share_matched_counts_every_statement_an_operation_sends_and_the_clients_errors():
    phases = {"MEASUREMENT": {"by_kind": {"move": {"ops": 4, "errors": 1, "latency_ms": {"p50": 3.0, "p99": 9.0}}}}}
    records = [record(TEXTS["move"][k % 2].replace("?", "1"), tag("r1"), ms=k + 1) for k in range(8)]
    row = history_block(records, "r1", OPS, phases)["by_phase"]["MEASUREMENT"]["move"]
    assert (row["records"], row["client_statements"], row["matched_share"]) == (8, 10, 0.8)
    assert row["server_ms"]["p50"] == 4.0 and row["server_ms"]["max"] == 8.0 and row["latency_ms"]["p99"] == 9.0


def test_credits_are_each_hours_in_proportion_to_its_overlap_with_the_run():
    hours = [
        {"START_S": 0.0, "END_S": 3600.0, "CREDITS_USED": 2.0},
        {"START_S": 3600.0, "END_S": 7200.0, "CREDITS_USED": 1.0},
    ]
    assert credits_in(hours, 1800.0, 5400.0) == pytest.approx(1.0 + 0.5)
    assert credits_in(hours, 7200.0, 9000.0) == 0.0


def test_a_cost_threshold_is_pending_until_the_cost_is_known_then_judged_into_the_verdict():
    from startline.engine.scenario import Scenario
    from startline.live.enrich import judged_later

    scenario = Scenario.from_dict(
        {"operations": [{"name": "a", "sql": "SELECT 1"}], "thresholds": {"cost.per_1k_ops": ["value < 0.5"]}}
    )
    ran = {
        "status": "COMPLETED",
        "verdict": "passed",
        "checks": [{"name": "min_operations", "ok": True}],
        "thresholds": [],
        "thresholds_pending": [{"metric": "cost.per_1k_ops", "threshold": "value < 0.5"}],
    }
    assert judged_later(ran, scenario) == ran  # no cost yet: still pending, nothing judged
    assert judged_later(ran | {"cost": {"per_1k_ops": None}}, scenario) == ran | {"cost": {"per_1k_ops": None}}
    cheap = judged_later(ran | {"cost": {"per_1k_ops": 0.25}}, scenario)
    assert cheap["verdict"] == "passed" and cheap["thresholds"][0]["ok"] and "thresholds_pending" not in cheap
    dear = judged_later(ran | {"cost": {"per_1k_ops": 0.75}}, scenario)
    assert dear["verdict"] == "failed" and not dear["thresholds"][0]["ok"]
    assert (
        judged_later(dear | {"cost": {"per_1k_ops": 0.25}}, scenario)["verdict"] == "passed"
    )  # enrich again: judged anew


@given(
    st.lists(st.integers(0, 60), max_size=60),
    st.integers(2, 12),
    st.booleans(),
)
def test_the_table_function_read_window_by_window_returns_every_statement_once_or_says_it_is_incomplete(
    ends_ms, limit, inclusive
):
    """The function keeps the ``limit`` statements that ended last by the window's end (inclusive
    or not: the documentation does not say), before any WHERE."""
    rows = [
        {"QUERY_ID": f"q{i}", "END_TIME": dt.datetime.fromtimestamp(1e9 + ms / 1000, dt.UTC)}
        for i, ms in enumerate(ends_ms)
    ]

    async def window(hi: float | None) -> list[dict]:
        ended = [
            r
            for r in rows
            if hi is None or r["END_TIME"].timestamp() < hi or (inclusive and r["END_TIME"].timestamp() <= hi)
        ]
        return sorted(ended, key=lambda r: r["END_TIME"], reverse=True)[:limit]

    found, read = trio.run(read_windows, window, limit)
    ids = [r["QUERY_ID"] for r in found]
    assert len(ids) == len(set(ids)) == read["rows"]
    crowded = max((sum(t <= ms <= t + 1 for ms in ends_ms) for t in range(61)), default=0)
    if crowded < limit:
        assert read["complete"]
    if read["complete"]:
        assert sorted(ids) == sorted(r["QUERY_ID"] for r in rows)


def test_credits_attributed_to_the_runs_statements_by_phase_and_kind_through_their_query_ids():
    records = [
        Record(TEXTS["read"][0], tag("r1"), 0.0, "WH", "SUCCESS", {}, query_id="a"),
        Record(TEXTS["move"][1], tag("r1"), 0.0, "WH", "SUCCESS", {}, query_id="b"),
    ]
    rows = [
        {
            "QUERY_ID": "a",
            "QUERY_TAG": tag("r1"),
            "CREDITS_ATTRIBUTED_COMPUTE": 0.002,
            "CREDITS_USED_QUERY_ACCELERATION": None,
        },
        {
            "QUERY_ID": "b",
            "QUERY_TAG": tag("r1"),
            "CREDITS_ATTRIBUTED_COMPUTE": 0.001,
            "CREDITS_USED_QUERY_ACCELERATION": 0.001,
        },
        {
            "QUERY_ID": "c",
            "QUERY_TAG": tag("r1", "WARMUP"),
            "CREDITS_ATTRIBUTED_COMPUTE": 0.004,
            "CREDITS_USED_QUERY_ACCELERATION": None,
        },
        {
            "QUERY_ID": "d",
            "QUERY_TAG": tag("r2"),
            "CREDITS_ATTRIBUTED_COMPUTE": 9.0,
            "CREDITS_USED_QUERY_ACCELERATION": None,
        },
    ]
    block = attributed_block(rows, records, "r1", OPS, per_credit=2.0, ops=10)
    assert block["by_phase"] == {"MEASUREMENT": {"move": 0.002, "read": 0.002}, "WARMUP": {"unknown": 0.004}}
    assert (block["credits"], block["queries"]) == (0.008, 3)
    assert block["currency_amount"] == 0.016 and block["per_1k_ops"] == 1.6


# ---- enrich on the emulator ---------------------------------------------------------------------

QUERY_HISTORY_COLUMNS = """
QUERY_ID VARCHAR, QUERY_TEXT VARCHAR, DATABASE_ID NUMBER, DATABASE_NAME VARCHAR, SCHEMA_ID NUMBER,
SCHEMA_NAME VARCHAR, QUERY_TYPE VARCHAR, SESSION_ID NUMBER, USER_NAME VARCHAR, ROLE_NAME VARCHAR,
WAREHOUSE_ID NUMBER, WAREHOUSE_NAME VARCHAR, WAREHOUSE_SIZE VARCHAR, WAREHOUSE_TYPE VARCHAR,
CLUSTER_NUMBER NUMBER, QUERY_TAG VARCHAR, EXECUTION_STATUS VARCHAR, ERROR_CODE VARCHAR,
ERROR_MESSAGE VARCHAR, START_TIME TIMESTAMP_LTZ, END_TIME TIMESTAMP_LTZ, TOTAL_ELAPSED_TIME NUMBER,
BYTES_SCANNED NUMBER, PERCENTAGE_SCANNED_FROM_CACHE FLOAT, BYTES_WRITTEN NUMBER,
BYTES_WRITTEN_TO_RESULT NUMBER, BYTES_READ_FROM_RESULT NUMBER, ROWS_PRODUCED NUMBER,
ROWS_INSERTED NUMBER, ROWS_UPDATED NUMBER, ROWS_DELETED NUMBER, ROWS_UNLOADED NUMBER,
BYTES_DELETED NUMBER, PARTITIONS_SCANNED NUMBER, PARTITIONS_TOTAL NUMBER,
BYTES_SPILLED_TO_LOCAL_STORAGE NUMBER, BYTES_SPILLED_TO_REMOTE_STORAGE NUMBER,
BYTES_SENT_OVER_THE_NETWORK NUMBER, COMPILATION_TIME NUMBER, EXECUTION_TIME NUMBER,
QUEUED_PROVISIONING_TIME NUMBER, QUEUED_REPAIR_TIME NUMBER, QUEUED_OVERLOAD_TIME NUMBER,
TRANSACTION_BLOCKED_TIME NUMBER, OUTBOUND_DATA_TRANSFER_CLOUD VARCHAR,
OUTBOUND_DATA_TRANSFER_REGION VARCHAR, OUTBOUND_DATA_TRANSFER_BYTES NUMBER,
INBOUND_DATA_TRANSFER_CLOUD VARCHAR, INBOUND_DATA_TRANSFER_REGION VARCHAR,
INBOUND_DATA_TRANSFER_BYTES NUMBER, LIST_EXTERNAL_FILES_TIME NUMBER,
CREDITS_USED_CLOUD_SERVICES FLOAT, RELEASE_VERSION VARCHAR,
EXTERNAL_FUNCTION_TOTAL_INVOCATIONS NUMBER, EXTERNAL_FUNCTION_TOTAL_SENT_ROWS NUMBER,
EXTERNAL_FUNCTION_TOTAL_RECEIVED_ROWS NUMBER, EXTERNAL_FUNCTION_TOTAL_SENT_BYTES NUMBER,
EXTERNAL_FUNCTION_TOTAL_RECEIVED_BYTES NUMBER, QUERY_LOAD_PERCENT NUMBER,
IS_CLIENT_GENERATED_STATEMENT BOOLEAN
"""
AGGREGATE_COLUMNS = """
CALLS NUMBER, INTERVAL_START_TIME TIMESTAMP_LTZ, INTERVAL_END_TIME TIMESTAMP_LTZ,
QUERY_PARAMETERIZED_HASH TEXT, QUERY_TEXT TEXT, DATABASE_ID NUMBER, DATABASE_NAME TEXT, SCHEMA_ID NUMBER,
SCHEMA_NAME TEXT, QUERY_TYPE TEXT, SESSION_ID NUMBER, USER_NAME TEXT, ROLE_NAME TEXT, ROLE_TYPE TEXT,
WAREHOUSE_ID NUMBER, WAREHOUSE_NAME TEXT, WAREHOUSE_SIZE TEXT, WAREHOUSE_TYPE TEXT, QUERY_TAG TEXT,
IS_CLIENT_GENERATED_STATEMENT BOOLEAN, RELEASE_VERSION TEXT, ERRORS ARRAY, TOTAL_ELAPSED_TIME OBJECT,
BYTES_SCANNED OBJECT, PERCENTAGE_SCANNED_FROM_CACHE OBJECT, BYTES_WRITTEN OBJECT, BYTES_WRITTEN_TO_RESULT OBJECT,
BYTES_READ_FROM_RESULT OBJECT, ROWS_PRODUCED OBJECT, ROWS_INSERTED OBJECT, ROWS_UPDATED OBJECT,
ROWS_DELETED OBJECT, ROWS_UNLOADED OBJECT, BYTES_DELETED OBJECT, PARTITIONS_SCANNED OBJECT,
PARTITIONS_TOTAL OBJECT, BYTES_SPILLED_TO_LOCAL_STORAGE OBJECT, BYTES_SPILLED_TO_REMOTE_STORAGE OBJECT,
BYTES_SENT_OVER_THE_NETWORK OBJECT, COMPILATION_TIME OBJECT, EXECUTION_TIME OBJECT,
QUEUED_PROVISIONING_TIME OBJECT, QUEUED_REPAIR_TIME OBJECT, QUEUED_OVERLOAD_TIME OBJECT,
TRANSACTION_BLOCKED_TIME OBJECT, OUTBOUND_DATA_TRANSFER_CLOUD TEXT, OUTBOUND_DATA_TRANSFER_REGION TEXT,
OUTBOUND_DATA_TRANSFER_BYTES OBJECT, INBOUND_DATA_TRANSFER_CLOUD TEXT, INBOUND_DATA_TRANSFER_REGION TEXT,
INBOUND_DATA_TRANSFER_BYTES OBJECT, LIST_EXTERNAL_FILES_TIME OBJECT, CREDITS_USED_CLOUD_SERVICES OBJECT,
EXTERNAL_FUNCTION_TOTAL_INVOCATIONS OBJECT, EXTERNAL_FUNCTION_TOTAL_SENT_ROWS OBJECT,
EXTERNAL_FUNCTION_TOTAL_RECEIVED_ROWS OBJECT, EXTERNAL_FUNCTION_TOTAL_SENT_BYTES OBJECT,
EXTERNAL_FUNCTION_TOTAL_RECEIVED_BYTES OBJECT, QUERY_LOAD_PERCENT OBJECT,
QUERY_ACCELERATION_BYTES_SCANNED OBJECT, QUERY_ACCELERATION_PARTITIONS_SCANNED OBJECT,
QUERY_ACCELERATION_UPPER_LIMIT_SCALE_FACTOR OBJECT, CHILD_QUERIES_WAIT_TIME OBJECT,
HYBRID_TABLE_REQUESTS_THROTTLED_COUNT NUMBER
"""
LOAD_COLUMNS = """
START_TIME TIMESTAMP_LTZ, END_TIME TIMESTAMP_LTZ, WAREHOUSE_ID NUMBER, WAREHOUSE_NAME VARCHAR,
AVG_RUNNING FLOAT, AVG_QUEUED_LOAD FLOAT, AVG_QUEUED_PROVISIONING FLOAT, AVG_BLOCKED FLOAT
"""
METERING_COLUMNS = """
START_TIME TIMESTAMP_LTZ, END_TIME TIMESTAMP_LTZ, WAREHOUSE_ID NUMBER, WAREHOUSE_NAME VARCHAR,
CREDITS_USED FLOAT, CREDITS_USED_COMPUTE FLOAT, CREDITS_USED_CLOUD_SERVICES FLOAT
"""

ATTRIBUTION_COLUMNS = """
QUERY_ID VARCHAR, PARENT_QUERY_ID VARCHAR, ROOT_QUERY_ID VARCHAR, WAREHOUSE_ID NUMBER, WAREHOUSE_NAME VARCHAR,
QUERY_HASH VARCHAR, QUERY_PARAMETERIZED_HASH VARCHAR, QUERY_TAG VARCHAR, USER_NAME VARCHAR,
START_TIME TIMESTAMP_LTZ, END_TIME TIMESTAMP_LTZ, CREDITS_ATTRIBUTED_COMPUTE FLOAT,
CREDITS_USED_QUERY_ACCELERATION FLOAT
"""
FUNCTION_COLUMNS = """
QUERY_ID VARCHAR, QUERY_TEXT VARCHAR, DATABASE_NAME VARCHAR, SCHEMA_NAME VARCHAR, QUERY_TYPE VARCHAR,
SESSION_ID NUMBER, AUTHN_EVENT_ID NUMBER, USER_NAME VARCHAR, USER_TYPE VARCHAR, USER_DATABASE_NAME VARCHAR,
USER_SCHEMA_NAME VARCHAR, ROLE_NAME VARCHAR, WAREHOUSE_NAME VARCHAR, WAREHOUSE_SIZE VARCHAR,
WAREHOUSE_TYPE VARCHAR, CLUSTER_NUMBER NUMBER, QUERY_TAG VARCHAR, EXECUTION_STATUS VARCHAR, ERROR_CODE NUMBER,
ERROR_MESSAGE VARCHAR, START_TIME TIMESTAMP_LTZ, END_TIME TIMESTAMP_LTZ, TOTAL_ELAPSED_TIME NUMBER,
BYTES_SCANNED NUMBER, ROWS_PRODUCED NUMBER, COMPILATION_TIME NUMBER, EXECUTION_TIME NUMBER,
QUEUED_PROVISIONING_TIME NUMBER, QUEUED_REPAIR_TIME NUMBER, QUEUED_OVERLOAD_TIME NUMBER,
TRANSACTION_BLOCKED_TIME NUMBER, OUTBOUND_DATA_TRANSFER_CLOUD VARCHAR, OUTBOUND_DATA_TRANSFER_REGION VARCHAR,
OUTBOUND_DATA_TRANSFER_BYTES NUMBER, INBOUND_DATA_TRANSFER_CLOUD VARCHAR, INBOUND_DATA_TRANSFER_REGION VARCHAR,
INBOUND_DATA_TRANSFER_BYTES NUMBER, LIST_EXTERNAL_FILE_TIME NUMBER, CREDITS_USED_CLOUD_SERVICES NUMBER,
RELEASE_VERSION VARCHAR, EXTERNAL_FUNCTION_TOTAL_INVOCATIONS NUMBER, EXTERNAL_FUNCTION_TOTAL_SENT_ROWS NUMBER,
EXTERNAL_FUNCTION_TOTAL_RECEIVED_ROWS NUMBER, EXTERNAL_FUNCTION_TOTAL_SENT_BYTES NUMBER,
EXTERNAL_FUNCTION_TOTAL_RECEIVED_BYTES NUMBER, IS_CLIENT_GENERATED_STATEMENT BOOLEAN, QUERY_HASH VARCHAR,
QUERY_HASH_VERSION NUMBER, QUERY_PARAMETERIZED_HASH VARCHAR, QUERY_PARAMETERIZED_HASH_VERSION NUMBER,
TRANSACTION_ID NUMBER, QUERY_ACCELERATION_BYTES_SCANNED NUMBER, QUERY_ACCELERATION_PARTITIONS_SCANNED NUMBER,
QUERY_ACCELERATION_UPPER_LIMIT_SCALE_FACTOR NUMBER, BYTES_WRITTEN_TO_RESULT NUMBER, ROWS_WRITTEN_TO_RESULT NUMBER,
ROWS_INSERTED NUMBER, QUERY_RETRY_TIME NUMBER, QUERY_RETRY_CAUSE VARCHAR, FAULT_HANDLING_TIME NUMBER,
BIND_VALUES ARRAY
"""
"""QUERY_HISTORY_BY_WAREHOUSE's output (the functions' page, "Output"), the emulator's rows of it."""

SCENARIO = """
name = "enrich"
workers = 1
connections_per_worker = 2
warmup_s = 0.5
measurement_s = 1.5
control = "memory://"
target = "snowflake://fakesnow?database=BENCH&schema=PUBLIC&warehouse=BENCH_WH"
setup = [
  "CREATE DATABASE IF NOT EXISTS BENCH",
  "CREATE SCHEMA IF NOT EXISTS BENCH.PUBLIC",
  "CREATE OR REPLACE TABLE ACCOUNTS (ID INTEGER, BALANCE INTEGER)",
  "INSERT INTO ACCOUNTS VALUES (1, 100), (2, 100)",
]

[start]
lead_ms = 1000

[cost]
per_credit = 3.0

[thresholds]
"cost.per_1k_ops" = ["value < 1000"]

[[operations]]
name = "read"
sql = "SELECT ID, BALANCE FROM ACCOUNTS WHERE ID = :id"
params.id = { type = "int", min = 1, max = 2 }
"""


def _ts(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(sep=" ", timespec="milliseconds")


def _emulate(schema: str, tables: list[tuple[str, str]], rows: list[str]) -> None:
    """``tables`` (name, columns) made anew in ``schema`` (DATABASE.SCHEMA) on the emulator,
    holding ``rows`` (INSERT statements)."""
    from startline.backends.snowflake.conn import SnowflakeSettings

    conn = SnowflakeSettings("fakesnow").connect()
    try:
        cur = conn.cursor()
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {schema.split('.')[0]}")
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for name, columns in tables:
            cur.execute(f"CREATE OR REPLACE TABLE {schema}.{name} ({columns})")
        for sql in batched(rows):
            cur.execute(sql)
    finally:
        conn.close()


def _views(rows: list[str]) -> None:
    """SNOWFLAKE.ACCOUNT_USAGE's five views as tables on the emulator, holding ``rows``."""
    views = [
        ("QUERY_HISTORY", QUERY_HISTORY_COLUMNS),
        ("AGGREGATE_QUERY_HISTORY", AGGREGATE_COLUMNS),
        ("WAREHOUSE_LOAD_HISTORY", LOAD_COLUMNS),
        ("WAREHOUSE_METERING_HISTORY", METERING_COLUMNS),
        ("QUERY_ATTRIBUTION_HISTORY", ATTRIBUTION_COLUMNS),
    ]
    _emulate("SNOWFLAKE.ACCOUNT_USAGE", views, rows)


def batched(rows: list[str]) -> list[str]:
    """``INSERT … VALUES (…)`` statements into the same table as one statement each (the emulator
    takes a round trip per statement); any other statement as it is."""
    out: list[str] = []
    for sql in rows:
        head, sep, values = sql.partition(" VALUES ")
        if sep and out and out[-1].startswith(head + sep):
            out[-1] += ", " + values
        else:
            out.append(sql)
    return out


def _drop_views() -> None:
    from startline.backends.snowflake.conn import SnowflakeSettings

    conn = SnowflakeSettings("fakesnow").connect()
    try:
        conn.cursor().execute("DROP SCHEMA IF EXISTS SNOWFLAKE.ACCOUNT_USAGE CASCADE")
        conn.cursor().execute("DROP SCHEMA IF EXISTS EMULATOR.INFORMATION_SCHEMA_FUNCTIONS CASCADE")
    finally:
        conn.close()


def _function_history(rows: list[str]) -> None:
    """The account's query history as QUERY_HISTORY_BY_WAREHOUSE serves it on the emulator."""
    from tests.snowflake_emulator import ROWS

    schema, table = ROWS.rsplit(".", 1)
    _emulate(
        schema, [(table, FUNCTION_COLUMNS)], [r.replace("SNOWFLAKE.ACCOUNT_USAGE.QUERY_HISTORY", ROWS) for r in rows]
    )


def _history_row(
    text: str,
    query_tag: str,
    at: float,
    ms: int,
    status: str = "SUCCESS",
    query_id: str = "q",
    warehouse: str = "BENCH_WH",
    ended: float | None = None,
) -> str:
    q = query_tag.replace("'", "''")
    end = at + ms / 1000 if ended is None else ended
    return (
        "INSERT INTO SNOWFLAKE.ACCOUNT_USAGE.QUERY_HISTORY (QUERY_ID, QUERY_TEXT, QUERY_TAG, WAREHOUSE_NAME, "
        "EXECUTION_STATUS, START_TIME, END_TIME, TOTAL_ELAPSED_TIME, EXECUTION_TIME, COMPILATION_TIME, "
        "QUEUED_PROVISIONING_TIME, QUEUED_OVERLOAD_TIME, TRANSACTION_BLOCKED_TIME, BYTES_SCANNED) VALUES "
        f"('{query_id}', '{text.replace(chr(39), chr(39) * 2)}', '{q}', '{warehouse}', '{status}', '{_ts(at)}', "
        f"'{_ts(end)}', {ms}, {ms - 1}, 1, 0, {ms % 3}, 0, 1024)"
    )


def _aggregate_row(
    query_tag: str,
    at: float,
    calls: int,
    elapsed: dict[str, int],
    errors: int = 0,
    text: str = "SELECT ID, BALANCE FROM ACCOUNTS WHERE ID = 7",
) -> str:
    failed = json.dumps([{"code": "000630", "message": "timeout", "count": errors}] if errors else [])
    timing = json.dumps(elapsed)
    return (
        "INSERT INTO SNOWFLAKE.ACCOUNT_USAGE.AGGREGATE_QUERY_HISTORY (CALLS, INTERVAL_START_TIME, "
        "INTERVAL_END_TIME, QUERY_TEXT, QUERY_TAG, WAREHOUSE_NAME, ERRORS, TOTAL_ELAPSED_TIME, EXECUTION_TIME, "
        "COMPILATION_TIME, QUEUED_PROVISIONING_TIME, QUEUED_OVERLOAD_TIME, TRANSACTION_BLOCKED_TIME) SELECT "
        f"{calls}, '{_ts(at)}', '{_ts(at + 60)}', '{text}', '{query_tag}', 'BENCH_WH', PARSE_JSON('{failed}'), "
        f"PARSE_JSON('{timing}'), PARSE_JSON('{timing}'), PARSE_JSON('{{}}'), PARSE_JSON('{{}}'), "
        "PARSE_JSON('{}'), PARSE_JSON('{}')"
    )


def test_enrich_reads_the_runs_statements_load_and_credits_and_a_second_time_changes_nothing(
    fakesnow_home: Path, tmp_path: Path
) -> None:
    path, out = tmp_path / "s.toml", tmp_path / "out"
    path.write_text(SCENARIO)
    # What Snowflake lists of the run right after it (ended before the run's read: ≥ 1 s of lead + 2 s
    # of run after now): five of its reads, a session's own statement, another run's statements,
    # one of its on another warehouse and one still running — those two are not the warehouse's
    # finished ones.
    run_id, soon = f"enrich-{tmp_path.name[-8:]}", time.time() + 2.5
    text = "SELECT ID, BALANCE FROM ACCOUNTS WHERE ID = ?"
    _function_history(
        [_history_row(text, tag(run_id), soon - 0.01 * k, 3, query_id=f"f{k}", ended=soon) for k in range(5)]
        + [_history_row("ALTER SESSION SET QUERY_TAG = ?", tag(run_id, "WARMUP"), soon - 1, 1, query_id="f5")]
        + [_history_row(text, tag("another-run"), soon, 2, query_id=f"f{k}") for k in (6, 7)]
        + [_history_row(text, tag(run_id), soon, 2, query_id="f8", warehouse="OTHER_WH")]
        + [_history_row(text, tag(run_id), soon, 2, query_id="f9", ended=0.0)]
    )
    done = run_cli("run", str(path), "--out", str(out), "--run-id", run_id, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    before = json.loads((out / "summary.json").read_text())
    at_end = before["server"]
    assert at_end["source"] == "INFORMATION_SCHEMA.QUERY_HISTORY_BY_WAREHOUSE", done.stdout[-2000:]
    assert at_end["read"] == {"windows": 1, "rows": 8, "complete": True}
    measured = before["phases"]["MEASUREMENT"]["by_kind"]["read"]
    row = at_end["by_phase"]["MEASUREMENT"]["read"]
    assert (row["records"], row["client_statements"]) == (5, measured["ops"] + measured.get("errors", 0))
    assert at_end["not_attributed"] == {"session": 1, "unmatched": 0, "ambiguous": 0}
    assert sum(r["records"] for r in at_end["statement_intervals"]) == 5
    # the emulator's clock is this host's: its offset from the run's is zero, within what was measured
    clock = at_end["clock"]
    assert not clock["same_clock"] and abs(clock["offset_ms"]) <= clock["uncertainty_ms"] < 50
    _views([])  # ACCOUNT_USAGE has nothing of the run yet: enrich keeps what the run read at its end
    early = run_cli("enrich", str(out), timeout=120)
    assert early.returncode == 0, early.stdout[-2000:] + early.stderr[-2000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["server"]["statements_from"] == at_end["source"] and s["server"]["clock"] == clock
    assert s["server"]["by_phase"] == at_end["by_phase"] and "not yet available" in early.stdout
    assert "cost" not in s and s["thresholds_pending"] == before["thresholds_pending"]
    assert before["thresholds_pending"] == [{"metric": "cost.per_1k_ops", "threshold": "value < 1000"}]
    assert before["thresholds"] == [] and before["verdict"] == "passed"  # judged later, not now
    start, end = before["start_time"], before["stopped_at"]
    rows, expected = [], {}
    for phase, block in before["phases"].items():
        n = block["by_kind"]["read"]["ops"] + block["by_kind"]["read"].get("errors", 0)
        expected[phase] = n
        rows += [
            _history_row(text, tag(run_id, phase), start + 0.01 + 0.001 * k, 1 + k % 9, query_id=f"{phase}{k}")
            for k in range(n)
        ]
        rows += [  # two of the phase's statements took long enough to have credits attributed
            "INSERT INTO SNOWFLAKE.ACCOUNT_USAGE.QUERY_ATTRIBUTION_HISTORY (QUERY_ID, QUERY_TAG, START_TIME, "
            f"CREDITS_ATTRIBUTED_COMPUTE) VALUES ('{phase}{k}', '{tag(run_id, phase)}', '{_ts(start + 0.01)}', 0.25)"
            for k in range(min(n, 2))
        ]
    rows += [_history_row("ALTER SESSION SET QUERY_TAG = ?", tag(run_id, "WARMUP"), start - 1, 1)]  # a session's own
    rows += [_history_row("SELECT 42", tag(run_id), start + 0.5, 2)]  # the run's, no operation's
    rows += [_history_row("SELECT ID, BALANCE FROM ACCOUNTS WHERE ID = ?", tag("another-run"), start, 3)] * 5
    rows += [
        _aggregate_row(tag(run_id), start, 10, {"sum": 20, "max": 5, "p99": 4}, errors=1),
        _aggregate_row(tag(run_id), start + 60, 6, {"sum": 30, "max": 9, "p99": 8}),
        _aggregate_row(tag("another-run"), start, 50, {"sum": 50, "max": 1, "p99": 1}),
        _aggregate_row(tag(run_id), start, 3, {"sum": 3, "max": 1, "p99": 1}, text="SELECT 42"),
    ]
    hour = start - start % 3600
    rows += [
        "INSERT INTO SNOWFLAKE.ACCOUNT_USAGE.WAREHOUSE_LOAD_HISTORY VALUES "
        f"('{_ts(start - 60)}', '{_ts(start + 240)}', 1, 'BENCH_WH', 1.5, 0.25, 0.0, 0.0)",
        "INSERT INTO SNOWFLAKE.ACCOUNT_USAGE.WAREHOUSE_METERING_HISTORY VALUES "
        f"('{_ts(hour)}', '{_ts(hour + 3600)}', 1, 'BENCH_WH', 1.0, 0.9, 0.1)",
        "INSERT INTO SNOWFLAKE.ACCOUNT_USAGE.WAREHOUSE_METERING_HISTORY VALUES "
        f"('{_ts(hour + 3600)}', '{_ts(hour + 7200)}', 1, 'BENCH_WH', 1.0, 0.9, 0.1)",
    ]
    _views(rows)
    try:
        first = run_cli("enrich", str(out), timeout=120)
        assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
        once = (out / "summary.json").read_bytes()
        s = json.loads(once)
        assert s["phases"] == before["phases"] and s["timeseries"] == before["timeseries"]  # what the run measured
        assert s["schema_version"] == before["schema_version"]
        server = s["server"]
        for phase, n in expected.items():
            row = server["by_phase"][phase]["read"]
            assert (row["records"], row["client_statements"], row["matched_share"]) == (n, n, 1.0)
            assert 1 <= row["server_ms"]["p50"] <= row["server_ms"]["p99"] <= row["server_ms"]["max"] <= 9
            assert row["bytes_scanned"] == 1024 * n
        assert server["not_attributed"] == {"session": 1, "unmatched": 1, "ambiguous": 0}
        assert server["warehouses"] == ["BENCH_WH"] and server["pending"] == []
        aggregated = server["aggregated"]
        row = aggregated["by_phase"]["MEASUREMENT"]["read"]
        assert (row["calls"], row["intervals"], row["failed"]) == (16, 2, 1)
        assert row["matched_share"] == round(16 / expected["MEASUREMENT"], 4)
        assert row["server_ms"] == {"mean": round(50 / 16, 3), "max": 9.0, "p99_max": 8.0}
        assert aggregated["not_attributed"] == {"session": 0, "unmatched": 3, "ambiguous": 0}
        (load,) = server["warehouse_load"]
        # on the run's clock: Snowflake's 60 s before START_TIME, less its measured offset (a timestamp
        # of the view keeps milliseconds)
        assert load["from_s"] == pytest.approx(-60.0 - clock["offset_ms"] / 1000, abs=0.002)
        assert (load["avg_running"], load["avg_queued_load"]) == (1.5, 0.25)
        ops = sum(p["ops"] + p.get("errors", 0) for p in s["phases"].values())
        cost = s["cost"]
        assert cost["credits"] == pytest.approx((end - start) / 3600, rel=1e-3)
        assert cost["currency_amount"] == pytest.approx(3.0 * cost["credits"], rel=1e-4)  # (each rounded to 6 places)
        assert cost["per_1k_ops"] == pytest.approx(cost["currency_amount"] * 1000 / ops, rel=1e-4)
        attributed = cost["attributed"]
        assert attributed["by_phase"] == {p: {"read": 0.25 * min(n, 2)} for p, n in expected.items()}
        assert attributed["currency_amount"] == pytest.approx(3.0 * attributed["credits"])
        assert server["statements_from"] == "ACCOUNT_USAGE.QUERY_HISTORY" and server["clock"] == clock
        assert json.loads((out / "query_history.json").read_text()) == server
        (judged,) = s["thresholds"]
        assert judged["ok"] and judged["value"] == cost["per_1k_ops"] and "thresholds_pending" not in s
        # per snapshot interval, by when each statement began: beside the client's in intervals.csv
        assert sum(r["records"] for r in server["statement_intervals"]) == sum(expected.values())
        with open(out / "intervals.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["kind"] == "all"]
        assert sum(int(r["server_records"] or 0) for r in rows) == sum(expected.values())
        assert all(float(r["server_ms_p50"]) <= float(r["server_ms_p99"]) for r in rows if r["server_records"])
        page = (out / "report.html").read_text()
        assert "server_ms" in page and "BENCH_WH" in page and external_references(page) == []
        assert "credits attributed to the run&#x27;s statements" in page and "placed on the run's clock" in page
        dom = browse(out / "report.html", tmp_path, "--dump-dom")
        figure = re.search(r'<figure id="chart-server-timings">(.*?)</figure>', dom.stdout, re.S)
        assert dom.returncode == 0 and figure is not None and figure.group(1).count("<path") >= 5
        assert "queued (load)" in figure.group(1)  # the warehouse's load, on the same time axis
        again = run_cli("enrich", str(out), timeout=120)
        assert again.returncode == 0 and (out / "summary.json").read_bytes() == once
    finally:
        _drop_views()
    # the role cannot read ACCOUNT_USAGE: one line naming the view, exit 2, the run's files untouched
    refused = run_cli("enrich", str(out), timeout=120)
    assert refused.returncode == 2
    assert "SNOWFLAKE.ACCOUNT_USAGE.QUERY_HISTORY" in refused.stderr and "IMPORTED PRIVILEGES" in refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert (out / "summary.json").read_bytes() == once
