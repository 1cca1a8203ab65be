"""TPC-C-like (issue 24): its population, the five transactions on a real database through the
connection's session, the consistency conditions 1–4 after them — including after a run whose
worker process was SIGKILLed mid-transaction — and tpmC in the summary."""

from __future__ import annotations

import collections
import json
import random
import sqlite3

import pytest
import trio

from startline.backends.sqlite import SqliteTarget
from startline.engine.distributions import nurand
from startline.engine.scenario import ConfigError, Scenario
from startline.engine.standard import WORKLOADS
from startline.engine.workload import Mix, ParamSource
from startline.live.init import init
from startline.live.workloadcheck import judged
from startline.testing import LiveRun, run_cli
from startline.urls import Url
from startline.workloads import tpcc

SMALL = {"name": "tpcc", "warehouses": 2, "items": 1000, "customers": 30}
"""Two warehouses (remote payments and supply), 1,000 items, 30 customers a district."""


def quiet(_table: str, _done: int, _total: int) -> None:
    pass


def small_scenario(**extra) -> Scenario:
    return Scenario.from_dict({"name": "t", "workload": SMALL | extra})


def test_the_population_has_tpccs_cardinalities_and_meets_every_condition(tmp_path):
    db = tmp_path / "c.db"
    loaded = init(SMALL, Url("sqlite", path=db), drop=False, progress=quiet)
    lines = loaded.pop("order_line")
    assert loaded == {
        "item": 1000,
        "warehouse": 2,
        "stock": 2000,
        "district": 20,
        "customer": 600,
        "history": 600,
        "orders": 600,
        "new_order": 2 * 10 * 9,  # the last 30 % of each district's orders
    }
    assert 5 * 600 <= lines <= 15 * 600
    with sqlite3.connect(db) as c:
        names = {n for (n,) in c.execute("SELECT DISTINCT c_last FROM customer WHERE c_w_id = 1 AND c_d_id = 1")}
        assert {tpcc.last_name(n) for n in range(30)} <= names  # the first customers take names 0, 1, 2 …
        original = c.execute("SELECT avg(i_data LIKE '%ORIGINAL%') FROM item").fetchone()[0]
        assert 0.05 < original < 0.15
    assert all(c["ok"] for c in trio.run(checked, db))


async def checked(db) -> list[dict]:
    session = await SqliteTarget(db).open_session("checks", 0)
    try:
        return await tpcc.check(session)
    finally:
        await session.close()


def rolls_back(seed: int, customers: int) -> bool:
    """New-Order's draws in their documented order: district, customer, line count, then the 1 %."""
    rng = random.Random(seed)
    rng.randint(1, 10)
    nurand(rng, 1023, 1, customers, tpcc.C_ID)
    rng.randint(5, 15)
    return rng.randint(1, 100) == 1


async def run_mix(db, scenario: Scenario, transactions: int) -> collections.Counter:
    """``transactions`` of the standard mix on two connections (homes: warehouse 1 and 2), one
    after the other, each drawn as the engine draws it."""
    target = SqliteTarget(db)
    sessions = [await target.open_session("w000", slot) for slot in (0, 1)]
    sources = [
        ParamSource(random.Random(p), slot=p, position=p, connections=2, specs=scenario.param_specs) for p in (0, 1)
    ]
    mix, pick, done = Mix.of(scenario.operations), random.Random(7), collections.Counter()
    try:
        for n in range(transactions):
            op = mix.choose(pick)
            params = sources[n % 2].draw(op)
            await sessions[n % 2].execute(op, params)
            done[op.name] += 1
            if op.name == "new_order" and rolls_back(params["seed"], 30):
                done["rolled_back"] += 1
    finally:
        for s in sessions:
            await s.close()
    return done


def test_the_five_transactions_change_the_database_as_tpcc_says_and_keep_every_condition(tmp_path):
    db = tmp_path / "c.db"
    init(SMALL, Url("sqlite", path=db), drop=False, progress=quiet)

    def totals() -> tuple[int, int, int, int]:
        with sqlite3.connect(db) as c:
            return c.execute(
                "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM history), "
                "(SELECT count(*) FROM new_order), (SELECT count(*) FROM orders WHERE o_carrier_id IS NULL)"
            ).fetchone()

    orders, history, undelivered, _ = totals()
    done = trio.run(run_mix, db, small_scenario(), 400)
    assert set(done) >= set(tpcc.MIX) and done["new_order"] > done["delivery"] > 0
    after = totals()
    committed = done["new_order"] - done["rolled_back"]
    assert after[0] == orders + committed  # a rolled-back new order leaves nothing
    assert after[1] == history + done["payment"]  # one history row per payment
    # each delivery takes the oldest undelivered order of each of the home warehouse's 10 districts
    assert after[2] == undelivered + committed - 10 * done["delivery"] == after[3]
    assert all(c["ok"] for c in trio.run(checked, db))


def test_a_rolled_back_new_order_leaves_no_order_and_no_district_number_taken(tmp_path):
    db = tmp_path / "c.db"
    init(SMALL, Url("sqlite", path=db), drop=False, progress=quiet)
    s = small_scenario()
    new_order = next(op for op in s.operations if op.name == "new_order")
    seed = next(x for x in range(10_000) if rolls_back(x, 30))
    params = ParamSource(random.Random(1), slot=0, specs=s.param_specs).draw(new_order) | {"seed": seed}

    async def one() -> None:
        session = await SqliteTarget(db).open_session("w000", 0)
        try:
            await session.execute(new_order, params)  # not an error: the 1 % are part of the mix
        finally:
            await session.close()

    with sqlite3.connect(db) as c:
        before = c.execute("SELECT sum(d_next_o_id), (SELECT count(*) FROM orders) FROM district").fetchone()
    trio.run(one)
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT sum(d_next_o_id), (SELECT count(*) FROM orders) FROM district").fetchone() == before


def test_a_broken_condition_is_reported_with_its_row_and_fails_the_verdict(tmp_path):
    db = tmp_path / "c.db"
    init(SMALL, Url("sqlite", path=db), drop=False, progress=quiet)
    with sqlite3.connect(db) as c:
        c.execute("UPDATE warehouse SET w_ytd = w_ytd + 1 WHERE w_id = 2")
        c.execute("DELETE FROM order_line WHERE ol_w_id = 1 AND ol_d_id = 3 AND ol_o_id = 1 AND ol_number = 1")
    results = {c["name"]: c for c in trio.run(checked, db)}
    assert [n for n, c in results.items() if not c["ok"]] == ["consistency_1", "consistency_4"]
    assert "1 of 2 hold" in results["consistency_1"]["detail"] and "19 of 20 hold" in results["consistency_4"]["detail"]
    summary = {"verdict": "passed", "checks": [], "phases": {}}
    out = judged(summary, {"name": "tpcc", "checks": list(results.values())})
    assert out["verdict"] == "failed" and [c["name"] for c in out["checks"] if not c["ok"]] == [
        "workload.consistency_1",
        "workload.consistency_4",
    ]
    unknown = judged(summary, {"name": "tpcc", "checks": None, "checks_error": "OperationalError: gone"})
    assert unknown["verdict"] == "passed" and unknown["checks"] == []  # not checked: nothing judged


def test_tpcc_operations_run_the_standard_mix_from_a_home_warehouse_and_think_when_asked():
    s = small_scenario()
    assert {op.name: op.weight for op in s.operations} == tpcc.MIX
    assert all(op.call == f"startline.workloads.tpcc:{op.name}" and op.max_tries > 1 for op in s.operations)
    homes = [
        ParamSource(random.Random(1), slot=p, position=p, connections=5, specs=s.param_specs).draw(s.operations[0])["w"]
        for p in range(5)
    ]
    assert homes == [1, 2, 1, 2, 1]  # a home warehouse per connection, every warehouse taken
    thinking = small_scenario(think_times=True)
    assert {op.name: op.think_time_ms for op in thinking.operations} == tpcc.THINK_MS
    assert Scenario.from_dict(thinking.to_dict()) == thinking
    assert "tpcc" in WORKLOADS


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"warehouses": 0}, "workload.warehouses"),
        ({"customers": 5}, "workload.customers"),
        ({"items": 200_000}, "workload.items"),
        ({"think_times": "yes"}, "workload.think_times"),
    ],
)
def test_a_tpcc_option_out_of_range_is_refused_naming_it(options, field):
    with pytest.raises(ConfigError) as refused:
        small_scenario(**options)
    assert refused.value.field == field


TPCC_RUN = """
name = "tpcc-kill"
workers = 2
connections_per_worker = 2
warmup_s = 0.5
measurement_s = 6
heartbeat_s = 0.5
stale_after_beats = 2
dead_after_beats = 4
flush_interval_s = 0.5
snapshot_interval_s = 0.5
drain_timeout_s = 1.0
on_worker_loss = "continue"
target = "sqlite:///{db}"

[start]
strategy = "scheduled"
lead_ms = 1000

[workload]
name = "tpcc"
warehouses = 2
items = 1000
customers = 30
"""


@pytest.mark.live
def test_a_tpcc_run_with_a_worker_sigkilled_mid_run_leaves_every_condition_holding_on_sqlite(tmp_path):
    """A worker killed in the middle of its transactions: SQLite rolls back what it had not
    committed, and after the run every condition holds, checked by the run itself."""
    db = tmp_path / "tpcc.db"
    init(SMALL, Url("sqlite", path=db), drop=False, progress=quiet)
    config = tmp_path / "tpcc.toml"
    config.write_text(TPCC_RUN.format(db=db))
    run = LiveRun(config, tmp_path / "out", "tpcc-kill", 2).start()
    run.wait_until("MEASUREMENT", run.measuring)
    run.wait_until("a flush of measured operations", run.measured)
    run.kill("w001")
    code, err, summary = run.finish()
    assert code == 0, err[-3000:]
    assert {w["worker_id"]: w["status"] for w in summary["workers"]} == {"w000": "COMPLETED", "w001": "DEAD"}
    block = summary["workload"]
    assert block["name"] == "tpcc" and block["tpmC"] > 0
    assert [c["name"] for c in block["checks"] if c["ok"]] == [f"consistency_{i}" for i in (1, 2, 3, 4)]
    assert summary["verdict"] == "passed"


@pytest.mark.live
def test_a_multi_process_tpcc_run_on_postgresql_keeps_every_condition_and_reports_tpmc(tmp_path, postgres_url):
    options = [a for k in ("warehouses=2", "items=1000", "customers=30") for a in ("--option", k)]
    made = run_cli("init", "tpcc", "--target", postgres_url, "--drop", *options, timeout=180)
    assert made.returncode == 0, made.stderr
    proc = run_cli(
        *(
            "run",
            "--no-report",
            "--workload",
            "tpcc",
            "--target",
            postgres_url,
            "--out",
            str(tmp_path / "out"),
            *options,
        ),
        *("--workers", "2", "--connections-per-worker", "2", "--warmup-s", "0.5", "--measurement-s", "3"),
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    block = summary["workload"]
    assert all(c["ok"] for c in block["checks"]) and len(block["checks"]) == 4
    kinds = summary["phases"]["MEASUREMENT"]["by_kind"]
    assert set(kinds) == set(tpcc.MIX) and block["tpmC"] == pytest.approx(kinds["new_order"]["qps"] * 60, rel=1e-3)
    assert "tpmC" in proc.stdout
