"""Operations that hold a session (issue 24): SQL transactions written in TOML (steps, ``into``)
and ``call`` operations given the connection's session, on SQLite, PostgreSQL and the Snowflake
emulator — committed when they succeed, rolled back when they fail."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from startline.backends.sqlsession import NoRow
from startline.engine.scenario import ConfigError, OperationSpec, Scenario
from startline.inprocess import run_in_process_async
from tests.session_ops import Refused

pytestmark = pytest.mark.live  # real database servers


@pytest.fixture(params=["sqlite", "postgresql", "snowflake"])
def backend(request: pytest.FixtureRequest, tmp_path) -> str:
    return request.param


async def open_target(backend: str, request: pytest.FixtureRequest, tmp_path) -> Any:
    if backend == "sqlite":
        from startline.backends.sqlite import SqliteTarget

        return SqliteTarget(tmp_path / "t.db")
    if backend == "postgresql":
        from startline.backends.postgres import PostgresTarget

        return PostgresTarget(request.getfixturevalue("postgres_url"))
    from startline.backends.snowflake import SnowflakeTarget
    from startline.urls import parse_url

    request.getfixturevalue("fakesnow_home")
    target = SnowflakeTarget.from_url(parse_url("snowflake://fakesnow?database=TX&schema=PUBLIC", "target"))
    await target.setup(["CREATE DATABASE IF NOT EXISTS TX", "CREATE SCHEMA IF NOT EXISTS TX.PUBLIC"])
    return target


async def kv_session(backend: str, request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[Any]:
    target = await open_target(backend, request, tmp_path)
    await target.setup(["DROP TABLE IF EXISTS kv", "CREATE TABLE kv (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)"])
    await target.setup(["INSERT INTO kv VALUES (1, 100)", "INSERT INTO kv VALUES (2, 200)"])
    return target


def op(**kw: Any) -> OperationSpec:
    return OperationSpec(**({"name": "t"} | kw))


ADD = op(
    transaction=[
        {"sql": "SELECT v, k FROM kv WHERE k = :k", "into": ["v0", "k0"]},
        {"sql": "UPDATE kv SET v = :v0 + :d WHERE k = :k0"},
    ]
)


async def values(session: Any) -> dict[int, int]:
    return {int(k): int(v) for k, v in await session.query("SELECT k, v FROM kv ORDER BY k", {})}


async def test_transactions_and_code_commit_what_succeeds_and_roll_back_what_fails(backend, request, tmp_path):
    target = await kv_session(backend, request, tmp_path)
    session = await target.open_session("w000", 0)
    try:
        await session.execute(ADD, {"k": 1, "d": 5})  # steps: the first row read into v0, k0
        await session.execute(op(call="tests.session_ops:add"), {"k": 2, "d": 7})  # code holding the session
        assert await values(session) == {1: 105, 2: 207}
        with pytest.raises(Refused):  # the code's write, then its error: rolled back
            await session.execute(op(call="tests.session_ops:add_then_fail"), {"k": 1, "d": 1000})
        failing = op(transaction=[{"sql": "UPDATE kv SET v = v + 1 WHERE k = :k"}, {"sql": "SELECT nope FROM kv"}])
        with pytest.raises(Exception) as refused:  # a step the database refuses: the steps before it rolled back
            await session.execute(failing, {"k": 2})
        assert target.error_category(refused.value) not in ("NoRow", "RuntimeError")
        with pytest.raises(NoRow):
            await session.execute(ADD, {"k": 99, "d": 1})  # `into` needs a row
        assert await values(session) == {1: 105, 2: 207}
        await session.execute(ADD, {"k": 1, "d": -5})  # and the session is usable after each failure
        assert await values(session) == {1: 100, 2: 207}
    finally:
        await session.close()


async def test_a_cancelled_transaction_is_rolled_back_and_the_session_goes_on(request, tmp_path):
    target = await kv_session("postgresql", request, tmp_path)
    session = await target.open_session("w000", 0)
    slow = op(transaction=[{"sql": "UPDATE kv SET v = v + 1 WHERE k = :k"}, {"sql": "SELECT pg_sleep(30)"}])
    try:
        with trio.move_on_after(0.5) as scope:
            await session.execute(slow, {"k": 1})
        assert scope.cancelled_caught
        assert await values(session) == {1: 100, 2: 200}
    finally:
        await session.close()


def test_an_operation_is_one_of_sql_transaction_or_call_and_into_names_columns():
    for bad, field in [
        ({"sql": "SELECT 1", "transaction": [{"sql": "SELECT 1"}]}, "operations[0].sql"),
        ({}, "operations[0].sql"),
        ({"transaction": [{"sql": "SELECT 1", "into": "v"}]}, "operations[0].transaction[0].into"),
        ({"transaction": [{"sql": "SELECT 1", "into": ["not a name"]}]}, "operations[0].transaction[0].into"),
        ({"transaction": [{"sql": "SELECT 1"}], "prepare": True}, "operations[0].prepare"),
        ({"transaction": [{"sql": "SELECT 1", "int0": ["v"]}]}, "operations[0].transaction[0].int0"),
    ]:
        with pytest.raises(ConfigError) as refused:
            Scenario.from_dict({"name": "x", "operations": [{"name": "t"} | bad]})
        assert str(refused.value).startswith(field), (bad, str(refused.value))


TPCB_SQLITE = '''
name = "tpcb-sqlite"
workers = 2
connections_per_worker = 2
warmup_s = 0.3
measurement_s = 1.5
control = "sqlite:///{out}/control.db"
target = "sqlite:///{out}/bank.db"
setup = ["""
  DROP TABLE IF EXISTS accounts; DROP TABLE IF EXISTS tellers; DROP TABLE IF EXISTS branches;
  DROP TABLE IF EXISTS history;
  CREATE TABLE branches (bid INTEGER PRIMARY KEY, bbalance INTEGER);
  CREATE TABLE tellers (tid INTEGER PRIMARY KEY, bid INTEGER, tbalance INTEGER);
  CREATE TABLE accounts (aid INTEGER PRIMARY KEY, bid INTEGER, abalance INTEGER);
  CREATE TABLE history (tid INTEGER, bid INTEGER, aid INTEGER, delta INTEGER, mtime TEXT);
  INSERT INTO branches VALUES (1, 0);
  WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10)
    INSERT INTO tellers SELECT i, 1, 0 FROM n;
  WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
    INSERT INTO accounts SELECT i, 1, 0 FROM n;
"""]

[checks]
max_error_rate = 0.05  # (four connections over two processes take turns at SQLite's write lock)

[[operations]]
name = "tpcb"
transaction = [
  { sql = "UPDATE accounts SET abalance = abalance + :delta WHERE aid = :aid" },
  { sql = "SELECT abalance FROM accounts WHERE aid = :aid", into = ["abalance"] },
  { sql = "UPDATE tellers SET tbalance = tbalance + :delta WHERE tid = :tid" },
  { sql = "UPDATE branches SET bbalance = bbalance + :delta WHERE bid = :bid" },
  { sql = "INSERT INTO history VALUES (:tid, :bid, :aid, :delta, datetime('now'))" },
]
params.aid = { type = "int", min = 1, max = 1000 }
params.bid = { type = "int", min = 1, max = 1 }
params.tid = { type = "int", min = 1, max = 10 }
params.delta = { type = "int", min = -5000, max = 5000 }

[[operations]]
name = "code"
weight = 0.2
call = "tests.session_ops:add_to_history"
params.aid = { type = "int", min = 1, max = 1000 }
params.delta = { type = "int", min = -5000, max = 5000 }
'''


def test_a_multi_process_tpcb_run_on_sqlite_leaves_every_balance_equal_to_the_history(tmp_path):
    """Issue 24: transactions from TOML and from code, in worker processes, on one SQLite file:
    what each committed is all there, what failed left nothing."""
    import json
    import sqlite3

    from startline.testing import run_cli

    (tmp_path / "tpcb.toml").write_text(TPCB_SQLITE)
    proc = run_cli("run", "--no-report", str(tmp_path / "tpcb.toml"), "--out", str(tmp_path / "out"), timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    committed = sum(p["by_kind"].get(k, {}).get("ops", 0) for p in s["phases"].values() for k in ("tpcb", "code"))
    assert s["phases"]["MEASUREMENT"]["by_kind"]["code"]["ops"] > 0
    with sqlite3.connect(tmp_path / "out" / "bank.db") as c:
        a, b, t, h, n = c.execute(
            "SELECT (SELECT sum(abalance) FROM accounts), (SELECT sum(bbalance) FROM branches), "
            "(SELECT sum(tbalance) FROM tellers), (SELECT sum(delta) FROM history), (SELECT count(*) FROM history)"
        ).fetchone()
    assert a == b == t == h and n == committed, (a, b, t, h, n, committed)


# ---- max_tries: a conflict tried again with the same draws (virtual time, the memory target) ----


class Conflict(Exception):
    category = "conflict"  # what every target calls a serialization failure or a deadlock


def retried_run(max_tries: int, fails_first: int, load: dict[str, Any] | None = None) -> tuple[dict, list[int]]:
    """One connection whose operation fails its first ``fails_first`` tries of each draw."""
    seen: list[int] = []

    async def conflicted(k: int) -> None:
        seen.append(k)
        tries = 0  # this draw's tries so far: the run of k at the end of what was seen
        for x in reversed(seen):
            if x != k:
                break
            tries += 1
        await trio.sleep(0.001)
        if tries <= fails_first:
            raise Conflict("could not serialize access due to concurrent update")

    sc = Scenario.from_dict(
        {
            "name": "tries",
            "workers": 1,
            "connections_per_worker": 1,
            "warmup_s": 0,
            "measurement_s": 1,
            "checks": {"max_error_rate": 1.0},
            "operations": [
                {
                    "name": "tx",
                    "call": conflicted,
                    "max_tries": max_tries,
                    "params": {"k": {"type": "int", "min": 1, "max": 10**9}},
                }
            ],
        }
        | ({"load": load} if load else {})
    )

    async def main() -> dict:
        return (await run_in_process_async(sc)).summary

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)), seen


@pytest.mark.parametrize("load", [None, {"mode": "rate", "rate": 50, "max_in_flight": 1}], ids=["closed", "open"])
def test_a_conflict_is_tried_again_with_the_same_draws_and_counted_as_retried(load):
    summary, seen = retried_run(max_tries=3, fails_first=2, load=load)
    m = summary["phases"]["MEASUREMENT"]
    assert m["errors"] == 0 and m["ops"] > 0
    tx = m["by_kind"]["tx"]
    assert (tx["retried"], tx["retries"]) == (tx["ops"], 2 * tx["ops"]) == (m["retried"], m["retries"])
    # per interval too (summary.json's time series, intervals.csv's last two columns)
    from startline.engine.files import INTERVALS_HEADER, interval_rows

    every = sum(p.get("retries", 0) for p in summary["phases"].values())
    assert sum(r["by_kind"]["tx"]["retries"] for r in summary["timeseries"]) == every
    rows = [dict(zip(INTERVALS_HEADER, r, strict=True)) for r in interval_rows(summary["timeseries"], 1.0)]
    assert sum(r["retries"] for r in rows if r["kind"] == "tx") == every
    assert all(r["retries"] == "" for r in rows if r["kind"] == "all")
    draws = seen[: 3 * (len(seen) // 3)]
    assert all(draws[j] == draws[j + 1] == draws[j + 2] for j in range(0, len(draws), 3))  # the same draws
    assert len(set(draws)) == len(draws) // 3  # and a new draw for each operation


def test_an_operation_that_exhausts_its_tries_is_a_conflict_failure():
    summary, _ = retried_run(max_tries=2, fails_first=5)
    m = summary["phases"]["MEASUREMENT"]
    assert m["ops"] == 0 and m["errors"] > 0 and m["errors_by_category"] == {"conflict": m["errors"]}
    assert (m["retried"], m["retries"]) == (m["errors"], m["errors"])  # each tried twice, then failed
    assert summary["verdict"] == "failed"  # (no kind succeeded: the all_failing check)


def test_without_max_tries_a_conflict_is_an_error_at_once():
    summary, seen = retried_run(max_tries=1, fails_first=1)
    m = summary["phases"]["MEASUREMENT"]
    assert m["ops"] == 0 and m["errors_by_category"] == {"conflict": m["errors"]}
    assert len(set(seen)) == len(seen) >= m["errors"] > 0  # each draw tried once
    assert (m["retried"], m["retries"]) == (0, 0) and "retried" not in m["by_kind"].get("tx", {})


HOT = """
name = "hot"
workers = 2
connections_per_worker = 3
warmup_s = 0.2
measurement_s = 2
control = "sqlite:///{{out}}/control.db"
target = "{url}"
setup = ["DROP TABLE IF EXISTS hot", "CREATE TABLE hot (k int PRIMARY KEY, v int NOT NULL)",
         "INSERT INTO hot SELECT g, 0 FROM generate_series(1, 2) g"]

[checks]
max_error_rate = 1.0

[[operations]]
name = "bump"
max_tries = 20
transaction = [
  {{ sql = "SELECT v FROM hot WHERE k = :k", into = ["v"] }},
  {{ sql = "UPDATE hot SET v = :v + 1 WHERE k = :k" }},
]
params.k = {{ type = "int", min = 1, max = 2 }}
"""


def test_serialization_failures_under_repeatable_read_are_retried_counted_and_lose_no_update(postgres_url, tmp_path):
    """Issue 24: two hot rows, six connections, each transaction reads a row and writes it back
    plus one, under REPEATABLE READ: concurrent ones fail to serialize (SQLSTATE 40001). With
    ``max_tries`` they are tried again with the same draws and counted (``retried``,
    ``retries``), and no update is lost: the rows hold exactly the committed transactions."""
    import json

    import psycopg

    from startline.testing import run_cli

    url = postgres_url + "?options=-c%20default_transaction_isolation%3Drepeatable%5C%20read"
    (tmp_path / "hot.toml").write_text(HOT.format(url=url))
    proc = run_cli("run", "--no-report", str(tmp_path / "hot.toml"), "--out", str(tmp_path / "out"), timeout=180)
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    m = s["phases"]["MEASUREMENT"]
    assert m["retried"] > 0 and m["retries"] >= m["retried"], m
    assert set(m["errors_by_category"]) <= {"conflict"}  # a transaction that ran out of tries, if any
    committed = sum(p["ops"] for p in s["phases"].values())
    with psycopg.connect(postgres_url) as c:
        assert c.execute("SELECT sum(v) FROM hot").fetchone()[0] == committed


def timed_run(operations: list[dict[str, Any]], **kw: Any) -> dict:
    sc = Scenario.from_dict(
        {
            "name": "timed",
            "workers": 1,
            "connections_per_worker": 1,
            "warmup_s": 0,
            "measurement_s": 10,
            "checks": {"max_error_rate": 1.0},
            "operations": operations,
        }
        | kw
    )

    async def main() -> dict:
        return (await run_in_process_async(sc)).summary

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def slow(ms: int) -> None:
    await trio.sleep(ms / 1000)


def test_an_operation_past_its_timeout_is_cancelled_and_counted_as_a_timeout():
    s = timed_run(
        [
            {
                "name": "slow",
                "call": slow,
                "timeout_ms": 100,
                "params": {"ms": {"type": "choice", "values": [50, 500]}},
            },
        ]
    )
    m = s["phases"]["MEASUREMENT"]
    assert m["errors_by_category"] == {"timeout": m["errors"]} and m["errors"] > 0 and m["ops"] > 0
    assert m["latency_ms"]["max"] < 100  # what finished finished in time; the rest were cut at 100 ms
    assert any("timeout_ms (100 ms)" in msg["message"] for f in s["failures"] for msg in f["messages"])


def test_each_operation_thinks_its_own_time_after_it():
    s = timed_run(
        [
            {
                "name": "thinker",
                "call": slow,
                "think_time_ms": 90,
                "params": {"ms": {"type": "int", "min": 10, "max": 10}},
            },
            {"name": "quick", "call": slow, "params": {"ms": {"type": "int", "min": 10, "max": 10}}},
        ],
        think_time_ms=0,
    )
    k = s["phases"]["MEASUREMENT"]["by_kind"]
    # on virtual time a thinker's turn takes 100 ms (10 ms, then its think), a quick one 10 ms:
    # MEASUREMENT's 10 s are exactly those turns (give or take the one cut at the end)
    spent = k["thinker"]["ops"] * 0.100 + k["quick"]["ops"] * 0.010
    assert 10 - 0.2 <= spent <= 10 + 0.1, k  # (the last think may run past the end)


def test_think_time_per_operation_is_refused_in_an_open_loop():
    with pytest.raises(ConfigError) as refused:
        Scenario.from_dict(
            {
                "name": "x",
                "load": {"mode": "rate", "rate": 10},
                "operations": [{"name": "t", "call": "m:f", "think_time_ms": 5}],
            }
        )
    assert str(refused.value).startswith("operations[0].think_time_ms")


async def test_a_statement_past_its_timeout_is_cancelled_on_the_server_too(request, tmp_path):
    from startline.backends.postgres import PostgresTarget
    from tests.test_postgres import still_running

    url = request.getfixturevalue("postgres_url")
    sc = Scenario.from_dict(
        {
            "name": "timeouts",
            "workers": 1,
            "connections_per_worker": 2,
            "warmup_s": 0,
            "measurement_s": 1.5,
            "checks": {"max_error_rate": 1.0},
            "operations": [
                {
                    "name": "sleepy",
                    "sql": "SELECT pg_sleep(:s)",
                    "timeout_ms": 200,
                    "params": {"s": {"type": "choice", "values": [0.01, 30]}},
                }
            ],
        }
    )
    s = (await run_in_process_async(sc, target=PostgresTarget(url))).summary
    m = s["phases"]["MEASUREMENT"]
    assert m["ops"] > 0 and m["errors"] > 0 and set(m["errors_by_category"]) == {"timeout"}
    assert still_running(url, "pg_sleep") == 0
