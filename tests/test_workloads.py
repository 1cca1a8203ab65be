"""Built-in workloads (issue 24): `startline workloads` lists them, `startline init` makes and
loads their tables (refusing tables that exist unless --drop), a scenario names one in
[workload] or `run --workload` runs one without a file — and pgbench's TPC-B leaves every
balance equal to its history."""

from __future__ import annotations

import json
import sqlite3

import pytest

from startline.engine.scenario import ConfigError, Scenario
from startline.engine.standard import WORKLOADS
from startline.testing import run_cli


def test_a_workload_table_gives_the_scenario_pgbenchs_operations_at_its_scale():
    s = Scenario.from_dict({"name": "w", "workload": {"name": "tpcb", "scale": 3}})
    (tpcb,) = s.operations
    assert [step.sql.split()[0] for step in tpcb.transaction] == ["UPDATE", "SELECT", "UPDATE", "UPDATE", "INSERT"]
    assert {k: (p.min, p.max) for k, p in tpcb.params.items()} == {
        "aid": (1, 300_000),
        "bid": (1, 3),
        "tid": (1, 30),
        "delta": (-5000, 5000),
    }
    assert Scenario.from_dict(s.to_dict()) == s  # read back from a run: the same scenario
    (select,) = Scenario.from_dict({"name": "w", "workload": {"name": "select-only"}}).operations
    assert (
        select.sql == "SELECT abalance FROM pgbench_accounts WHERE aid = :aid" and select.params["aid"].max == 100_000
    )


@pytest.mark.parametrize(
    ("workload", "field"),
    [
        ({"name": "tpcc-like"}, "workload.name"),
        ({"name": "tpcb", "scael": 2}, "workload.scael"),
        ({"name": "tpcb", "scale": 0}, "workload.scale"),
        ({"name": "tpcb", "scale": "big"}, "workload.scale"),
    ],
)
def test_a_workload_misspelled_is_refused_naming_the_field(workload, field):
    with pytest.raises(ConfigError) as refused:
        Scenario.from_dict({"name": "w", "workload": workload})
    assert refused.value.field == field


def test_operations_and_a_workload_together_are_refused():
    with pytest.raises(ConfigError) as refused:
        Scenario.from_dict({"name": "w", "workload": {"name": "tpcb"}, "operations": [{"name": "q", "call": "m:f"}]})
    assert refused.value.field == "operations"


@pytest.mark.live
def test_init_then_run_a_workload_without_a_file_leaves_every_balance_equal_to_the_history(tmp_path):
    listed = run_cli("workloads", timeout=60)
    assert listed.returncode == 0 and all(name in listed.stdout for name in WORKLOADS)
    target = f"sqlite:///{tmp_path}/bank.db"
    made = run_cli("init", "tpcb", "--target", target, timeout=120)
    assert made.returncode == 0, made.stderr
    assert "pgbench_accounts: 100,000 rows" in made.stdout
    again = run_cli("init", "tpcb", "--target", target, timeout=120)  # loaded already: refused, nothing touched
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1 and "--drop" in again.stderr
    proc = run_cli(
        *("run", "--no-report", "--workload", "tpcb", "--target", target, "--out", str(tmp_path / "out")),
        *("--workers", "1", "--connections-per-worker", "2", "--warmup-s", "0.2", "--measurement-s", "1"),
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (
        s["config"]["scenario"]["workload"] == {"name": "tpcb"} or s["config"]["scenario"]["workload"]["name"] == "tpcb"
    )
    assert not (tmp_path / "out" / "report.html").exists()  # --no-report
    committed = sum(p["ops"] for p in s["phases"].values())
    (balances,) = s["workload"]["checks"]  # the run checked it itself
    assert balances["ok"] and "agree" in balances["detail"] and "workload.balances" in [c["name"] for c in s["checks"]]
    with sqlite3.connect(tmp_path / "bank.db") as c:
        a, b, t, h, n, accounts = c.execute(
            "SELECT (SELECT sum(abalance) FROM pgbench_accounts), (SELECT sum(bbalance) FROM pgbench_branches), "
            "(SELECT sum(tbalance) FROM pgbench_tellers), (SELECT sum(delta) FROM pgbench_history), "
            "(SELECT count(*) FROM pgbench_history), (SELECT count(*) FROM pgbench_accounts)"
        ).fetchone()
    assert a == b == t == h and n == committed > 0 and accounts == 100_000
    dropped = run_cli("init", "tpcb", "--target", target, "--drop", timeout=120)  # made again, empty history
    assert dropped.returncode == 0 and "pgbench_history: 0 rows" in dropped.stdout


@pytest.mark.live
def test_init_loads_pgbenchs_tables_on_postgresql_by_copy_and_select_only_runs_on_them(tmp_path, postgres_url):
    import psycopg

    made = run_cli("init", "select-only", "--target", postgres_url, timeout=120)
    assert made.returncode == 0, made.stderr
    with psycopg.connect(postgres_url) as c:
        counts = c.execute(
            "SELECT (SELECT count(*) FROM pgbench_accounts), (SELECT count(*) FROM pgbench_tellers), "
            "(SELECT count(*) FROM pgbench_branches), (SELECT octet_length(filler) FROM pgbench_accounts LIMIT 1)"
        ).fetchone()
    assert counts == (100_000, 10, 1, 84)  # as pgbench -i -s 1 makes them (filler: 84 blanks)
    proc = run_cli(
        *("run", "--no-report", "--workload", "select-only", "--target", postgres_url, "--out", str(tmp_path / "out")),
        *("--workers", "1", "--connections-per-worker", "2", "--warmup-s", "0", "--measurement-s", "1"),
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_init_on_a_target_it_cannot_reach_is_one_line_and_exit_2(tmp_path):
    proc = run_cli("init", "tpcb", "--target", "postgresql://postgres@127.0.0.1:1/postgres", timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "--target: cannot reach it" in proc.stderr


@pytest.mark.parametrize(
    ("option", "said"),
    [("recordz=5", "workload.recordz: unknown option of ycsb-a"), ("records", "--option: expected KEY=VALUE")],
)
def test_a_workload_option_from_the_command_line_is_checked_in_one_line(tmp_path, option, said):
    target = f"sqlite:///{tmp_path}/y.db"
    for args in (("init", "ycsb-a"), ("run", "--workload", "ycsb-a", "--out", str(tmp_path / "out"))):
        proc = run_cli(*args, "--target", target, "--option", option, timeout=60)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {said}"), proc.stderr


def test_run_workload_on_a_target_in_no_directory_names_the_target_not_a_file(tmp_path):
    """Without a scenario file the error named ``None:`` for the file it did not have."""
    proc = run_cli("run", "--workload", "tpcb", "--target", f"sqlite:///{tmp_path}/nowhere/x.db", timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: target: directory"), proc.stderr


@pytest.mark.live
def test_init_on_the_snowflake_emulator_generates_pgbenchs_tables_and_inserts_ycsbs(fakesnow_home):
    """pgbench's tables by INSERT … SELECT from Snowflake's GENERATOR (tellers and accounts in
    their branch: FLOOR, since Snowflake's `/` is not integer division), YCSB's usertable by
    multi-row inserts; a YCSB read finds its record there; tpcc is refused in one line (exit 2)."""
    import random

    import trio

    from startline.backends.snowflake import SnowflakeTarget
    from startline.engine.workload import ParamSource
    from startline.live.init import init
    from startline.urls import parse_url

    url = parse_url("snowflake://fakesnow?database=INITS&schema=PUBLIC", "target")
    target = SnowflakeTarget.from_url(url)
    trio.run(target.setup, ["CREATE DATABASE IF NOT EXISTS INITS", "CREATE SCHEMA IF NOT EXISTS INITS.PUBLIC"])
    seen: list[tuple[str, int, int]] = []
    loaded = init({"name": "tpcb", "scale": 2}, url, drop=True, progress=lambda *a: seen.append(a))
    assert loaded == {"pgbench_branches": 2, "pgbench_tellers": 20, "pgbench_accounts": 200_000, "pgbench_history": 0}
    assert init({"name": "ycsb-c", "records": 600}, url, drop=True, progress=lambda *a: seen.append(a)) == {
        "usertable": 600
    }
    assert ("usertable", 500, 600) in seen  # progress per batch
    with pytest.raises(ConfigError) as again:
        init({"name": "ycsb-c", "records": 600}, url, drop=False, progress=lambda *a: None)
    assert again.value.field == "--drop"
    with pytest.raises(ConfigError) as refused:
        init({"name": "tpcc"}, url, drop=True, progress=lambda *a: None)
    assert refused.value.field == "--target" and "postgresql://, sqlite://" in refused.value.message

    scenario = Scenario.from_dict({"name": "y", "workload": {"name": "ycsb-c", "records": 600}})
    (read,) = scenario.operations

    async def check() -> tuple[list, list]:
        session = await target.open_session("w000", 0)
        try:
            sums = await session.query(
                "SELECT (SELECT count(*) FROM pgbench_tellers WHERE bid = 2), "
                "(SELECT min(aid) FROM pgbench_accounts WHERE bid = 2), (SELECT max(bid) FROM pgbench_accounts)",
                {},
            )
            params = ParamSource(random.Random(3), slot=0, specs=scenario.param_specs).draw(read)
            return sums, await session.query(read.sql, params)
        finally:
            await session.close()

    sums, rows = trio.run(check)
    assert sums == [(10, 100_001, 2)] and len(rows) == 1 and len(rows[0]) == 11


def test_tpcc_on_a_snowflake_target_is_refused_in_one_line_naming_the_workload(tmp_path):
    proc = run_cli(
        *("run", "--workload", "tpcc", "--target", "snowflake://nowhere", "--out", str(tmp_path / "out")), timeout=60
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: workload.name: tpcc runs on postgresql://, sqlite:// targets"), lines
